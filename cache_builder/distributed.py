"""Where a run's tasks execute: in the driver's process, or on the workers of a Dask cluster.

Both executors take the same tasks (planning parts, then embedding tasks) and yield each
result as it finishes; nothing else of the engine knows which one runs. A Dask run:

- ``workers=N``: a ``distributed.LocalCluster`` of N worker processes, one thread each. On a
  GPU machine N defaults to the number of visible GPUs and worker i runs on ``cuda:i``; on a
  CPU machine the workers share the cores (torch threads = cores / N).
- ``scheduler=ADDRESS`` or ``client=``: a cluster the user already runs (``dask scheduler`` +
  ``dask worker``, dask-jobqueue, Kubernetes); each worker takes its default device (dask-cuda
  pins one GPU per worker through ``CUDA_VISIBLE_DEVICES``).

Each worker receives the model once, through a worker plugin that also reaches workers that
join (or are restarted) later. A worker that dies has its task rerun elsewhere by Dask.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import dask
import torch
from distributed import Client, LocalCluster, as_completed
from distributed.diagnostics.plugin import WorkerPlugin

from cache_builder.tasks import install_model, uninstall_model
from elmo import BiLM
from elmo.runtime import resolve_device


class Executor(Protocol):
    def install(self, key: str, bilm: BiLM, device: str | None, dtype: torch.dtype) -> None:
        """Give every process that runs tasks the model ``bilm`` as ``key``, on its device."""

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *args: Any, local: bool = False,
            on_progress: Callable[[int], None] | None = None) -> Iterator[tuple[int, Any]]:
        """``fn(item, *args)`` for every item; yields ``(index, result)`` as each finishes.

        Args:
            local: run them in this process (items that cannot travel).
            on_progress: passed on as ``fn(..., on_progress=...)`` where ``fn`` runs in this
                process (progress within a task); a cluster reports only whole results.
        """


class InProcess:
    """Runs every task in the calling process, one after the other."""

    def __init__(self) -> None:
        self._installed: list[str] = []

    def install(self, key: str, bilm: BiLM, device: str | None, dtype: torch.dtype) -> None:
        install_model(key, bilm, resolve_device(device), dtype)
        self._installed.append(key)

    def close(self) -> None:
        """Let go of the models this run installed (the caller still holds its own)."""
        for key in self._installed:
            uninstall_model(key)

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *args: Any, local: bool = False,
            on_progress: Callable[[int], None] | None = None) -> Iterator[tuple[int, Any]]:
        kwargs = {} if on_progress is None else {"on_progress": on_progress}
        for i, item in enumerate(items):
            yield i, fn(item, *args, **kwargs)


class ModelPlugin(WorkerPlugin):
    """Installs the model in each worker as it starts, restarted and late-joining ones too."""

    def __init__(self, key: str, bilm: BiLM, device: str | None, dtype: torch.dtype, threads: int | None,
                 pin_gpus: bool):
        self.key, self.bilm, self.device, self.dtype = key, bilm, device, dtype
        self.threads, self.pin_gpus = threads, pin_gpus

    def setup(self, worker: Any) -> None:
        _keep_freed_memory()
        if self.threads:
            torch.set_num_threads(self.threads)
        device = resolve_device(self.device)
        if self.pin_gpus and device.type == "cuda" and device.index is None and isinstance(worker.name, int):
            device = torch.device("cuda", worker.name % torch.cuda.device_count())
        install_model(self.key, self.bilm, device, self.dtype)



def _has_worker_plugin(dask_scheduler: Any, name: str) -> bool:
    return name in dask_scheduler.worker_plugins


def _keep_freed_memory() -> None:
    """Undo what Dask's ``MALLOC_TRIM_THRESHOLD_=65536`` does to a worker: glibc then maps every
    block over 128 KB afresh and hands it back when freed, so each batch's tensors page-fault
    (a quarter of the throughput, measured). Blocks up to 32 MB come from the heap again and
    freed memory stays for the next batch, as in a process that Dask did not start."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to undo
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 1 << 30)


class DaskExecutor:
    """Runs tasks on a Dask cluster through ``client``.

    Args:
        client: a connected ``distributed.Client``.
        threads: torch threads per worker (a local CPU cluster's share of the cores), or None
            to leave the workers' setting alone.
        pin_gpus: worker i (a LocalCluster's name) runs on GPU i.
    """

    def __init__(self, client: Any, threads: int | None = None, pin_gpus: bool = False):
        self.client, self.threads, self.pin_gpus = client, threads, pin_gpus

    @property
    def dashboard(self) -> str | None:
        return self.client.dashboard_link

    def install(self, key: str, bilm: BiLM, device: str | None, dtype: torch.dtype) -> None:
        name = f"elmo-cache-model-{key}"
        if self.client.run_on_scheduler(_has_worker_plugin, name=name):
            return  # an earlier run on this cluster sent it: its workers (and later ones) have it
        plugin = ModelPlugin(key, bilm.cpu(), device, dtype, self.threads, self.pin_gpus)
        self.client.register_plugin(plugin, name=name)

    def map(self, fn: Callable[..., Any], items: Sequence[Any], *args: Any, local: bool = False,
            on_progress: Callable[[int], None] | None = None) -> Iterator[tuple[int, Any]]:
        if local:
            yield from InProcess().map(fn, items, *args, on_progress=on_progress)
            return
        # Priorities keep the given order (longest texts first) whatever the scheduler's heuristics.
        futures = {self.client.submit(fn, item, *args, pure=False, priority=len(items) - i): i
                   for i, item in enumerate(items)}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()


@contextlib.contextmanager
def executor(*, client: Any = None, workers: int | str | None = None, scheduler: str | None = None,
             device: str | None = None, progress: bool = True) -> Iterator[Executor]:
    """The executor a run asked for: ``client``, ``scheduler`` (an address), ``workers`` (a
    LocalCluster: a number, or "auto" for one per GPU, else one per core), or none of them (this
    process)."""
    if sum(x is not None for x in (client, workers, scheduler)) > 1:
        raise ValueError("give one of client, workers (--workers), scheduler (--scheduler)")
    if client is None and workers is None and scheduler is None:
        here = InProcess()
        try:
            yield here
        finally:
            here.close()
        return
    if client is not None:
        yield _announce(DaskExecutor(client), progress)
        return
    if scheduler is not None:
        with Client(scheduler) as remote:
            yield _announce(DaskExecutor(remote), progress)
        return
    gpus = torch.cuda.device_count() if resolve_device(device).type == "cuda" else 0
    n = (gpus or os.cpu_count() or 1) if workers == "auto" else int(workers)
    if n < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    with local_cluster(n) as local:
        threads = None if gpus else max(1, (os.cpu_count() or 1) // n)
        yield _announce(DaskExecutor(local, threads=threads, pin_gpus=bool(gpus)), progress)


@contextlib.contextmanager
def local_cluster(n_workers: int, **kwargs: Any) -> Iterator[Client]:
    """A client of a new LocalCluster of ``n_workers`` processes, one thread each, as runs use it."""
    # Dask's statistical profiler walks every worker thread's stack 100 times a second, holding
    # the GIL: a few percent of a task's time, for a chart no run of ours reads.
    with dask.config.set({"distributed.worker.profile.enabled": False}), \
            LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, **kwargs) as cluster, \
            Client(cluster) as client:
        yield client


def _announce(dask: DaskExecutor, progress: bool) -> DaskExecutor:
    if progress:
        print(f"dask dashboard: {dask.dashboard}", file=sys.stderr)
    return dask
