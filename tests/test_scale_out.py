"""One run over many processes: the single-process path and Dask LocalClusters of 1 and 2 worker
processes write the same bytes; a worker SIGKILLed mid-run is replaced and changes nothing; a
driver killed mid-run resumes without recomputing what was done."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from distributed import Client, LocalCluster

from cache_builder import open_cache
from cache_builder.build.engine import PrecomputeSettings, precompute
from cache_builder.read.verify import verify
from tests.cache_models import load
from tests.test_inputs import write_lines

REPO = Path(__file__).resolve().parent.parent
# Small parts and tasks, so that a small input is read by many planning tasks and written by many
# embedding tasks.
SETTINGS = dict(tokenizer="whitespace", task_tokens=512, part_bytes=2048)


def corpus(path: Path, n: int, seed: int = 0) -> Path:
    """Lines of 3-30 tokens, with repeats (dedup across parts) and a long one (split pieces)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(300)]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) + " ." for _ in range(n)]
    lines[n // 2] = " ".join(lines[:40])  # a long text: pieces of max_tokens, across task rows
    return write_lines(path, lines + lines[:50])


def store_arrays(path: Path) -> dict[str, bytes]:
    with open_cache(str(path)) as cache:
        return {name: cache.store.read(name).tobytes() for name in sorted(cache.store.names())}


def build(text: Path, store: Path, files, **kwargs) -> dict:
    return precompute(str(text), str(store), load(files), PrecomputeSettings(**SETTINGS, max_tokens=64),
                      model_files=tuple(map(str, files)), progress=False, **kwargs)


def test_single_process_and_one_or_two_workers_write_the_same_store(tmp_path: Path, model_files):
    text = corpus(tmp_path / "in.txt", 600)
    manifests = {name: build(text, tmp_path / f"{name}.zarr", model_files, **kwargs)
                 for name, kwargs in (("single", {}), ("one", {"workers": 1}), ("two", {"workers": 2}))}
    assert manifests["single"]["counts"]["documents"] == 650
    assert manifests["one"] == manifests["single"] == manifests["two"]
    reference = store_arrays(tmp_path / "single.zarr")
    assert len(reference) > 10
    for name in ("one", "two"):
        assert store_arrays(tmp_path / f"{name}.zarr") == reference, name
    for name in manifests:
        assert verify(str(tmp_path / f"{name}.zarr"), sample=4).ok
    with open_cache(str(tmp_path / "two.zarr")) as two, open_cache(str(tmp_path / "single.zarr")) as single:
        assert list(two) == list(single)
        for doc_id in list(single)[::37]:
            np.testing.assert_array_equal(two.lookup(doc_id), single.lookup(doc_id))


def _tasks_done(store: Path) -> int:
    return len(list((store / "task_done").glob("c/*")))


def test_a_worker_killed_mid_run_is_replaced_and_the_store_is_unchanged(tmp_path: Path, model_files):
    text = corpus(tmp_path / "in.txt", 1500)
    build(text, tmp_path / "clean.zarr", model_files)
    store = tmp_path / "killed.zarr"
    killed: list[int] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        pids = client.run(os.getpid)  # worker address -> pid

        def kill_a_busy_worker() -> None:
            deadline = time.time() + 120
            while _tasks_done(store) < 5 and time.time() < deadline:
                time.sleep(0.01)
            busy = [address for address, keys in client.processing().items() if keys]
            if busy:
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(pids[busy[0]])

        killer = threading.Thread(target=kill_a_busy_worker)
        killer.start()
        manifest = build(text, store, model_files, client=client)
        killer.join()
        assert killed, "a worker was killed while it ran a task"
        assert killed[0] not in client.run(os.getpid).values()  # its replacement took over
    assert manifest["counts"]["documents"] == 1550
    assert store_arrays(store) == store_arrays(tmp_path / "clean.zarr")
    with open_cache(str(store)) as cache:
        assert len(cache) == 1550 and len(set(cache)) == 1550  # every id exactly once


def _cli(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "cli.py"), *args]


def test_a_killed_driver_resumes_and_skips_the_tasks_it_had_done(tmp_path: Path, model_files):
    text = corpus(tmp_path / "in.txt", 3000)
    options, weights = map(str, model_files)
    args = ["precompute", str(text), "--tokenizer", "whitespace", "--task-tokens", "512", "--max-tokens", "64",
            "--options", options, "--weights", weights, "--workers", "2"]
    subprocess.run(_cli(*args, "-q", "-o", str(tmp_path / "clean.zarr")), check=True, cwd=REPO)
    store = tmp_path / "killed.zarr"
    # The driver and its cluster are one process group: stopping it stops the whole run.
    proc = subprocess.Popen(_cli(*args, "-q", "-o", str(store)), cwd=REPO, start_new_session=True)
    deadline = time.time() + 180
    while _tasks_done(store) < 10 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run was killed, not finished"
    done_before = _tasks_done(store)
    # Token task k writes rows [512 k, 512 (k + 1)): vector shard k. A task done is never rewritten.
    written = {shard: shard.stat().st_mtime_ns for k in (p.name for p in (store / "task_done").glob("c/*"))
               for shard in (store / "vectors" / "c" / k).glob("*/*")}
    assert written
    rerun = subprocess.run(_cli(*args, "-o", str(store)), cwd=REPO, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = re.search(r"resuming: (\d+) of (\d+) tasks were done already; running (\d+)", rerun.stderr)
    assert resumed, rerun.stderr[-3000:]
    done, total, ran = map(int, resumed.groups())
    assert done >= done_before >= 10 and ran == total - done
    assert "dask dashboard: http" in rerun.stderr
    assert store_arrays(store) == store_arrays(tmp_path / "clean.zarr")
    assert not (store / "task_done").exists()  # the run's scratch is gone once it is complete
    assert {shard: shard.stat().st_mtime_ns for shard in written} == written
