"""Tokenizers that keep character offsets into the original text: one registry for the
segmentation of training text (``vocab``) and of the text a model embeds (``precompute``).

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
  whitespace between words is dropped. User dictionaries (:class:`UserDictionary`) add
  domain words; each set of them gets a private ``jieba.Tokenizer``.
- ``whitespace``: the text is already tokenized; tokens are the maximal non-space runs.
- ``auto``: by script, run by run: every run of Han characters goes to ``zh``, the rest of
  the text to ``en``. A purely English text gets exactly the ``en`` tokens.

Very long tokens are kept whole: the model reads at most 48 UTF-8 bytes of a token (the
published character convention), so a 200-character token is embedded from its first
48 bytes; it is neither an error nor split.

A model records how its training text was segmented: :func:`save_tokenizer` writes
``tokenizer.json`` (name, options and the user dictionaries' text, so the record is
self-contained; ``elmo/schemas/tokenizer.schema.json``) and :func:`load_tokenizer` rebuilds the
tokenizer from it. ``vocab`` writes the record beside the vocabulary, ``train`` keeps it in
the save dir, ``export`` puts it in the model directory, and ``precompute`` uses the model's.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

from elmo.schemas import schema_errors

RECORD = "tokenizer.json"  # a model directory's record of its tokenizer


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


@dataclass(frozen=True)
class UserDictionary:
    """A jieba user dictionary (``word [freq] [tag]`` per line), held by its content so that a
    tokenizer built from it is the same wherever it is rebuilt.

    Attributes:
        name: the file name it was read from (for people; the content is what counts).
        text: the dictionary's lines.
    """

    name: str
    text: str

    @classmethod
    def read(cls, path: str | Path) -> UserDictionary:
        """Raises: FileNotFoundError naming a missing file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: user dictionary not found")
        return cls(path.name, path.read_text(encoding="utf-8-sig"))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


class Tokenizer(Protocol):
    """Text → tokens with offsets.

    ``options()`` are the keyword arguments that rebuild it with :func:`get_tokenizer`
    (besides ``user_dicts``); ``settings()`` is JSON-able, identifies its output (versions,
    dictionary hashes) and goes into the store manifest.
    """

    name: str
    user_dicts: tuple[UserDictionary, ...]

    def __call__(self, text: str) -> Tokenized: ...

    def options(self) -> dict[str, Any]: ...

    def settings(self) -> dict[str, Any]: ...


def _from_matches(matches: Iterator[re.Match[str]]) -> Tokenized:
    """Tokens from regex matches over the original text."""
    found = list(matches)
    return Tokenized([m.group() for m in found], [m.span() for m in found])


class WhitespaceTokenizer:
    """The text is already tokenized: tokens are maximal runs of non-whitespace characters."""

    name = "whitespace"
    user_dicts: tuple[UserDictionary, ...] = ()
    _TOKEN = re.compile(r"\S+")

    def __call__(self, text: str) -> Tokenized:
        return _from_matches(self._TOKEN.finditer(text))

    def options(self) -> dict[str, Any]:
        return {}

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
    user_dicts: tuple[UserDictionary, ...] = ()
    RULES_VERSION = 1  # bump whenever the rules change: it goes into the manifest
    _TOKEN = re.compile("|".join(f"(?:{p})" for p in _ENGLISH_TOKEN_KINDS.values()))

    def __call__(self, text: str) -> Tokenized:
        return self.tokenize_span(text, 0, len(text))

    def tokenize_span(self, text: str, start: int, end: int) -> Tokenized:
        """Tokens of ``text[start:end]``, offsets into ``text``."""
        return _from_matches(self._TOKEN.finditer(text, start, end))

    def options(self) -> dict[str, Any]:
        return {}

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "rules_version": self.RULES_VERSION}


@functools.cache
def _jieba(user_dicts: tuple[UserDictionary, ...]) -> Any:
    """This process's jieba segmenter for a set of user dictionaries: a private
    ``jieba.Tokenizer`` each, so that one set's words never leak into another's cuts."""
    import jieba

    jieba.setLogLevel(logging.WARNING)  # its start-up lines are noise on every run
    segmenter = jieba.Tokenizer()
    for d in user_dicts:
        segmenter.load_userdict(io.BytesIO(d.text.encode("utf-8")))
    return segmenter


class ChineseTokenizer:
    """jieba word segmentation with offsets; whitespace tokens are dropped.

    Args:
        hmm: let jieba find out-of-dictionary words with its HMM (jieba's default).
        user_dicts: jieba user dictionaries, in load order.

    The jieba dictionary is loaded on first use, once per process and dictionary set (about
    a second), and is not part of the tokenizer object, which therefore pickles cheaply to
    worker processes.
    """

    name = "zh"

    def __init__(self, hmm: bool = True, user_dicts: Sequence[UserDictionary] = ()) -> None:
        self.hmm = hmm
        self.user_dicts = tuple(user_dicts)

    def __call__(self, text: str) -> Tokenized:
        return self.tokenize_span(text, 0, len(text))

    def tokenize_span(self, text: str, start: int, end: int) -> Tokenized:
        """Tokens of ``text[start:end]``, offsets into ``text``."""
        tokens, spans = [], []
        for word, s, e in _jieba(self.user_dicts).tokenize(text[start:end], HMM=self.hmm):
            if not word.isspace():
                tokens.append(word)
                spans.append((start + s, start + e))
        return Tokenized(tokens, spans)

    def options(self) -> dict[str, Any]:
        return {"hmm": self.hmm}

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "hmm": self.hmm, "jieba_version": version("jieba"),
                "user_dicts": [{"name": d.name, "sha256": d.sha256} for d in self.user_dicts]}


# Han ideographs: CJK Unified Ideographs, extension A, compatibility ideographs, extensions B+.
_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+")


class ScriptTokenizer:
    """``auto``: runs of Han characters go to the Chinese tokenizer, all other text to English.

    Args:
        hmm, user_dicts: passed to :class:`ChineseTokenizer`.
    """

    name = "auto"

    def __init__(self, hmm: bool = True, user_dicts: Sequence[UserDictionary] = ()) -> None:
        self.en = EnglishTokenizer()
        self.zh = ChineseTokenizer(hmm=hmm, user_dicts=user_dicts)

    @property
    def user_dicts(self) -> tuple[UserDictionary, ...]:
        return self.zh.user_dicts

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

    def options(self) -> dict[str, Any]:
        return self.zh.options()

    def settings(self) -> dict[str, Any]:
        return {"name": self.name, "en": self.en.settings(), "zh": self.zh.settings()}


TOKENIZERS: dict[str, Callable[..., Tokenizer]] = {
    "en": EnglishTokenizer,
    "zh": ChineseTokenizer,
    "whitespace": WhitespaceTokenizer,
    "auto": ScriptTokenizer,
}


def get_tokenizer(name: str, **options: Any) -> Tokenizer:
    """The registered tokenizer ``name`` built with ``options`` (e.g. ``hmm=False`` or
    ``user_dicts=[UserDictionary.read(path)]`` for ``zh`` and ``auto``).

    Raises:
        ValueError: unknown name (the message lists the registered ones), or an option the
            tokenizer does not take.
    """
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; registered: {', '.join(sorted(TOKENIZERS))}")
    signature = inspect.signature(TOKENIZERS[name])
    try:
        signature.bind(**options)
    except TypeError:
        taken = ", ".join(signature.parameters) or "no options"
        raise ValueError(f"tokenizer {name!r} takes {taken}; got {', '.join(sorted(options))}") from None
    return TOKENIZERS[name](**options)


def _with_user_dicts(tokenizer: Tokenizer, paths: Sequence[str | Path]) -> Tokenizer:
    """``tokenizer`` with the user dictionaries at ``paths`` loaded after its own."""
    if not paths:
        return tokenizer
    extra = tuple(UserDictionary.read(p) for p in paths)
    return get_tokenizer(tokenizer.name, **tokenizer.options(), user_dicts=tokenizer.user_dicts + extra)


# ---------------------------------------------------------------------------------------
# The record of how a model's training text was segmented.


def tokenizer_record(tokenizer: Tokenizer) -> dict[str, Any]:
    """What rebuilds ``tokenizer`` anywhere: its name, options and user dictionaries' text."""
    return {"name": tokenizer.name, "options": tokenizer.options(),
            "user_dicts": [{"name": d.name, "text": d.text} for d in tokenizer.user_dicts]}


def tokenizer_from_record(record: Any, source: str = "<tokenizer record>") -> Tokenizer:
    """Inverse of :func:`tokenizer_record`.

    Raises:
        ValueError: naming ``source`` and what is wrong with the record.
    """
    errors = schema_errors(record, "tokenizer")
    if errors:
        raise ValueError(f"{source}: invalid tokenizer record: " + "; ".join(errors))
    dicts = tuple(UserDictionary(d["name"], d["text"]) for d in record["user_dicts"])
    options = {**record["options"], **({"user_dicts": dicts} if dicts else {})}
    try:
        return get_tokenizer(record["name"], **options)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> None:
    """Write :func:`tokenizer_record` to ``path`` (JSON, UTF-8)."""
    Path(path).write_text(json.dumps(tokenizer_record(tokenizer), ensure_ascii=False, indent=2) + "\n",
                          encoding="utf-8")


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer a record file describes.

    Raises:
        ValueError: naming the file, when it is not valid JSON or not a valid record.
    """
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {e.lineno}: not valid JSON: {e.msg}") from None
    return tokenizer_from_record(record, str(path))


def model_tokenizer(model_dir: str | Path) -> Tokenizer | None:
    """The tokenizer a model directory records (its ``tokenizer.json``), None when it has none."""
    path = Path(model_dir) / RECORD
    return load_tokenizer(path) if path.is_file() else None


def choose_tokenizer(name: str | None = None, user_dicts: Sequence[str | Path] = (),
                     model_dir: str | Path | None = None) -> Tokenizer:
    """The tokenizer for embedding text with a model: ``name`` when given (default options),
    else the one ``model_dir`` records (how its training text was segmented), else ``auto``;
    with the ``user_dicts`` files loaded after its own dictionaries."""
    recorded = model_tokenizer(model_dir) if name is None and model_dir is not None else None
    return _with_user_dicts(recorded or get_tokenizer(name or "auto"), user_dicts)
