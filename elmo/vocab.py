"""Vocabulary files: one token per line, ``<S>``, ``</S>``, ``<UNK>`` conventionally first."""

from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ("<S>", "</S>", "<UNK>")


class VocabularyError(ValueError):
    """A vocabulary file that cannot be used (missing, duplicated or missing special tokens)."""


def read_vocab(path: str | Path) -> list[str]:
    """Tokens of a vocabulary file in file order (a last line without newline counts).

    Raises:
        VocabularyError: naming the file and line of an empty or duplicated entry.
    """
    tokens: list[str] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            token = line.rstrip("\n").rstrip("\r").strip()
            if not token:
                raise VocabularyError(f"{path}: line {line_no}: empty token")
            if token in seen:
                raise VocabularyError(f"{path}: line {line_no}: duplicate token {token!r} "
                                      f"(first on line {seen[token]})")
            seen[token] = line_no
            tokens.append(token)
    return tokens
