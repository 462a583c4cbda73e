"""Locks and messages tell the truth: a lock from another host says how to tell whether its run is
alive and how to remove it (and a running run keeps its lock's renewal time fresh); a pickle
that would run code is refused in one whole line that names the file and what it would run."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from cache_builder.build.engine import PrecomputeSettings, precompute
from cache_builder.store import StoreError
from cache_builder.store import lock as lock_module
from cache_builder.store.lock import RunLock
from elmo import load_bilm
from elmo.efml import EfmlFormatError
from elmo.train import TrainingError, load_checkpoint
from tests.cache_models import load
from tests.efml_models import write_efml_model
from tests.test_inputs import write_lines


def run(text: Path, store: Path, files) -> dict:
    return precompute(str(text), str(store), load(files), PrecomputeSettings(tokenizer="whitespace"),
                      progress=False)


@pytest.mark.parametrize("renewed, says", [("2026-12-01T10:05:00Z", "last renewed 2026-12-01T10:05:00Z, "),
                                           (None, "no renewal time recorded")])
def test_a_lock_from_another_host_says_how_to_check_it_and_how_to_remove_it(tmp_path: Path, model_files,
                                                                            renewed, says):
    text, store = write_lines(tmp_path / "in.txt", ["a b c ."]), tmp_path / "s.zarr"
    holder = {"pid": 4242, "host": "gpu-node-7.example", "started": "2026-12-01T10:00:00Z"}
    lock = tmp_path / "s.zarr.lock"
    lock.write_text(json.dumps({**holder, **({"renewed": renewed} if renewed else {})}))
    with pytest.raises(StoreError) as e:
        run(text, store, model_files)
    message = str(e.value)
    assert "\n" not in message and "wait for it to finish" not in message
    for words in ("process 4242 on gpu-node-7.example", "started 2026-12-01T10:00:00Z", says,
                  "Check on gpu-node-7.example whether process 4242 is still running (ps -p 4242)"):
        assert words in message
    command = message.split("remove the lock (")[1].split(") and re-run")[0]
    assert command == f"rm {lock}"
    subprocess.run(command, shell=True, check=True)  # the command given removes exactly the lock
    assert run(text, store, model_files)["counts"]["documents"] == 1


def test_a_running_run_renews_its_lock_and_removes_it_at_the_end(tmp_path: Path, monkeypatch):
    times = (f"2026-12-01T10:00:{s:02d}Z" for s in itertools.count())
    monkeypatch.setattr(lock_module, "_now", lambda: next(times))
    monkeypatch.setattr(lock_module, "RENEW_SECONDS", 0.01)
    path = tmp_path / "s.zarr.lock"
    with RunLock(str(tmp_path / "s.zarr")):
        first = json.loads(path.read_text())
        assert first["pid"] == os.getpid() and first["started"] == first["renewed"]
        deadline = time.time() + 10
        while json.loads(path.read_text())["renewed"] == first["renewed"] and time.time() < deadline:
            time.sleep(0.01)
        assert json.loads(path.read_text())["renewed"] > first["renewed"]
    assert not path.exists()


class RunsSystem:
    """Unpickling this with a full unpickler runs ``os.system``: it creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def assert_refused_in_one_line(message: str, path: Path) -> None:
    assert message.startswith(f"{path}: refused on purpose: reading it would run posix.system, and nothing "
                              "this tool reads may run code")
    assert message.endswith("only tensors and plain data are loaded)") and "\n" not in message
    assert "weights_only" not in message and "False" not in message and "trust" not in message


@pytest.mark.parametrize("legacy", [False, True])
def test_an_efml_pickle_that_would_run_code_is_refused_saying_what_and_why(tmp_path: Path, legacy: bool):
    model = write_efml_model(tmp_path / "m")
    marker, path = tmp_path / "code-ran", model.folder / "encoder.pkl"
    torch.save(OrderedDict(weight=RunsSystem(marker)), path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(EfmlFormatError) as e:
        load_bilm(model.folder)
    assert_refused_in_one_line(str(e.value), path)
    assert not marker.exists()


def test_a_checkpoint_that_would_run_code_is_refused_saying_what_and_why(tmp_path: Path):
    marker, path = tmp_path / "code-ran", tmp_path / "checkpoint.pt"
    torch.save({"config": {}, "model": RunsSystem(marker)}, path)
    with pytest.raises(TrainingError) as e:
        load_checkpoint(path)
    assert_refused_in_one_line(str(e.value), path)
    assert not marker.exists()
