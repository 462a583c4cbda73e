"""Sources: a file read in byte-range parts gives every line once; compressed files, URLs,
standard input and Python iterables give the same store as the plain file."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import fsspec
import pytest

from cache_builder import open_cache
from cache_builder.build.engine import PrecomputeSettings, precompute
from cache_builder.build.inputs import InputError
from cache_builder.build.sources import FileSource, IterableSource, fingerprint, open_source
from tests.cache_models import load
from tests.test_inputs import write_lines
from tests.test_scale_out import store_arrays

REPO = Path(__file__).resolve().parent.parent
RECORDS = [{"id": f"d{i}", "text": f"record {i} says {'hello ' * (i % 7)}."} for i in range(60)]


@pytest.mark.parametrize("part_bytes", [1, 7, 64, 100, 1 << 20])
def test_parts_read_every_line_exactly_once(tmp_path: Path, part_bytes: int):
    data = "\ufeff" + "".join(json.dumps(r) + ("\r\n" if i % 3 else "\n") for i, r in enumerate(RECORDS))
    path = tmp_path / "in.jsonl"
    path.write_text(data, encoding="utf-8")
    source = FileSource(str(path))
    values, digests = [], []
    for part in source.parts(part_bytes):
        read = source.read(part)
        values += [item.value for item in read.items]
        digests.append(read.digest.digest())
    assert values == RECORDS  # the byte-order mark dropped once, line endings either way
    assert fingerprint(digests) == (hashlib.sha256(path.read_bytes()).hexdigest() if len(digests) == 1
                                    else hashlib.sha256(b"".join(digests)).hexdigest())
    assert [source.digest(part) for part in source.parts(part_bytes)] == digests


def run(source, store: Path, files, **kwargs) -> dict:
    settings = PrecomputeSettings(tokenizer="whitespace", part_bytes=kwargs.pop("part_bytes", 1 << 25))
    return precompute(source, str(store), load(files), settings, progress=False, **kwargs)


def test_a_file_read_in_parts_gives_the_store_of_one_part(tmp_path: Path, model_files):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    whole = run(path, tmp_path / "whole.zarr", model_files)
    parts = run(path, tmp_path / "parts.zarr", model_files, part_bytes=256)
    assert whole["counts"] == parts["counts"]
    assert store_arrays(tmp_path / "whole.zarr") == store_arrays(tmp_path / "parts.zarr")


def test_gzip_url_stdin_and_iterables_give_the_same_vectors(tmp_path: Path, model_files):
    lines = "".join(json.dumps(r) + "\n" for r in RECORDS)
    (tmp_path / "in.jsonl").write_text(lines)
    with gzip.open(tmp_path / "in.jsonl.gz", "wt") as f:
        f.write(lines)
    with fsspec.open(f"memory://{tmp_path.name}/in.jsonl", "w") as f:
        f.write(lines)
    reference = run(tmp_path / "in.jsonl", tmp_path / "ref.zarr", model_files)
    arrays = store_arrays(tmp_path / "ref.zarr")
    sources = {"gz": str(tmp_path / "in.jsonl.gz"), "url": f"memory://{tmp_path.name}/in.jsonl",
               "records": iter(RECORDS)}
    for name, source in sources.items():
        manifest = run(source, tmp_path / f"{name}.zarr", model_files)
        assert manifest["counts"] == reference["counts"], name
        assert store_arrays(tmp_path / f"{name}.zarr") == arrays, name
    options, weights = map(str, model_files)
    subprocess.run([sys.executable, str(REPO / "cli.py"), "precompute", "-", "-o", str(tmp_path / "stdin.zarr"),
                    "--tokenizer", "whitespace", "-q", "--options", options, "--weights", weights],
                   input=lines, text=True, check=True, cwd=REPO)
    assert store_arrays(tmp_path / "stdin.zarr") == arrays
    with open_cache(str(tmp_path / "stdin.zarr")) as cache:
        assert cache.info()["input"]["name"] == "<stdin>"


def test_an_iterable_of_texts_is_numbered_like_a_text_file(tmp_path: Path, model_files):
    texts = [r["text"] for r in RECORDS]
    (tmp_path / "in.txt").write_text("".join(t + "\n" for t in texts))
    run(tmp_path / "in.txt", tmp_path / "file.zarr", model_files)
    manifest = run(texts, tmp_path / "texts.zarr", model_files)
    assert manifest["input"]["name"] == "<texts>"
    assert store_arrays(tmp_path / "file.zarr") == store_arrays(tmp_path / "texts.zarr")
    assert isinstance(open_source(iter(texts)), IterableSource)


def test_bad_elements_of_an_iterable_name_their_position(tmp_path: Path, model_files):
    with pytest.raises(InputError, match=r"^<records>: element 2: record is not a JSON object"):
        run([RECORDS[0], "a text among records"], tmp_path / "s.zarr", model_files)
    with pytest.raises(TypeError, match="a source is a path"):
        open_source(42)
    with pytest.raises(ValueError, match="credentials"):
        open_source("s3://key:secret@bucket/in.jsonl")


# -- inputs a corpus really has


@pytest.mark.parametrize("part_bytes", [5, 1 << 20])
def test_blank_lines_are_skipped_and_a_lone_cr_ends_a_line(tmp_path: Path, model_files, part_bytes: int):
    text = tmp_path / "in.txt"  # paragraphs separated by blank lines; old Mac, Windows and Unix endings
    text.write_bytes(b"one two .\r\rthree .\r   \r\nfour five six .\r\n\nseven .\r")
    manifest = run(text, tmp_path / "s.zarr", model_files, part_bytes=part_bytes)
    assert (manifest["counts"]["documents"], manifest["counts"]["rejected"]) == (4, 0)
    with open_cache(str(tmp_path / "s.zarr")) as cache:  # ids are 0-based line indexes, blank lines counted
        assert {doc_id: cache.tokens(doc_id, "text").tokens for doc_id in cache} == {
            "0": ["one", "two", "."], "2": ["three", "."], "4": ["four", "five", "six", "."], "6": ["seven", "."]}
    records = tmp_path / "in.jsonl"
    records.write_bytes(b"".join(json.dumps(r).encode() + b"\r" for r in RECORDS[:5]))
    assert run(records, tmp_path / "r.zarr", model_files, part_bytes=part_bytes)["counts"]["documents"] == 5

    blank = write_lines(tmp_path / "blank.txt", ["", "  ", "\t"])
    with pytest.raises(InputError, match="no records to embed"):
        run(blank, tmp_path / "b.zarr", model_files)


def test_a_pipe_whose_first_record_is_longer_than_a_read_names_the_fields_as_the_file_does(
        tmp_path: Path, model_files):
    """Fields are inferred from the first record; on a pipe it arrives in pieces, and it may be
    longer than any read-ahead buffer (a SQuAD-like context)."""
    records = [{"id": "long", "context": " ".join(["word"] * 6000), "question": "what is it ?"},
               {"id": "short", "context": "one more .", "question": "and this ?"}]
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    (tmp_path / "in.jsonl").write_bytes(data)
    reference = run(tmp_path / "in.jsonl", tmp_path / "ref.zarr", model_files)
    read_end, write_end = os.pipe()

    def feed() -> None:  # a slow writer: the reader sees the first line in many pieces
        with os.fdopen(write_end, "wb", buffering=0) as pipe:
            for start in range(0, len(data), 4096):
                pipe.write(data[start : start + 4096])
                time.sleep(0.002)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        manifest = run(f"/dev/fd/{read_end}", tmp_path / "pipe.zarr", model_files)
    finally:
        writer.join()
        os.close(read_end)
    assert manifest["fields"] == reference["fields"] == ["context", "question"]
    assert manifest["counts"] == reference["counts"]
    assert store_arrays(tmp_path / "pipe.zarr") == store_arrays(tmp_path / "ref.zarr")


def test_directories_pipes_and_descriptors_are_read_or_refused_by_name(tmp_path: Path, model_files):
    from cache_builder.build.inputs import read_records

    folder = tmp_path / "corpus"
    folder.mkdir()
    for read in (lambda: run(folder, tmp_path / "d.zarr", model_files), lambda: list(read_records(folder))):
        with pytest.raises(IsADirectoryError, match=f"^{folder} is a directory, not an input file$"):
            read()
    with pytest.raises(FileNotFoundError, match="input file not found"):
        run(tmp_path / "missing.txt", tmp_path / "m.zarr", model_files)
    lines = "".join(json.dumps(r) + "\n" for r in RECORDS)
    (tmp_path / "in.jsonl").write_text(lines)
    run(tmp_path / "in.jsonl", tmp_path / "ref.zarr", model_files)
    options, weights = map(str, model_files)
    cli = f"'{sys.executable}' '{REPO / 'cli.py'}' precompute"
    model = f"--tokenizer whitespace -q --options '{options}' --weights '{weights}'"
    given = f"'{tmp_path / 'in.jsonl'}'"
    commands = {"fifo": f"{cli} <(cat {given}) -o '{tmp_path / 'fifo.zarr'}' {model}",  # process substitution
                "stdin": f"{cli} /dev/stdin -o '{tmp_path / 'stdin.zarr'}' {model} < {given}",
                "fd": f"{cli} /dev/fd/3 -o '{tmp_path / 'fd.zarr'}' {model} 3< {given}"}
    for name, command in commands.items():
        subprocess.run(["bash", "-c", command], check=True, cwd=REPO)
        got, want = store_arrays(tmp_path / f"{name}.zarr"), store_arrays(tmp_path / "ref.zarr")
        assert got == want, (name, sorted(k for k in want.keys() | got.keys() if got.get(k) != want.get(k)))
    with open_cache(str(tmp_path / "fd.zarr")) as cache:
        assert cache.info()["input"]["name"] == "/dev/fd/3"
    refused = subprocess.run(["bash", "-c", f"{cli} <(echo a) {model}"], cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stderr.startswith("error: reading /dev/fd/")
    assert refused.stderr.strip().endswith("a stream: name the store with -o")
