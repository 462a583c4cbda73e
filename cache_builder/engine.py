"""The batch engine: one input shard on one device → a complete store.

Three stages overlap, connected by bounded queues (so memory is bounded by a few batches
plus one window of outputs, never by the dataset; torch releases the GIL while computing):

1. *reader* thread: records → tokens → dedup → :class:`Window` of new segments (long ones
   split into pieces with ``split_long``) → length-bucketed batches, prepared as model input
   (pinned host memory on a GPU);
2. *model* (calling thread): biLM forward, layer selection or mix, cast to the store dtype,
   asynchronous device → host copy;
3. *writer* thread: reassembles each window's segments (pieces contiguous, in input order),
   appends them to the store in whole shards, and commits progress after every window.

Determinism and resume: windows and batches are a pure function of the input and the
settings, so a re-run replays the reader, skips the windows the last commit covers, and
writes exactly what an uninterrupted run writes. The manifest is written last.
"""

from __future__ import annotations

import functools
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cache_builder.batching import content_hash, length_batches
from cache_builder.inputs import ReadStats, Record, input_fingerprint, open_input, read_records
from cache_builder.layers import LayerSpec
from cache_builder.store import (Appender, StoreError, StoreReader, StoreWriter, open_reader, open_writer,
                                 store_exists, store_format)
from cache_builder.store import hdf5_store, zarr_store
from cache_builder.store.layout import (FORMAT_NAME, FORMAT_VERSION, OFFSET_ARRAYS, array_specs,
                                        bytes_per_token_estimate, chunk_rows, decode_strings,
                                        encode_strings)
from cache_builder.tokenize import split_long, tokenize_field
from elmo import BiLM
from elmo.runtime import DTYPES, resolve_device, resolve_dtype
from elmo.tokenize import Tokenized, Tokenizer, get_tokenizer
from elmo.weights import model_fingerprint

STORE_DTYPES = ("float16", "float32")
CODECS = {"zarr": (zarr_store.CODEC, zarr_store.CHECKSUM), "hdf5": (hdf5_store.CODEC, hdf5_store.CHECKSUM)}


def tool_version() -> str:
    from cache_builder import __version__
    return __version__


@dataclass(frozen=True)
class PrecomputeSettings:
    """Everything that decides a store's content (the model aside).

    Attributes:
        layers: kept layers or the fixed mix.
        dtype: "float16" or "float32" for stored vectors.
        compute_dtype: the model's precision while it runs ("float32", "bfloat16", "float16").
        tokenizer: a tokenizer of :mod:`elmo.tokenize` (e.g. a model's recorded one), or a
            registered name, built with default options.
        max_tokens: longer texts are split on sentence boundaries into pieces of at most this.
        batch_tokens: padded tokens per model batch.
        window_tokens: new tokens per window, the unit of bucketing, writing and resume.
        input_format, id_field, fields, on_error: passed to ``read_records``.
    """

    layers: LayerSpec
    dtype: str = "float16"
    compute_dtype: str = "float32"
    tokenizer: Tokenizer | str = "auto"
    max_tokens: int = 512
    batch_tokens: int = 4096
    window_tokens: int = 1 << 15
    input_format: str = "auto"
    id_field: str | None = None
    fields: tuple[str, ...] | None = None
    on_error: str = "raise"

    def __post_init__(self) -> None:
        if isinstance(self.tokenizer, str):
            object.__setattr__(self, "tokenizer", get_tokenizer(self.tokenizer))
        if self.dtype not in STORE_DTYPES:
            raise ValueError(f"--dtype {self.dtype}: a store holds one of {STORE_DTYPES}")
        if self.compute_dtype not in DTYPES:
            raise ValueError(f"--compute-dtype {self.compute_dtype}: choose one of {sorted(DTYPES)}")
        if self.max_tokens < 1 or self.batch_tokens < 1 or self.window_tokens < 1:
            raise ValueError("--max-tokens and --batch-tokens must be positive")


@dataclass
class Segment:
    """A distinct tokenized text: ``tokens``/``spans`` of the whole field, run as ``pieces``."""

    key: bytes
    tokens: list[str]
    spans: list[tuple[int, int]]
    pieces: list[list[str]]


@dataclass
class Window:
    """Consecutive documents and the segments first seen among them (in input order).

    Attributes:
        docs: (doc_id, [(field, segment key)]) per document.
        n_tokens_in: tokens of every field of ``docs``, duplicates included.
    """

    number: int
    segments: list[Segment] = field(default_factory=list)
    docs: list[tuple[str, list[tuple[str, bytes]]]] = field(default_factory=list)
    n_tokens: int = 0
    n_tokens_in: int = 0


def windows(records: Iterable[Record], tokenizer: Tokenizer, max_tokens: int,
            window_tokens: int) -> Iterator[Window]:
    """Tokenize and dedup ``records``; cut into windows of about ``window_tokens`` new tokens."""

    def tokenize(text: str | list[str]) -> tuple[Tokenized, bytes]:
        doc = tokenize_field(text, tokenizer)
        return doc, content_hash(doc.tokens, doc.spans)

    # A SQuAD context comes once per question, in a row: tokenize each raw text once.
    tokenize_text = functools.lru_cache(maxsize=256)(tokenize)
    seen: set[bytes] = set()
    window = Window(0)
    for record in records:
        entries = []
        for name, text in record.fields.items():
            doc, key = tokenize_text(text) if isinstance(text, str) else tokenize(text)
            window.n_tokens_in += len(doc.tokens)
            if key not in seen:
                seen.add(key)
                pieces = [p.tokens for p in split_long(doc, max_tokens)]  # concatenate to doc.tokens
                window.segments.append(Segment(key, doc.tokens, doc.spans, pieces))
                window.n_tokens += len(doc.tokens)
            entries.append((name, key))
        window.docs.append((record.doc_id, entries))
        if window.n_tokens >= window_tokens:
            yield window
            window = Window(window.number + 1)
    if window.docs:
        yield window


# ---------------------------------------------------------------------------------------
# The store builder: the writer stage's state, resumable from a commit.


class StoreBuilder:
    """Appends segments and documents to a store's arrays and commits progress.

    Args:
        store: an open writer; its arrays are created here unless ``progress`` resumes them.
        arrays: name → (row shape, dtype), from :func:`layout.array_specs`.
        progress: the last commit of an interrupted run with the same settings, or None.
    """

    def __init__(self, store: StoreWriter, arrays: dict[str, tuple[tuple[int, ...], str]],
                 progress: dict[str, Any] | None):
        self.store = store
        if progress is None:
            for name, (tail, dtype) in arrays.items():
                store.create(name, tail, dtype, chunk_rows(tail, dtype))
                if name in OFFSET_ARRAYS:
                    store.write(name, 0, np.zeros(1, dtype=np.int64))
            lengths = {name: store.length(name) for name in arrays}
            self.fields: list[str] = []
            self.windows_done, self.n_tokens_in = 0, 0
        else:
            lengths = progress["lengths"]
            for name, length in lengths.items():
                store.truncate(name, length)
            self.fields, self.windows_done = progress["fields"], progress["windows_done"]
            self.n_tokens_in = progress["n_tokens_in"]
        self.out = {name: Appender(store, name, lengths[name]) for name in arrays}
        self._type_ids = self._read_table("type_utf8", "type_offsets", progress)
        hashes = store.read("segment_hash") if progress else np.zeros((0, 16), np.uint8)
        self._segment_ids = {h.tobytes(): i for i, h in enumerate(hashes)}
        self._token_end = lengths["token_row"]
        self._doc_id_end = int(store.read("doc_id_offsets", lengths["doc_id_offsets"] - 1)[0])
        self._type_end = int(store.read("type_offsets", lengths["type_offsets"] - 1)[0])

    def _read_table(self, utf8: str, offsets: str, progress: dict | None) -> dict[str, int]:
        if progress is None:
            return {}
        names = decode_strings(self.store.read(utf8), self.store.read(offsets))
        return {name: i for i, name in enumerate(names)}

    def add_window(self, window: Window, vectors: list[np.ndarray], layer0: list[np.ndarray] | None) -> None:
        """Append a window's segments and documents.

        Args:
            vectors: per new segment ``(n_tokens, n_vector_layers, dim)``.
            layer0: per new segment ``(n_tokens, projection_dim)`` when layer 0 is kept.
        """
        out = self.out
        for s, segment in enumerate(window.segments):
            rows = np.empty(len(segment.tokens), dtype=np.int32)
            new_types: list[str] = []
            for i, token in enumerate(segment.tokens):
                row = self._type_ids.get(token)
                if row is None:
                    row = self._type_ids[token] = len(self._type_ids)
                    new_types.append(token)
                    if layer0 is not None:
                        out["token_layer"].append(layer0[s][i : i + 1])
                rows[i] = row
            if new_types:
                utf8, ends = encode_strings(new_types, self._type_end)
                out["type_utf8"].append(utf8)
                out["type_offsets"].append(ends)
                self._type_end = int(ends[-1])
            out["vectors"].append(vectors[s])
            out["token_row"].append(rows)
            out["token_spans"].append(np.asarray(segment.spans, dtype=np.int32).reshape(-1, 2))
            self._token_end += len(segment.tokens)
            out["segment_offsets"].append(np.array([self._token_end], dtype=np.int64))
            out["segment_hash"].append(np.frombuffer(segment.key, dtype=np.uint8)[None])
            self._segment_ids[segment.key] = len(self._segment_ids)
        for doc_id, entries in window.docs:
            utf8, ends = encode_strings([doc_id], self._doc_id_end)
            out["doc_id_utf8"].append(utf8)
            out["doc_id_offsets"].append(ends)
            self._doc_id_end = int(ends[-1])
            fields = []
            for name, key in entries:
                if name not in self.fields:
                    self.fields.append(name)
                fields.append(self.fields.index(name))
            out["entry_field"].append(np.array(fields, dtype=np.int16))
            out["entry_segment"].append(np.array([self._segment_ids[k] for _, k in entries], dtype=np.int64))
            out["doc_offsets"].append(np.array([out["entry_field"].length], dtype=np.int64))
        self.n_tokens_in += window.n_tokens_in

    def progress(self, identity: dict[str, Any]) -> dict[str, Any]:
        """The resume point: what :meth:`__init__` reads back."""
        return {"identity": identity, "windows_done": self.windows_done, "fields": self.fields,
                "n_tokens_in": self.n_tokens_in, "lengths": {name: a.length for name, a in self.out.items()}}

    def commit(self, identity: dict[str, Any]) -> None:
        """Make everything appended durable, then record it as the point to resume from."""
        self.windows_done += 1
        for appender in self.out.values():
            appender.flush()
        self.store.set_attr("progress", self.progress(identity))

    def counts(self, stats: ReadStats) -> dict[str, int]:
        return {"documents": self.out["doc_offsets"].length - 1,
                "segments": self.out["segment_offsets"].length - 1,
                "tokens": self.out["token_row"].length, "tokens_in_documents": self.n_tokens_in,
                "distinct_tokens": self.out["type_offsets"].length - 1,
                "entries": self.out["entry_field"].length, "rejected": stats.rejected}


# ---------------------------------------------------------------------------------------
# The pipeline.

_END = object()


class _Pipe:
    """A bounded queue whose put/get give up when another stage has failed."""

    def __init__(self, failed: threading.Event, size: int):
        self.queue: queue.Queue = queue.Queue(size)
        self.failed = failed

    def put(self, item: Any) -> None:
        while not self.failed.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                pass
        raise _Aborted

    def get(self) -> Any:
        while not self.failed.is_set():
            try:
                return self.queue.get(timeout=0.1)
            except queue.Empty:
                pass
        raise _Aborted


class _Aborted(Exception):
    """Another stage failed; its exception is the one reported."""


def _run_stage(target: Callable[[], None], errors: list[BaseException], failed: threading.Event) -> None:
    try:
        target()
    except _Aborted:
        pass
    except BaseException as e:  # re-raised by the calling thread
        errors.append(e)
        failed.set()


def embed_windows(source: Iterable[Window], bilm: BiLM, settings: PrecomputeSettings,
                  builder: StoreBuilder, identity: dict[str, Any], device: torch.device,
                  on_window: Callable[[Window, bool], None] = lambda w, computed: None) -> None:
    """Run every window after ``builder.windows_done`` through ``bilm`` into ``builder``.

    This is the engine's unit of work: a shard of the input (its windows) on one device.
    Windows before ``builder.windows_done`` are consumed (they rebuild dedup state) but
    neither computed nor written. ``on_window(window, computed)`` follows progress.
    """
    spec, cuda = settings.layers, device.type == "cuda"
    out_dtype = getattr(torch, settings.dtype)
    failed, errors = threading.Event(), []
    to_model, to_writer = _Pipe(failed, 8), _Pipe(failed, 8)

    def read() -> None:
        for window in source:
            if window.number < builder.windows_done:
                on_window(window, False)
                continue
            pieces = [(s, start, piece) for s, segment in enumerate(window.segments)
                      for start, piece in _piece_starts(segment.pieces)]
            for batch in length_batches(pieces, [len(p[2]) for p in pieces], settings.batch_tokens):
                prepared = bilm.prepare([p[2] for p in batch])
                if cuda:
                    prepared = prepared.pin_memory()
                to_model.put((window, [(s, start, len(p)) for s, start, p in batch], prepared))
            to_model.put((window, None, None))
        to_model.put(_END)

    def write() -> None:
        while (item := to_writer.get()) is not _END:
            window, members, host = item
            if members is None:
                outputs = assembly.pop(window.number, None) or _empty_window(window, spec, bilm, settings.dtype)
                builder.add_window(window, *outputs)
                builder.commit(identity)
                on_window(window, True)
                continue
            vectors, layer0, ready = host
            if ready is not None:
                ready.synchronize()
            if window.number not in assembly:
                assembly[window.number] = _empty_window(window, spec, bilm, settings.dtype)
            seg_vectors, seg_layer0 = assembly[window.number]
            for b, (s, start, n) in enumerate(members):
                seg_vectors[s][start : start + n] = vectors[b, :n]
                if seg_layer0 is not None:
                    seg_layer0[s][start : start + n] = layer0[b, :n]

    assembly: dict[int, tuple[list[np.ndarray], list[np.ndarray] | None]] = {}
    threads = [threading.Thread(target=_run_stage, args=(f, errors, failed), daemon=True) for f in (read, write)]
    for t in threads:
        t.start()

    def model() -> None:
        with torch.inference_mode():
            while (item := to_model.get()) is not _END:
                window, members, prepared = item
                if members is None:
                    to_writer.put((window, None, None))
                    continue
                batch = prepared.to(device)
                out = bilm(batch)
                vectors = spec.apply(out.layers).to(out_dtype)  # (batch, time, n_vector_layers, dim)
                layer0 = (out.token_layer[batch.type_index[:, 1:-1]].to(out_dtype)  # (batch, time, proj)
                          if spec.keeps_token_layer else None)
                to_writer.put((window, members, _to_host(vectors, layer0, cuda)))
        to_writer.put(_END)

    _run_stage(model, errors, failed)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def _piece_starts(pieces: list[list[str]]) -> Iterator[tuple[int, list[str]]]:
    start = 0
    for piece in pieces:
        if piece:
            yield start, piece
        start += len(piece)


def _empty_window(window: Window, spec: LayerSpec, bilm: BiLM, dtype: str):
    """Per-segment output arrays of a window, filled piece by piece by the writer."""
    dim, proj = 2 * bilm.options.lstm.projection_dim, bilm.options.lstm.projection_dim
    vectors = [np.zeros((len(s.tokens), spec.n_vector_layers, dim), dtype=dtype) for s in window.segments]
    layer0 = ([np.zeros((len(s.tokens), proj), dtype=dtype) for s in window.segments]
              if spec.keeps_token_layer else None)
    return vectors, layer0


def _to_host(vectors: torch.Tensor, layer0: torch.Tensor | None, cuda: bool):
    """Device → numpy; on a GPU through pinned buffers and an asynchronous copy.

    Returns (vectors, layer0, event): the writer waits on ``event`` (None on the CPU).
    """
    if not cuda:
        return vectors.numpy(), None if layer0 is None else layer0.numpy(), None
    hosts = []
    for t in (vectors, layer0):
        if t is None:
            hosts.append(None)
            continue
        host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
        host.copy_(t, non_blocking=True)
        hosts.append(host.numpy())
    event = torch.cuda.Event()
    event.record()
    return hosts[0], hosts[1], event


# ---------------------------------------------------------------------------------------
# Entry points.


def run_identity(manifest_like: dict[str, Any]) -> dict[str, Any]:
    """The parts of a manifest that decide a store's content: equal identities resume/skip."""
    source = {k: v for k, v in manifest_like["input"].items() if k != "name"}  # renaming is harmless
    return {"model": manifest_like["model"]["fingerprint"], "layers": manifest_like["layers"],
            "dtype": manifest_like["dtype"], "compute_dtype": manifest_like.get("compute_dtype", "float32"),
            "tokenizer": manifest_like["tokenizer"], "input": source,
            "batching": manifest_like["batching"], "backend": manifest_like["backend"]["format"]}


def _manifest_head(input_path: str, bilm: BiLM, settings: PrecomputeSettings, tokenizer: Tokenizer,
                   fmt: str, model_files: tuple[str, str] | None) -> dict[str, Any]:
    codec, checksum = CODECS[fmt]
    return {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "tool_version": tool_version(),
        "complete": True,
        "backend": {"format": fmt, "codec": codec, "checksum": checksum},
        "model": {"fingerprint": model_fingerprint(bilm),
                  "options": model_files[0] if model_files else None,
                  "weights": model_files[1] if model_files else None,
                  "n_layers": bilm.options.lstm.n_layers + 1,
                  "dim": 2 * bilm.options.lstm.projection_dim,
                  "projection_dim": bilm.options.lstm.projection_dim},
        "layers": settings.layers.to_manifest(),
        "dtype": settings.dtype,
        "compute_dtype": settings.compute_dtype,
        "tokenizer": {"name": tokenizer.name, "settings": tokenizer.settings()},
        "input": {"name": os.path.basename(str(input_path)), "fingerprint": input_fingerprint(input_path),
                  "format": settings.input_format, "id_field": settings.id_field,
                  "fields": list(settings.fields) if settings.fields else None},
        "batching": {"max_tokens": settings.max_tokens, "batch_tokens": settings.batch_tokens,
                     "window_tokens": settings.window_tokens},
    }


def _records(input_path: str, settings: PrecomputeSettings, stats: ReadStats,
             rejects_path: str | None) -> Iterator[Record]:
    return read_records(input_path, input_format=settings.input_format, id_field=settings.id_field,
                        fields=list(settings.fields) if settings.fields else None,
                        on_error=settings.on_error, rejects_path=rejects_path, stats=stats)


def precompute(input_path: str, store_path: str, bilm: BiLM, settings: PrecomputeSettings, *,
               device: str | None = None, format: str | None = None, overwrite: bool = False,
               model_files: tuple[str, str] | None = None, rejects_path: str | None = None,
               progress: bool = True) -> dict[str, Any]:
    """Embed every record of ``input_path`` and write a complete store at ``store_path``.

    Args:
        bilm: the model, float32 as loaded; moved to ``device`` and cast to
            ``settings.compute_dtype`` in place (as ``nn.Module.to`` does).
        device: "cpu", "cuda", "cuda:N"; default a GPU when present.
        format: "zarr" or "hdf5"; default from the path (``.h5``/``.hdf5`` → HDF5).
        overwrite: replace a store written with other settings (else refuse).
        model_files: (options.json, weights.hdf5) paths, recorded for ``verify``.
        rejects_path: where ``on_error="skip"`` writes rejected records with their reasons.

    Returns:
        The manifest. A store that is already complete with the same settings is left as is;
        an interrupted one resumes from its last commit.

    Raises:
        StoreError: the path holds a store of other settings (without ``overwrite``) or
            something that is not a store.
    """
    dev = resolve_device(device)
    compute_dtype = resolve_dtype(settings.compute_dtype, dev)
    tokenizer = settings.tokenizer
    fmt = store_format(store_path, format)
    head = _manifest_head(input_path, bilm, settings, tokenizer, fmt, model_files)  # weights as given
    bilm = bilm.to(dev, compute_dtype).eval()
    identity = run_identity(head)
    build = functools.partial(_build, input_path, bilm, settings, tokenizer, head, identity, dev,
                              rejects_path=rejects_path, progress=progress)
    if fmt == "zarr":
        return build(store_path, "zarr", overwrite)
    # A SIGKILL in the middle of an HDF5 write can leave the file unreadable, so the run builds
    # (and resumes) a Zarr staging store beside it and converts it when complete.
    staging = f"{store_path}.partial.zarr"
    if store_exists(store_path) and not overwrite and not store_exists(staging):
        store = open_writer(store_path, "hdf5")
        try:
            done, _ = _claim(store, identity, store_path)
        finally:
            store.close()
        if done is not None:
            return done
    manifest = build(staging, "zarr", overwrite)
    copy_store(open_reader(staging), open_writer(store_path, "hdf5", overwrite=True))
    shutil.rmtree(staging)
    return manifest


def _claim(store: StoreWriter, identity: dict[str, Any], path: str) -> tuple[dict | None, dict | None]:
    """What an existing store at ``path`` means for a run: (its manifest if it is complete
    with the same identity, the progress to resume from if it is unfinished with it).

    Raises:
        StoreError: a store of other arguments, or data that is not a store.
    """
    manifest, progress = store.get_attr("manifest"), store.get_attr("progress")
    if manifest is not None:
        if run_identity(manifest) != identity:
            raise StoreError(f"{path}: a complete store written with other arguments is here; "
                             "pass --overwrite to replace it")
        return manifest, None
    if progress is not None and progress["identity"] != identity:
        raise StoreError(f"{path}: an unfinished store from other arguments is here; re-run with "
                         "its arguments to resume, or pass --overwrite")
    if progress is None and store.names():
        raise StoreError(f"{path}: holds data that is not an elmo-cache store; pass --overwrite "
                         "to replace it")
    return None, progress


def _build(input_path: str, bilm: BiLM, settings: PrecomputeSettings, tokenizer: Tokenizer,
           head: dict[str, Any], identity: dict[str, Any], device: torch.device, store_path: str,
           fmt: str, overwrite: bool, *, rejects_path: str | None, progress: bool) -> dict[str, Any]:
    """Create, resume or keep the store at ``store_path``; returns its manifest."""
    existed = store_exists(store_path) and not overwrite
    store = open_writer(store_path, fmt, overwrite=overwrite)
    try:
        done, resume = _claim(store, identity, store_path) if existed else (None, None)
        if done is not None:
            store.set_attr("progress", None)  # left over when a run died between the two
            return done
        arrays = array_specs(settings.layers, head["model"]["dim"], head["model"]["projection_dim"],
                             settings.dtype)
        builder = StoreBuilder(store, arrays, resume)
        if resume is None:  # a new store: mark it unfinished before any data lands
            store.set_attr("progress", builder.progress(identity))
        stats = ReadStats()
        source = windows(_records(input_path, settings, stats, rejects_path), tokenizer,
                         settings.max_tokens, settings.window_tokens)
        bar = tqdm(total=_estimate_documents(input_path), unit="doc", disable=not progress,
                   desc="precompute", dynamic_ncols=True)
        started, tokens = time.perf_counter(), [0]

        def on_window(window: Window, computed: bool) -> None:
            bar.update(len(window.docs))
            if computed:  # tokens/s of this run, not of the windows a resumed run skips
                tokens[0] += window.n_tokens
                bar.set_postfix_str(f"{tokens[0] / (time.perf_counter() - started):,.0f} tok/s", refresh=False)

        with bar:
            embed_windows(source, bilm, settings, builder, identity, device, on_window)
        manifest = {**head, "fields": builder.fields, "counts": builder.counts(stats)}
        store.set_attr("manifest", manifest)
        store.set_attr("progress", None)
        return manifest
    finally:
        store.close()


def copy_store(source: StoreReader, target: StoreWriter) -> None:
    """Copy every array (same chunking) and then the manifest, last, from ``source`` to ``target``."""
    try:
        for name in sorted(source.names()):
            array = source.array(name)
            target.create(name, tuple(array.shape[1:]), str(array.dtype), source.chunk_rows(name))
            step = target.write_unit(name)
            for start in range(0, array.shape[0], step):
                target.write(name, start, source.read(name, start, start + step))
        target.set_attr("manifest", source.get_attr("manifest"))
    finally:
        source.close()
        target.close()


def _estimate_documents(path: str) -> int | None:
    """Documents in the input for the progress bar's ETA: lines, or SQuAD questions."""
    lines = questions = 0
    with open_input(path) as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            lines += block.count(b"\n")
            questions += block.count(b'"question"')
    return questions if str(path).endswith(".json") else lines or None


@dataclass
class DryRunReport:
    """What a run would do: counts after dedup and store sizes per layer choice and dtype."""

    documents: int
    rejected: int
    segments: int
    tokens: int
    tokens_in_documents: int
    distinct_tokens: int
    estimates: dict[str, dict[str, int]]  # layer choice → dtype → bytes (uncompressed)

    def format(self) -> str:
        lines = [f"documents {self.documents} (rejected {self.rejected})",
                 f"segments after dedup {self.segments}",
                 f"tokens {self.tokens} stored ({self.tokens_in_documents} in documents, "
                 f"{self.distinct_tokens} distinct)",
                 "store size estimate (uncompressed; float16 compresses ~1.1x):"]
        for choice, sizes in self.estimates.items():
            lines.append(f"  {choice:<6}" + "  ".join(f"{dt} {_human(b):>10}" for dt, b in sizes.items()))
        return "\n".join(lines)


def _human(n: float) -> str:
    unit = 0
    while n >= 1024 and unit < 3:
        n, unit = n / 1024, unit + 1
    return f"{n:.1f} {('B', 'KiB', 'MiB', 'GiB')[unit]}"


def dry_run(input_path: str, bilm: BiLM, settings: PrecomputeSettings) -> DryRunReport:
    """Read, tokenize and dedup ``input_path`` without running the model."""
    stats = ReadStats()
    tokenizer = settings.tokenizer
    types: set[str] = set()
    type_bytes = segments = tokens = tokens_in = 0
    for window in windows(_records(input_path, settings, stats, None), tokenizer, settings.max_tokens,
                          settings.window_tokens):
        segments += len(window.segments)
        tokens += window.n_tokens
        tokens_in += window.n_tokens_in
        for segment in window.segments:
            new = set(segment.tokens) - types
            types |= new
            type_bytes += sum(len(t.encode("utf-8")) for t in new)
    n_layers = bilm.options.lstm.n_layers + 1
    proj = bilm.options.lstm.projection_dim
    choices = {"all": LayerSpec(tuple(range(n_layers))), "0,1": LayerSpec((0, 1)),
               "top": LayerSpec((n_layers - 1,)),
               "mix": LayerSpec(tuple(range(n_layers)), mix=(1 / n_layers,) * n_layers)}
    estimates = {}
    for name, spec in choices.items():
        estimates[name] = {}
        for dtype in STORE_DTYPES:
            table = len(types) * (proj * np.dtype(dtype).itemsize if spec.keeps_token_layer else 0)
            estimates[name][dtype] = (tokens * bytes_per_token_estimate(spec, 2 * proj, dtype)
                                      + table + type_bytes + 8 * len(types) + 24 * segments)
    return DryRunReport(stats.records, stats.rejected, segments, tokens, tokens_in, len(types), estimates)
