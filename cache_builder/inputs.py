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
  (``"0"``, ``"1"``...): the keys of AllenNLP's ``elmo`` command. A blank line is an empty
  document, hence a bad record, as in AllenNLP; ids of the other lines do not move.

JSONL and text files stream: they are read in binary one line at a time and each line is
decoded on its own, so an invalid UTF-8 byte sequence is reported with its line number and,
under ``on_error="skip"``, costs only that line. A line longer than :data:`MAX_LINE_BYTES` is a
bad record too (a file with ``\r`` line endings reads as one line), never read whole.

Sources (:func:`open_input`): a path; a gzip-compressed file (``*.gz``, decompressed while it
is read; the format comes from the name without ``.gz``); or ``-``, standard input.

A record is normalized to ``{"id": ..., "fields": {name: text or token list}}`` and validated
against ``cache_builder/schemas/input_record.schema.json``. Bad records (malformed JSON, invalid UTF-8,
missing id, missing field, non-string or empty text, bad token list, duplicate id, lone
surrogates smuggled in by JSON escapes, nesting too deep for the parser, integers too long to
convert, over-long lines) raise
:class:`InputError` naming file, line, field and reason, or with ``on_error="skip"`` go to the
rejects file, one JSON line each. Long tokens are not an error: the model reads the first
48 UTF-8 bytes of each token.
"""

from __future__ import annotations

import atexit
import codecs
import contextlib
import functools
import gzip
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import jsonschema

from elmo.schemas import load_schema


class InputError(ValueError):
    """A bad input record; ``str()`` reads ``FILE:LINE: field FIELD: reason``.

    ``line`` is ``None`` when the problem has no line (a SQuAD article or paragraph, then
    located in the reason); the ``field FIELD:`` part is there when a field is to blame.
    """

    def __init__(self, path: str | Path, line: int | None, reason: str, field: str | None = None):
        self.path = "<stdin>" if str(path) == STDIN else str(path)
        self.line = line
        self.field = field
        self.reason = reason
        location = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{location}: " + (f"field {field}: " if field is not None else "") + reason)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.line, self.reason, self.field)


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
    raw: str  # the record as read, for the rejects file
    value: Any  # the parsed record: a dict when it could be parsed
    problem: str | None = None  # why it could not be parsed
    where: str = ""  # location in a nested file, e.g. "data[0].paragraphs[2].qas[1]"


STDIN = "-"
MAX_LINE_BYTES = 1 << 26  # 64 MiB: far beyond a real record, far below what breaks the machine


@functools.cache
def _stdin_copy() -> Path:
    """Standard input copied once to a temporary file (removed at exit): a run reads its input
    more than once (format, fingerprint, records), and a pipe can be read only once."""
    with tempfile.NamedTemporaryFile(prefix="elmo-cache-stdin-", delete=False) as f:
        shutil.copyfileobj(sys.stdin.buffer, f, 1 << 20)
    atexit.register(os.unlink, f.name)
    return Path(f.name)


def _file_of(path: str | Path) -> Path:
    """The file holding the input's bytes as stored (compressed or not)."""
    return _stdin_copy() if str(path) == STDIN else Path(path)


def _is_gzip(path: str | Path) -> bool:
    return str(path).lower().endswith(".gz")


@contextlib.contextmanager
def open_input(path: str | Path) -> Iterator[IO[bytes]]:
    """The input's bytes as a binary stream: ``-`` is standard input, ``*.gz`` is decompressed
    while it is read (streaming: memory does not grow with the file).

    Raises:
        InputError: compressed data that is damaged or cut short, while it is read.
    """
    opener = gzip.open if _is_gzip(path) else open
    with opener(_file_of(path), "rb") as f:
        try:
            yield f
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise InputError(path, None, f"damaged gzip data ({e})") from None


def _lines(f: IO[bytes]) -> Iterator[bytes | None]:
    """Every line of a binary stream, without reading more than :data:`MAX_LINE_BYTES` of one:
    a longer line is skipped to its end and comes as ``None``."""
    while line := f.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield line


def _decoded_lines(path: Path) -> Iterator[_Item]:
    """Every line of the input, read in binary and decoded alone; the value is the text without
    its line ending, or ``None`` with a problem when the line is not valid UTF-8 or too long."""
    with open_input(path) as f:
        for number, data in enumerate(_lines(f), start=1):
            if data is None:
                yield _Item(number, "", None, f"line longer than {MAX_LINE_BYTES} bytes "
                                              "(a file with \\r line endings?)")
                continue
            data = data.removesuffix(b"\n").removesuffix(b"\r")
            try:
                text = data.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield _Item(number, data.decode("utf-8", errors="replace"), None,
                            f"invalid UTF-8 at byte {e.start} of the line")
                continue
            yield _Item(number, text, text)


def _parse_json(text: str) -> Any:
    """``json.loads``, with every way it can fail on bad data turned into a :class:`ValueError`:
    malformed JSON (a :class:`json.JSONDecodeError`), nesting deeper than the parser's
    recursion limit, and integers longer than Python converts (``sys.get_int_max_str_digits``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise ValueError("JSON nested too deeply to parse (about 1000 levels at most)") from None
    except ValueError as e:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise ValueError(f"unreadable JSON number: {str(e).split(';')[0]}") from None


def _json_problem(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"malformed JSON: {error.msg} at column {error.colno}"
    return str(error)


def _read_jsonl(path: Path) -> Iterator[_Item]:
    for item in _decoded_lines(path):
        if item.problem is not None:
            yield item
        elif item.value.strip():
            try:
                yield item._replace(value=_parse_json(item.value))
            except ValueError as e:
                yield item._replace(value=None, problem=_json_problem(e))


def _read_text(path: Path) -> Iterator[_Item]:
    for item in _decoded_lines(path):
        if item.problem is not None:
            yield item
        else:
            yield item._replace(value={"id": str(item.line - 1), "text": item.value})


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


def _read_squad(path: Path) -> Iterator[_Item]:
    """One item per question. A file that is not valid UTF-8 or JSON, or has no ``data`` list,
    raises :class:`InputError` whatever ``on_error`` says: nothing in it can be read."""
    with open_input(path) as f:
        data = f.read()
    try:
        document = _parse_json(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        line_start = data.rfind(b"\n", 0, e.start) + 1
        raise InputError(path, data.count(b"\n", 0, e.start) + 1,
                         f"invalid UTF-8 at byte {e.start - line_start} of the line") from None
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
            yield _Item(None, _dump(article), None, f"article {problem}", f"data[{a}]")
        for p, paragraph in enumerate(paragraphs):
            questions, problem = _member_list(paragraph, "qas")
            if problem is not None:
                yield _Item(None, _dump(paragraph), None, f"paragraph {problem}",
                            f"data[{a}].paragraphs[{p}]")
            for q, qa in enumerate(questions):
                number += 1
                record = qa
                if isinstance(qa, dict):
                    record = {key: source[key] for key, source in
                              (("id", qa), ("context", paragraph), ("question", qa)) if key in source}
                yield _Item(number, _dump(record), record, where=f"data[{a}].paragraphs[{p}].qas[{q}]")


class _Format(NamedTuple):
    read: Callable[[Path], Iterator[_Item]]
    unit: str  # what Record.line counts, for messages


READERS: dict[str, _Format] = {
    "jsonl": _Format(_read_jsonl, "line"),
    "squad": _Format(_read_squad, "question"),
    "text": _Format(_read_text, "line"),
}
EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "text"}
_SNIFF_BYTES = 1 << 20


def detect_format(path: str | Path) -> str:
    """The input format of ``path``: by extension (:data:`EXTENSIONS`, after a ``.gz``), else
    by content.

    Content rules (``.json`` and unknown extensions): a file not starting with ``{`` is
    text; a file whose first line is a complete JSON object is SQuAD JSON if that object has a
    ``data`` key and JSONL otherwise; a JSON document spread over lines (or whose single line
    is longer than 1 MiB) is SQuAD JSON.
    """
    suffix = Path(str(path).removesuffix(".gz").removesuffix(".GZ")).suffix.lower()
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    with open_input(path) as f:
        head = f.read(_SNIFF_BYTES).removeprefix(codecs.BOM_UTF8).lstrip()
    if not head.startswith(b"{"):
        return "text"
    first, newline, _ = head.partition(b"\n")
    if not newline and len(head) == _SNIFF_BYTES:
        return "squad"
    try:
        obj = _parse_json(first.decode("utf-8", errors="replace"))
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


def _schema_problem(instance: dict[str, Any], id_field: str) -> tuple[str, str | None] | None:
    """The first violation of the input record schema as ``(reason, field)``, or ``None``."""
    error = min(_validator().iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)),
                default=None)
    if error is None:
        return None
    path = list(error.absolute_path)
    reason = _SCHEMA_REASONS.get(error.validator, lambda e: e.message)(error)
    if len(path) > 2:
        reason = f"token {path[2]} {reason}"
    field = id_field if path[:1] == ["id"] else (path[1] if len(path) > 1 else None)
    return reason, field


def _infer_fields(record: dict[str, Any], path: Path, line: int | None) -> tuple[str, ...]:
    for layout in DEFAULT_LAYOUTS:
        if all(key in record for key in layout):
            return layout
    expected = "; ".join(" + ".join(layout) for layout in DEFAULT_LAYOUTS)
    raise InputError(path, line, f"cannot tell which fields to embed: the first record has keys "
                                 f"{sorted(record)}, none of the default layouts ({expected}); pass fields")


def _to_record(item: _Item, path: Path, id_field: str, fields: Sequence[str]) -> Record:
    """The item as a valid record, or :class:`InputError`."""

    def fail(reason: str, field: str | None = None) -> InputError:
        where = f" (at {item.where})" if item.where else ""
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
    return Record(doc_id, instance["fields"], item.line, str(path))


def default_rejects_path(path: str | Path) -> Path:
    """Where ``on_error="skip"`` writes bad records by default: ``<input>.rejects.jsonl``
    (``stdin.rejects.jsonl`` for standard input)."""
    return Path(f"{'stdin' if str(path) == STDIN else path}.rejects.jsonl")


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
    """The valid records of an input file, lazily, in file order (see the module doc).

    Args:
        path: the input file (``*.gz`` read through gzip), or ``-`` for standard input.
        input_format: ``"auto"`` (:func:`detect_format`) or a key of :data:`READERS`.
        id_field: key of the id in each record (default ``"id"``); text and SQuAD JSON
            records carry their id under ``"id"``.
        fields: keys to embed, in this order; default: :data:`DEFAULT_LAYOUTS`.
        on_error: ``"raise"``: the first bad record raises :class:`InputError`. ``"skip"``:
            each bad record is written to ``rejects_path`` as one JSON line
            ``{"source", "line", "field", "reason", "raw"}`` and reading goes on. The rejects
            file is rewritten from scratch by every read.
        rejects_path: default :func:`default_rejects_path`; only with ``on_error="skip"``.
        stats: counts of yielded and rejected records, updated while iterating.

    Option errors (unknown format or ``on_error``, bad ``fields``, missing file) raise here,
    before iteration; bad records raise (or are rejected) when iteration reaches them. A
    record of the first duplicate id is kept; later ones are bad records.
    """
    path = Path(path)
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    if rejects_path is not None and on_error != "skip":
        raise ValueError("rejects_path is only used with on_error='skip'")
    if fields is not None and (isinstance(fields, str) or not fields or len(set(fields)) != len(fields)
                               or not all(isinstance(name, str) for name in fields)):
        raise ValueError(f"fields must be a non-empty list of distinct names, got {fields!r}")
    if str(path) != STDIN and not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    input_format = detect_format(path) if input_format == "auto" else input_format
    if input_format not in READERS:
        raise ValueError(f"unknown input format {input_format!r}; known: auto, {', '.join(READERS)}")
    if on_error == "skip" and rejects_path is None:
        rejects_path = default_rejects_path(path)
    if rejects_path is not None and Path(rejects_path).resolve() == path.resolve():
        raise ValueError(f"the rejects file would overwrite the input {path}")
    return _records(path, READERS[input_format], id_field or "id",
                    tuple(fields) if fields is not None else None,
                    Path(rejects_path) if rejects_path is not None else None,
                    stats if stats is not None else ReadStats())


def _records(path: Path, fmt: _Format, id_field: str, fields: tuple[str, ...] | None,
             rejects_path: Path | None, stats: ReadStats) -> Iterator[Record]:
    first_line: dict[str, int] = {}  # doc id -> line of its record, to report duplicates
    with contextlib.ExitStack() as stack:
        rejects = (stack.enter_context(open(rejects_path, "w", encoding="utf-8", buffering=1))
                   if rejects_path is not None else None)
        for item in fmt.read(path):
            if fields is None and isinstance(item.value, dict):
                fields = _infer_fields(item.value, path, item.line)
            try:  # fields is set from the first dict on; only dicts get as far as the field checks
                record = _to_record(item, path, id_field, fields or ())
                if record.doc_id in first_line:
                    raise InputError(path, item.line, f"duplicate id {record.doc_id!r}, first seen at "
                                                      f"{fmt.unit} {first_line[record.doc_id]}", id_field)
            except InputError as error:
                if rejects is None:
                    raise
                rejects.write(_dump({"source": error.path, "line": error.line, "field": error.field,
                                     "reason": error.reason, "raw": item.raw}) + "\n")
                stats.rejected += 1
                continue
            first_line[record.doc_id] = record.line
            stats.records += 1
            yield record


def input_fingerprint(path: str | Path, block_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of the file's bytes as stored (compressed or not), read in blocks of
    ``block_size``."""
    digest = hashlib.sha256()
    with open(_file_of(path), "rb") as f:
        while block := f.read(block_size):
            digest.update(block)
    return digest.hexdigest()
