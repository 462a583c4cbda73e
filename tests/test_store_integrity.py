"""Stores that must not be read silently: corrupted chunks, foreign or incomplete stores;
an interrupted run (SIGKILL) resumes to exactly the store of an uninterrupted run; verify."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from cache_builder import open_cache
from cache_builder.build.commit import copy_store
from cache_builder.build.engine import PrecomputeSettings, precompute
from cache_builder.layers import LayerSpec
from cache_builder.read.verify import verify
from cache_builder.store import BACKENDS, CorruptStoreError, Hdf5Store, StoreError, open_reader, store_format
from elmo_cache.cli import main
from tests.cache_models import load, save_tiny_model
from tests.test_inputs import write_lines

REPO = Path(__file__).resolve().parent.parent


def corpus(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(300)]
    return write_lines(path, [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) + " ."
                              for _ in range(n)])


def build(text: Path, store: Path, files, **settings) -> dict:
    return precompute(str(text), str(store), load(files),
                      PrecomputeSettings(LayerSpec((0, 1, 2)), tokenizer="whitespace", **settings),
                      model_files=tuple(map(str, files)), progress=False)


def test_corrupted_zarr_chunk_is_detected(tmp_path: Path, model_files):
    store = tmp_path / "s.zarr"
    build(corpus(tmp_path / "in.txt", 50), store, model_files, dtype="float32")
    assert verify(str(store)).ok
    shard = store / "vectors" / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with open_cache(str(store)) as cache, pytest.raises(CorruptStoreError, match="vectors"):
        for doc_id in cache:
            cache.lookup(doc_id)
    report = verify(str(store))
    assert not report.ok and "vectors" in report.problems[0]


def test_corrupted_hdf5_chunk_is_detected(tmp_path: Path, model_files):
    store = tmp_path / "s.h5"
    build(corpus(tmp_path / "in.txt", 50), store, model_files, dtype="float32")
    with h5py.File(store) as f:
        info = f["vectors"].id.get_chunk_info(0)
    with open(store, "r+b") as f:
        f.seek(info.byte_offset + info.size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    with open_cache(str(store)) as cache, pytest.raises(CorruptStoreError, match="vectors"):
        cache.lookup("0")


def test_foreign_and_missing_stores_are_refused(tmp_path: Path):
    with pytest.raises(StoreError, match="no such store"):
        open_cache(str(tmp_path / "nothing.zarr"))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(StoreError, match="not an elmo-cache store"):
        open_cache(str(tmp_path / "notes.txt"))
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(StoreError, match="not an elmo-cache store"):
        open_cache(str(tmp_path / "other.h5"))
    import zarr

    zarr.open_group(str(tmp_path / "other.zarr"), mode="w").attrs["manifest"] = {"format": "something"}
    with pytest.raises(StoreError, match="not an elmo-cache store"):
        open_cache(str(tmp_path / "other.zarr"))
    (tmp_path / "dir").mkdir()
    with pytest.raises(StoreError, match="not an elmo-cache store"):
        open_cache(str(tmp_path / "dir"))


def test_store_of_other_data_is_not_overwritten(tmp_path: Path, model_files):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(StoreError, match="not an elmo-cache store"):
        build(corpus(tmp_path / "in.txt", 3), tmp_path / "other.h5", model_files)


# -- a manifest that misdescribes its arrays


SQUAD = REPO / "data" / "sample_squad.jsonl"  # two fields: context, question


@pytest.fixture(scope="module")
def two_field_stores(tmp_path_factory: pytest.TempPathFactory, model_files) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("two_fields")
    stores = {}
    for dtype in ("int8", "float16"):
        stores[f"{dtype}.zarr"] = folder / f"{dtype}.zarr"
        precompute(str(SQUAD), str(stores[f"{dtype}.zarr"]), load(model_files),
                   PrecomputeSettings(LayerSpec((0, 1, 2)), tokenizer="whitespace", dtype=dtype,
                                      fields=("context", "question")),
                   model_files=tuple(map(str, model_files)), progress=False)
    stores["int8.h5"] = folder / "int8.h5"  # what an HDF5 run converts its staging store to, in-process
    source, target = open_reader(str(stores["int8.zarr"])), Hdf5Store(str(stores["int8.h5"]), "w")
    copy_store(source, target)
    source.close()
    target.close()
    return stores


def _copy(stores: dict[str, Path], name: str, folder: Path) -> Path:
    store = folder / name
    (shutil.copytree if stores[name].is_dir() else shutil.copy)(stores[name], store)
    return store


def _rewrite_manifest(store: Path, **changes) -> None:
    writer = BACKENDS[store_format(str(store))](str(store), "a")
    writer.set_attr("manifest", {**writer.get_attr("manifest"), **changes})
    writer.close()


@pytest.mark.parametrize(("name", "changes", "says"), [
    ("int8.zarr", {"dtype": "float16"}, "the manifest says dtype float16, but the vectors are stored as int8"),
    ("int8.h5", {"dtype": "float32"}, "the manifest says dtype float32, but the vectors are stored as int8"),
    ("float16.zarr", {"dtype": "int8"}, "the manifest says dtype int8, but the vectors are stored as float16"),
    ("int8.zarr", {"fields": ["question", "context"]},
     "the manifest says fields ['question', 'context'], but the index holds fields ['context', 'question']"),
    ("int8.h5", {"fields": ["question", "context"]},
     "the manifest says fields ['question', 'context'], but the index holds fields ['context', 'question']"),
    ("float16.zarr", {"layers": {"layers": [0, 1]}},
     "vectors holds rows of (2, 16) float16, but the manifest's layers, model and dtype say (1, 16) float16"),
])
def test_a_manifest_that_misdescribes_its_arrays_is_refused(two_field_stores, tmp_path: Path, capsys,
                                                            name: str, changes: dict, says: str):
    """An edited dtype made lookups return raw int8 codes, swapped fields relabeled context and
    question, and ``verify --sample 0`` passed: the arrays say what they hold, and reading and
    verify check the manifest against them."""
    store = _copy(two_field_stores, name, tmp_path)
    with open_cache(str(store)) as cache:  # as built: the question field holds the question
        assert cache.tokens("en-bank-q0", "question").tokens == "Where did he open an account?".split()
    _rewrite_manifest(store, **changes)
    with pytest.raises(CorruptStoreError) as raised:
        open_cache(str(store))
    assert str(raised.value) == f"{store}: {says}"
    report = verify(str(store), sample=0)
    assert report.problems == [f"{store}: {says}"]
    assert main(["verify", str(store), "--sample", "0"]) != 0
    assert f"PROBLEM: {store}: {says}" in capsys.readouterr().out
    assert main(["lookup", str(store), "en-bank-q0", "--field", "question"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith(f"{store}: {says}\n")  # one line


def test_a_store_without_the_field_names_still_opens_and_checks_what_it_can(two_field_stores, tmp_path: Path):
    """A store written before the field names were stored (the same layout less
    ``field_offsets``/``field_utf8``) opens and verifies; the count of its fields and its dtype
    are still checked against the manifest."""
    store = _copy(two_field_stores, "int8.zarr", tmp_path)
    writer = BACKENDS["zarr"](str(store), "a")
    writer.delete("field_utf8")
    with pytest.raises(CorruptStoreError, match=r": arrays \['field_utf8'\] are missing from a complete store$"):
        open_cache(str(store))  # one without the other is damage
    writer.delete("field_offsets")
    writer.close()
    with open_cache(str(store)) as cache, open_cache(str(two_field_stores["int8.zarr"])) as built:
        np.testing.assert_array_equal(cache.lookup("en-bank-q1", "question"), built.lookup("en-bank-q1", "question"))
    assert verify(str(store), sample=2).ok
    _rewrite_manifest(store, fields=["context"])
    with pytest.raises(CorruptStoreError, match=r": the manifest names 1 fields \['context'\], but the index numbers 2$"):
        open_cache(str(store))
    _rewrite_manifest(store, fields=["context", "question"], dtype="float32")
    assert verify(str(store), sample=0).problems == [
        f"{store}: the manifest says dtype float32, but the vectors are stored as int8"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "cli.py"), *args]


def tasks_done(store: Path) -> int:
    """Tasks marked done so far: one object each under the store's task_done array (HDF5 runs
    build a Zarr staging store)."""
    return len(list((store / "task_done").glob("c/*")))


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_killed_run_resumes_to_exactly_the_uninterrupted_store(tmp_path: Path, model_files, suffix: str):
    text = corpus(tmp_path / "in.txt", 1500)
    options, weights = map(str, model_files)
    args = ["precompute", str(text), "--tokenizer", "whitespace", "--task-tokens", "1000", "-q",
            "--options", options, "--weights", weights]
    subprocess.run(_cli(*args, "-o", str(tmp_path / f"clean{suffix}")), check=True, cwd=REPO)

    killed = tmp_path / f"killed{suffix}"
    progress = killed if suffix == ".zarr" else tmp_path / f"killed{suffix}.partial.zarr"
    proc = subprocess.Popen(_cli(*args, "-o", str(killed)), cwd=REPO)
    deadline = time.time() + 120
    while tasks_done(progress) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run was killed, not finished"
    with pytest.raises(StoreError, match="incomplete" if suffix == ".zarr" else "no such store"):
        open_cache(str(killed))
    with pytest.raises(subprocess.CalledProcessError):  # other arguments do not touch it
        subprocess.run(_cli(*args, "-o", str(killed), "--dtype", "float32"), check=True, cwd=REPO,
                       capture_output=True)
    subprocess.run(_cli(*args, "-o", str(killed)), check=True, cwd=REPO)

    assert not progress.exists() or suffix == ".zarr"
    clean, resumed = open_reader(str(tmp_path / f"clean{suffix}")), open_reader(str(killed))
    assert resumed.get_attr("manifest") == clean.get_attr("manifest")
    assert resumed.get_attr("progress") is None
    assert resumed.names() == clean.names()
    for name in clean.names():
        assert resumed.read(name).tobytes() == clean.read(name).tobytes(), name


def test_verify_recomputes_with_the_recorded_model(tmp_path: Path, model_files):
    store = tmp_path / "s.zarr"
    build(corpus(tmp_path / "in.txt", 40), store, model_files, max_tokens=10)
    report = verify(str(store), sample=8)
    assert report.ok and report.segments_recomputed == 8 and report.chunks_read > 10
    other = save_tiny_model(tmp_path / "other", seed=1)
    report = verify(str(store), load(other))
    assert not report.ok and "fingerprint" in report.problems[0]
    out = subprocess.run(_cli("verify", str(store)), cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and "OK" in out.stdout


def test_verify_allows_for_the_recorded_compute_precision(tmp_path: Path, model_files):
    store = tmp_path / "s.zarr"
    build(corpus(tmp_path / "in.txt", 40), store, model_files, dtype="float32", compute_dtype="bfloat16")
    report = verify(str(store), sample=8)
    assert report.ok and report.max_error > 1e-4  # bfloat16's error, accepted for what it is


def test_ctrl_c_says_in_one_line_that_the_same_command_resumes(tmp_path: Path, model_files):
    text = corpus(tmp_path / "in.txt", 800)
    store = tmp_path / "s.zarr"
    args = ["precompute", str(text), "-o", str(store), "--tokenizer", "whitespace", "--task-tokens", "500",
            "-q", "--options", str(model_files[0]), "--weights", str(model_files[1])]
    proc = subprocess.Popen(_cli(*args), cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while tasks_done(store) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.splitlines() == ["interrupted: run the same command again to resume from the last commit"]
    subprocess.run(_cli(*args), check=True, cwd=REPO)
    with open_cache(str(store)) as cache:
        assert len(cache) == 800
    assert verify(str(store), sample=2).ok
