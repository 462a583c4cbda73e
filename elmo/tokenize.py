"""Tokenizers that keep character offsets into the original text, and long-document splitting.

Every tokenizer maps a text to a :class:`Tokenized`: the tokens and, for each, its
``(start, end)`` character offsets with ``text[start:end] == token``. The store keeps the
spans, so a training script can map answer character spans to token ranges.

Registered tokenizers (:data:`TOKENIZERS`, built with :func:`get_tokenizer`):

- ``en``: rule-based English tokenizer in the Penn Treebank / spaCy style the published
  English ELMo saw in training: punctuation split off, clitics split (``don't`` →
  ``do n't``, ``it's`` → ``it 's``), while URLs, e-mail addresses, numbers with separators
  (``3.14``, ``1,000``), letter-dot abbreviations (``U.S.``), a few titles (``Mr.``) and
  hyphenated words stay whole.
- ``zh``: jieba word segmentation (``jieba.Tokenizer.tokenize``, which reports offsets);
  whitespace between words is dropped.
- ``whitespace``: the text is already tokenized; tokens are the maximal non-space runs.
- ``auto``: by script, run by run: every run of Han characters goes to ``zh``, the rest of
  the text to ``en``. A purely English text gets exactly the ``en`` tokens.

Very long tokens are kept whole: the model reads at most 48 UTF-8 bytes of a token (the
published character convention), so a 200-character token is embedded from its first
48 bytes; it is neither an error nor split.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Protocol


@dataclass(frozen=True)
class Tokenized:
    """A tokenized text.

    Attributes:
        tokens: the tokens, in text order.
        spans: ``(start, end)`` character offsets of each token into the original text;
            ``text[start:end] == token``. Same length as ``tokens``.
    """

    tokens: list[str]
    spans: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: slice) -> Tokenized:
        """The tokens ``index`` (a slice) with their spans, still offsets into the original text."""
        return Tokenized(self.tokens[index], self.spans[index])


class Tokenizer(Protocol):
    """Text → tokens with offsets. ``settings()`` is JSON-able and goes into the store manifest."""

    name: str

    def __call__(self, text: str) -> Tokenized: ...

    def settings(self) -> dict[str, Any]: ...


def _from_matches(matches: Iterator[re.Match[str]]) -> Tokenized:
    """Tokens from regex matches over the original text."""
    tokens, spans = [], []
    for m in matches:
        tokens.append(m.group())
        spans.append(m.span())
    return Tokenized(tokens, spans)


class WhitespaceTokenizer:
    """The text is already tokenized: tokens are maximal runs of non-whitespace characters."""

    name = "whitespace"
    _TOKEN = re.compile(r"\S+")

    def __call__(self, text: str) -> Tokenized:
        return _from_matches(self._TOKEN.finditer(text))

    def settings(self) -> dict[str, Any]:
        return {"name": self.name}


_APOSTROPHE = "['’]"
_CLITIC = rf"{_APOSTROPHE}(?i:s|re|ve|ll|d|m)\b"
# One alternative per token kind; at each position the first alternative that matches wins,
# so the specific kinds come before the general ones.
_ENGLISH_TOKEN_KINDS: dict[str, str] = {
    "url": r"(?:https?://|www\.)\S*[^\s.,;:!?'\"’”)\]}>]",
    "email": r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
    "title": r"\b(?:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|vs)\.",
    "abbreviation": r"(?:[^\W\d_]\.){2,}",
    "number": r"\d+(?:[.,:/]\d+)+",
    "negation_stem": rf"\w+(?=n{_APOSTROPHE}t\b)",  # "do" in "don't"
    "negation": rf"n{_APOSTROPHE}t\b",
    "clitic": rf"(?<=\w){_CLITIC}",  # "'s" in "it's"
    "word": rf"\w+(?:-\w+|{_APOSTROPHE}(?!(?i:s|re|ve|ll|d|m|t)\b)\w+)*",  # state-of-the-art, O'Neil
    "ellipsis": r"\.{2,}|…",
    "dashes": r"-{2,}",
    "symbol": r"[^\w\s]",
}


class EnglishTokenizer:
    """Rule-based English tokenizer (PTB / spaCy conventions), offsets kept; see the module doc."""

    name = "en"
    RULES_VERSION = 1  # bump whenever the rules change: it goes into the manifest
    _TOKEN = re.compile("|".join(f"(?:{p})" for p in _ENGLISH_TOKEN_KINDS.values()))

    def __call__(self, text: str) -> Tokenized:
        return self.tokenize_span(text, 0, len(text))

    def tokenize_span(self, text: str, start: int, end: int) -> Tokenized:
        """Tokens of ``text[start:end]``, offsets into ``text``."""
        return _from_matches(self._TOKEN.finditer(text, start, end))

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "rules_version": self.RULES_VERSION}


@functools.cache
def _jieba() -> Any:
    """This process's jieba segmenter with the default dictionary."""
    import jieba

    return jieba.Tokenizer()


class ChineseTokenizer:
    """jieba word segmentation with offsets; whitespace tokens are dropped.

    Args:
        hmm: let jieba find out-of-dictionary words with its HMM (jieba's default).

    The jieba dictionary is loaded on first use, once per process (about a second), and is
    not part of the tokenizer object, which therefore pickles cheaply to worker processes.
    """

    name = "zh"

    def __init__(self, hmm: bool = True) -> None:
        self.hmm = hmm

    def __call__(self, text: str) -> Tokenized:
        return self.tokenize_span(text, 0, len(text))

    def tokenize_span(self, text: str, start: int, end: int) -> Tokenized:
        """Tokens of ``text[start:end]``, offsets into ``text``."""
        tokens, spans = [], []
        for word, s, e in _jieba().tokenize(text[start:end], HMM=self.hmm):
            if not word.isspace():
                tokens.append(word)
                spans.append((start + s, start + e))
        return Tokenized(tokens, spans)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "hmm": self.hmm, "jieba_version": version("jieba")}


# Han ideographs: CJK Unified Ideographs, extension A, compatibility ideographs, extensions B+.
_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+")


class ScriptTokenizer:
    """``auto``: runs of Han characters go to the Chinese tokenizer, all other text to English.

    Args:
        hmm: passed to :class:`ChineseTokenizer`.
    """

    name = "auto"

    def __init__(self, hmm: bool = True) -> None:
        self.en = EnglishTokenizer()
        self.zh = ChineseTokenizer(hmm=hmm)

    def __call__(self, text: str) -> Tokenized:
        tokens: list[str] = []
        spans: list[tuple[int, int]] = []
        position = 0
        for run in _HAN_RUN.finditer(text):
            for piece in (self.en.tokenize_span(text, position, run.start()),
                          self.zh.tokenize_span(text, run.start(), run.end())):
                tokens += piece.tokens
                spans += piece.spans
            position = run.end()
        rest = self.en.tokenize_span(text, position, len(text))
        return Tokenized(tokens + rest.tokens, spans + rest.spans)

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "en": self.en.settings(), "zh": self.zh.settings()}


TOKENIZERS: dict[str, Callable[..., Tokenizer]] = {
    "en": EnglishTokenizer,
    "zh": ChineseTokenizer,
    "whitespace": WhitespaceTokenizer,
    "auto": ScriptTokenizer,
}


def get_tokenizer(name: str, **options: Any) -> Tokenizer:
    """The registered tokenizer ``name`` built with ``options`` (e.g. ``hmm=False`` for ``zh``).

    Raises:
        ValueError: unknown name; the message lists the registered ones.
    """
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; registered: {', '.join(sorted(TOKENIZERS))}")
    return TOKENIZERS[name](**options)


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
