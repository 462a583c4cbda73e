"""Whole storage objects encoded by ``ShardWriter``: the bytes zarr-python writes, without its
codec pipeline, and damage still an error."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from zarr.core.codec_pipeline import BatchedCodecPipeline

from cache_builder.store import CorruptStoreError, ZarrStore

SHARD = 256  # rows per shard in these tests: 8 chunks of 32 rows


def objects(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and p.name != "zarr.json"}


@pytest.mark.parametrize("rows", [SHARD * 3, SHARD * 2 + 100, SHARD * 2 + 64, 17])
@pytest.mark.parametrize("tail,dtype,compress,shard", [((2, 8), "float16", False, SHARD),
                                                       ((2,), "int32", True, SHARD),
                                                       ((), "int64", True, 32),  # a chunk per object
                                                       ((3,), "float32", False, 32)])
def test_objects_equal_zarr_pythons_bit_for_bit(tmp_path: Path, rows, tail, dtype, compress, shard):
    rng = np.random.default_rng(rows)
    data = (rng.standard_normal((rows, *tail)) * 1000).astype(dtype)
    data[3:40] = 0  # an all-zero chunk is written too
    ours, theirs = ZarrStore(str(tmp_path / "ours"), "w"), ZarrStore(str(tmp_path / "zarr"), "w")
    for store in (ours, theirs):
        store.create("a", tail, dtype, 32, rows=rows, shard_rows=shard, compress=compress)
    for start in range(0, rows, shard):  # whole objects, the last one up to the array's end
        ours.write("a", start, data[start : start + shard])
    theirs.array("a")[:] = data  # zarr-python's own pipeline
    assert objects(tmp_path / "ours" / "a") == objects(tmp_path / "zarr" / "a")
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "ours", mode="r")["a"][:], data)
    np.testing.assert_array_equal(ZarrStore(str(tmp_path / "ours"), "r").read("a"), data)


def test_whole_objects_bypass_zarrs_codec_pipeline(tmp_path: Path, monkeypatch):
    store = ZarrStore(str(tmp_path / "s"), "w")
    store.create("v", (4,), "float16", 32, rows=SHARD * 4, shard_rows=SHARD, compress=False)

    def refuse(*args, **kwargs):
        raise AssertionError("a whole-object write went through zarr's codec pipeline")

    monkeypatch.setattr(BatchedCodecPipeline, "write", refuse)
    data = np.arange(SHARD * 4 * 4, dtype=np.float16).reshape(-1, 4)
    store.write("v", 0, data[: SHARD * 2])
    store.write("v", SHARD * 2, data[SHARD * 2 :])
    np.testing.assert_array_equal(store.read("v"), data)


def test_part_of_an_object_merges_with_what_is_stored(tmp_path: Path):
    """An appender's tail (part of a shard) goes through zarr, which merges it with the rest."""
    store = ZarrStore(str(tmp_path / "s"), "w")
    store.create("a", (), "int64", 32, shard_rows=SHARD)
    data = np.arange(SHARD + 50, dtype=np.int64)
    store.write("a", 0, data[:100])  # the array's end: a whole (last) object
    store.write("a", 100, data[100:SHARD + 50])  # starts inside that object
    np.testing.assert_array_equal(ZarrStore(str(tmp_path / "s"), "r").read("a"), data)
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "s", mode="r")["a"][:], data)


def test_rows_that_are_not_whole_objects_are_refused(tmp_path: Path):
    store = ZarrStore(str(tmp_path / "s"), "w")
    store.create("a", (), "int64", 32, rows=SHARD * 2, shard_rows=SHARD)
    writer = store._writer("a")
    with pytest.raises(ValueError, match="not whole storage objects"):
        list(writer.objects(0, np.zeros(SHARD - 1, np.int64), SHARD * 2))


@pytest.mark.parametrize("damage", ["missing", "flipped", "truncated"])
def test_a_damaged_or_missing_shard_is_an_error_never_zeros(tmp_path: Path, damage):
    path = tmp_path / "s"
    store = ZarrStore(str(path), "w")
    store.create("v", (8,), "float16", 32, rows=SHARD * 2, shard_rows=SHARD, compress=False)
    data = np.ones((SHARD * 2, 8), np.float16)
    store.write("v", 0, data)
    shard = path / "v" / "c" / "1" / "0"
    raw = shard.read_bytes()
    if damage == "missing":
        os.remove(shard)
    elif damage == "flipped":
        shard.write_bytes(raw[:100] + bytes([raw[100] ^ 1]) + raw[101:])
    else:
        shard.write_bytes(raw[: len(raw) // 2])
    reader = ZarrStore(str(path), "r")
    np.testing.assert_array_equal(reader.read("v", 0, SHARD), data[:SHARD])  # the intact shard
    with pytest.raises(CorruptStoreError, match=r"object 'v/c/1/0'"):
        reader.read("v", SHARD, SHARD + 1)
    if damage == "flipped":  # zarr-python's own CRC32C check refuses it too
        with pytest.raises(Exception, match="(?i)checksum|crc"):
            zarr.open_group(path, mode="r")["v"][SHARD:]
