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
join (or are restarted) later. A worker that dies has its task rerun elsewhere by Dask; one that
dies while the model is sent to it has the model sent again, like a task.

What a user sees of the cluster is the ``elmo_cache`` logger's lines: one per worker that joins
or is lost. A cluster that fails the run (no scheduler at the address, no worker in time, the
scheduler gone mid-run, a task that kills worker after worker) raises :class:`ClusterError`,
whose message says what failed and what to do.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import dask
import torch
from distributed import Client, KilledWorker, LocalCluster, as_completed
from distributed.client import FutureCancelledError
from distributed.comm.core import CommClosedError
from distributed.diagnostics.plugin import WorkerPlugin

from cache_builder.build.sources import refuse_credentials
from cache_builder.build.tasks import install_model, uninstall_model
from elmo import BiLM
from elmo.runtime import resolve_device

log = logging.getLogger("elmo_cache")

CLUSTER_TIMEOUT = 60.0
"""Seconds to wait for a scheduler to answer and for its first worker (``--cluster-timeout``)."""

MODEL_SEND_ATTEMPTS = 4
"""How often the model is sent before the run gives up: a task's ``allowed-failures`` (3) + 1."""


class ClusterError(RuntimeError):
    """The Dask cluster failed the run; the message says what failed and what to do."""


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
                 pin_gpus: bool, ignore_interrupt: bool = False):
        self.key, self.bilm, self.device, self.dtype = key, bilm, device, dtype
        self.threads, self.pin_gpus, self.ignore_interrupt = threads, pin_gpus, ignore_interrupt

    def setup(self, worker: Any) -> None:
        _keep_freed_memory()
        if self.ignore_interrupt and threading.current_thread() is threading.main_thread():
            # A worker the nanny restarts inherits the driver's Ctrl-C handling, not the
            # cluster's (local_cluster): the driver stops it.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self.threads:
            torch.set_num_threads(self.threads)
        device = resolve_device(self.device)
        if self.pin_gpus and device.type == "cuda" and device.index is None and isinstance(worker.name, int):
            device = torch.device("cuda", worker.name % torch.cuda.device_count())
        install_model(self.key, self.bilm, device, self.dtype)



def _has_worker_plugin(dask_scheduler: Any, name: str) -> bool:
    return name in dask_scheduler.worker_plugins


def _n_workers(dask_scheduler: Any) -> int:
    return len(dask_scheduler.workers)


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
        local: the cluster is this run's own (local_cluster): its workers leave Ctrl-C to the driver.
    """

    def __init__(self, client: Any, threads: int | None = None, pin_gpus: bool = False, local: bool = False):
        self.client, self.threads, self.pin_gpus, self.local = client, threads, pin_gpus, local
        self._lost = 0
        client.subscribe_topic("all", self._on_event)

    @property
    def dashboard(self) -> str | None:
        return self.client.dashboard_link

    def close(self) -> None:
        """Stop reporting the cluster's worker events (a caller's client outlives the run)."""
        with contextlib.suppress(Exception):  # a client whose scheduler is gone has nothing to stop
            self.client.unsubscribe_topic("all")

    def _on_event(self, event: tuple[float, Any]) -> None:
        """One log line per worker that joins or is lost (the scheduler's "all" topic)."""
        msg = event[1]
        if not isinstance(msg, dict) or msg.get("action") not in ("add-worker", "remove-worker"):
            return
        if msg["action"] == "remove-worker":
            if msg.get("expected"):  # retired as the cluster closes: nothing a user must know
                return
            self._lost += 1
            busy = len(msg.get("processing-tasks") or ())
            log.info("dask: worker %s lost%s", msg.get("worker"),
                     f"; its {busy} running tasks will run on other workers" if busy else "")
        elif self._lost:
            self._lost -= 1
            log.info("dask: worker %s started, replacing a lost one", msg.get("worker"))
        else:
            log.info("dask: worker %s started", msg.get("worker"))

    def install(self, key: str, bilm: BiLM, device: str | None, dtype: torch.dtype) -> None:
        name = f"elmo-cache-model-{key}"
        plugin = ModelPlugin(key, bilm.cpu(), device, dtype, self.threads, self.pin_gpus, self.local)
        for attempt in range(1, MODEL_SEND_ATTEMPTS + 1):
            try:
                if attempt == 1 and self.client.run_on_scheduler(_has_worker_plugin, name=name):
                    return  # an earlier run on this cluster sent it: its workers (and later ones) have it
                # A try cut short may have reached some workers only: each try sends it to all.
                self.client.register_plugin(plugin, name=name)
                return
            except OSError as e:  # CommClosedError, Tornado's StreamClosedError: a worker lost mid-send
                if attempt == MODEL_SEND_ATTEMPTS or self.client.status != "running":
                    raise ClusterError(f"sending the model to the Dask workers failed {attempt} times "
                                       f"({_reason(e)}); check that the workers stay up (memory?) and "
                                       f"re-run") from None
                log.info("dask: a worker was lost while receiving the model (%s); sending it again", _reason(e))

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
        except (FutureCancelledError, CommClosedError) as e:  # the futures, or their results' fetch
            raise ClusterError(f"the connection to the Dask scheduler was lost mid-run ({_reason(e)}); the "
                               "finished tasks are kept: start the cluster again and re-run the same command "
                               "to resume") from None
        except KilledWorker as e:
            raise ClusterError(f"a task killed every worker that ran it ({_reason(e)}); a worker's memory "
                               "is the usual cause: give workers more memory or use a smaller --task-tokens, "
                               "then re-run the same command to resume") from None
        finally:
            pending = [future for future in futures if not future.done()]
            if pending and self.client.status == "running":
                with contextlib.suppress(Exception):  # the cluster may be gone: nothing left to cancel
                    self.client.cancel(pending)


def _reason(e: BaseException) -> str:
    """An exception as a short phrase: its first line, or its type when it has no message."""
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


@contextlib.contextmanager
def executor(*, client: Any = None, workers: int | str | None = None, scheduler: str | None = None,
             device: str | None = None, progress: bool = True,
             cluster_timeout: float = CLUSTER_TIMEOUT) -> Iterator[Executor]:
    """The executor a run asked for: ``client``, ``scheduler`` (an address), ``workers`` (a
    LocalCluster: a number, or "auto" for one per GPU, else one per core), or none of them (this
    process).

    Args:
        progress: log the dashboard's address.
        cluster_timeout: seconds to wait for ``scheduler`` to answer and for a first worker of
            ``scheduler`` or ``client``.

    Raises:
        ClusterError: no scheduler answered at ``scheduler``, or no worker joined in time.
    """
    if sum(x is not None for x in (client, workers, scheduler)) > 1:
        raise ValueError("give one of client, workers (--workers), scheduler (--scheduler)")
    if cluster_timeout <= 0:
        raise ValueError(f"--cluster-timeout must be a positive number of seconds, got {cluster_timeout}")
    if client is None and workers is None and scheduler is None:
        here = InProcess()
        try:
            yield here
        finally:
            here.close()
        return
    if client is not None:
        with contextlib.closing(DaskExecutor(client)) as dask:
            yield _announce(_with_workers(dask, cluster_timeout, "the client's cluster"), progress)
        return
    if scheduler is not None:
        refuse_credentials(scheduler, "scheduler")
        with _connect(scheduler, cluster_timeout) as remote, contextlib.closing(DaskExecutor(remote)) as dask:
            yield _announce(_with_workers(dask, cluster_timeout, f"the scheduler at {scheduler}"), progress)
        return
    gpus = torch.cuda.device_count() if resolve_device(device).type == "cuda" else 0
    n = (gpus or os.cpu_count() or 1) if workers == "auto" else int(workers)
    if n < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    # The dashboard only serves the address we announce: without it there is no port to collide on.
    threads = None if gpus else max(1, (os.cpu_count() or 1) // n)
    with local_cluster(n, dashboard_address=":8787" if progress else None) as local, \
            contextlib.closing(DaskExecutor(local, threads=threads, pin_gpus=bool(gpus), local=True)) as dask:
        yield _announce(dask, progress)


@contextlib.contextmanager
def _connect(address: str, timeout: float) -> Iterator[Client]:
    """A client of the scheduler at ``address``, or a ClusterError saying why there is none."""
    try:
        client = Client(address, timeout=timeout)
    except Exception as e:  # refused, timed out, or a service that is not a Dask scheduler
        raise ClusterError(f"no Dask scheduler answered at {address} ({_reason(e)}); check --scheduler "
                           "(a scheduler prints its address as tcp://HOST:PORT when it starts)") from None
    with client:
        yield client


def _with_workers(dask: DaskExecutor, timeout: float, where: str) -> DaskExecutor:
    """``dask`` once its cluster has a worker: a bounded wait, not a run that hangs."""
    try:
        dask.client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise ClusterError(f"{where} has no worker after {timeout:g} s; start workers (dask worker "
                           "SCHEDULER-ADDRESS) or give them longer with --cluster-timeout") from None
    return dask


@contextlib.contextmanager
def local_cluster(n_workers: int, **kwargs: Any) -> Iterator[Client]:
    """A client of a new LocalCluster of ``n_workers`` processes, one thread each, as runs use it."""
    # Dask's statistical profiler walks every worker thread's stack 100 times a second, holding
    # the GIL: a few percent of a task's time, for a chart no run of ours reads.
    with dask.config.set({"distributed.worker.profile.enabled": False}), _workers_ignore_interrupt(), \
            warnings.catch_warnings():
        # "Port 8787 is already in use": the dashboard takes another port, which we announce.
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               silence_logs=logging.CRITICAL, **kwargs)
    with cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def _workers_ignore_interrupt() -> Iterator[None]:
    """Worker processes started inside inherit an ignored SIGINT: Ctrl-C reaches every process of
    the terminal's group, and only the driver should act on it (it stops the cluster)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _announce(dask: DaskExecutor, progress: bool) -> DaskExecutor:
    if progress:
        workers = dask.client.run_on_scheduler(_n_workers)
        log.info("dask dashboard: %s (%d workers)", dask.dashboard, workers)
    return dask
