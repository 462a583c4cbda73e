"""Vocabularies: reading them, and building them from raw text segmented by a tokenizer of
:mod:`elmo.tokenize` (the registry ``precompute`` uses too).

A vocabulary file has one token per line. A *training* vocabulary starts with ``<S>``,
``</S>``, ``<UNK>`` (in that order) and lists the other tokens by descending count, the
layout of the original bilm-tf recipe; its size is the softmax size of the language model.
:func:`make_vocab` also records the tokenizer beside the vocabulary
(:func:`tokenizer_record_path`), so that training, export and precompute segment alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from elmo.tokenize import Tokenizer, get_tokenizer, save_tokenizer

SPECIAL_TOKENS = ("<S>", "</S>", "<UNK>")
BOS_ID, EOS_ID, UNK_ID = 0, 1, 2


class VocabularyError(ValueError):
    """A vocabulary or corpus that cannot be used (missing, empty, duplicated or misordered entries)."""


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


def check_training_vocab(tokens: Sequence[str], source: str = "<vocabulary>") -> None:
    """Require ``<S>``, ``</S>``, ``<UNK>`` as the first three tokens.

    Raises:
        VocabularyError: naming ``source`` and the line that breaks the rule.
    """
    for line_no, special in enumerate(SPECIAL_TOKENS, start=1):
        found = tokens[line_no - 1] if len(tokens) >= line_no else None
        if found != special:
            raise VocabularyError(
                f"{source}: line {line_no}: expected {special!r}, found {found!r}; a training "
                f"vocabulary starts with {', '.join(SPECIAL_TOKENS)} (one per line)")


def read_training_vocab(path: str | Path) -> list[str]:
    """:func:`read_vocab` plus :func:`check_training_vocab`."""
    tokens = read_vocab(path)
    check_training_vocab(tokens, str(path))
    return tokens


def write_vocab(tokens: Iterable[str], path: str | Path) -> None:
    """One token per line, in the given order (UTF-8)."""
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{t}\n" for t in tokens)


def tokenizer_record_path(vocab_path: str | Path) -> Path:
    """Where :func:`make_vocab` records the tokenizer of a vocabulary: ``vocab.txt`` →
    ``vocab.tokenizer.json`` (read by ``train --vocab``)."""
    return Path(vocab_path).with_suffix(".tokenizer.json")


def segment_corpus(files: Sequence[str | Path], tokenizer: Tokenizer,
                   out_dir: str | Path | None = None) -> Iterator[list[str]]:
    """Yield the tokens of every non-blank line of ``files``; optionally write them segmented.

    Args:
        tokenizer: splits each line (offsets are not needed here).
        out_dir: when given, ``out_dir/<file name>`` gets one sentence per line, tokens
            separated by single spaces: the input format of training.

    Raises:
        VocabularyError: when the files hold no token at all (naming them).
    """
    outputs = [Path(out_dir) / Path(p).name if out_dir is not None else None for p in files]
    if out_dir is not None:
        names = [o.name for o in outputs]
        clash = next((n for n in names if names.count(n) > 1), None)
        if clash is not None:
            raise ValueError(f"two inputs are named {clash!r}: their segmented files would collide in {out_dir}")
        if any(o.resolve() == Path(p).resolve() for o, p in zip(outputs, files)):
            raise ValueError(f"--segmented-out {out_dir} would overwrite the input files")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    n_tokens = 0
    for path, out_path in zip(files, outputs):
        out = open(out_path, "w", encoding="utf-8") if out_path is not None else None
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    tokens = tokenizer(line).tokens
                    if not tokens:
                        continue
                    n_tokens += len(tokens)
                    if out is not None:
                        out.write(" ".join(tokens) + "\n")
                    yield tokens
        finally:
            if out is not None:
                out.close()
    if n_tokens == 0:
        raise VocabularyError(f"empty corpus: no tokens in {', '.join(map(str, files)) or '(no files)'}")


@dataclass(frozen=True)
class VocabularyStats:
    """What :func:`build_vocab` saw: corpus tokens (what training needs) and kept types."""

    n_tokens: int  # running tokens of the corpus, sentence boundaries excluded
    n_sentences: int
    n_types: int  # distinct tokens in the corpus
    vocab_size: int  # lines written, the three special tokens included


def build_vocab(sentences: Iterable[Sequence[str]], min_count: int = 1,
                max_size: int | None = None) -> tuple[list[str], VocabularyStats]:
    """Count tokens and order them as a training vocabulary.

    Args:
        sentences: tokenized sentences.
        min_count: drop tokens seen fewer times.
        max_size: keep at most this many entries, the three special tokens included.

    Returns:
        ``<S>``, ``</S>``, ``<UNK>``, then tokens by descending count (case-sensitive; ties
        in order of first appearance, so the file is deterministic), and the statistics.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    if max_size is not None and max_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"max_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {max_size}")
    counts: Counter[str] = Counter()  # insertion order = first appearance
    n_sentences = 0
    for sentence in sentences:
        counts.update(sentence)
        n_sentences += 1
    # sorted() is stable, so equal counts keep first-appearance order.
    kept = [t for t, c in sorted(counts.items(), key=lambda tc: -tc[1])
            if c >= min_count and t not in SPECIAL_TOKENS]
    tokens = list(SPECIAL_TOKENS) + kept
    if max_size is not None:
        tokens = tokens[:max_size]
    stats = VocabularyStats(n_tokens=sum(counts.values()), n_sentences=n_sentences,
                            n_types=len(counts), vocab_size=len(tokens))
    return tokens, stats


def make_vocab(files: Sequence[str | Path], out: str | Path, tokenizer: Tokenizer | None = None,
               segmented_out: str | Path | None = None, min_count: int = 1,
               max_size: int | None = None) -> VocabularyStats:
    """Segment ``files`` with ``tokenizer`` (default ``auto``), write the vocabulary to ``out``,
    the tokenizer's record to :func:`tokenizer_record_path` (and the segmented text), and
    return the counts."""
    tokenizer = tokenizer if tokenizer is not None else get_tokenizer("auto")
    sentences = segment_corpus(files, tokenizer, segmented_out)
    tokens, stats = build_vocab(sentences, min_count, max_size)
    write_vocab(tokens, out)
    save_tokenizer(tokenizer, tokenizer_record_path(out))
    return stats
