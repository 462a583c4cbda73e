"""What a run may do to its output and what it records: it never destroys what it did not make,
records the input it read, keeps two runs on one output apart, and stops on a full disk with one
clear error that a re-run recovers from."""

from __future__ import annotations

import hashlib
import json
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import pytest
import zarr

from cache_builder import open_cache
from cache_builder.build.engine import PrecomputeSettings, precompute
from cache_builder.build.inputs import InputError
from cache_builder.build.sources import FileSource
from cache_builder.store import StoreError
from tests.cache_models import load, save_tiny_model
from tests.test_inputs import write_lines
from tests.test_scale_out import corpus, store_arrays

REPO = Path(__file__).resolve().parent.parent


def run(text: Path, store: Path, files, **kwargs) -> dict:
    settings = PrecomputeSettings(tokenizer="whitespace", **kwargs.pop("settings", {}))
    return precompute(str(text), str(store), load(files), settings, model_files=tuple(map(str, files)),
                      **{"progress": False, **kwargs})


def _cli(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "cli.py"), *args]


# -- the tool never destroys what it did not make


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_of_other_files_is_never_written_into_or_replaced(tmp_path: Path, model_files, overwrite: bool):
    text = write_lines(tmp_path / "in.txt", ["a b c ."])
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    with pytest.raises(StoreError, match="not an elmo-cache store.*only ever replaces an elmo-cache store"):
        run(text, folder, model_files, overwrite=overwrite)
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.tex"]
    assert (folder / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("overwrite", [False, True])
def test_another_programs_zarr_group_or_hdf5_file_is_never_replaced(tmp_path: Path, model_files, overwrite: bool):
    text = write_lines(tmp_path / "in.txt", ["a b c ."])
    group = zarr.open_group(str(tmp_path / "theirs.zarr"), mode="w")
    group.create_array("weights", shape=(3,), dtype="float32")[:] = [1, 2, 3]
    with h5py.File(tmp_path / "theirs.h5", "w") as f:
        f["data"] = [1, 2, 3]
    for name in ("theirs.zarr", "theirs.h5"):
        with pytest.raises(StoreError, match="not an elmo-cache store"):
            run(text, tmp_path / name, model_files, overwrite=overwrite)
    assert list(zarr.open_group(str(tmp_path / "theirs.zarr"), mode="r")["weights"][:]) == [1, 2, 3]
    with h5py.File(tmp_path / "theirs.h5") as f:
        assert list(f["data"][:]) == [1, 2, 3] and list(f) == ["data"]


def test_an_output_that_is_or_holds_the_input_is_refused(tmp_path: Path, model_files):
    folder = tmp_path / "data"
    folder.mkdir()
    text = write_lines(folder / "in.txt", ["a b c ."])
    for output in (text, folder):
        with pytest.raises(StoreError, match="would hold or replace the input"):
            run(text, output, model_files, overwrite=True, format="zarr")
    assert text.read_text() == "a b c .\n"


def test_overwrite_replaces_an_elmo_cache_store_and_an_empty_folder_is_used(tmp_path: Path, model_files):
    text = write_lines(tmp_path / "in.txt", ["a b c ."])
    (tmp_path / "empty.zarr").mkdir()
    assert run(text, tmp_path / "empty.zarr", model_files)["dtype"] == "float16"
    assert run(text, tmp_path / "empty.zarr", model_files, overwrite=True,
               settings={"dtype": "float32"})["dtype"] == "float32"


# -- what is recorded describes what was read


def test_the_manifest_describes_the_input_as_it_was_read(tmp_path: Path, model_files, monkeypatch):
    text = write_lines(tmp_path / "in.txt", ["old text ."])
    read = FileSource.read

    def edited_as_the_run_starts(self, part):  # the file changes after the run started
        text.write_text("new text here .\n")
        return read(self, part)

    monkeypatch.setattr(FileSource, "read", edited_as_the_run_starts)
    manifest = run(text, tmp_path / "s.zarr", model_files)
    monkeypatch.undo()
    assert manifest["input"]["fingerprint"] == hashlib.sha256(b"new text here .\n").hexdigest()
    with open_cache(str(tmp_path / "s.zarr")) as cache:
        assert cache.tokens("0").tokens == ["new", "text", "here", "."]
    assert run(text, tmp_path / "s.zarr", model_files) == manifest  # the same input: complete as is
    text.write_text("a third text .\n")
    with pytest.raises(StoreError, match="other arguments \\(or another input\\)"):
        run(text, tmp_path / "s.zarr", model_files)


# -- two runs on one output


def test_a_second_run_on_the_same_output_stops_and_readers_are_told_a_run_is_writing(tmp_path: Path, model_files):
    options, weights = map(str, model_files)
    args = ["precompute", "-", "-o", str(tmp_path / "s.zarr"), "--tokenizer", "whitespace", "-q",
            "--options", options, "--weights", weights]
    # The first run reads standard input: it holds the store until its input ends.
    first = subprocess.Popen(_cli(*args), cwd=REPO, stdin=subprocess.PIPE, text=True)
    try:
        first.stdin.write("the first line .\n")
        first.stdin.flush()
        deadline = time.time() + 120
        while not (tmp_path / "s.zarr" / "zarr.json").exists() and time.time() < deadline:
            time.sleep(0.01)
        second = subprocess.run(_cli(*args), cwd=REPO, capture_output=True, text=True, input="another input .\n")
        assert second.returncode == 2
        assert "another run" in second.stderr and f"process {first.pid} on {socket.gethostname()}" in second.stderr
        assert "--overwrite" not in second.stderr
        with pytest.raises(StoreError, match="a run is writing this store"):
            open_cache(str(tmp_path / "s.zarr"))
        first.stdin.write("the last line .\n")
    finally:
        first.stdin.close()
        first.wait(timeout=300)
    assert first.returncode == 0
    assert not (tmp_path / "s.zarr.lock").exists()
    assert len(open_cache(str(tmp_path / "s.zarr"))) == 2


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path: Path, model_files):
    text = write_lines(tmp_path / "in.txt", ["a b c ."])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "s.zarr.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                      "started": "2026-01-01T00:00:00"}))
    assert run(text, tmp_path / "s.zarr", model_files)["counts"]["documents"] == 1
    assert not (tmp_path / "s.zarr.lock").exists()


# -- a full disk


def _file_size_limit(limit: int):
    def apply() -> None:  # a file may not grow past ``limit``: writes fail as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.parametrize("suffix,limit", [(".zarr", 20_000), (".h5", 700_000)])
def test_a_full_disk_gives_one_clear_error_and_a_rerun_gives_the_same_store(tmp_path: Path, model_files,
                                                                              suffix: str, limit: int):
    """With files limited in size the Zarr run fails writing an array (its objects grow past the
    limit); the HDF5 run's staging objects fit but the HDF5 file does not."""
    text = corpus(tmp_path / "in.txt", 3000)
    options, weights = map(str, model_files)
    args = ["precompute", str(text), "--tokenizer", "whitespace", "-q", "--dtype", "float32",
            "--options", options, "--weights", weights]
    subprocess.run(_cli(*args, "-o", str(tmp_path / f"clean{suffix}")), cwd=REPO, check=True)
    store = tmp_path / f"full{suffix}"
    failed = subprocess.run(_cli(*args, "-o", str(store)), cwd=REPO, capture_output=True, text=True,
                            preexec_fn=_file_size_limit(limit))
    assert failed.returncode == 2, failed.stderr[-2000:]  # not a crash (a signal), not success
    [line] = failed.stderr.strip().splitlines()
    assert line.startswith("error: ") and "File too large" in line and str(store) in line
    with pytest.raises(StoreError):
        open_cache(str(store))
    assert not Path(f"{store}.converting").exists() and not Path(f"{store}.lock").exists()
    subprocess.run(_cli(*args, "-o", str(store)), cwd=REPO, check=True)
    assert store_arrays(store) == store_arrays(tmp_path / f"clean{suffix}")
    assert not Path(f"{store}.partial.zarr").exists()


# -- small ones


def test_an_input_without_records_is_an_error(tmp_path: Path, model_files):
    empty = write_lines(tmp_path / "empty.jsonl", [])
    with pytest.raises(InputError, match="no records to embed"):
        run(empty, tmp_path / "s.zarr", model_files)
    bad = write_lines(tmp_path / "bad.jsonl", ['{"id": 1}'])
    with pytest.raises(InputError, match="no records to embed \\(1 rejected, see .*rejects"):
        run(bad, tmp_path / "t.zarr", model_files, settings={"on_error": "skip", "fields": ("text",)})


def test_bad_sizes_name_their_flag(tmp_path: Path):
    for flag, kwargs in (("--task-tokens", {"task_tokens": 0}), ("--batch-tokens", {"batch_tokens": -1}),
                         ("--max-tokens", {"max_tokens": 0})):
        with pytest.raises(ValueError, match=f"^{flag} must be a positive whole number"):
            PrecomputeSettings(**kwargs)
    subprocess_run = subprocess.run(_cli("precompute", "x.txt", "--task-tokens", "0"), cwd=REPO,
                                    capture_output=True, text=True)
    assert "--task-tokens must be a positive" in subprocess_run.stderr


def test_a_store_and_its_model_move_together_and_verify_says_which_flag_when_the_model_is_gone(
        tmp_path: Path):
    import shutil

    from cache_builder.read.verify import verify

    project = tmp_path / "project"
    files = save_tiny_model(project / "model")
    text = write_lines(project / "in.txt", ["a b c .", "d e ."])
    manifest = run(text, project / "s.zarr", files)
    assert (manifest["model"]["options"], manifest["model"]["weights"]) == ("model/options.json",
                                                                           "model/weights.hdf5")
    moved = tmp_path / "elsewhere"
    shutil.move(project, moved)
    assert verify(str(moved / "s.zarr"), sample=2).ok
    shutil.rmtree(moved / "model")
    report = verify(str(moved / "s.zarr"), sample=2)
    assert not report.ok and "pass --model, or --options and --weights" in report.problems[0]


def test_the_progress_bar_moves_with_every_batch_of_a_squad_file(tmp_path: Path, model_files, monkeypatch):
    from cache_builder.build.progress import EmbedBar
    from tests.test_inputs import make_squad

    squad = tmp_path / "train.json"
    squad.write_text(json.dumps(make_squad(4, articles=2, paragraphs=3, questions=6)))
    updates: list[int] = []
    tokens = EmbedBar.tokens
    monkeypatch.setattr(EmbedBar, "tokens", lambda self, n: (updates.append(n), tokens(self, n)))
    manifest = run(squad, tmp_path / "s.zarr", model_files, progress=True, settings={"batch_tokens": 24})
    assert sum(updates) == manifest["counts"]["tokens"]
    assert len(updates) >= 10 and max(updates) < manifest["counts"]["tokens"] / 5


def test_a_store_of_an_older_format_is_ours_to_replace_but_never_resumed(tmp_path: Path, model_files):
    text = write_lines(tmp_path / "in.txt", ["a b c ."])
    store = tmp_path / "s.zarr"
    run(text, store, model_files)
    group = zarr.open_group(str(store), mode="a")
    group.attrs["manifest"] = {**group.attrs["manifest"], "format_version": 1}
    with pytest.raises(StoreError, match="format version 1.*--overwrite"):
        run(text, store, model_files)
    assert run(text, store, model_files, overwrite=True)["format_version"] == 2


# -- a failed run leaves nothing that blocks the fix


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_run_failing_on_its_input_leaves_no_store_and_the_corrected_command_runs(tmp_path: Path, model_files,
                                                                                    suffix: str):
    source = write_lines(tmp_path / "in.jsonl", [{"id": f"d{i}", "text": f"w{i} x ."} for i in range(50)]
                         + [{"id": "late", "text": ""}])
    store = tmp_path / f"s{suffix}"
    with pytest.raises(InputError, match="51: field text: is empty"):
        run(source, store, model_files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no store, staging store or lock
    manifest = run(source, store, model_files, settings={"on_error": "skip"})  # no --overwrite
    assert manifest["counts"]["documents"] == 50 and manifest["counts"]["rejected"] == 1

    empty = write_lines(tmp_path / "empty.jsonl", [])
    folder = tmp_path / "given"
    folder.mkdir()
    for output in (tmp_path / "new.zarr", folder):
        with pytest.raises(InputError, match="no records to embed"):
            run(empty, output, model_files)
    assert not (tmp_path / "new.zarr").exists() and not (tmp_path / "new.zarr.lock").exists()
    assert folder.is_dir() and not any(folder.iterdir())  # only what the run created is removed


def test_a_reset_store_records_the_bad_record_its_run_failed_on_and_any_rerun_replaces_it(tmp_path: Path,
                                                                                          model_files):
    from cache_builder.read.verify import verify

    store = tmp_path / "s.zarr"
    run(write_lines(tmp_path / "good.txt", ["a b c ."]), store, model_files)
    bad = write_lines(tmp_path / "bad.jsonl", [{"id": "a", "text": "x y"}, {"id": "b"}])
    with pytest.raises(InputError):
        run(bad, store, model_files, overwrite=True)  # the old store is gone: this run reset it
    for read in (open_cache, lambda path: verify(path, sample=0)):
        with pytest.raises(StoreError, match=rf"failed: bad record at line 2 of {bad} \(field text: missing\); it "
                                             "holds no vectors.*no --overwrite needed"):
            read(str(store))
    manifest = run(bad, store, model_files, settings={"on_error": "skip"})  # other arguments, no --overwrite
    assert manifest["counts"]["documents"] == 1
    with open_cache(str(store)) as cache:
        assert list(cache) == ["a"]


def test_a_complete_hdf5_file_beside_a_half_deleted_staging_store_is_not_stuck(tmp_path: Path, model_files,
                                                                               monkeypatch, caplog):
    import shutil

    text = write_lines(tmp_path / "in.txt", ["a b c .", "d e ."])
    store, staging = tmp_path / "s.h5", tmp_path / "s.h5.partial.zarr"
    with monkeypatch.context() as m:  # the run is stopped while it deletes its converted staging store
        m.setattr("cache_builder.build.engine.shutil", SimpleNamespace(rmtree=lambda p: shutil.rmtree(Path(p) / "vectors")))
        manifest = run(text, store, model_files)
    assert (staging / "zarr.json").exists() and not (staging / "vectors").exists()
    assert run(text, store, model_files) == manifest and not staging.exists()  # finished: deleted

    staging.mkdir()  # what is left is no longer a store: never deleted, named
    (staging / "token_row").mkdir()
    with caplog.at_level("WARNING", logger="elmo_cache"):
        assert run(text, store, model_files) == manifest
    assert f"the folder {staging} beside it" in caplog.text and staging.exists()
    store.unlink()
    with pytest.raises(StoreError, match=f"delete the folder {staging} and re-run"):
        run(text, store, model_files)
