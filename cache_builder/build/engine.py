"""``precompute``: a dataset → a complete store, in three steps that any executor runs alike.

1. **plan** (:mod:`.plan`): the input's parts are read and tokenized by planning tasks; the
   driver merges them and writes every array that is not a vector. The layout is fixed before
   any model runs.
2. **tasks** (:mod:`.tasks`): embedding tasks of about ``task_rows`` rows, longest texts
   first, each writing storage objects of its own; then it is marked done.
3. **commit** (:mod:`.commit`): after every task, the manifest, last.

The single-process run and a Dask run (:mod:`.distributed`) execute the same plan and the same
tasks, so they write the same bytes. A run stopped anywhere resumes when re-run with the same
arguments: a plan that was not finished is redone, tasks already done are skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from cache_builder.build.commit import (
    Existing,
    abandon,
    check_location,
    check_not_input,
    claim,
    commit,
    convert_to_hdf5,
    inspect,
)
from cache_builder.build.distributed import CLUSTER_TIMEOUT, Executor, InProcess, executor
from cache_builder.build.inputs import InputError, check_read_options, default_rejects_path
from cache_builder.build.plan import CorePool, Plan, PlanCounts, make_tasks, plan_source
from cache_builder.build.progress import DocumentsDone, EmbedBar
from cache_builder.build.settings import (
    STORE_DTYPES,
    PrecomputeSettings,
    manifest_head,
    relative_model_record,
    run_identity,
)
from cache_builder.build.sources import FileSource, Source, fingerprint, open_source, refuse_credentials
from cache_builder.build.tasks import (TASK_DONE, TaskContext, finish_writes, forget, iter_done, prepare_ahead,
                                       run_task)
from cache_builder.layers import LayerSpec
from cache_builder.store import StoreError, ZarrStore, store_format
from cache_builder.store.encoding import get_encoding
from cache_builder.store.layout import TASK_ARRAYS, array_specs, bytes_per_token_estimate, task_chunking
from cache_builder.store.lock import RunLock
from elmo import BiLM, load_default_bilm
from elmo.runtime import resolve_device, resolve_dtype

log = logging.getLogger("elmo_cache")

__all__ = ["DryRunReport", "PrecomputeSettings", "dry_run", "precompute"]


def precompute(source: Any, store: str | os.PathLike, bilm: BiLM | None = None,
               settings: PrecomputeSettings | None = None, *, device: str | None = None,
               format: str | None = None, overwrite: bool = False,
               model_files: dict[str, Any] | tuple[str, str] | None = None,
               rejects_path: str | None = None, progress: bool = True, client: Any = None,
               workers: int | str | None = None, scheduler: str | None = None,
               cluster_timeout: float = CLUSTER_TIMEOUT,
               storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Embed every record of ``source`` and write a complete store at ``store``.

    Args:
        source: a path or fsspec URL (JSONL, SQuAD JSON, text; compressed files stream), ``"-"``
            for standard input, or an iterable of records (dicts) or of texts.
        store: a Zarr folder or fsspec URL, or a ``.h5``/``.hdf5`` file (local).
        bilm: the model, float32 as loaded (default: the bundled model); the process that runs
            the tasks moves it to ``device`` and casts it to ``settings.compute_dtype``.
        settings: what decides the store's content (default: every layer, float16).
        device: "cpu", "cuda", "cuda:N"; default a GPU when present.
        format: "zarr" or "hdf5"; default from the path (``.h5``/``.hdf5`` → HDF5).
        overwrite: replace an elmo-cache store written with other arguments (never anything else).
        model_files: where the model came from, recorded for ``verify``: the record
            ``elmo.models.load_model`` returns, or an (options.json, weights.hdf5) pair.
        rejects_path: where ``on_error="skip"`` writes bad records (default: beside the input,
            or beside the store for inputs that are not files).
        progress: progress bars (and the Dask dashboard's address) on stderr.
        client: a ``distributed.Client`` whose cluster runs the tasks.
        workers: start a LocalCluster of this many worker processes ("auto": one per GPU, else
            one per core).
        scheduler: the address of a running Dask scheduler to run the tasks on.
        cluster_timeout: seconds to wait for ``scheduler`` to answer, and for a first worker.
        storage_options: fsspec options for the input and the store (credentials come from the
            usual environment and config files; none is ever recorded, and a URL holding
            credentials, input or store, is refused).

    Returns:
        The manifest. A store already complete with the same arguments is left as is; an
        unfinished one resumes.

    Raises:
        StoreError: the location holds a store of other arguments (without ``overwrite``) or
            something that is not an elmo-cache store (never replaced).
        InputError: a bad record (with ``on_error="raise"``), or no record at all.
    """
    bilm = bilm if bilm is not None else load_default_bilm()
    settings = settings or PrecomputeSettings()
    check_read_options(settings.on_error, settings.fields, rejects_path)
    resolve_dtype(settings.compute_dtype, resolve_device(device))  # float16 on a CPU: refused here
    store = os.fspath(store)
    refuse_credentials(store, "output")
    fmt = store_format(store, format)
    settings = settings.for_device(bilm, resolve_device(device), _recorded_batch_tokens(store, fmt, storage_options))
    if fmt == "hdf5" and "://" in store:
        raise ValueError(f"{store}: HDF5 stores are local files; write Zarr to object storage")
    src = open_source(source, settings.input_format, storage_options)
    check_not_input(store, src.location)
    spec = settings.layer_spec(bilm)
    head = manifest_head(bilm, spec, settings, fmt, src.name, relative_model_record(model_files, store))
    if settings.on_error == "skip" and rejects_path is None:
        beside_input = isinstance(src, FileSource) and "://" not in src.location  # a local file
        rejects_path = str(default_rejects_path(src.location if beside_input else store))
    run = _Run(src, bilm, spec, settings, head, device, rejects_path, progress, storage_options,
               lambda: executor(client=client, workers=workers, scheduler=scheduler, device=device,
                                progress=progress, cluster_timeout=cluster_timeout))
    with RunLock(store, storage_options):
        if fmt == "zarr":
            return run.build(store, overwrite)
        return run.build_hdf5(store, overwrite)


def _recorded_batch_tokens(store: str, fmt: str, storage_options: dict[str, Any] | None) -> int | None:
    """The batch size the elmo-cache store at ``store`` (or its HDF5 staging store) was built
    with, if any: the automatic size depends on the memory free at the time."""
    places = [(store, "hdf5"), (f"{store}.partial.zarr", "zarr")] if fmt == "hdf5" else [(store, "zarr")]
    for path, kind in places:
        existing = inspect(path, kind, storage_options)
        recorded = existing.manifest or (existing.progress or {}).get("identity")
        if recorded:
            return recorded.get("batching", {}).get("batch_tokens")
    return None


@dataclass
class _Run:
    """One call of :func:`precompute`: its inputs, and the steps that use them."""

    source: Source
    bilm: BiLM
    spec: LayerSpec
    settings: PrecomputeSettings
    head: dict[str, Any]
    device: str | None
    rejects_path: str | None
    progress: bool
    storage_options: dict[str, Any] | None
    executor: Any

    def build_hdf5(self, path: str, overwrite: bool) -> dict[str, Any]:
        """An HDF5 file is written once, whole: a killed HDF5 write can leave a file that cannot
        be opened, so the run builds (and resumes) a Zarr staging store beside it and converts
        it when complete (:func:`cache_builder.build.commit.convert_to_hdf5`), then deletes it."""
        existing = inspect(path, "hdf5")
        check_location(path, existing)
        staging = f"{path}.partial.zarr"
        left = inspect(staging, "zarr")
        if existing.manifest is not None and not overwrite:
            try:
                done = claim(path, existing, run_identity(self.head), self._fingerprint, False)
            except StoreError:
                if left.kind == "none":
                    raise
            else:  # the file is complete: a staging store beside it is what its deletion left
                self._left_beside(staging, left, path)
                return done.manifest
        if left.kind == "foreign":
            raise StoreError(f"{staging}: the staging folder of {path} is no longer a store (a delete "
                             f"stopped half way?); delete the folder {staging} and re-run")
        manifest = self.build(staging, overwrite)
        convert_to_hdf5(staging, path)
        shutil.rmtree(staging)
        return manifest

    @staticmethod
    def _left_beside(staging: str, left: Existing, path: str) -> None:
        """Remove a complete staging store left beside the complete ``path`` (converted already);
        name a staging folder that is no longer a store, never deleting what is not ours; keep an
        unfinished one (another run's work, which its arguments resume)."""
        if left.kind == "store" and left.manifest is not None:
            shutil.rmtree(staging)
        elif left.kind == "foreign":
            log.warning("%s is complete; the folder %s beside it is what is left of its staging store: "
                        "delete it", path, staging)

    def build(self, path: str, overwrite: bool) -> dict[str, Any]:
        """Create, resume or keep the Zarr store at ``path``; returns its manifest."""
        existing = inspect(path, "zarr", self.storage_options)
        identity = run_identity(self.head)
        decision = claim(path, existing, identity, self._fingerprint, overwrite)
        if decision.state == "complete":
            if existing.progress is not None:  # left over when a run died between the two
                ZarrStore(path, "a", self.storage_options).set_attr("progress", None)
            return decision.manifest
        with self.executor() as ex:
            ex.install(self._model_key, self.bilm, self.device, resolve_dtype(self.settings.compute_dtype,
                                                                              resolve_device(self.device)))
            if decision.state == "plan":
                started = time.perf_counter()
                try:
                    store = ZarrStore(path, "w", self.storage_options)  # empty, or our own unfinished store
                    store.set_attr("progress", {"identity": identity, "stage": "plan"})
                    plan = self._plan(store, ex)
                except BaseException as error:  # nothing computed: leave nothing that blocks the fix
                    abandon(path, existing, identity, error, self.storage_options)
                    raise
                log.info("plan: %d documents, %d tokens (%d to embed after dedup) in %.2f s",
                         plan.counts.documents, plan.counts.tokens_in_documents, plan.counts.tokens,
                         time.perf_counter() - started)
                identity = {**identity, "input": {**identity["input"], "fingerprint": plan.fingerprint}}
                store.set_attr("progress", {"identity": identity, "stage": "embed", "plan": plan.summary()})
            else:
                store = ZarrStore(path, "a", self.storage_options)
                plan = _planned(decision.progress["plan"])
                identity = decision.progress["identity"]
            started = time.perf_counter()
            computed = self._embed(store, plan, ex, identity)
            log.info("embed: %d tokens in %.2f s", computed, time.perf_counter() - started)
        manifest = {**self.head, "input": {**self.head["input"], "fingerprint": plan.fingerprint},
                    "fields": list(plan.fields), "counts": plan.counts.to_manifest()}
        commit(store, manifest, scratch=(TASK_DONE,))
        return manifest

    @property
    def _model_key(self) -> str:
        return f"{self.head['model']['fingerprint']}-{self.settings.compute_dtype}-{self.device or 'auto'}"

    def _fingerprint(self) -> str:
        """The input's fingerprint, read again (a re-run compares it with the store's)."""
        return fingerprint([self.source.digest(part) for part in self.source.parts(self.settings.part_bytes)])

    def _plan(self, store: ZarrStore, ex: Executor) -> Plan:
        """Plan the input into ``store``, then create the arrays the tasks fill."""
        settings = self.settings
        dim, proj = self.head["model"]["dim"], self.head["model"]["projection_dim"]
        arrays = array_specs(self.spec, dim, proj, settings.dtype)
        planner = CorePool() if isinstance(ex, InProcess) else ex  # a run without a cluster: every core
        writer = plan_source(self.source, settings, store, arrays, planner, self.rejects_path, self.progress)
        counts = writer.counts
        if counts.documents == 0:
            rejected = f" ({counts.rejected} rejected, see {self.rejects_path})" if counts.rejected else ""
            raise InputError(self.source.location, None, f"no records to embed{rejected}")
        for name in sorted(TASK_ARRAYS & arrays.keys()):
            a = arrays[name]
            rows = counts.distinct_tokens if name == "token_layer" else counts.tokens
            chunk, shard = task_chunking(a, settings.task_rows(counts.tokens))
            store.create(name, a.tail, a.dtype, chunk, rows=rows, shard_rows=shard, compress=a.compress)
        return Plan(writer.fields, fingerprint(writer.digests), counts)

    def _embed(self, store: ZarrStore, plan: Plan, ex: Executor, identity: dict[str, Any]) -> int:
        """Run every task not yet done; returns the token rows they wrote."""
        offsets = store.read("segment_offsets")
        tasks = make_tasks(offsets, plan.counts.distinct_tokens, store.write_unit("vectors"),
                           store.write_unit("token_layer") if self.spec.keeps_token_layer else None,
                           self.settings.task_rows(plan.counts.tokens))
        if TASK_DONE not in store.names():
            store.create(TASK_DONE, (), "uint8", 1, rows=len(tasks), shard_rows=1)
        done = set(iter_done(store, len(tasks)))
        todo = [t for t in tasks if t.number not in done]
        if done:
            log.info("resuming: %d of %d tasks were done already; running %d", len(done), len(tasks), len(todo))
        step = next((t.stop - t.start for t in tasks if t.kind == "tokens" and t.start == 0), 1)
        documents = DocumentsDone(store.read("doc_offsets"), store.read("entry_segment"), offsets, step)
        for t in tasks:
            if t.number in done and t.kind == "tokens":
                documents.task_done(t.number)
        ctx = TaskContext(store.path, self.storage_options or {}, _digest(identity), self._model_key,
                          self.spec, self.settings.dtype, self.settings.max_tokens, self.settings.batch_tokens,
                          write_behind=isinstance(ex, InProcess))
        bar = EmbedBar(plan.counts.tokens, sum(t.stop - t.start for t in tasks if t.number in done
                                               and t.kind == "tokens"), documents, self.progress)
        reported = 0

        def on_progress(n: int) -> None:
            nonlocal reported
            reported += n
            bar.tokens(n)

        try:
            if ctx.write_behind:
                prepare_ahead(ctx, todo)
            for i, rows in ex.map(run_task, todo, ctx, on_progress=on_progress):
                if todo[i].kind == "tokens":
                    bar.tokens(rows - reported)
                    bar.task_done(todo[i].number)
                reported = 0
            finish_writes(ctx)
        finally:
            bar.close()
            forget(ctx)
        missing = len(tasks) - len(set(iter_done(store, len(tasks))))
        if missing:  # every task returned: a missing marker means a lost write
            raise RuntimeError(f"{store.path}: {missing} tasks finished without their done marker")
        return sum(t.stop - t.start for t in todo if t.kind == "tokens")


def _planned(summary: dict[str, Any]) -> Plan:
    return Plan(tuple(summary["fields"]), summary["fingerprint"], PlanCounts(**summary["counts"]))


def _digest(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


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


def dry_run(source: Any, bilm: BiLM | None = None, settings: PrecomputeSettings | None = None,
            storage_options: dict[str, Any] | None = None) -> DryRunReport:
    """Plan ``source`` (read, tokenize, dedup) without writing anything or running the model."""
    bilm = bilm if bilm is not None else load_default_bilm()
    settings = settings or PrecomputeSettings()
    src = open_source(source, settings.input_format, storage_options)
    writer = plan_source(src, settings, None, {}, CorePool(), os.devnull, progress=False)
    counts = writer.counts
    n_layers = bilm.options.lstm.n_layers + 1
    proj = bilm.options.lstm.projection_dim
    choices = {"all": LayerSpec(tuple(range(n_layers))), "0,1": LayerSpec((0, 1)),
               "top": LayerSpec((n_layers - 1,)),
               "mix": LayerSpec(tuple(range(n_layers)), mix=(1 / n_layers,) * n_layers)}
    estimates = {}
    for name, spec in choices.items():
        estimates[name] = {}
        for dtype in STORE_DTYPES:
            types = counts.distinct_tokens
            table = types * (proj * np.dtype(get_encoding(dtype).table_dtype).itemsize if spec.keeps_token_layer else 0)
            estimates[name][dtype] = (counts.tokens * bytes_per_token_estimate(spec, 2 * proj, dtype)
                                      + table + writer.type_bytes + 8 * types + 24 * counts.segments)
    return DryRunReport(counts.documents, counts.rejected, counts.segments, counts.tokens,
                        counts.tokens_in_documents, counts.distinct_tokens, estimates)
