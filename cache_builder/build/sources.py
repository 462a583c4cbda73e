"""Where records come from, cut into parts that planning tasks read on their own.

- A file or fsspec URL holding one record per line (JSONL, plain text), uncompressed: byte
  ranges of about ``part_bytes``, each a part; a line belongs to the part its first byte lies
  in, so the parts cover every line exactly once, whichever process reads them.
- A SQuAD JSON file, a compressed file (``.gz``, ``.bz2``, ``.xz``, ``.zst``): one part, streamed.
- Standard input (``-``) and Python iterables of records (dicts) or texts: one part, read in
  the driver's process (they cannot be reopened elsewhere).

Each part reports a SHA-256 digest of exactly what it read; :func:`fingerprint` combines them
into the input's fingerprint, so the manifest describes what was read, not what the file held
before or after.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import fsspec
from fsspec.utils import infer_compression

from cache_builder.build.inputs import (
    READERS,
    Format,
    _Item,
    detect_format,
    infer_fields,
    is_stream,
    open_input,
    split_lines,
)


@dataclass(frozen=True)
class Part:
    """Bytes ``[start, end)`` of the source (the lines starting there); ``end`` None: to the end."""

    number: int
    start: int = 0
    end: int | None = None


class _HashingStream:
    """The lines of ``stream`` that start in ``[start, end)`` (or, with :meth:`read`, all of it),
    hashed as they are read, with each line's byte offset."""

    def __init__(self, stream: BinaryIO, start: int = 0, end: int | None = None):
        self.digest = hashlib.sha256()
        self.line_starts: list[int] = []
        self._stream, self._end = stream, end
        if start > 0:  # the line holding byte start - 1 belongs to the previous part
            stream.seek(start - 1)
            if stream.read(1) != b"\n":
                stream.readline()
        self._position = stream.tell() if start > 0 else 0

    def __iter__(self) -> Iterator[bytes]:
        while self._end is None or self._position < self._end:  # parts are cut after a "\n"
            chunk = self._stream.readline()
            if not chunk:
                return
            self.digest.update(chunk)
            for line in split_lines([chunk]):  # lines a lone "\r" ends belong to the chunk's part
                self.line_starts.append(self._position)
                self._position += len(line)
                yield line

    def read(self) -> bytes:
        data = self._stream.read()
        self.digest.update(data)
        return data


@dataclass
class PartItems:
    """A part's raw items, lines numbered from 1 within the part. Once they are consumed,
    ``digest`` covers what was read and ``line_starts[i]`` is line i + 1's byte offset in the
    source (empty when lines have no offsets)."""

    items: Iterator[_Item]
    digest: Any
    line_starts: list[int]


class _Source:
    """What every source has: ``name`` (messages, manifest), ``format`` (a key of
    :data:`cache_builder.build.inputs.READERS`) and whether its parts can be read in another process."""

    name: str
    format: str
    shippable: bool = False

    @property
    def reader(self) -> Format:
        return READERS[self.format]

    @property
    def unit(self) -> str:
        """What a record's number counts, in messages: the format's unit ("line", "question")."""
        return self.reader.unit

    def parts(self, part_bytes: int) -> list[Part]:
        return [Part(0)]

    def first_record(self) -> tuple[Any, int] | None:
        """The first record that parses as a JSON object, and its line: how JSONL fields are
        inferred."""
        raise NotImplementedError

    def digest(self, part: Part) -> bytes:
        """The SHA-256 digest :meth:`read` reports for ``part``, without parsing it (how a re-run
        checks that its input is the one a store was built from)."""
        read = self.read(part)
        for _ in read.items:
            pass
        return read.digest.digest()


# The user-info part of a URL: "KEY:SECRET@" in s3://KEY:SECRET@bucket/path, also when the secret
# holds a "/" unencoded (AWS secrets often do).
_USER_INFO = re.compile(r"(?<=://)(?:[^/@\s]*@|[^/@\s:]*:[^@\s]*@)")


def refuse_credentials(location: str, role: str) -> None:
    """Refuse a URL that holds credentials (``s3://KEY:SECRET@bucket/...``): they would be recorded
    and printed. ``role`` names it in the message ("input", "output").

    Raises:
        ValueError: ``location`` holds user information before its host.
    """
    if _USER_INFO.search(location):
        raise ValueError(f"the {role} URL {redact_credentials(location)} holds credentials, which would be "
                         "recorded; give them through the environment or the filesystem's config files instead")


def redact_credentials(text: str) -> str:
    """``text`` with the credentials of every URL in it masked (``s3://***@bucket/...``)."""
    return _USER_INFO.sub("***@", text)


def _check_format(input_format: str) -> str:
    if input_format not in READERS:
        raise ValueError(f"unknown input format {input_format!r}; known: auto, {', '.join(READERS)}")
    return input_format


class FileSource(_Source):
    """A local file or fsspec URL.

    Args:
        location: path or URL. Credentials come from the usual environment and config files;
            a URL with a password in it is refused, so none is ever recorded.
        input_format: "auto" or a key of :data:`cache_builder.build.inputs.READERS`.
        storage_options: passed to fsspec.
    """

    shippable = True

    def __init__(self, location: str, input_format: str = "auto", storage_options: dict | None = None):
        refuse_credentials(location, "input")
        if is_stream(location):
            raise ValueError(f"{location} is a pipe or device: open it with open_source, which reads it once")
        self.location, self.storage_options = location, storage_options or {}
        self.format = _check_format(detect_format(location, self.storage_options)
                                    if input_format == "auto" else input_format)
        self.name = location.rstrip("/").rsplit("/", 1)[-1]

    def parts(self, part_bytes: int) -> list[Part]:
        """Byte ranges of about ``part_bytes`` when the format and compression allow it."""
        if not self.reader.by_lines or infer_compression(self.location) is not None:
            return [Part(0)]
        fs, path = fsspec.core.url_to_fs(self.location, **self.storage_options)
        starts = list(range(0, max(fs.size(path), 1), part_bytes))
        return [Part(k, start, starts[k + 1] if k + 1 < len(starts) else None) for k, start in enumerate(starts)]

    def read(self, part: Part) -> PartItems:
        stream = open_input(self.location, self.storage_options)
        hashed = _HashingStream(stream, part.start, part.end)

        def items() -> Iterator[_Item]:
            with stream:
                yield from self.reader.read(hashed, self.location, part.start == 0)

        return PartItems(items(), hashed.digest, hashed.line_starts)

    def digest(self, part: Part) -> bytes:
        with open_input(self.location, self.storage_options) as stream:
            hashed = _HashingStream(stream, part.start, part.end)
            if self.reader.by_lines:
                for _ in hashed:
                    pass
            else:
                hashed.read()
            return hashed.digest.digest()

    def first_record(self) -> tuple[Any, int] | None:
        items = self.read(Part(0)).items
        try:
            return next(((item.value, item.line) for item in items if isinstance(item.value, dict)), None)
        finally:
            items.close()

    def raw_line(self, offset: int) -> str:
        """The line starting at byte ``offset``, as the rejects file records it."""
        with open_input(self.location, self.storage_options) as stream:
            stream.seek(offset)
            line = next(split_lines([stream.readline()]), b"")
            return line.rstrip(b"\r\n").decode("utf-8", errors="replace")


class StdinSource(_Source):
    """Standard input, or another binary stream (``name``: its path in messages): one part, read
    once, in the driver's process."""

    def __init__(self, input_format: str = "auto", stream: BinaryIO | None = None, name: str = "<stdin>"):
        self._stream = stream if stream is not None else sys.stdin.buffer
        if not hasattr(self._stream, "peek"):
            self._stream = io.BufferedReader(self._stream)
        if input_format == "auto":
            input_format = "jsonl" if self._stream.peek(1 << 16).lstrip().startswith(b"{") else "text"
        self.format = _check_format(input_format)
        self.location = self.name = name

    def read(self, part: Part) -> PartItems:
        hashed = _HashingStream(self._stream)
        return PartItems(self.reader.read(hashed, self.name, True), hashed.digest, hashed.line_starts)

    def digest(self, part: Part) -> bytes:
        data = self._stream.read()  # kept, so that the records can still be read after this
        self._stream = io.BufferedReader(io.BytesIO(data))
        return hashlib.sha256(data).digest()

    def first_record(self) -> tuple[Any, int] | None:
        # Read as far as it takes (a first record may be longer than any peek shows), then put
        # what was read back in front of the rest of the stream.
        recorded = _Recorded(self._stream)
        items = self.reader.read(_HashingStream(recorded), self.name, True)
        try:
            return next(((item.value, item.line) for item in items if isinstance(item.value, dict)), None)
        finally:
            items.close()
            self._stream = io.BufferedReader(_Replay(b"".join(recorded.taken), self._stream))


class _Recorded:
    """The reads of a binary stream, with every byte they returned kept in ``taken``."""

    def __init__(self, stream: BinaryIO):
        self._stream, self.taken = stream, []

    def readline(self, size: int = -1) -> bytes:
        line = self._stream.readline(size)
        self.taken.append(line)
        return line

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.taken.append(data)
        return data


class _Replay(io.RawIOBase):
    """``head``, then the rest of ``stream``: a stream read ahead, as if it had not been."""

    def __init__(self, head: bytes, stream: BinaryIO):
        self._head, self._stream = memoryview(head), stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._head:
            return self._stream.readinto(buffer)
        n = min(len(buffer), len(self._head))
        buffer[:n] = self._head[:n]
        self._head = self._head[n:]
        return n


class IterableSource(_Source):
    """A Python iterable of records (dicts, as JSONL lines hold them) or of texts (ids are their
    0-based positions, as for a text file): which, its first element decides."""

    unit = "element"  # records are numbered by their place in the iterable, from 1

    def __init__(self, elements: Iterable[Any]):
        iterator = iter(elements)
        self._first = next(iterator, None)
        self._elements = itertools.chain([] if self._first is None else [self._first], iterator)
        self.format = "text" if isinstance(self._first, str) else "jsonl"
        self.location = self.name = "<texts>" if self.format == "text" else "<records>"

    def read(self, part: Part) -> PartItems:
        digest = hashlib.sha256()

        def items() -> Iterator[_Item]:
            for number, element in enumerate(self._elements, start=1):
                try:
                    raw = json.dumps(element, ensure_ascii=False, sort_keys=True)
                except (TypeError, ValueError, RecursionError) as e:
                    raw = repr(element)[:1000]
                    digest.update(raw.encode("utf-8") + b"\n")
                    yield _Item(number, raw, None, f"not a JSON value: {e}")
                    continue
                digest.update(raw.encode("utf-8") + b"\n")
                if self.format == "jsonl":
                    yield _Item(number, raw, element)
                elif isinstance(element, str):
                    yield _Item(number, raw, {"id": str(number - 1), "text": element})
                else:
                    yield _Item(number, raw, None, "not a text (the first element was one)")

        return PartItems(items(), digest, [])

    def digest(self, part: Part) -> bytes:
        self._elements = list(self._elements)  # kept, so that the records can still be read after this
        return super().digest(part)

    def first_record(self) -> tuple[Any, int] | None:
        return (self._first, 1) if isinstance(self._first, dict) else None


Source = FileSource | StdinSource | IterableSource


def open_source(source: Any, input_format: str = "auto", storage_options: dict | None = None) -> Source:
    """A path, URL, ``"-"`` (standard input), or an iterable of records or texts, as a source. A
    local pipe or device (``/dev/stdin``, ``/dev/fd/N``, process substitution) is read once, like
    standard input (:func:`cache_builder.build.inputs.is_stream`); a directory is refused."""
    if isinstance(source, (str, os.PathLike)):
        location = os.fspath(source)
        if location == "-":
            return StdinSource(input_format)
        if is_stream(location):
            return StdinSource(input_format, open(location, "rb"), location)
        return FileSource(location, input_format, storage_options)
    if isinstance(source, (bytes, dict)) or not isinstance(source, Iterable):
        raise TypeError(f"a source is a path, a URL, '-' or an iterable of records or texts, not "
                        f"{type(source).__name__}")
    return IterableSource(source)


def embedded_fields(source: Source, given: tuple[str, ...] | None) -> tuple[str, ...]:
    """The fields to embed: ``given``, the format's own (SQuAD JSON, text), or for JSONL those
    of the first record that parses (:data:`cache_builder.build.inputs.DEFAULT_LAYOUTS`)."""
    if given:
        return given
    if source.format == "squad":
        return ("context", "question")
    if source.format == "text":
        return ("text",)
    first = source.first_record()
    return infer_fields(first[0], source.location, first[1]) if first else ("text",)


def fingerprint(digests: list[bytes]) -> str:
    """The input's fingerprint from its parts' digests, in order: a one-part input's is the
    SHA-256 of its bytes (what ``sha256sum`` prints), a split one's the SHA-256 of the parts'
    digests."""
    if len(digests) == 1:
        return digests[0].hex()
    return hashlib.sha256(b"".join(digests)).hexdigest()
