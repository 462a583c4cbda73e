"""Benchmark of the store writers: the same rows written by each candidate, side by side.

A task's rows go to a Zarr v3 store as whole shards. The candidates write the same arrays
with the same layout (the project's shapes, chunking, shards and codecs, from
``cache_builder.store.layout`` for a ``--layers 0,1`` float16 store of the full model's width,
1024): ``vectors`` ``(rows, 1, 1024)`` float16 uncompressed, ``token_row`` ``(rows,)`` int32
uncompressed and ``token_spans`` ``(rows, 2)`` int32 blosc-zstd, every chunk with a CRC32C:

- ``zarr``: zarr-python's default codec pipeline (``array[a:b] = rows``);
- ``zarrs``: the same through the ``zarrs`` codec pipeline (Rust), set in ``zarr.config``;
- ``tensorstore``: the arrays zarr-python created, opened and written by ``tensorstore``;
- ``numpy``: ``ZarrStore.write``: each shard encoded with numpy (:mod:`cache_builder.store.shard_writer`)
  and written with one ``store.set``.

Each writes task-sized pieces of rows (whole shards, as tasks do) into a fresh store on local
disk. Every store is then read back with zarr-python (which checks every CRC32C) and compared
with the rows written, and its objects are compared byte for byte with the default's.
Reports MB/s (uncompressed bytes written per second), rows/s and the CPU seconds of all the
process's threads per candidate, and the ratio to zarr-python's default. Once the writes
outrun the disk (the kernel's dirty page cache full) wall time measures the disk; CPU time is
what a writer takes from the model.

Usage: ``python benchmarks/writers.py [--rows 1048576] [--only numpy,zarr]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cache_builder.build.settings import PrecomputeSettings  # noqa: E402
from cache_builder.layers import LayerSpec  # noqa: E402
from cache_builder.store import ZarrStore  # noqa: E402
from cache_builder.store.layout import array_specs, task_chunking  # noqa: E402

NAMES = ("vectors", "token_row", "token_spans")
CANDIDATES = ("zarr", "zarrs", "tensorstore", "numpy")


def make_data(rows: int) -> dict[str, np.ndarray]:
    """Rows of each array: random float16 activations, token types and increasing spans."""
    rng = np.random.default_rng(0)
    starts = np.cumsum(rng.integers(1, 9, rows), dtype=np.int64).astype(np.int32)
    return {"vectors": rng.standard_normal((rows, 1, 1024), dtype=np.float32).astype(np.float16),
            "token_row": rng.integers(0, 50_000, rows, dtype=np.int32),
            "token_spans": np.stack([starts, starts + rng.integers(1, 8, rows, dtype=np.int32)], axis=1)}


def create(path: str, rows: int) -> tuple[ZarrStore, int]:
    """A store with the three arrays laid out as ``precompute`` lays them out; returns it and
    the rows per task (each write is one task's rows)."""
    specs = array_specs(LayerSpec((0, 1)), 1024, 512, "float16")
    task_rows = PrecomputeSettings().task_rows(rows)
    store = ZarrStore(path, "w")
    for name in NAMES:
        spec = specs[name]
        chunk, shard = task_chunking(spec, task_rows) if name == "vectors" else (spec.chunk_rows, None)
        store.create(name, spec.tail, spec.dtype, chunk, rows=rows, shard_rows=shard, compress=spec.compress)
    return store, task_rows


def pieces(store: ZarrStore, name: str, rows: int, task_rows: int) -> list[tuple[int, int]]:
    """Task-sized ``(start, stop)`` pieces of whole storage objects."""
    unit = store.write_unit(name)
    step = max(unit, task_rows // unit * unit)
    return [(a, min(a + step, rows)) for a in range(0, rows, step)]


def write_zarr(path: str, data: dict[str, np.ndarray], pipeline: str | None) -> None:
    config = {"codec_pipeline.path": pipeline} if pipeline else {}
    store, task_rows = create(path, len(data["vectors"]))
    with zarr.config.set(config):
        group = zarr.open_group(path, mode="r+")
        for name in NAMES:
            array = group[name].with_config({"write_empty_chunks": True})
            for a, b in pieces(store, name, len(data[name]), task_rows):
                array[a:b] = data[name][a:b]


def write_tensorstore(path: str, data: dict[str, np.ndarray]) -> None:
    import tensorstore as ts

    store, task_rows = create(path, len(data["vectors"]))
    for name in NAMES:
        array = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": os.path.join(path, name)},
                         "store_data_equal_to_fill_value": True}, open=True).result()
        for a, b in pieces(store, name, len(data[name]), task_rows):
            array[a:b].write(data[name][a:b]).result()


def write_numpy(path: str, data: dict[str, np.ndarray]) -> None:
    store, task_rows = create(path, len(data["vectors"]))
    for name in NAMES:
        for a, b in pieces(store, name, len(data[name]), task_rows):
            store.write(name, a, data[name][a:b])


WRITERS: dict[str, Callable[[str, dict[str, np.ndarray]], None]] = {
    "zarr": lambda path, data: write_zarr(path, data, None),
    "zarrs": lambda path, data: write_zarr(path, data, "zarrs.ZarrsCodecPipeline"),
    "tensorstore": write_tensorstore,
    "numpy": write_numpy,
}


def reads_back(path: str, data: dict[str, np.ndarray]) -> bool:
    """Whether zarr-python (checking every CRC32C) reads back exactly the rows written."""
    group = zarr.open_group(path, mode="r")
    step = 1 << 17
    return all(np.array_equal(group[name][a : a + step], data[name][a : a + step])
               for name in NAMES for a in range(0, len(data[name]), step))


def same_objects(path: str, reference: str) -> bool:
    """Whether every object under ``path`` equals, byte for byte, the one under ``reference``."""
    for name in NAMES:
        for root, _, files in os.walk(os.path.join(reference, name)):
            for f in files:
                ours = os.path.join(path, os.path.relpath(os.path.join(root, f), reference))
                if not os.path.exists(ours) or Path(ours).read_bytes() != Path(root, f).read_bytes():
                    return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1 << 20, help="rows of each array (tokens)")
    parser.add_argument("--only", default=",".join(CANDIDATES), help="candidates, comma-separated")
    args = parser.parse_args()
    chosen = [c for c in CANDIDATES if c in args.only.split(",")]  # the default first: the reference
    data = make_data(args.rows)
    megabytes = sum(a.nbytes for a in data.values()) / 1e6
    print(f"{args.rows} rows: vectors (1, 1024) float16, token_row int32, token_spans (2,) int32 "
          f"blosc-zstd; {megabytes:.0f} MB uncompressed, written in task-sized pieces")
    print(f"{'writer':<12} {'seconds':>8} {'MB/s':>8} {'rows/s':>11} {'vs zarr':>8} {'CPU s':>7}  reads back  "
          "same bytes as zarr")
    with tempfile.TemporaryDirectory() as tmp:
        base = None
        for name in chosen:
            path = os.path.join(tmp, name)
            started, cpu = time.perf_counter(), time.process_time()
            WRITERS[name](path, data)
            seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
            base = base or (seconds if name == "zarr" else None)
            ratio = f"{base / seconds:.1f}x" if base else "-"
            same = same_objects(path, os.path.join(tmp, "zarr")) if "zarr" in chosen and name != "zarr" else None
            print(f"{name:<12} {seconds:>8.2f} {megabytes / seconds:>8.0f} {args.rows / seconds:>11,.0f} "
                  f"{ratio:>8} {cpu:>7.2f}  {'yes' if reads_back(path, data) else 'NO':<10}  "
                  f"{'-' if same is None else 'yes' if same else 'no'}")
            if name != "zarr":
                shutil.rmtree(path)


if __name__ == "__main__":
    main()
