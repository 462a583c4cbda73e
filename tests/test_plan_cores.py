"""Planning without a cluster runs the input's parts on every core, and writes exactly the
store that planning the parts one after the other writes."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import pytest

import cache_builder.build.engine as engine
import cache_builder.build.plan as plan
from cache_builder.build.engine import PrecomputeSettings, precompute
from cache_builder.build.inputs import InputError
from tests.cache_models import load
from tests.test_inputs import write_lines
from tests.test_scale_out import corpus, store_arrays

SETTINGS = dict(tokenizer="whitespace", task_tokens=512, part_bytes=2048, max_tokens=64)
_READ_PART = plan.read_part


def recording_read_part(*args):
    """``read_part``, noting the process that ran it in the file ``$PLAN_PIDS``."""
    with open(os.environ["PLAN_PIDS"], "a") as f:
        f.write(f"{os.getpid()}\n")
    return _READ_PART(*args)


def _run(text: Path, store: Path, files, processes: int, **settings) -> dict:
    engine_pool = engine.CorePool
    engine.CorePool = functools.partial(plan.CorePool, processes)
    try:
        return precompute(str(text), str(store), load(files), PrecomputeSettings(**{**SETTINGS, **settings}),
                          model_files=tuple(map(str, files)), progress=False)
    finally:
        engine.CorePool = engine_pool


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="planning forks worker processes on Linux only")
def test_parts_are_planned_in_other_processes_and_the_store_is_the_serial_one(tmp_path: Path, model_files,
                                                                           monkeypatch):
    text = corpus(tmp_path / "in.txt", 400)
    serial = _run(text, tmp_path / "serial.zarr", model_files, 1)
    pids = tmp_path / "pids"
    monkeypatch.setenv("PLAN_PIDS", str(pids))
    monkeypatch.setattr(plan, "read_part", recording_read_part)
    parallel = _run(text, tmp_path / "parallel.zarr", model_files, 2)
    planners = set(pids.read_text().split())
    assert len(planners) == 2 and str(os.getpid()) not in planners
    assert parallel == serial
    assert store_arrays(tmp_path / "parallel.zarr") == store_arrays(tmp_path / "serial.zarr")


def test_a_bad_record_in_a_later_part_raises_as_in_a_serial_run(tmp_path: Path, model_files):
    lines = [{"id": f"d{i}", "text": f"record {i} of some length to fill parts"} for i in range(300)]
    lines[250] = {"id": "d3", "text": "a duplicate of an earlier part's id"}
    lines[270] = {"id": "bad", "text": " "}
    path = write_lines(tmp_path / "in.jsonl", lines)
    errors = []
    for processes in (1, 2):
        with pytest.raises(InputError) as info:
            _run(path, tmp_path / f"{processes}.zarr", model_files, processes)
        errors.append(info.value)
    assert str(errors[0]) == str(errors[1])
    assert (errors[0].line, errors[0].field) == (251, "id")
    assert "duplicate id 'd3', first seen at line 4" in errors[0].reason
