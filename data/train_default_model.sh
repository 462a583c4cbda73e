#!/usr/bin/env bash
# Rebuild elmo/default_model from the sample corpus (about 2-3 minutes on 2 CPU cores).
# Run from the repository root: bash data/train_default_model.sh
# One thread: as fast as two for this small model, and a rerun with the same code gives the same bits.
export OMP_NUM_THREADS=1
set -euo pipefail
WORK=${WORK:-build/default_model_run}
rm -rf "$WORK" && mkdir -p "$WORK"
python data/make_corpus.py
# The tokenizer (recorded beside the vocabulary, carried by train and export into tokenizer.json)
# is the one precompute applies with this model.
python cli.py vocab data/corpus/train.zh.txt data/corpus/train.en.txt --tokenizer auto \
  --user-dict data/user_dict.txt --out "$WORK/vocab.txt" --segmented-out "$WORK/train"
python cli.py vocab data/corpus/heldout.zh.txt data/corpus/heldout.en.txt --tokenizer auto \
  --user-dict data/user_dict.txt --out "$WORK/heldout_vocab.txt" --segmented-out "$WORK/heldout"
python cli.py train --train "$WORK/train/*.txt" --heldout "$WORK/heldout/*.txt" --vocab "$WORK/vocab.txt" \
  --config data/default_arch.json --save-dir "$WORK/run" --device cpu --no-progress
python cli.py perplexity --save-dir "$WORK/run" --data "$WORK/heldout/*.txt" --device cpu
python cli.py export --save-dir "$WORK/run" --out-dir elmo/default_model
