"""Training throughput: stream tokens per second of ``elmo.train.train`` on the sample corpus.

    python benchmarks/train_throughput.py [--steps 200] [--threads N]

Uses the default model's architecture (``data/default_arch.json``), batch 32 x 20 tokens, on
the CPU and, when present, on the GPU. Each token is read by both the forward and the
backward LM; the figure includes data preparation and the backward pass.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from elmo.tokenize import UserDictionary, get_tokenizer  # noqa: E402
from elmo.train import train  # noqa: E402
from elmo.vocab import make_vocab  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = sorted((REPO / "data" / "corpus").glob("train.*.txt"))
        tokenizer = get_tokenizer("auto", user_dicts=[UserDictionary.read(REPO / "data" / "user_dict.txt")])
        make_vocab(corpus, work / "vocab.txt", tokenizer, segmented_out=work / "seg")
        config = json.loads((REPO / "data" / "default_arch.json").read_text(encoding="utf-8"))
        config["training"].update(checkpoint_every=10**9)  # time the steps, not the checkpoints
        (work / "config.json").write_text(json.dumps(config), encoding="utf-8")
        for device in devices:
            result = train([str(work / "seg" / "*.txt")], work / f"run_{device}", config=work / "config.json",
                           vocab=work / "vocab.txt", max_steps=args.steps, device=device, progress=False)
            print(f"train {device}: {result.tokens_per_second:,.0f} tokens/s (default arch, batch 32 x 20, "
                  f"{args.steps} steps, {torch.get_num_threads()} CPU threads, torch {torch.__version__})")


if __name__ == "__main__":
    main()
