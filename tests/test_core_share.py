"""A CPU run takes its fair share of a busy machine: its torch threads follow the cores the other
processes leave free (``cache_builder/build/core_share.py``), with real spinning processes beside it,
and what it stores does not depend on how many threads computed it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from cache_builder import open_cache
from cache_builder.build import core_share
from cache_builder.build.core_share import CoreShare, Sample, fair_threads, process_ticks
from cache_builder.build.engine import PrecomputeSettings, precompute
from tests.test_engine_batch_independence import LSTM
from tests.test_scale_out import corpus
from tests.tiny import tiny_bilm

CORES = os.cpu_count() or 1
pytestmark = pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="the fair share reads Linux's /proc")


def test_the_free_cores_decide_the_threads():
    before = Sample(at=0.0, busy=0, ours=0)
    # 100 ticks a second; in 1 s, 2 cores: (busy ticks, ours) -> threads
    assert fair_threads(before, Sample(1.0, 200, 200), cores=2, most=2, ticks_per_s=100) == 2  # only us
    assert fair_threads(before, Sample(1.0, 10, 0), cores=2, most=2, ticks_per_s=100) == 2  # a little noise
    assert fair_threads(before, Sample(1.0, 200, 70), cores=2, most=2, ticks_per_s=100) == 1  # two spinners
    assert fair_threads(before, Sample(1.0, 200, 0), cores=2, most=2, ticks_per_s=100) == 1  # never none
    assert fair_threads(before, Sample(1.0, 800, 400), cores=16, most=8, ticks_per_s=100) == 8  # the user's most
    assert fair_threads(before, Sample(1.0, 1200, 100), cores=16, most=16, ticks_per_s=100) == 5


def test_a_process_name_with_spaces_and_parentheses_is_read():
    line = "4242 (a (b) c) R 1 4242 4242 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 1 0 100 0 0"
    assert process_ticks(line) == 250 + 17


@pytest.fixture
def spinners() -> Iterator[None]:
    """One busy process per core, not our descendants (their time is another process's)."""
    launcher = subprocess.run(
        [sys.executable, "-c", "import subprocess, sys\n"
         f"for _ in range({CORES}):\n"
         "    print(subprocess.Popen([sys.executable, '-c', 'while True: pass'], start_new_session=True,\n"
         "                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)"],
        capture_output=True, text=True, check=True)
    pids = [int(p) for p in launcher.stdout.split()]
    time.sleep(0.3)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def two_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if CORES < 2:
        pytest.skip("one core: there is no share to follow")
    monkeypatch.setattr(CoreShare, "_carried", None)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_beside_busy_processes_one_thread_and_back_after(two_threads, spinners):
    share = CoreShare()
    time.sleep(0.3)
    share.update()
    assert torch.get_num_threads() == 1
    share.close()
    assert torch.get_num_threads() == 2  # the user's setting, given back


def test_the_engine_follows_the_share_and_stores_the_same_vectors(two_threads, tmp_path, monkeypatch, request):
    bilm = tiny_bilm(3, **LSTM)
    with torch.no_grad():
        for p in bilm.lstm.parameters():
            p.uniform_(-0.6, 0.6)  # an LSTM that amplifies any difference of rounding
    text = corpus(tmp_path / "in.txt", 300)
    settings = PrecomputeSettings(tokenizer="whitespace", dtype="float32", batch_tokens=64)
    idle = precompute(str(text), str(tmp_path / "idle.zarr"), bilm, settings, progress=False)

    counts: list[int] = []
    set_threads = torch.set_num_threads
    monkeypatch.setattr(core_share.torch, "set_num_threads", lambda n: (counts.append(n), set_threads(n)))
    monkeypatch.setattr(core_share, "INTERVAL_S", 0.05)
    request.getfixturevalue("spinners")
    busy = precompute(str(text), str(tmp_path / "busy.zarr"), bilm, settings, progress=False)

    assert 1 in counts, counts  # it went down to one thread
    assert torch.get_num_threads() == 2
    assert busy["counts"] == idle["counts"]
    a, b = open_cache(tmp_path / "idle.zarr"), open_cache(tmp_path / "busy.zarr")
    for doc_id in a:
        np.testing.assert_array_equal(a.lookup(doc_id), b.lookup(doc_id))
