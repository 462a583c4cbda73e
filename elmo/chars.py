"""Token → character ids, the published ELMo convention.

A token's characters are its UTF-8 bytes (0–255) plus five special ids; every id is shifted
by +1 so that 0 means "no token here" (the mask). A token becomes
``[bow, byte_0, ..., byte_k, eow, pad, ...]`` of ``max_characters`` ids, keeping at most
``max_characters - 2`` bytes. The sentence boundaries ``<S>`` / ``</S>`` are the
one-"character" words ``[bow, bos | eos, eow, pad, ...]``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

BOS_CHAR, EOS_CHAR, BOW_CHAR, EOW_CHAR, PAD_CHAR = 256, 257, 258, 259, 260
SHIFT = 1  # id 0 is reserved for masked (absent) tokens
BOS_TOKEN, EOS_TOKEN = "<S>", "</S>"
MAX_CHARACTERS = 50


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
    """Character ids of several tokens: ``(n_tokens, max_characters)`` int32."""
    rows = [char_ids(t, max_characters) for t in tokens]
    if not rows:
        return np.zeros((0, max_characters), dtype=np.int32)
    return np.stack(rows)


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
