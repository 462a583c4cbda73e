"""Token → character ids: the :class:`CharMapping` interface and the published ELMo convention.

A character mapping is the biLM's swappable front end: it turns token strings into rows of
character ids for the char CNN and names the strings that stand for sentence boundaries.
:class:`Utf8Chars` is the published convention described below; ELMoForManyLangs models map
Unicode code points through a per-model dictionary (:mod:`elmo.efml.vocab`).

In the published convention a token's characters are its UTF-8 bytes (0–255) plus five
special ids; every id is shifted by +1 so that 0 means "no token here" (the mask). A token becomes
``[bow, byte_0, ..., byte_k, eow, pad, ...]`` of ``max_characters`` ids, keeping at most
``max_characters - 2`` bytes. The sentence boundaries ``<S>`` / ``</S>`` are the
one-"character" words ``[bow, bos | eos, eow, pad, ...]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

BOS_CHAR, EOS_CHAR, BOW_CHAR, EOW_CHAR, PAD_CHAR = 256, 257, 258, 259, 260
SHIFT = 1  # id 0 is reserved for masked (absent) tokens
BOS_TOKEN, EOS_TOKEN = "<S>", "</S>"
MAX_CHARACTERS = 50


class CharMapping(Protocol):
    """Token strings → fixed-width rows of character ids, the char CNN's input.

    Attributes:
        boundary_tokens: the strings that stand for the sentence begin and end; the biLM adds
            them around every sentence, and a user token equal to one is treated the same way.
        n_ids: rows of the character embedding table (ids are ``0 .. n_ids - 1``).
        pad_id: fills a row after the token's characters.
        mask_row: id 0 is a mask whose embedding is always zero and which weight files omit
            (the published convention); False when every row is a trained vector.
        max_characters: the row width.
    """

    boundary_tokens: tuple[str, str]
    n_ids: int
    pad_id: int
    mask_row: bool
    max_characters: int

    def ids(self, tokens: Sequence[str]) -> np.ndarray:
        """``(n_tokens, max_characters)`` int32 ids of ``tokens``."""

    def vocabularies(self) -> dict[str, dict[str, int]]:
        """The dictionaries the ids come from, by file name (empty for a fixed convention):
        part of a model's identity, since the same weights read through another dictionary
        give other vectors."""


class Utf8Chars:
    """The published convention: a token's UTF-8 bytes and five special ids, shifted by +1."""

    boundary_tokens = (BOS_TOKEN, EOS_TOKEN)
    n_ids = PAD_CHAR + SHIFT + 1
    pad_id = PAD_CHAR + SHIFT
    mask_row = True

    def __init__(self, max_characters: int = MAX_CHARACTERS):
        self.max_characters = max_characters

    def ids(self, tokens: Sequence[str]) -> np.ndarray:
        return char_id_matrix(tokens, self.max_characters)

    def vocabularies(self) -> dict[str, dict[str, int]]:
        return {}


def char_ids(token: str, max_characters: int = MAX_CHARACTERS) -> np.ndarray:
    """Character ids of one token.

    Returns:
        ``(max_characters,)`` int32, already shifted by +1 (never 0).
    """
    ids = np.full(max_characters, PAD_CHAR + SHIFT, dtype=np.int32)
    if token == BOS_TOKEN or token == EOS_TOKEN:
        body = np.array([BOS_CHAR if token == BOS_TOKEN else EOS_CHAR], dtype=np.int32)
    else:
        body = np.frombuffer(token.encode("utf-8", errors="surrogatepass"), dtype=np.uint8)
        body = body[: max_characters - 2].astype(np.int32)
    ids[0] = BOW_CHAR + SHIFT
    ids[1 : 1 + len(body)] = body + SHIFT
    ids[1 + len(body)] = EOW_CHAR + SHIFT
    return ids


def char_id_matrix(tokens: Iterable[str], max_characters: int = MAX_CHARACTERS) -> np.ndarray:
    """Character ids of several tokens: ``(n_tokens, max_characters)`` int32, row i equal to
    ``char_ids(tokens[i])``. All tokens' bytes are placed at once with numpy (a batch's
    distinct types are thousands; one Python call per token would be the cost)."""
    tokens = list(tokens)
    encoded = [t.encode("utf-8", errors="surrogatepass") for t in tokens]
    full = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    lengths = np.minimum(full, max_characters - 2)  # bytes kept
    ids = np.full((len(tokens), max_characters), PAD_CHAR + SHIFT, dtype=np.int32)
    ids[:, 0] = BOW_CHAR + SHIFT
    data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    row = np.repeat(np.arange(len(tokens)), lengths)
    column = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ids[row, 1 + column] = data[(np.cumsum(full) - full)[row] + column].astype(np.int32) + SHIFT
    ids[np.arange(len(tokens)), 1 + lengths] = EOW_CHAR + SHIFT
    for r in np.flatnonzero((full == len(BOS_TOKEN)) | (full == len(EOS_TOKEN))).tolist():
        if tokens[r] == BOS_TOKEN or tokens[r] == EOS_TOKEN:
            ids[r] = char_ids(tokens[r], max_characters)
    return ids


def sentence_char_ids(
    sentences: list[list[str]], max_characters: int = MAX_CHARACTERS
) -> np.ndarray:
    """Padded character ids of a batch, without sentence boundaries (the AllenNLP input format).

    Returns:
        ``(batch, max_len, max_characters)`` int32; rows past a sentence's end are all 0.
    """
    out = np.zeros((len(sentences), max((len(s) for s in sentences), default=0), max_characters),
                   dtype=np.int32)
    for b, sentence in enumerate(sentences):
        if sentence:
            out[b, : len(sentence)] = char_id_matrix(sentence, max_characters)
    return out
