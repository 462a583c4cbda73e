"""The embedding pass's tasks, each a pure function of the plan: it reads its segments' tokens
from the store the plan wrote, runs the model, writes its own rows of the vector arrays (whole
storage objects, which no other task touches) and then marks itself done.

A task runs in the driver's process or on a Dask worker; either way the process keeps one
copy of the model (:func:`install_model`), its open stores and their token-type tables.
Within a task three stages overlap (torch releases the GIL while it computes): a thread
prepares length-bucketed batches (pinned host memory on a GPU), the calling thread runs the
model, and a thread copies its outputs into the task's rows. Where the driver runs the tasks
itself (``TaskContext.write_behind``) the stages also overlap across tasks, so the model never
waits at a task's edges: one thread prepares the batches of all the run's tasks in order
(:func:`prepare_ahead`), and a task returns as soon as its last batch is computed, handing the
copying, encoding and writing of its rows to a writer (:class:`_WriteBehind`) while the next
task computes. A Dask worker runs each task's stages on their own and writes before the task
returns (a task's result there means its rows are stored). On a GPU this matters most: a task
is often one or two batches there. The copying and writing run in threads the process keeps
(``_STAGES``).
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

from cache_builder.build.batching import length_batches
from cache_builder.build.core_share import CoreShare
from cache_builder.build.plan import Task
from cache_builder.build.tokenize import split_long
from cache_builder.layers import LayerSpec
from cache_builder.store import StoreReader, ZarrStore
from cache_builder.store.encoding import Encoding, get_encoding
from cache_builder.store.layout import decode_strings
from elmo import BiLM
from elmo.bilm import TokenBatch
from elmo.tokenize import Tokenized

TASK_DONE = "task_done"  # (n_tasks,) uint8, one storage object per task: 1 once its rows are written
TYPE_BATCH = 1024  # token types per char-CNN call in a type task (bounds its intermediates)


@dataclass(frozen=True)
class TaskContext:
    """What every task of a run shares.

    Attributes:
        store: the Zarr store (a path or fsspec URL) the plan wrote; ``storage_options`` for fsspec.
        plan: a digest of the run's identity: per-process caches of the store are keyed by it.
        model: the key :func:`install_model` registered the run's model under.
        spec: kept layers or the mix; ``dtype`` the stored precision.
        max_tokens: texts are run in pieces of at most this many tokens (see ``split_long``).
        batch_tokens: padded tokens per model batch.
        write_behind: tasks run in this process one after the other, announced beforehand
            with :func:`prepare_ahead`, and return before their rows are written; the caller
            then calls :func:`finish_writes` after the last.
    """

    store: str
    storage_options: dict[str, Any]
    plan: str
    model: str
    spec: LayerSpec
    dtype: str
    max_tokens: int
    batch_tokens: int
    write_behind: bool = False


# This process's share of a run: models by key, open stores and token-type tables by plan.
_MODELS: dict[str, BiLM] = {}
_STORES: dict[str, ZarrStore] = {}
_TYPES: dict[str, list[str]] = {}
_WRITERS: dict[str, _WriteBehind] = {}
_AHEAD: dict[str, _Ahead] = {}
_LOCK = threading.Lock()
# The threads that copy tasks' outputs out and write tasks' rows, kept for the process's life:
# starting two threads per task cost 40 ms of a 7 s run on a busy 2-core machine. A thread is
# added only when none is idle (concurrent tasks each copy in their own).
_STAGES = ThreadPoolExecutor(max_workers=64, thread_name_prefix="elmo-cache-stage")


def install_model(key: str, bilm: BiLM, device: torch.device, dtype: torch.dtype) -> BiLM:
    """Make ``bilm`` (moved and cast) this process's model ``key``; returns it."""
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = bilm.to(device, dtype).eval()
        return _MODELS[key]


def uninstall_model(key: str) -> None:
    with _LOCK:
        _MODELS.pop(key, None)


def _store(ctx: TaskContext) -> ZarrStore:
    with _LOCK:
        if ctx.plan not in _STORES:
            _STORES[ctx.plan] = ZarrStore(ctx.store, "a", ctx.storage_options)
        return _STORES[ctx.plan]


def _types(ctx: TaskContext, store: ZarrStore) -> list[str]:
    with _LOCK:
        if ctx.plan not in _TYPES:
            _TYPES[ctx.plan] = decode_strings(store.read("type_utf8"), store.read("type_offsets"))
        return _TYPES[ctx.plan]


def _writer(ctx: TaskContext, store: ZarrStore) -> _WriteBehind:
    with _LOCK:
        if ctx.plan not in _WRITERS:
            _WRITERS[ctx.plan] = _WriteBehind(store)
        return _WRITERS[ctx.plan]


def _model(ctx: TaskContext) -> BiLM:
    model = _MODELS.get(ctx.model)
    if model is None:
        raise RuntimeError(f"no model {ctx.model!r} in this process: install_model was not called")
    return model


def prepare_ahead(ctx: TaskContext, tasks: Sequence[Task]) -> None:
    """Announce the tasks this process runs next, in the order it runs them (a ``write_behind``
    run): one thread prepares their batches, a few ahead of the model and across tasks' edges.
    The token tasks must then be run in this order."""
    tokens = [t for t in tasks if t.kind == "tokens"]
    if tokens:
        ahead = _Ahead(tokens, ctx, _store(ctx), _model(ctx))
        with _LOCK:
            _AHEAD[ctx.plan] = ahead


def finish_writes(ctx: TaskContext) -> None:
    """Wait until every task this process ran has its rows and its done marker written.

    Raises:
        The first write's error (a full disk, a lost connection).
    """
    writer = _WRITERS.get(ctx.plan)
    if writer is not None:
        writer.wait()


def forget(ctx: TaskContext) -> None:
    """Drop this process's caches of a run (its store handle, token types, batches prepared
    ahead and writer), once the writes already handed over are done (a failed run keeps every
    task it finished); a write's error is :func:`finish_writes`'s to report, or secondary to the
    one that ended the run."""
    with _LOCK:
        writer, ahead = _WRITERS.pop(ctx.plan, None), _AHEAD.pop(ctx.plan, None)
    if ahead is not None:
        ahead.close()
    if writer is not None:
        writer.close()
    with _LOCK:
        _STORES.pop(ctx.plan, None)
        _TYPES.pop(ctx.plan, None)


def run_task(task: Task, ctx: TaskContext, on_progress: Callable[[int], None] | None = None) -> int:
    """Compute and write ``task``'s rows, then mark it done. Returns its rows. With
    ``ctx.write_behind`` the rows and the mark are written while the next task computes.

    Args:
        on_progress: called with each batch's rows of a token task (progress within a task).
    """
    model, store = _model(ctx), _store(ctx)
    if ctx.write_behind:
        _writer(ctx, store).check()  # an earlier task's write failed: stop before computing
    if task.kind == "tokens":  # the writer waits for the copying out, then encodes (int8's quantizing is work)
        rows = partial(_encoded, get_encoding(ctx.dtype), _token_rows(task, ctx, store, model, on_progress))
    else:
        rows = partial(dict, _type_rows(task, ctx, store, model))
    if ctx.write_behind:
        _writer(ctx, store).submit(task, rows)
    else:
        _write(store, task, rows())
    return task.stop - task.start


def _write(store: ZarrStore, task: Task, rows: dict[str, np.ndarray]) -> None:
    """A task's rows (name → rows from ``task.start``), then its done marker."""
    for name, data in rows.items():
        store.write(name, task.start, data)
    store.write(TASK_DONE, task.number, np.ones(1, dtype=np.uint8))


class _WriteBehind:
    """Writes tasks' rows, then their done markers, in a stage thread: a hand-over of depth
    one (one task's rows in flight while the next task computes, so at most two tasks' rows are
    held; :meth:`submit` waits for the one before).

    Used by one thread, the one running the tasks. A failed write stops the writes after it
    (their tasks stay not done, and a re-run redoes them) and is raised by the next
    :meth:`check`, :meth:`submit` or :meth:`wait`; a marker is written only after all its
    task's rows are.
    """

    def __init__(self, store: ZarrStore):
        self.store = store
        self._pending: Future | None = None
        self._error: BaseException | None = None

    def check(self) -> None:
        """Raise the error of a write that failed."""
        if self._error is not None:
            raise self._error

    def submit(self, task: Task, rows: Callable[[], dict[str, np.ndarray]]) -> None:
        """Write ``rows()`` (name → the task's rows, computed in the writer's thread: encoding)
        at ``task.start``, then mark ``task`` done; waits first for the previous task's write."""
        self.wait()
        self._pending = _STAGES.submit(self._write, task, rows)

    def wait(self) -> None:
        """Wait for the write in flight; raise the error of any that failed."""
        self.close()
        self.check()

    def close(self) -> None:
        """Wait for the write in flight."""
        if self._pending is not None:
            self._pending.result()  # _write keeps its error for check()
            self._pending = None

    def _write(self, task: Task, rows: Callable[[], dict[str, np.ndarray]]) -> None:
        try:
            _write(self.store, task, rows())
        except BaseException as e:  # raised in the tasks' thread
            self._error = e


def _type_rows(task: Task, ctx: TaskContext, store: ZarrStore, model: BiLM) -> dict[str, np.ndarray]:
    """Layer 0 of token types ``[start, stop)``: ``{"token_layer": (n, projection_dim)}``."""
    types = _types(ctx, store)[task.start : task.stop]
    out_dtype = getattr(torch, get_encoding(ctx.dtype).table_dtype)
    with torch.inference_mode():
        parts = [model.encode_types(types[i : i + TYPE_BATCH]).to(out_dtype).cpu().numpy()
                 for i in range(0, len(types), TYPE_BATCH)]
    return {"token_layer": np.concatenate(parts)}


def task_pieces(task: Task, store: StoreReader, types: list[str], max_tokens: int) -> list[tuple[int, list[str]]]:
    """(first row, tokens) of every piece of text (at most ``max_tokens``, see ``split_long``)
    that overlaps the task's rows; ``types`` is the store's token-type table."""
    offsets = store.read("segment_offsets", task.first_segment, task.last_segment + 2)
    first, last = int(offsets[0]), int(offsets[-1])
    rows, spans = store.read("token_row", first, last), store.read("token_spans", first, last)
    pieces = []
    tokens = list(map(types.__getitem__, rows.tolist()))
    for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
        if b - a <= max_tokens:  # one piece (the usual case): its spans are never read
            if a < b and a < task.stop and b > task.start:
                pieces.append((a, tokens[a - first : b - first]))
            continue
        doc = Tokenized(tokens[a - first : b - first], [tuple(s) for s in spans[a - first : b - first].tolist()])
        start = a
        for piece in split_long(doc, max_tokens):
            if piece.tokens and start < task.stop and start + len(piece) > task.start:
                pieces.append((start, piece.tokens))
            start += len(piece)
    return pieces


_END = object()
Batch = tuple[list[tuple[int, int]], TokenBatch]  # (first row, tokens) of each piece; the model's input


def _batches(task: Task, ctx: TaskContext, store: ZarrStore, model: BiLM) -> Iterator[Batch]:
    """``task``'s pieces of text in length-bucketed batches, prepared for the model (in pinned
    memory for a GPU)."""
    pieces = task_pieces(task, store, _types(ctx, store), ctx.max_tokens)
    cuda = model.device.type == "cuda"
    for batch in length_batches(pieces, [len(p[1]) for p in pieces], ctx.batch_tokens):
        prepared = model.prepare([tokens for _, tokens in batch])
        yield [(start, len(tokens)) for start, tokens in batch], prepared.pin_memory() if cuda else prepared


class _Ahead:
    """The batches of a sequence of tasks (:func:`_batches`), prepared in order by a thread of
    its own, at most ``depth`` batches ahead of the one the model takes."""

    def __init__(self, tasks: Sequence[Task], ctx: TaskContext, store: ZarrStore, model: BiLM, depth: int = 8):
        self._stop = threading.Event()
        self._pipe = _Pipe(self._stop, depth)
        self._thread = threading.Thread(target=self._prepare, args=(tasks, ctx, store, model), daemon=True,
                                        name="prepare batches")
        self._thread.start()

    def _prepare(self, tasks: Sequence[Task], ctx: TaskContext, store: ZarrStore, model: BiLM) -> None:
        try:
            for task in tasks:
                for batch in _batches(task, ctx=ctx, store=store, model=model):
                    self._pipe.put((task.number, batch))
                self._pipe.put((task.number, _END))
        except _Aborted:
            pass
        except BaseException as e:  # raised where the batches are taken
            with contextlib.suppress(_Aborted):
                self._pipe.put((None, e))

    def take(self, task: Task) -> Iterator[Batch]:
        """The batches of ``task``, which must be the next task of those given."""
        while True:
            number, item = self._pipe.get()
            if isinstance(item, BaseException):
                raise item
            if number != task.number:
                raise RuntimeError(f"task {task.number} was run where task {number} was announced")
            if item is _END:
                return
            yield item

    def close(self) -> None:
        """Stop preparing (batches not taken are dropped)."""
        self._stop.set()
        self._thread.join()


def _token_rows(task: Task, ctx: TaskContext, store: ZarrStore, model: BiLM,
                on_progress: Callable[[int], None] | None) -> Callable[[], np.ndarray]:
    """Run the model over rows ``[start, stop)``; returns once the last batch is computed, with a
    function that waits for the copying out and gives the rows: ``(n, n_vector_layers, dim)``.

    Raises:
        What the model or the preparing raised (the function raises what the copying raised).
    """
    spec, cuda = ctx.spec, model.device.type == "cuda"
    carrier = get_encoding(ctx.dtype).carrier  # what encode takes without loss
    out_dtype = getattr(torch, carrier)
    dim = 2 * model.options.lstm.projection_dim
    out = np.zeros((task.stop - task.start, spec.n_vector_layers, dim), dtype=carrier)
    ahead = _AHEAD.get(ctx.plan)
    own = ahead is None  # not announced: this task's batches are prepared on their own
    if own:
        ahead = _Ahead([task], ctx, store, model)
    failed, errors = threading.Event(), []
    to_writer = _Pipe(failed, 8)

    def write() -> None:
        while (item := to_writer.get()) is not _END:
            members, (vectors, ready) = item
            if ready is not None:
                ready.synchronize()
            for b, (start, n) in enumerate(members):  # clip each piece to the task's rows
                lo, hi = max(start, task.start), min(start + n, task.stop)
                out[lo - task.start : hi - task.start] = vectors[b, lo - start : hi - start]

    def compute() -> None:
        share = CoreShare() if model.device.type == "cpu" else None
        try:
            with torch.inference_mode():
                for members, prepared in ahead.take(task):
                    if share is not None:
                        share.update()
                    result = model(prepared.to(model.device))
                    vectors = spec.apply(result.layers).to(out_dtype)  # (batch, time, n_vector_layers, dim)
                    to_writer.put((members, _to_host(vectors, cuda)))
                    if on_progress is not None:
                        on_progress(sum(min(s + n, task.stop) - max(s, task.start) for s, n in members))
        finally:
            if share is not None:
                share.close()
        to_writer.put(_END)

    copying = _STAGES.submit(_run_stage, write, errors, failed)
    _run_stage(compute, errors, failed)
    if own:
        ahead.close()

    def rows() -> np.ndarray:
        copying.result()
        if errors:
            raise errors[0]
        return out

    if errors:  # the model failed: the copying stops at once
        rows()
    return rows


def _encoded(encoding: Encoding, rows: Callable[[], np.ndarray]) -> dict[str, np.ndarray]:
    return encoding.encode(rows())


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


def _to_host(vectors: torch.Tensor, cuda: bool) -> tuple[np.ndarray, Any]:
    """Device → numpy; on a GPU through a pinned buffer and an asynchronous copy.

    Returns (array, event): the writer waits on ``event`` (None on the CPU).
    """
    if not cuda:
        return vectors.numpy(), None
    host = torch.empty(vectors.shape, dtype=vectors.dtype, pin_memory=True)
    host.copy_(vectors, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return host.numpy(), event


def iter_done(store: ZarrStore, n_tasks: int) -> Iterator[int]:
    """Numbers of the tasks whose rows are written (a missing marker means not done)."""
    return iter(np.flatnonzero(store.array(TASK_DONE)[:n_tasks]).tolist())
