"""Input readers: JSONL, SQuAD v1.1/v2.0 JSON and plain text → validated :class:`Record` s.

Formats (``input_format``; ``"auto"`` picks by extension, then by content, see
:func:`detect_format`):

- ``jsonl``: one JSON object per line. The id is ``record[id_field]`` (default ``"id"``; a
  string, or an integer that is turned into its decimal string). The embedded fields are
  ``fields`` when given; otherwise they are decided on the file's first record by
  :data:`DEFAULT_LAYOUTS`: SQuAD-style records (``context`` and ``question``) embed both,
  pre-tokenized records embed their ``tokens`` list as is, and other records their ``text``.
  A record matching none of these stops the read: pass ``fields``. Blank lines are skipped.
- ``squad``: SQuAD v1.1 / v2.0 nested JSON (``data → paragraphs → {context, qas: [{id,
  question, answers...}]}``): one record per question, id = the question id, fields
  ``context`` and ``question`` (answers are not embedded). ``Record.line`` is the question's
  1-based number in the file. Nested JSON cannot be streamed with the standard library, so
  the file is parsed whole (SQuAD files are well under 100 MB); records are still yielded
  lazily.
- ``text``: one document per line, field ``text``, id = the 0-based line index as a string
  (``"0"``, ``"1"``...): the keys of AllenNLP's ``elmo`` command. Blank (empty or
  whitespace-only) lines are skipped, as paragraph breaks are; ids of the other lines do not move.

JSONL and text files stream: they are read in binary one line at a time and each line is
decoded on its own, so an invalid UTF-8 byte sequence is reported with its line number and,
under ``on_error="skip"``, costs only that line. ``\\n``, ``\\r\\n`` and a lone ``\\r`` each end a
line. Compressed data that is damaged or cut short is an :class:`InputError` naming the file.
A directory is refused as one; a pipe or device (``/dev/stdin``, ``/dev/fd/N``, process
substitution) is read once by ``precompute`` (:func:`is_stream`).

Every position in a message counts from 1 and names its unit: ``in.jsonl: line 3: ...``,
``dev.json: question 7: ... (question 2 of paragraph 1 of article 3)``, ``at byte 5 of the
line``, ``at column 12``, ``token 2``.

A record is normalized to ``{"id": ..., "fields": {name: text or token list}}`` and validated
against ``cache_builder/schemas/input_record.schema.json``. Bad records (malformed JSON,
invalid UTF-8, missing id, missing field, non-string or empty text, bad token list, duplicate
id, lone surrogates smuggled in by JSON escapes, nesting too deep for the parser, integers too
long to convert) raise
:class:`InputError` naming file, line, field and reason, or with ``on_error="skip"`` go to the
rejects file, one JSON line each. Long tokens are not an error: the model reads the first
48 UTF-8 bytes of each token.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import gzip
import io
import json
import lzma
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import fsspec
import jsonschema
import msgspec
from fsspec.utils import infer_compression

from elmo.schemas import load_schema


class InputError(ValueError):
    """A bad input record; ``str()`` reads ``FILE: UNIT LINE: field FIELD: reason``, e.g.
    ``in.jsonl: line 3: field text: is empty`` or ``dev.json: question 7: ...``.

    ``line`` is ``None`` when the problem has no line (a SQuAD article or paragraph, then
    located in the reason); ``unit`` says what ``line`` counts ("line", or "question" in SQuAD
    JSON), from 1; the ``field FIELD:`` part is there when a field is to blame.
    """

    def __init__(self, path: str | Path, line: int | None, reason: str, field: str | None = None,
                 unit: str = "line"):
        self.path = str(path)
        self.line = line
        self.field = field
        self.reason = reason
        self.unit = unit
        location = self.path if line is None else f"{self.path}: {unit} {line}"
        super().__init__(f"{location}: " + (f"field {field}: " if field is not None else "") + reason)

    def counted_in(self, unit: str) -> InputError:
        """This error with its line counted in ``unit``."""
        return self if unit == self.unit else InputError(self.path, self.line, self.reason, self.field, unit)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.line, self.reason, self.field, self.unit)


@dataclass(frozen=True)
class Record:
    """One valid input record.

    Attributes:
        doc_id: the document id, unique in its file.
        fields: field name → raw text, or a pre-tokenized token list (embedded as is).
        line: 1-based line (JSONL, text) or question number (SQuAD JSON) in the source.
        source: the input file's path.
    """

    doc_id: str
    fields: dict[str, str | list[str]]
    line: int
    source: str


@dataclass
class ReadStats:
    """Counts filled in while a :func:`read_records` iterator runs."""

    records: int = 0  # valid records yielded
    rejected: int = 0  # bad records written to the rejects file


# Fields embedded when none are given, decided on a file's first record: the first layout
# whose keys are all in the record wins.
DEFAULT_LAYOUTS: tuple[tuple[str, ...], ...] = (("context", "question"), ("tokens",), ("text",))
ON_ERROR = ("raise", "skip")


class _Item(NamedTuple):
    """What a format reader found at one place of the file, before validation."""

    line: int | None  # 1-based line (JSONL, text) or question number (SQuAD)
    raw: str | None  # the record as read, for the rejects file; None: ``value`` written as JSON
    value: Any  # the parsed record: a dict when it could be parsed
    problem: str | None = None  # why it could not be parsed
    where: str = ""  # place in a nested file, e.g. "question 2 of paragraph 3 of article 1"

    def as_read(self) -> str:
        """The record as the rejects file shows it (a SQuAD question is written out only when it
        is rejected: most never are)."""
        return self.raw if self.raw is not None else _dump(self.value)


@contextlib.contextmanager
def _decompressing(name: str) -> Iterator[None]:
    """Damaged or truncated compressed input, met while reading, as an :class:`InputError`."""
    try:
        yield
    except (EOFError, gzip.BadGzipFile, zlib.error, lzma.LZMAError) as e:
        raise InputError(name, None, f"damaged compressed data ({e})") from None


_LONE_CR = re.compile(rb"\r(?!\n)")


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of ``chunks`` (a binary stream's lines, each read up to its ``\\n``), each with
    its ending: ``\\n``, ``\\r\\n`` and a lone ``\\r`` (classic Mac OS files) each end a line."""
    for chunk in chunks:
        if b"\r" not in chunk:
            yield chunk
            continue
        start = 0
        for lone in _LONE_CR.finditer(chunk):
            yield chunk[start:lone.end()]
            start = lone.end()
        if start < len(chunk):
            yield chunk[start:]


def _decoded_lines(stream: Iterable[bytes], start_of_file: bool, name: str) -> Iterator[_Item]:
    """Every line of a binary stream (see :func:`split_lines`), decoded alone; the value is the
    text without its line ending, or ``None`` with a problem when the line is not valid UTF-8.
    Lines are numbered from 1 within the stream; a byte-order mark is dropped only at the start
    of a file."""
    with _decompressing(name):
        for number, data in enumerate(split_lines(stream), start=1):
            data = data.removesuffix(b"\n").removesuffix(b"\r")
            try:
                text = data.decode("utf-8-sig" if number == 1 and start_of_file else "utf-8")
            except UnicodeDecodeError as e:
                yield _Item(number, data.decode("utf-8", errors="replace"), None,
                            f"invalid UTF-8 at byte {e.start + 1} of the line")
                continue
            yield _Item(number, text, text)


# msgspec parses a SQuAD-like record about 3x faster than json (orjson as fast, but it turns
# integers past 64 bits into floats, so a long integer id would change). msgspec is stricter
# (no NaN, no number out of range, no lone surrogate escape, no deep nesting), and what it
# refuses goes through json again, whose value or message is the one given; on every document
# both read, they give the same value (both keep a repeated key's last).
_DECODER = msgspec.json.Decoder()


def parse_json(text: str | bytes) -> Any:
    """``json.loads``, with every way it fails on bad data a :class:`ValueError`: malformed JSON
    (a :class:`json.JSONDecodeError`), nesting deeper than the parser's recursion limit, and
    integers longer than Python converts (``sys.get_int_max_str_digits``)."""
    try:
        return _DECODER.decode(text)
    except (msgspec.MsgspecError, RecursionError):
        pass
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise ValueError("JSON nested too deeply to parse (about 1000 levels at most)") from None
    except ValueError as e:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise ValueError(f"unreadable JSON number: {str(e).split(';')[0]}") from None


def json_problem(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"malformed JSON: {error.msg} at column {error.colno}"
    return str(error)


def _read_jsonl(stream: BinaryIO, name: str, start_of_file: bool) -> Iterator[_Item]:
    for item in _decoded_lines(stream, start_of_file, name):
        if item.problem is not None:
            yield item
        elif item.value.strip():
            try:
                yield item._replace(value=parse_json(item.value))
            except ValueError as e:
                yield item._replace(value=None, problem=json_problem(e))


def _read_text(stream: BinaryIO, name: str, start_of_file: bool) -> Iterator[_Item]:
    """Each line a document, blank lines skipped; its id (the 0-based line index) is set by
    :func:`text_id` once the line's number in the whole file is known."""
    for item in _decoded_lines(stream, start_of_file, name):
        if item.problem is not None:
            yield item
        elif item.value.strip():
            yield item._replace(value={"id": text_id(item.line), "text": item.value})


def blank_lines(location: str, storage_options: dict[str, Any] | None = None) -> list[int]:
    """The 1-based numbers of the blank (empty or whitespace-only) lines of a text file, which the
    text reader skips."""
    with open_input(location, storage_options) as stream:
        return [item.line for item in _decoded_lines(stream, True, location)
                if item.value is not None and not item.value.strip()]


def text_id(line: int) -> str:
    """The id of a plain-text document: its 0-based line index, the key AllenNLP's ``elmo``
    command gives it."""
    return str(line - 1)


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _dump(value: Any) -> str:
    """One line of JSON in valid UTF-8: lone surrogates escaped, a value too deep to write noted."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except RecursionError:
        return json.dumps("<nested too deeply to write>")
    return json.dumps(value) if _LONE_SURROGATE.search(text) else text


def _member_list(parent: Any, key: str) -> tuple[list[Any], str | None]:
    """``parent[key]`` when it is a list, else ``[]`` and what is wrong."""
    if not isinstance(parent, dict):
        return [], "is not a JSON object"
    if not isinstance(parent.get(key), list):
        return [], f"has no {key!r} list"
    return parent[key], None


def squad_place(article: int, paragraph: int | None = None, question: int | None = None) -> str:
    """A place in SQuAD JSON from its 0-based list indices, in words, counted from 1:
    ``squad_place(0, 2, 1)`` is "question 2 of paragraph 3 of article 1"."""
    parts = [f"{name} {index + 1}" for name, index in (("question", question), ("paragraph", paragraph),
                                                        ("article", article)) if index is not None]
    return " of ".join(parts)


def _read_squad(stream: BinaryIO, path: str, start_of_file: bool) -> Iterator[_Item]:
    """One item per question. A file that is not valid UTF-8 or JSON, or has no ``data`` list,
    raises :class:`InputError` whatever ``on_error`` says: nothing in it can be read."""
    with _decompressing(path):
        data = stream.read()
    try:
        document = parse_json(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        line_start = data.rfind(b"\n", 0, e.start) + 1
        raise InputError(path, data.count(b"\n", 0, e.start) + 1,
                         f"invalid UTF-8 at byte {e.start - line_start + 1} of the line") from None
    except json.JSONDecodeError as e:
        hint = " (JSON Lines? pass input_format='jsonl')" if e.msg == "Extra data" else ""
        raise InputError(path, e.lineno, f"malformed JSON: {e.msg} at column {e.colno}{hint}") from None
    except ValueError as e:
        raise InputError(path, None, str(e)) from None
    articles, problem = _member_list(document, "data")
    if problem is not None:
        raise InputError(path, None, f"not SQuAD JSON: the top level {problem}")
    number = 0
    for a, article in enumerate(articles):
        paragraphs, problem = _member_list(article, "paragraphs")
        if problem is not None:
            yield _Item(None, _dump(article), None, f"article {problem}", squad_place(a))
        for p, paragraph in enumerate(paragraphs):
            questions, problem = _member_list(paragraph, "qas")
            if problem is not None:
                yield _Item(None, _dump(paragraph), None, f"paragraph {problem}", squad_place(a, p))
            for q, qa in enumerate(questions):
                number += 1
                record = qa
                if isinstance(qa, dict):
                    record = {key: source[key] for key, source in
                              (("id", qa), ("context", paragraph), ("question", qa)) if key in source}
                yield _Item(number, None, record, where=squad_place(a, p, q))


class Format(NamedTuple):
    """An input format: its reader (binary stream, name for messages, whether the stream starts
    at the file's start) and what :attr:`Record.line` counts."""

    read: Callable[[BinaryIO, str, bool], Iterator[_Item]]
    unit: str
    by_lines: bool  # one record per line: a byte range of whole lines can be read on its own


READERS: dict[str, Format] = {
    "jsonl": Format(_read_jsonl, "line", True),
    "squad": Format(_read_squad, "question", False),
    "text": Format(_read_text, "line", True),
}
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "text"}
_SNIFF_BYTES = 1 << 20


def is_stream(location: str) -> bool:
    """Whether the input ``location`` is read once, by this process: a pipe (process substitution
    ``<(...)``), a terminal or another device, or a name of one of this process's descriptors
    (``/dev/stdin``, ``/dev/fd/N``, which another process would resolve to its own). A URL or a
    local regular file is not: it can be reopened, also by other processes.

    Raises:
        FileNotFoundError: a local path that does not exist.
        IsADirectoryError: a local directory.
    """
    if "://" in location:
        return False
    try:
        mode = os.stat(location).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"input file not found: {location}") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{location} is a directory, not an input file")
    return not stat.S_ISREG(mode) or os.path.abspath(location).startswith(("/dev/", "/proc/"))


def open_input(location: str, storage_options: dict[str, Any] | None = None) -> BinaryIO:
    """A local path or fsspec URL opened for binary reading; ``.gz``/``.bz2``/``.xz``/``.zst``
    files are decompressed as they stream."""
    return fsspec.open(location, "rb", compression="infer", **(storage_options or {})).open()


def _suffix(location: str) -> str:
    """The format extension of ``location``, after any compression extension."""
    name = location.lower().rsplit("/", 1)[-1]
    stem, dot, ext = name.rpartition(".")
    if dot and infer_compression(name) is not None:
        stem, dot, ext = stem.rpartition(".")
    return f".{ext}" if dot else ""


def detect_format(location: str | Path, storage_options: dict[str, Any] | None = None) -> str:
    """The input format of ``location``: by extension (:data:`EXTENSIONS`, after any
    compression extension), else by content.

    Content rules (``.json`` and unknown extensions): a file not starting with ``{`` is
    text; a file whose first line is a complete JSON object is SQuAD JSON if that object has a
    ``data`` key and JSONL otherwise; a JSON document spread over lines (or whose single line
    is longer than 1 MiB) is SQuAD JSON.
    """
    location = str(location)
    if _suffix(location) in EXTENSIONS:
        return EXTENSIONS[_suffix(location)]
    with open_input(location, storage_options) as f:
        head = f.read(_SNIFF_BYTES).removeprefix(codecs.BOM_UTF8).lstrip()
    if not head.startswith(b"{"):
        return "text"
    first = next(split_lines(io.BytesIO(head)))
    if first == head and len(head) == _SNIFF_BYTES:
        return "squad"
    try:
        obj = parse_json(first.decode("utf-8", errors="replace"))
    except json.JSONDecodeError:
        return "squad"
    except ValueError:  # one complete but unreadable object: a JSON Lines record the reader reports
        return "jsonl"
    return "squad" if isinstance(obj, dict) and "data" in obj else "jsonl"


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(load_schema("input_record", "cache_builder.schemas"))


_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number",
               bool: "boolean", type(None): "null"}
_TYPE_WORDS = {"string": "a string", "array": "a token list", "object": "an object"}


def _expected_types(error: jsonschema.ValidationError) -> str:
    expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
    return " or ".join(_TYPE_WORDS.get(t, t) for t in expected)


def _pattern_reason(error: jsonschema.ValidationError) -> str:
    """The schema's string patterns ask for a non-whitespace character and no lone surrogate."""
    if _LONE_SURROGATE.search(error.instance):
        return "holds a lone surrogate (a \\ud800-\\udfff escape), which is not valid Unicode"
    return "is empty" if not error.instance else "is whitespace only"


# Schema keyword that failed → reason, for messages that name the problem plainly.
_SCHEMA_REASONS: dict[str, Callable[[jsonschema.ValidationError], str]] = {
    "type": lambda e: f"must be {_expected_types(e)}, got {_JSON_TYPES.get(type(e.instance), 'a value')}",
    "pattern": _pattern_reason,
    "minItems": lambda e: "is an empty token list",
}


def _valid_text(value: Any) -> bool:
    """``value`` is a string the schema's pattern accepts: a non-whitespace character (as
    ``\\S`` means it: ``str.isspace``) and no lone surrogate."""
    return (isinstance(value, str) and not value.isspace() and value != ""
            and (value.isascii() or not _LONE_SURROGATE.search(value)))


def _surely_valid(doc_id: Any, fields: dict[str, Any]) -> bool:
    """Whether the record ``{"id": doc_id, "fields": fields}`` passes the input record schema,
    checked by hand, a tenth of what jsonschema takes; False sends it to jsonschema, which
    finds what is wrong (or accepts it)."""
    if not isinstance(doc_id, str) or doc_id == "" or not (doc_id.isascii() or not _LONE_SURROGATE.search(doc_id)):
        return False
    for value in fields.values():
        if not (_valid_text(value) or isinstance(value, list) and value and all(map(_valid_text, value))):
            return False
    return bool(fields)


def _schema_problem(instance: dict[str, Any], id_field: str) -> tuple[str, str | None] | None:
    """The first violation of the input record schema as ``(reason, field)``, or ``None``."""
    if _surely_valid(instance["id"], instance["fields"]):
        return None
    error = min(_validator().iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)),
                default=None)
    if error is None:
        return None
    path = list(error.absolute_path)
    reason = _SCHEMA_REASONS.get(error.validator, lambda e: e.message)(error)
    if len(path) > 2:
        reason = f"token {path[2] + 1} {reason}"
    field = id_field if path[:1] == ["id"] else (path[1] if len(path) > 1 else None)
    return reason, field


def infer_fields(record: dict[str, Any], path: str, line: int | None) -> tuple[str, ...]:
    """The fields to embed when none are given: the first of :data:`DEFAULT_LAYOUTS` whose keys
    are all in ``record`` (a file's first record)."""
    for layout in DEFAULT_LAYOUTS:
        if all(key in record for key in layout):
            return layout
    expected = "; ".join(" + ".join(layout) for layout in DEFAULT_LAYOUTS)
    raise InputError(path, line, f"cannot tell which fields to embed: the first record has keys "
                                 f"{sorted(record)}, none of the default layouts ({expected}); pass fields")


def validate(item: _Item, path: str, id_field: str, fields: Sequence[str]) -> Record:
    """The item as a valid record, or :class:`InputError` naming ``path``, line and field."""

    def fail(reason: str, field: str | None = None) -> InputError:
        where = f" ({item.where})" if item.where else ""
        return InputError(path, item.line, reason + where, field)

    if item.problem is not None:
        raise fail(item.problem)
    if not isinstance(item.value, dict):
        raise fail(f"record is not a JSON object but {_JSON_TYPES.get(type(item.value), 'a value')}")
    if id_field not in item.value:
        raise fail("missing id field", id_field)
    for name in fields:
        if name not in item.value:
            raise fail("missing", name)
    doc_id = item.value[id_field]
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    instance = {"id": doc_id, "fields": {name: item.value[name] for name in fields}}
    problem = _schema_problem(instance, id_field)
    if problem is not None:
        raise fail(*problem)
    return Record(doc_id, instance["fields"], item.line, path)


def default_rejects_path(path: str | Path) -> Path:
    """Where ``on_error="skip"`` writes bad records by default: ``<input>.rejects.jsonl``."""
    return Path(f"{path}.rejects.jsonl")


class RecordLog:
    """What holds across a whole input, in input order: ids are unique (the first record of an
    id is kept, later ones are bad records), and each bad record either raises or goes to the
    rejects file.

    Args:
        unit: what a record's line counts ("line", "question"), for messages.
        id_field: the records' id key, for messages.
        on_error: "raise" or "skip".
        rejects_path: where skipped records go, one JSON line each ``{"source", "line",
            "field", "reason", "raw"}``; rewritten from scratch by every read.
        stats: counts of accepted and rejected records.
    """

    def __init__(self, unit: str, id_field: str, on_error: str, rejects_path: str | Path | None,
                 stats: ReadStats):
        self.unit, self.id_field, self.on_error, self.stats = unit, id_field, on_error, stats
        self._first_line: dict[str, int] = {}
        self._rejects = fsspec.open(str(rejects_path), "w", encoding="utf-8").open() if rejects_path else None

    def accept(self, record: Record, item: _Item) -> bool:
        """Whether ``record`` (read as ``item``) is kept (its id is new); a duplicate is
        :meth:`reject` ed."""
        first = self._first_line.get(record.doc_id)
        if first is not None:
            self.reject(InputError(record.source, record.line, f"duplicate id {record.doc_id!r}, first "
                                   f"seen at {self.unit} {first}", self.id_field), item.as_read())
            return False
        self._first_line[record.doc_id] = record.line
        self.stats.records += 1
        return True

    def reject(self, error: InputError, raw: str) -> None:
        """Raise ``error`` (its line counted in this input's unit), or with ``on_error="skip"``
        write it to the rejects file."""
        if self._rejects is None:
            raise error.counted_in(self.unit)
        self._rejects.write(_dump({"source": error.path, "line": error.line, "field": error.field,
                                   "reason": error.reason, "raw": raw}) + "\n")
        self.stats.rejected += 1

    def close(self) -> None:
        if self._rejects is not None:
            self._rejects.close()


def check_read_options(on_error: str, fields: Sequence[str] | None, rejects_path: str | Path | None) -> None:
    """Option errors, raised before anything is read."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    if rejects_path is not None and on_error != "skip":
        raise ValueError("rejects_path is only used with on_error='skip'")
    if fields is not None and (isinstance(fields, str) or not fields or len(set(fields)) != len(fields)
                               or not all(isinstance(name, str) for name in fields)):
        raise ValueError(f"fields must be a non-empty list of distinct names, got {fields!r}")


def read_records(
    path: str | Path,
    *,
    input_format: str = "auto",
    id_field: str | None = None,
    fields: Sequence[str] | None = None,
    on_error: str = "raise",
    rejects_path: str | Path | None = None,
    stats: ReadStats | None = None,
) -> Iterator[Record]:
    """The valid records of one input file, lazily, in file order (see the module doc).

    Args:
        path: the input file (a local path or an fsspec URL; compressed files stream).
        input_format: ``"auto"`` (:func:`detect_format`) or a key of :data:`READERS`.
        id_field: key of the id in each record (default ``"id"``); text and SQuAD JSON
            records carry their id under ``"id"``.
        fields: keys to embed, in this order; default: :data:`DEFAULT_LAYOUTS`.
        on_error: ``"raise"``: the first bad record raises :class:`InputError`. ``"skip"``:
            each bad record goes to ``rejects_path`` (see :class:`RecordLog`) and reading goes on.
        rejects_path: default :func:`default_rejects_path`; only with ``on_error="skip"``.
        stats: counts of yielded and rejected records, updated while iterating.

    Option errors (unknown format or ``on_error``, bad ``fields``, missing file) raise here,
    before iteration; bad records raise (or are rejected) when iteration reaches them.
    """
    check_read_options(on_error, fields, rejects_path)
    location = str(path)
    if is_stream(location):
        raise ValueError(f"{location} is a pipe or device, which read_records does not read (it may open its "
                         "input twice): save it to a file, or give it to precompute")
    input_format = detect_format(location) if input_format == "auto" else input_format
    if input_format not in READERS:
        raise ValueError(f"unknown input format {input_format!r}; known: auto, {', '.join(READERS)}")
    if on_error == "skip" and rejects_path is None:
        rejects_path = default_rejects_path(location)
    if rejects_path is not None and "://" not in location and Path(rejects_path).resolve() == Path(location).resolve():
        raise ValueError(f"the rejects file would overwrite the input {location}")
    return _records(location, READERS[input_format], id_field or "id",
                    tuple(fields) if fields is not None else None,
                    RecordLog(READERS[input_format].unit, id_field or "id", on_error, rejects_path,
                              stats if stats is not None else ReadStats()))


def _records(location: str, fmt: Format, id_field: str, fields: tuple[str, ...] | None,
             log: RecordLog) -> Iterator[Record]:
    try:
        with open_input(location) as stream:
            for item in fmt.read(stream, location, True):
                if fields is None and isinstance(item.value, dict):
                    fields = infer_fields(item.value, location, item.line)
                try:  # fields is set from the first dict on; only dicts get as far as the field checks
                    record = validate(item, location, id_field, fields or ())
                except InputError as error:
                    log.reject(error, item.as_read())
                    continue
                if log.accept(record, item):
                    yield record
    finally:
        log.close()
