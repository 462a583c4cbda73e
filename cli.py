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


def _run_embed(args: argparse.Namespace) -> int:
    from elmo import load_bilm
    from elmo.runtime import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    bilm = load_bilm(args.options, args.weights, device=device).to(resolve_dtype(args.dtype, device))
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
    p.add_argument("--options", required=True, help="the model's options.json")
    p.add_argument("--weights", required=True, help="the model's weights.hdf5")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--dtype", default="float32", help="float32 (default); float16/bfloat16 on a GPU")
    p.set_defaults(run=_run_embed)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elmo-cache", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_embed,):
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
