"""Record fields as tokens, and long documents cut into pieces at sentence ends.

The tokenizers themselves (one registry for training and precompute) live in
:mod:`elmo.tokenize`; this module applies one to a record's fields and splits what the model
should see in pieces of at most ``max_tokens``.
"""

from __future__ import annotations

from elmo.tokenize import Tokenized, Tokenizer


def pretokenized(tokens: list[str]) -> Tokenized:
    """A record's given token list, used as is; spans are offsets into ``" ".join(tokens)``."""
    spans, start = [], 0
    for token in tokens:
        spans.append((start, start + len(token)))
        start += len(token) + 1
    return Tokenized(list(tokens), spans)


def tokenize_field(value: str | list[str], tokenizer: Tokenizer) -> Tokenized:
    """One record field as tokens: text goes through ``tokenizer``, a token list is used as is."""
    return pretokenized(value) if isinstance(value, list) else tokenizer(value)


SENTENCE_TERMINATORS = frozenset(".!?。！？｡…‼⁇⁈⁉")
CLOSERS = frozenset("\"'’”)]}」』》〉）")


def _sentence_ends(doc: Tokenized) -> list[int]:
    """Token indices just past each sentence: after a token made only of terminators (``.``,
    ``?!``, ``。``...) and the closing quotes or brackets that touch it (``."``, ``?)``). The
    last index is ``len(doc)``."""
    tokens, spans = doc.tokens, doc.spans
    ends = []
    i = 0
    while i < len(tokens):
        i += 1
        if set(tokens[i - 1]) <= SENTENCE_TERMINATORS:
            while i < len(tokens) and set(tokens[i]) <= CLOSERS and spans[i][0] == spans[i - 1][1]:
                i += 1
            ends.append(i)
    if not ends or ends[-1] != len(tokens):
        ends.append(len(tokens))
    return ends


def split_long(doc: Tokenized, max_tokens: int) -> list[Tokenized]:
    """Pieces of at most ``max_tokens`` tokens, cut at sentence boundaries.

    Sentences are packed greedily into pieces; a sentence longer than ``max_tokens`` is cut
    every ``max_tokens`` tokens and its tail starts the next piece. Spans stay offsets into the
    original text, and concatenating the pieces' tokens gives back ``doc.tokens`` exactly. A
    document of at most ``max_tokens`` tokens comes back as ``[doc]``.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if len(doc) <= max_tokens:
        return [doc]
    pieces: list[Tokenized] = []
    start = 0  # first token of the piece being filled
    sentence_start = 0
    for end in _sentence_ends(doc):
        if end - start > max_tokens and sentence_start > start:
            pieces.append(doc[start:sentence_start])
            start = sentence_start
        while end - start > max_tokens:
            pieces.append(doc[start : start + max_tokens])
            start += max_tokens
        sentence_start = end
    pieces.append(doc[start:])
    return pieces
