"""Same word, two contexts: cosine of its vectors per layer of the bundled default model.

    python examples/context_demo.py
    python examples/context_demo.py "我 买了 六斤 苹果 。" "我 买了 一个 苹果 7 。" 苹果

Layer 0 (the char CNN) sees only the word, so its cosine is 1; layers 1 and 2 see the sentence.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from elmo import load_default_bilm  # noqa: E402

PAIRS = [("我 买了 六斤 苹果 。", "我 买了 一个 苹果 7 。", "苹果"),  # fruit vs phone
         ("我 买了 六斤 苹果 。", "奶奶 买了 三斤 苹果 。", "苹果"),  # fruit vs fruit: closer
         ("He went to the bank to deposit some money .", "We walked along the river bank today .", "bank"),
         ("He went to the bank to deposit some money .", "She asked the bank for a loan .", "bank")]


def layer_cosines(first: str, second: str, word: str) -> list[float]:
    """Cosine between ``word``'s vectors in two whitespace-tokenized sentences, per layer."""
    a, b = first.split(), second.split()
    out = load_default_bilm().embed([a, b]).layers  # (n_layers, 2, time, dim)
    va, vb = out[:, 0, a.index(word)], out[:, 1, b.index(word)]  # (n_layers, dim)
    return torch.cosine_similarity(va, vb, dim=-1).tolist()


def main(argv: list[str]) -> None:
    for first, second, word in ([tuple(argv)] if argv else PAIRS):
        cosines = "  ".join(f"layer {k}: {c:.3f}" for k, c in enumerate(layer_cosines(first, second, word)))
        print(f"{word!r} in {first!r} vs {second!r}\n  {cosines}")


if __name__ == "__main__":
    main(sys.argv[1:])
