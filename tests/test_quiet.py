"""Quiet means quiet, and an error is one line: real command-line runs (single process, Dask
LocalClusters, a scheduler of our own) print nothing on stderr with ``-q``, one line per worker
event without it, and one line with exit code 2 (130 on Ctrl-C) for every failure."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from cache_builder.build.engine import PrecomputeSettings, precompute
from elmo import BiLM
from tests.cache_models import load
from tests.test_scale_out import SETTINGS, _tasks_done, corpus

REPO = Path(__file__).resolve().parent.parent


def cli(model_files, *args: str, timeout: float = 240, **kwargs) -> subprocess.CompletedProcess:
    options, weights = map(str, model_files)
    command = [sys.executable, str(REPO / "cli.py"), args[0], *args[1:], "--options", options, "--weights", weights,
               "--tokenizer", "whitespace"]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, **kwargs)


def one_error_line(run: subprocess.CompletedProcess) -> str:
    lines = run.stderr.splitlines()
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), run.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("where", [(), ("--workers", "1"), ("--workers", "2")], ids=["single", "one", "two"])
def test_a_quiet_run_prints_nothing_on_stderr(tmp_path: Path, model_files, where):
    text = corpus(tmp_path / "in.txt", 200)
    run = cli(model_files, "precompute", str(text), "-o", str(tmp_path / "s.zarr"), "-q", *where)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.splitlines() == []
    assert len(run.stdout.splitlines()) == 1  # the summary


def test_ctrl_c_on_two_workers_is_one_line_and_exit_130(tmp_path: Path, model_files):
    text = corpus(tmp_path / "in.txt", 3000)
    store = tmp_path / "s.zarr"
    options, weights = map(str, model_files)
    proc = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "precompute", str(text), "-o", str(store), "-q",
                             "--workers", "2", "--task-tokens", "512", "--max-tokens", "64", "--options", options,
                             "--weights", weights, "--tokenizer", "whitespace"],
                            cwd=REPO, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 180
    while _tasks_done(store) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal does: every process of the group
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert stderr.splitlines() == ["interrupted: run the same command again to resume from the last commit"]


def test_a_truncated_squad_json_gz_is_one_line(tmp_path: Path, model_files):
    paragraphs = [{"context": f"a b c {i} . " * 40, "qas": [{"id": f"q{i}", "question": "a b ?", "answers": []}]}
                  for i in range(300)]
    data = gzip.compress(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}).encode())
    (tmp_path / "in.json.gz").write_bytes(data[: len(data) // 2])
    run = cli(model_files, "precompute", str(tmp_path / "in.json.gz"), "-o", str(tmp_path / "s.zarr"), "-q")
    line = one_error_line(run)
    assert "ends early" in line or "damaged compressed data" in line


@pytest.fixture()
def garbage_server():
    """A TCP service that is not a Dask scheduler: an SSH server's banner, which Dask reads as a
    frame of 2.82 EiB ("Unable to allocate")."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                time.sleep(0.2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"tcp://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    server.close()


def test_a_scheduler_address_that_is_no_scheduler_is_one_line(tmp_path: Path, model_files, garbage_server):
    text = corpus(tmp_path / "in.txt", 20)
    run = cli(model_files, "precompute", str(text), "-o", str(tmp_path / "s.zarr"), "--scheduler", garbage_server,
              "--cluster-timeout", "5")
    line = one_error_line(run)
    assert garbage_server in line and "--scheduler" in line


def _dask(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.fixture()
def scheduler(tmp_path: Path):
    """A scheduler process of our own (no worker): its address and the process."""
    port = socket.create_server(("127.0.0.1", 0))
    address = f"tcp://127.0.0.1:{port.getsockname()[1]}"
    port.close()
    proc = _dask("scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1], "--no-dashboard")
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", int(address.rsplit(":", 1)[1])), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield address, proc
    for p in [proc]:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def test_a_scheduler_without_workers_is_a_bounded_wait_and_one_line(tmp_path: Path, model_files, scheduler):
    text = corpus(tmp_path / "in.txt", 20)
    started = time.time()
    run = cli(model_files, "precompute", str(text), "-o", str(tmp_path / "s.zarr"), "--scheduler", scheduler[0],
              "--cluster-timeout", "3", "-q")
    assert time.time() - started < 60
    line = one_error_line(run)
    assert "no worker" in line and "--cluster-timeout" in line


def test_a_scheduler_lost_mid_run_is_one_line(tmp_path: Path, model_files, scheduler):
    address, proc = scheduler
    worker = _dask("worker", address, "--nthreads", "1", "--nworkers", "1", "--no-dashboard")
    try:
        text = corpus(tmp_path / "in.txt", 3000)
        store = tmp_path / "s.zarr"

        def kill_the_scheduler() -> None:
            deadline = time.time() + 180
            while _tasks_done(store) < 3 and time.time() < deadline:
                time.sleep(0.01)
            os.killpg(proc.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_the_scheduler)
        killer.start()
        run = cli(model_files, "precompute", str(text), "-o", str(store), "--scheduler", address, "-q",
                  "--task-tokens", "512", "--max-tokens", "64")
        killer.join()
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    line = one_error_line(run)
    assert "Dask scheduler was lost mid-run" in line and "re-run" in line


def test_worker_events_are_one_line_each_without_q(tmp_path: Path, model_files):
    """A worker killed mid-run: one line says it was lost, one that its replacement started."""
    text = corpus(tmp_path / "in.txt", 3000)
    store = tmp_path / "s.zarr"
    options, weights = map(str, model_files)
    proc = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "precompute", str(text), "-o", str(store),
                             "--workers", "2", "--task-tokens", "512", "--max-tokens", "64", "--options", options,
                             "--weights", weights, "--tokenizer", "whitespace"],
                            cwd=REPO, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 180
    while _tasks_done(store) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "spawn_main"], capture_output=True, text=True)
    os.kill(int(workers.stdout.split()[0]), signal.SIGKILL)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 0, stderr[-3000:]
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and "|" not in line]
    events = [line for line in lines if line.startswith("dask: worker")]
    assert len([line for line in events if re.match(r"dask: worker \S+ lost", line)]) == 1, stderr[-3000:]
    assert len([line for line in events if "replacing a lost one" in line]) == 1, stderr[-3000:]
    assert len(lines) == len(events) + 3, lines  # and the dashboard's, the plan's and the embedding's


class SlowToArrive(BiLM):
    """A model that takes two seconds to unpickle in a worker: time to kill it while it receives."""

    def __setstate__(self, state) -> None:
        time.sleep(2)
        super().__setstate__(state)


def _sending_the_model(dask_scheduler) -> bool:
    return any(name.startswith("elmo-cache-model") for name in dask_scheduler.worker_plugins)


def test_a_worker_killed_while_the_model_is_sent_is_retried(tmp_path: Path, model_files):
    text = corpus(tmp_path / "in.txt", 100)
    bilm = load(model_files)
    bilm.__class__ = SlowToArrive
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = list(client.run(os.getpid).values())

        def kill_a_worker_as_the_model_is_sent() -> None:
            deadline = time.time() + 60
            while not client.run_on_scheduler(_sending_the_model) and time.time() < deadline:
                time.sleep(0.01)
            os.kill(pids[0], signal.SIGKILL)  # it is still unpickling the model (two seconds)

        killer = threading.Thread(target=kill_a_worker_as_the_model_is_sent)
        killer.start()
        manifest = precompute(str(text), str(tmp_path / "s.zarr"), bilm,
                              PrecomputeSettings(**SETTINGS, max_tokens=64), progress=False, client=client)
        killer.join()
        assert pids[0] not in client.run(os.getpid).values()
    assert manifest["counts"]["documents"] == 150
