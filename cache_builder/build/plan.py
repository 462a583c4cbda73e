"""The planning pass: read, validate, tokenize and dedup the input, and fix the store's layout
before any model runs.

1. :func:`read_part` (a planning task, one per part of the input, in any process): records →
   tokens → the part's distinct segments, as compact arrays (:class:`PartResult`).
2. :class:`PlanWriter` (the driver, parts in input order): drops ids and segments seen in
   earlier parts, numbers segments and token types globally, and appends every array that is
   not a vector (index, ids, field names, tokens, spans, type table, offsets) to the store. It
   only merges hashes and remaps type numbers, so it keeps up with many workers.
3. :func:`make_tasks`: the embedding pass's tasks, a pure function of the plan's arrays and
   the settings (never of the workers), each owning whole storage objects of the vector arrays.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from cache_builder.build.batching import content_hash
from cache_builder.build.inputs import InputError, ReadStats, RecordLog, text_id, validate
from cache_builder.build.sources import Part, Source, embedded_fields
from cache_builder.build.tokenize import tokenize_field
from cache_builder.store import Appender, StoreWriter
from cache_builder.store.layout import OFFSET_ARRAYS, ArraySpec, encode_strings
from elmo.tokenize import Tokenized, Tokenizer


@dataclass
class PartResult:
    """What one part of the input holds, tokenized, its distinct segments once.

    Lines are numbered from 1 within the part; documents and segments are in input order.

    Attributes:
        n_lines: lines (records) the part read, to number the next part's lines.
        digest: SHA-256 of the bytes read.
        doc_ids: valid documents with ids new in the part; ``doc_lines`` ``(n_docs,)`` their
            lines, ``doc_starts`` ``(n_docs,)`` their lines' byte offsets (empty when unknown).
        entry_offsets: ``(n_docs + 1,)`` document d owns entries ``[off[d], off[d+1])``, one per
            field in field order; ``entry_segment`` ``(n_entries,)`` the part's segment of each.
        segment_hash: ``(n_segments, 16)`` uint8; ``segment_offsets`` ``(n_segments + 1,)``
            segment s is tokens ``[off[s], off[s+1])``.
        token_type: ``(n_tokens,)`` int32, a row of ``types``; ``token_spans`` ``(n_tokens, 2)``.
        types: the part's distinct tokens, in order of first appearance.
        rejects: ``(line, field, reason, raw)`` of each bad record; with ``on_error="raise"``
            reading stops at the first.
    """

    number: int
    n_lines: int
    digest: bytes
    doc_ids: list[str]
    doc_lines: np.ndarray
    doc_starts: np.ndarray
    entry_offsets: np.ndarray
    entry_segment: np.ndarray
    segment_hash: np.ndarray
    segment_offsets: np.ndarray
    token_type: np.ndarray
    token_spans: np.ndarray
    types: list[str]
    rejects: list[tuple[int | None, str | None, str, str]]


def read_part(part: Part, source: Source, fields: tuple[str, ...], id_field: str, on_error: str,
              tokenizer: Tokenizer) -> PartResult:
    """Read, validate, tokenize and dedup one part (a planning task)."""
    read = source.read(part)
    doc_ids: list[str] = []
    doc_lines: list[int] = []
    entries: list[int] = []
    first_line: dict[str, int] = {}
    rejects: list[tuple[int | None, str | None, str, str]] = []
    segments: dict[bytes, int] = {}
    segment_offsets, tokens, spans = [0], [], []

    @functools.lru_cache(maxsize=256)  # a SQuAD context comes once per question, in a row
    def tokenize_text(text: str) -> tuple[Tokenized, bytes]:
        doc = tokenize_field(text, tokenizer)
        return doc, content_hash(doc.tokens, doc.spans)

    for item in read.items:
        try:
            record = validate(item, source.location, id_field, fields)
            first = first_line.get(record.doc_id)
            if first is not None:
                raise InputError(source.location, item.line, f"duplicate id {record.doc_id!r}, first "
                                 f"seen at {source.unit} {first}", id_field)
        except InputError as error:
            rejects.append((error.line, error.field, error.reason, item.as_read()))
            if on_error == "raise":
                break
            continue
        first_line[record.doc_id] = item.line
        doc_ids.append(record.doc_id)
        doc_lines.append(item.line)
        for name in fields:
            text = record.fields[name]
            if isinstance(text, str):
                doc, key = tokenize_text(text)
            else:
                doc = tokenize_field(text, tokenizer)
                key = content_hash(doc.tokens, doc.spans)
            segment = segments.get(key)
            if segment is None:
                segment = segments[key] = len(segments)
                tokens.extend(doc.tokens)
                spans.extend(doc.spans)
                segment_offsets.append(len(tokens))
            entries.append(segment)
    # The distinct types in order of first appearance, then each token's row among them: one
    # dictionary lookup per token, made by map in C rather than by a Python loop.
    types = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    token_type = np.fromiter(map(types.__getitem__, tokens), dtype=np.int32, count=len(tokens))
    line_starts = np.asarray(read.line_starts, dtype=np.int64)
    return PartResult(
        number=part.number, n_lines=len(read.line_starts),
        digest=read.digest.digest(), doc_ids=doc_ids, doc_lines=np.asarray(doc_lines, dtype=np.int64),
        doc_starts=line_starts[np.asarray(doc_lines, dtype=np.int64) - 1] if len(line_starts) else line_starts,
        entry_offsets=np.arange(0, len(entries) + 1, len(fields), dtype=np.int64),
        entry_segment=np.asarray(entries, dtype=np.int64),
        segment_hash=np.frombuffer(b"".join(segments), dtype=np.uint8).reshape(-1, 16),
        segment_offsets=np.asarray(segment_offsets, dtype=np.int64),
        token_type=token_type,
        token_spans=np.asarray(spans, dtype=np.int32).reshape(-1, 2),
        types=list(types), rejects=rejects)


# Arrays the plan writes, by appending (see :mod:`cache_builder.store.layout`).
PLAN_ARRAYS = ("token_row", "token_spans", "type_offsets", "type_utf8", "segment_offsets", "segment_hash",
               "doc_offsets", "doc_id_offsets", "doc_id_utf8", "entry_field", "entry_segment", "field_offsets",
               "field_utf8")


@dataclass
class PlanCounts:
    documents: int = 0
    segments: int = 0
    tokens: int = 0
    tokens_in_documents: int = 0
    distinct_tokens: int = 0
    entries: int = 0
    rejected: int = 0
    lines: int = 0  # lines of the input read so far, to number the next part's

    def to_manifest(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if k != "lines"}


class PlanWriter:
    """The driver's merge: parts in input order → the store's non-vector arrays.

    Args:
        store: where the arrays go (created here); None counts only (a dry run).
        arrays: the store's arrays (``layout.array_specs``).
        source: the input, for messages and the rejects file.
        fields: the embedded fields, in entry order.
        log: duplicate ids across parts, and the bad records: raised or written to rejects.
    """

    def __init__(self, store: StoreWriter | None, arrays: dict[str, ArraySpec], source: Source,
                 fields: tuple[str, ...], log: RecordLog):
        self.source, self.fields, self.log = source, fields, log
        self.counts = PlanCounts()
        self.parts = 0  # merged so far
        self.digests: list[bytes] = []
        self._out: dict[str, Appender] = {}
        if store is not None:
            for name in PLAN_ARRAYS:
                a = arrays[name]
                store.create(name, a.tail, a.dtype, a.chunk_rows, compress=a.compress)
                self._out[name] = Appender(store, name, 0)
            for name in OFFSET_ARRAYS:
                self._out[name].append(np.zeros(1, dtype=np.int64))
            utf8, ends = encode_strings(list(fields), 0)  # what ``entry_field`` numbers, beside the manifest's copy
            self._out["field_utf8"].append(utf8)
            self._out["field_offsets"].append(ends)
        self._doc_lines: dict[str, int] = {}
        self._segments: dict[bytes, int] = {}
        self._types: dict[str, int] = {}
        self.type_bytes = self._doc_id_end = 0

    def add(self, part: PartResult) -> None:
        """Merge the next part (parts must come in input order)."""
        line0 = self.counts.lines
        by_lines = self.source.format == "text"
        doc_ids = [text_id(line0 + line) for line in part.doc_lines.tolist()] if by_lines else part.doc_ids
        kept = np.ones(len(doc_ids), dtype=bool)
        errors = [(None if line is None else line0 + line, f, reason, raw) for line, f, reason, raw in part.rejects]
        for d, doc_id in enumerate(doc_ids):
            line = line0 + int(part.doc_lines[d])
            first = self._doc_lines.setdefault(doc_id, line)
            if first != line:
                kept[d] = False
                raw = self.source.raw_line(int(part.doc_starts[d])) if len(part.doc_starts) else doc_id
                errors.append((line, self.log.id_field, f"duplicate id {doc_id!r}, first seen at "
                                                        f"{self.source.unit} {first}", raw))
        if len(errors) > len(part.rejects):  # duplicates of earlier parts' ids: all lines are known
            errors.sort(key=lambda e: e[0])
        for line, f, reason, raw in errors:
            self.log.reject(InputError(self.source.location, line, reason, f), raw)
        self.counts.rejected = self.log.stats.rejected
        self._add_documents(part, [doc_ids[d] for d in np.flatnonzero(kept)], np.flatnonzero(kept))
        self.counts.lines = line0 + part.n_lines
        self.digests.append(part.digest)
        self.parts += 1

    def _add_documents(self, part: PartResult, doc_ids: list[str], docs: np.ndarray) -> None:
        n_fields = len(self.fields)
        local = part.entry_segment.reshape(-1, n_fields)[docs]  # (n_kept, n_fields)
        lengths = np.diff(part.segment_offsets)
        self.counts.tokens_in_documents += int(lengths[local].sum())
        # Segments new to the store, in order of first use by a kept document.
        order, first_use = np.unique(local.reshape(-1), return_index=True)
        new_local, global_of = [], np.full(len(lengths), -1, dtype=np.int64)
        for s in order[np.argsort(first_use, kind="stable")].tolist():
            key = part.segment_hash[s].tobytes()
            g = self._segments.get(key)
            if g is None:
                g = self._segments[key] = len(self._segments)
                new_local.append(s)
            global_of[s] = g
        self._add_segments(part, new_local)
        out = self._out
        if out:
            utf8, ends = encode_strings(doc_ids, self._doc_id_end)
            out["doc_id_utf8"].append(utf8)
            out["doc_id_offsets"].append(ends)
            out["entry_field"].append(np.tile(np.arange(n_fields, dtype=np.int16), len(doc_ids)))
            out["entry_segment"].append(global_of[local].reshape(-1))
            out["doc_offsets"].append(self.counts.entries + n_fields * np.arange(1, len(doc_ids) + 1, dtype=np.int64))
        self._doc_id_end += sum(len(i.encode("utf-8")) for i in doc_ids)
        self.counts.documents += len(doc_ids)
        self.counts.entries += n_fields * len(doc_ids)

    def _add_segments(self, part: PartResult, new_local: list[int]) -> None:
        """Append the tokens of the part's segments ``new_local`` (new to the store)."""
        if not new_local:
            return
        starts, ends = part.segment_offsets[new_local], part.segment_offsets[np.asarray(new_local) + 1]
        lengths = (ends - starts).astype(np.int64)
        rows = np.arange(int(lengths.sum())) + np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        local_types = part.token_type[rows]
        # Token types new to the store, numbered in the part's order of first appearance.
        used = np.unique(local_types)
        type_map = np.empty(len(part.types), dtype=np.int32)
        new_types = []
        for t in used.tolist():
            name = part.types[t]
            row = self._types.get(name)
            if row is None:
                row = self._types[name] = len(self._types)
                new_types.append(name)
            type_map[t] = row
        segment_ends = self.counts.tokens + np.cumsum(lengths)
        out = self._out
        if out:
            out["token_row"].append(type_map[local_types])
            out["token_spans"].append(part.token_spans[rows])
            out["segment_offsets"].append(segment_ends)
            out["segment_hash"].append(part.segment_hash[new_local])
            if new_types:
                utf8, type_ends = encode_strings(new_types, self.type_bytes)
                out["type_utf8"].append(utf8)
                out["type_offsets"].append(type_ends)
        self.type_bytes += sum(len(t.encode("utf-8")) for t in new_types)
        self.counts.tokens = int(segment_ends[-1])
        self.counts.segments += len(new_local)
        self.counts.distinct_tokens = len(self._types)

    def finish(self) -> None:
        """Write every buffered row: the plan's arrays are complete and durable."""
        for appender in self._out.values():
            appender.flush()


class CorePool:
    """Planning tasks on every core of this machine, one process each (an executor's ``map``,
    for runs without a cluster): tokenizing is pure Python, so threads would share one core.

    Args:
        processes: at most this many (default: the cores this process may run on).
    """

    def __init__(self, processes: int | None = None):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.processes = processes or cores

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *args: Any, local: bool = False,
            on_progress: Callable[[int], None] | None = None) -> Iterator[tuple[int, Any]]:
        """``fn(item, *args)`` for every item; yields ``(index, result)`` as each finishes.
        ``local`` items (that cannot travel) and a single item run in this process."""
        n = min(self.processes, len(items))
        # Forked workers start in milliseconds and need no ``if __name__ == "__main__"`` in the
        # caller's script; a child runs only fn (reading, regular expressions, hashing), never the
        # parent's other threads' work (zarr's event loop), so no lock of theirs is taken. Where
        # fork is not the safe default (macOS, Windows) planning stays in this process.
        if local or n < 2 or not sys.platform.startswith("linux"):
            for i, item in enumerate(items):
                yield i, fn(item, *args)
            return
        with warnings.catch_warnings(), \
                ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("fork")) as pool:
            warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
            futures = {pool.submit(fn, item, *args): i for i, item in enumerate(items)}
            try:
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield futures[future], future.result()
            finally:
                for future in futures:
                    future.cancel()


def plan_source(source: Source, settings: Any, store: StoreWriter | None,
                arrays: dict[str, ArraySpec], executor: Any, rejects_path: str | None,
                progress: bool) -> PlanWriter:
    """Read, validate, tokenize and dedup ``source`` part by part (the parts in parallel on
    ``executor``: a cluster's, or a :class:`CorePool`), merging them in input order into
    ``store`` (None: counting only).

    Args:
        settings: the run's :class:`cache_builder.build.settings.PrecomputeSettings`.
        arrays: the store's arrays (``layout.array_specs``).
        rejects_path: where bad records go with ``settings.on_error == "skip"``.
    """
    fields = embedded_fields(source, settings.fields)
    id_field = settings.id_field or "id"
    log = RecordLog(source.unit, id_field, settings.on_error, rejects_path, ReadStats())
    parts = source.parts(settings.part_bytes)
    try:
        writer = PlanWriter(store, arrays, source, fields, log)
        results = executor.map(read_part, parts, source, fields, id_field, settings.on_error,
                               settings.tokenizer, local=not source.shippable)
        waiting: dict[int, PartResult] = {}  # parts finish in any order; they merge in input order
        with tqdm(total=len(parts), unit="part", desc="plan", disable=not progress or len(parts) < 2,
                  dynamic_ncols=True) as bar:
            for i, result in results:
                waiting[i] = result
                while writer.parts in waiting:
                    writer.add(waiting.pop(writer.parts))
                    bar.update(1)
        writer.finish()
    finally:
        log.close()
    return writer


@dataclass(frozen=True)
class Task:
    """A unit of the embedding pass: rows ``[start, stop)`` of the vector arrays (``kind``
    "tokens": segments ``[first_segment, last_segment]`` overlap them) or of layer 0's
    per-type table (``kind`` "types"). ``cost`` orders the tasks, longest texts first."""

    number: int
    kind: str
    start: int
    stop: int
    first_segment: int = 0
    last_segment: int = -1
    cost: int = 0


def make_tasks(segment_offsets: np.ndarray, n_types: int, token_unit: int, type_unit: int | None,
               task_rows: int) -> list[Task]:
    """The embedding pass: token tasks of about ``task_rows`` rows, cut on multiples of
    ``token_unit`` (rows per storage object of the vector arrays, so no two tasks write one
    object), then, when layer 0 is kept, type tasks cut on multiples of ``type_unit``.

    A piece of text that straddles two tasks' rows is run by both, each writing its own rows:
    pieces start from zero state, so either run gives the same vectors.

    Args:
        segment_offsets: ``(n_segments + 1,)`` the plan's segment boundaries in rows.

    Returns:
        Tasks in scheduling order: the ones holding the longest texts first.
    """
    n_tokens = int(segment_offsets[-1])
    step = max(token_unit, task_rows // token_unit * token_unit)
    lengths = np.diff(segment_offsets)
    tasks = []
    for start in range(0, n_tokens, step):
        stop = min(start + step, n_tokens)
        first = int(np.searchsorted(segment_offsets, start, side="right")) - 1
        last = int(np.searchsorted(segment_offsets, stop, side="left")) - 1
        tasks.append(Task(len(tasks), "tokens", start, stop, first, last, int(lengths[first : last + 1].max())))
    if type_unit is not None:
        step = max(type_unit, task_rows // type_unit * type_unit)
        for start in range(0, n_types, step):
            tasks.append(Task(len(tasks), "types", start, min(start + step, n_types)))
    return sorted(tasks, key=lambda t: (-t.cost, t.number))


@dataclass
class Plan:
    """The layout a run fixed: counts, the source's fingerprint and the tasks."""

    fields: tuple[str, ...]
    fingerprint: str
    counts: PlanCounts
    tasks: list[Task] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-able, recorded in the store's progress until the manifest replaces it."""
        return {"fields": list(self.fields), "fingerprint": self.fingerprint,
                "counts": self.counts.to_manifest()}


