"""Writing and preparing overlap computing in a single-process run: a task's rows are written
while the next task computes, and the next task's batches are prepared before the model gets to
them; a failed write stops the run with its error, and nothing handed over is lost."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import cache_builder.build.tasks as tasks
from cache_builder.store import ZarrStore
from elmo import BiLM
from tests.test_scale_out import build, corpus, store_arrays


def markers(store: Path) -> int:
    return int(zarr.open_group(str(store), mode="r")[tasks.TASK_DONE][:].sum())


def record(monkeypatch, name: str, log: list, pause: float = 0.0, fail_at: int | None = None) -> None:
    """Wrap ``tasks.<name>``: log each call's (start, end) time; sleep ``pause``; raise on call ``fail_at``."""
    original = getattr(tasks, name)

    def wrapped(*args, **kwargs):
        started = time.perf_counter()
        if len(log) == fail_at:
            log.append((started, started))
            raise RuntimeError(f"{name} failed")
        time.sleep(pause)
        result = original(*args, **kwargs)
        log.append((started, time.perf_counter()))
        return result

    monkeypatch.setattr(tasks, name, wrapped)


def test_the_next_task_computes_while_the_last_one_is_written(tmp_path: Path, model_files, monkeypatch):
    text = corpus(tmp_path / "in.txt", 300)
    computes, writes, threads = [], [], set()
    record(monkeypatch, "_token_rows", computes)
    record(monkeypatch, "_write", writes, pause=0.3)
    original = tasks._write
    monkeypatch.setattr(tasks, "_write", lambda *a: (threads.add(threading.current_thread().name), original(*a)))
    build(text, tmp_path / "s.zarr", model_files)
    assert len(computes) >= 3 and len(writes) > len(computes)  # then the type tasks (cost 0: last)
    assert threads != {threading.current_thread().name}  # written by the writer's thread
    # every task after the first started computing before the previous task's rows were written
    overlapped = sum(c_start < w_end for (c_start, _), (_, w_end) in zip(computes[1:], writes))
    assert overlapped == len(computes) - 1


def test_the_next_tasks_batches_are_ready_before_the_model_ends_a_task(tmp_path: Path, model_files,
                                                                          monkeypatch):
    # A model that takes its time, as a GPU does while the host waits for nothing: then only the
    # order of events can keep it waiting at a task's edge.
    text = corpus(tmp_path / "in.txt", 300)
    prepared, computed = {}, {}  # task number → when its first batch was ready / its last computed
    original_batches, original_rows, original_forward = tasks._batches, tasks._token_rows, BiLM.forward

    def batches(task, **kwargs):
        for batch in original_batches(task, **kwargs):
            prepared.setdefault(task.number, time.perf_counter())
            yield batch

    def token_rows(task, *args):
        rows = original_rows(task, *args)
        computed[task.number] = time.perf_counter()
        return rows

    def forward(self, *args, **kwargs):
        time.sleep(0.05)
        return original_forward(self, *args, **kwargs)

    monkeypatch.setattr(tasks, "_batches", batches)
    monkeypatch.setattr(tasks, "_token_rows", token_rows)
    monkeypatch.setattr(BiLM, "forward", forward)
    build(text, tmp_path / "s.zarr", model_files)
    numbers = list(computed)  # in the order they ran
    assert len(numbers) >= 3 and sorted(prepared) == sorted(numbers)
    assert all(prepared[b] < computed[a] for a, b in zip(numbers, numbers[1:]))
    monkeypatch.undo()
    build(text, tmp_path / "clean.zarr", model_files)
    assert store_arrays(tmp_path / "s.zarr") == store_arrays(tmp_path / "clean.zarr")


def test_a_failed_write_stops_the_run_with_its_error_and_a_rerun_completes_the_store(tmp_path: Path,
                                                                                      model_files, monkeypatch):
    text = corpus(tmp_path / "in.txt", 300)
    build(text, tmp_path / "clean.zarr", model_files)
    original, calls = ZarrStore.write, []

    def write(self, name, start, data):
        if name == "vectors":
            calls.append(start)
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
        return original(self, name, start, data)

    monkeypatch.setattr(ZarrStore, "write", write)
    computes: list = []
    record(monkeypatch, "_token_rows", computes)
    with pytest.raises(OSError, match="No space left"):
        build(text, tmp_path / "s.zarr", model_files)
    assert markers(tmp_path / "s.zarr") == 1  # the task before; never one without its rows
    assert len(computes) <= 3  # the run stopped at the next task
    monkeypatch.undo()
    build(text, tmp_path / "s.zarr", model_files)
    assert store_arrays(tmp_path / "s.zarr") == store_arrays(tmp_path / "clean.zarr")


def test_rows_handed_to_the_writer_are_written_when_the_model_fails(tmp_path: Path, model_files, monkeypatch):
    text = corpus(tmp_path / "in.txt", 300)
    record(monkeypatch, "_token_rows", [], fail_at=2)
    record(monkeypatch, "_write", [], pause=0.3)  # still writing the second task when the third fails
    with pytest.raises(RuntimeError, match="_token_rows failed"):
        build(text, tmp_path / "s.zarr", model_files)
    store = ZarrStore(str(tmp_path / "s.zarr"), "r")
    done = np.flatnonzero(store.array(tasks.TASK_DONE)[:])
    assert len(done) == 2


def test_a_failure_while_preparing_ahead_stops_the_run_with_its_error(tmp_path: Path, model_files, monkeypatch):
    text = corpus(tmp_path / "in.txt", 300)
    original, calls = BiLM.prepare, []

    def prepare(self, sentences):
        calls.append(len(sentences))
        if len(calls) == 3:
            raise ValueError("cannot prepare this batch")
        return original(self, sentences)

    monkeypatch.setattr(BiLM, "prepare", prepare)
    with pytest.raises(ValueError, match="cannot prepare this batch"):
        build(text, tmp_path / "s.zarr", model_files)
    assert 0 < markers(tmp_path / "s.zarr") < len(calls)  # the tasks before it are kept
    monkeypatch.undo()
    build(text, tmp_path / "s.zarr", model_files)
    build(text, tmp_path / "clean.zarr", model_files)
    assert store_arrays(tmp_path / "s.zarr") == store_arrays(tmp_path / "clean.zarr")
