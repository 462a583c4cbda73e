"""Dedup of identical texts and length bucketing under a padded-token budget."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def content_hash(tokens: Sequence[str], spans: Sequence[tuple[int, int]]) -> bytes:
    """16-byte identity of a tokenized text: two fields with equal tokens *and* spans share
    one segment (spans count, so texts differing only in whitespace keep their own offsets)."""
    # Three whole arrays, not a pair of updates per token (a quarter of planning's time): the
    # tokens' lengths make their concatenation unambiguous.
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens)).tobytes())
    digest.update(np.array(spans, dtype=np.int64).reshape(-1).tobytes())
    digest.update("".join(tokens).encode("utf-8"))
    return digest.digest()


def length_batches(items: Sequence[T], lengths: Sequence[int], batch_tokens: int) -> list[list[T]]:
    """Group ``items`` into batches of similar length.

    Items are sorted by length (longest first, ties in input order, so the result is
    deterministic) and cut so that ``len(batch) * max_length <= batch_tokens``: the padded
    size of a batch, which is what the model pays for. An item longer than the budget runs
    alone.

    Args:
        items: anything, e.g. sentence pieces.
        lengths: tokens per item.
        batch_tokens: budget of padded tokens per batch.
    """
    order = sorted(range(len(items)), key=lambda i: -lengths[i])
    batches: list[list[T]] = []
    current: list[T] = []
    longest = 0  # the first item of a batch is its longest
    for i in order:
        if current and (len(current) + 1) * longest > batch_tokens:
            batches.append(current)
            current = []
        if not current:
            longest = lengths[i]
        current.append(items[i])
    if current:
        batches.append(current)
    return batches
