"""elmo-cache command line: parses arguments and calls the library, nothing else.

Each subcommand is a pair: ``_add_<name>(subparsers)`` declares its arguments and sets
``run`` to the function that calls the library.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import TextIO


def _read_sentences(stream: TextIO) -> Iterator[list[str]]:
    for line in stream:
        yield line.split()


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")


def _run_embed(args: argparse.Namespace) -> int:
    from elmo import load_bilm, load_default_bilm
    from elmo.runtime import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    if (args.options is None) != (args.weights is None):
        raise ValueError("pass both --options and --weights, or neither for the bundled default model")
    bilm = (load_bilm(args.options, args.weights, device=device) if args.options
            else load_default_bilm(device=device)).to(resolve_dtype(args.dtype, device))
    stream = open(args.input, encoding="utf-8") if args.input != "-" else sys.stdin
    with stream:
        batch: list[list[str]] = []
        line_no = 0

        def flush() -> None:
            out = bilm.embed(batch)
            for b, sentence in enumerate(batch):
                vectors = out.layers[:, b, : len(sentence)]
                norms = ", ".join(f"{v:.3f}" for v in vectors.float().norm(dim=-1).mean(dim=-1).tolist())
                print(f"{line_no - len(batch) + b + 1}\t{len(sentence)} tokens\t"
                      f"shape {tuple(vectors.shape)}\tmean norm per layer [{norms}]")
            batch.clear()

        for sentence in _read_sentences(stream):
            line_no += 1
            batch.append(sentence)
            if len(batch) == args.batch_size:
                flush()
        if batch:
            flush()
    return 0


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="embed whitespace-tokenized sentences and print their shapes",
                       description="Smoke tool: one sentence per line (tokens separated by spaces); "
                                   "prints (n_layers, n_tokens, dim) and mean vector norms per layer.")
    p.add_argument("input", nargs="?", default="-", help="text file, or - for standard input (default)")
    p.add_argument("--options", help="the model's options.json (default: the bundled default model)")
    p.add_argument("--weights", help="the model's weights.hdf5 (default: the bundled default model)")
    p.add_argument("--batch-size", type=int, default=64)
    _add_device(p)
    p.add_argument("--dtype", default="float32", help="float32 (default); float16/bfloat16 on a GPU")
    p.set_defaults(run=_run_embed)


def _run_vocab(args: argparse.Namespace) -> int:
    from elmo.vocab import make_vocab

    stats = make_vocab(args.corpus, args.out, lang=args.lang, user_dicts=args.user_dict,
                       segmented_out=args.segmented_out, min_count=args.min_count, max_size=args.max_size)
    print(f"{stats.n_tokens} tokens in {stats.n_sentences} sentences, {stats.n_types} distinct; "
          f"wrote {stats.vocab_size} vocabulary entries to {args.out}")
    return 0


def _add_vocab(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vocab", help="segment raw text and build a training vocabulary",
                       description="Segments raw text (jieba for Chinese), optionally writes it one "
                                   "sentence per line, and writes a vocabulary: <S>, </S>, <UNK>, then "
                                   "tokens by descending count. Prints the token count training needs.")
    p.add_argument("corpus", nargs="+", help="raw text files, one sentence (or paragraph) per line")
    p.add_argument("--out", required=True, help="vocabulary file to write")
    p.add_argument("--lang", choices=("zh", "en", "auto"), default="auto",
                   help="zh: jieba; en: words and punctuation; auto (default): jieba for lines with CJK")
    p.add_argument("--user-dict", action="append", default=[], help="jieba user dictionary (repeatable)")
    p.add_argument("--segmented-out", help="folder for the segmented files (same names), the input of train")
    p.add_argument("--min-count", type=int, default=1, help="drop tokens seen fewer times (default 1)")
    p.add_argument("--max-size", type=int, help="keep at most this many entries, special tokens included")
    p.set_defaults(run=_run_vocab)


def _run_train(args: argparse.Namespace) -> int:
    from elmo.train import train

    result = train(args.train, args.save_dir, config=args.config, vocab=args.vocab, heldout=args.heldout,
                   resume=args.resume, init_from=args.init_from, max_steps=args.max_steps,
                   device=args.device, progress=not args.no_progress)
    heldout = f"; held-out perplexity {result.heldout}" if result.heldout else ""
    print(f"step {result.step} (epoch {result.epoch}, window {result.window}): train loss "
          f"{result.train_loss:.4f}, {result.tokens_per_second:.0f} tokens/s{heldout}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train (or fine-tune, or resume) forward and backward LMs",
                       description="Trains a biLM on segmented text (one sentence per line, tokens "
                                   "separated by spaces); checkpoints go to --save-dir.")
    p.add_argument("--train", action="append", required=True, help="glob of training files (repeatable)")
    p.add_argument("--heldout", action="append", default=[],
                   help="glob of held-out files (repeatable): perplexity, best model, early stopping")
    p.add_argument("--vocab", help="training vocabulary (from the vocab command); not with --init-from")
    p.add_argument("--config", help="architecture and training config (schemas/train_config.schema.json)")
    p.add_argument("--save-dir", required=True, help="folder for checkpoint.pt and best.pt")
    p.add_argument("--resume", action="store_true", help="continue from --save-dir's last checkpoint")
    p.add_argument("--init-from", help="exported model folder to fine-tune (keeps its vocabulary)")
    p.add_argument("--max-steps", type=int, help="total number of steps (overrides the config)")
    _add_device(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_train)


def _run_perplexity(args: argparse.Namespace) -> int:
    from elmo.train import perplexity_of

    ppl = perplexity_of(args.save_dir, args.data, device=args.device)
    print(f"perplexity over {ppl.n_tokens} tokens: {ppl}")
    return 0


def _add_perplexity(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("perplexity", help="forward, backward and mean perplexity of a trained model")
    p.add_argument("--save-dir", required=True, help="training folder (its best.pt, else checkpoint.pt)")
    p.add_argument("--data", action="append", required=True, help="glob of segmented text (repeatable)")
    _add_device(p)
    p.set_defaults(run=_run_perplexity)


def _run_export(args: argparse.Namespace) -> int:
    from elmo.train import export

    out = export(args.save_dir, args.out_dir)
    print(f"wrote {out}/options.json, weights.hdf5 (published layout), vocab.txt, softmax.hdf5")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a trained model as options.json + weights.hdf5")
    p.add_argument("--save-dir", required=True, help="training folder (its best.pt, else checkpoint.pt)")
    p.add_argument("--out-dir", required=True, help="model folder to write")
    p.set_defaults(run=_run_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elmo-cache", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_embed, _add_vocab, _add_train, _add_perplexity, _add_export):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, KeyError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
