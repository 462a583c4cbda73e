"""HDF5 backend: chunked datasets, Fletcher-32 on every chunk; index arrays gzip (level 1) +
shuffle, vectors uncompressed.

gzip and fletcher32 are built into every HDF5 library, so plain ``h5py`` (and any other HDF5
reader) opens the store without a plugin package; faster codecs (blosc, zstd via hdf5plugin)
would need that plugin on every reader. Vectors take no codec: gzip decodes at ≈100-300 MB/s
here and saves ≈10% on float16 activations, so it would dominate every lookup (measured
with ``benchmarks/read.py``: see the README). The choice is recorded in the manifest.

Reads go through HDF5's own chunk cache (sized here for a sequential epoch). An unallocated
chunk of a complete store is damage (HDF5 would read the fill value): each dataset's
allocated chunks are counted on its first read, and a read that needs a missing one raises.
"""

from __future__ import annotations

import json
import os
from typing import Any

import h5py
import numpy as np

from cache_builder.store.base import CorruptStoreError, Rows

CODEC = "vectors none, index arrays gzip-1-shuffle"
CHECKSUM = "fletcher32"
WRITE_CHUNKS = 16  # chunks per write: fewer, larger dataset extensions
CACHE_BYTES = 32 << 20  # HDF5's decoded-chunk cache, per open dataset
CACHE_SLOTS = 4099  # a prime, ~8 per chunk that fits (HDF5's advice: 10-100x the chunks held)


class Hdf5Store:
    """One HDF5 file; arrays are root datasets, attributes are JSON strings on the root."""

    format = "hdf5"

    def __init__(self, path: str, mode: str):
        """``mode``: "r" to read, "a" to create or continue."""
        self.path, self.mode = path, mode
        self._open()

    def _open(self) -> None:
        try:
            self._handle = h5py.File(self.path, self.mode, rdcc_nbytes=CACHE_BYTES, rdcc_nslots=CACHE_SLOTS)
        except OSError as e:
            raise CorruptStoreError(f"{self.path}: not a readable HDF5 file ({e})") from None
        self._pid = os.getpid()
        self._datasets: dict[str, h5py.Dataset] = {}  # h5py's name lookup costs ~10 µs a read
        self._missing: dict[str, np.ndarray] = {}  # dataset → numbers of its unallocated chunks

    @property
    def _file(self) -> h5py.File:
        if self._pid != os.getpid():  # a forked child (DataLoader worker): its own handle
            self._open()
        return self._handle

    def __reduce__(self):  # a DataLoader worker started by spawn reopens the file
        return type(self), (self.path, "r")

    def names(self) -> set[str]:
        return {k for k, v in self._file.items() if isinstance(v, h5py.Dataset)}

    def _dataset(self, name: str) -> h5py.Dataset:
        dataset = self._datasets.get(name) if self._pid == os.getpid() else None
        if dataset is None:
            try:
                dataset = self._datasets[name] = self._file[name]
            except KeyError:
                raise CorruptStoreError(f"{self.path}: dataset {name!r} is missing") from None
        return dataset

    def length(self, name: str) -> int:
        return self._dataset(name).shape[0]

    def array(self, name: str) -> Rows:
        dataset = self._dataset(name)
        return Rows(self, name, dataset.shape, dataset.dtype)

    def chunk_rows(self, name: str) -> int:
        return self._dataset(name).chunks[0]

    def write_unit(self, name: str) -> int:
        return self._dataset(name).chunks[0] * WRITE_CHUNKS

    def _missing_chunks(self, name: str, dataset: h5py.Dataset) -> np.ndarray:
        if name not in self._missing:
            rows = dataset.chunks[0]
            expected = -(-dataset.shape[0] // rows)
            missing = np.zeros(0, np.int64)
            if dataset.id.get_num_chunks() != expected:
                allocated = np.zeros(expected, bool)
                dataset.id.chunk_iter(lambda info: allocated.__setitem__(info.chunk_offset[0] // rows, True))
                missing = np.flatnonzero(~allocated)
            self._missing[name] = missing
        return self._missing[name]

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        dataset = self._dataset(name)
        stop = dataset.shape[0] if stop is None else stop
        if not 0 <= start <= stop <= dataset.shape[0]:
            raise CorruptStoreError(f"{self.path}: dataset {name!r} has {dataset.shape[0]} rows, rows "
                                    f"{start}:{stop} were asked for: the index and the data disagree")
        missing = self._missing_chunks(name, dataset)
        if missing.size and stop > start:
            rows = dataset.chunks[0]
            hole = missing[(missing >= start // rows) & (missing <= (stop - 1) // rows)]
            if hole.size:
                raise CorruptStoreError(f"{self.path}: dataset {name!r} chunk {hole[0]} (rows "
                                        f"{hole[0] * rows}:{(hole[0] + 1) * rows}) was never written")
        try:
            return dataset[start:stop]
        except OSError as e:
            raise CorruptStoreError(f"{self.path}: dataset {name!r} rows {start}:{stop} cannot be "
                                    f"read (checksum or decompression failed: {e})") from None

    def read_ranges(self, name: str, ranges) -> list[np.ndarray]:
        return [self.read(name, a, b) for a, b in ranges]  # HDF5's chunk cache groups repeats

    def get_attr(self, key: str) -> Any | None:
        value = self._file.attrs.get(key)
        return None if value is None else json.loads(value)

    def create(self, name: str, tail: tuple[int, ...], dtype: str, chunk_rows: int, *,
               compress: bool = True) -> None:
        codec = {"compression": "gzip", "compression_opts": 1, "shuffle": True} if compress else {}
        self._file.create_dataset(name, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype,
                                  chunks=(chunk_rows, *tail), fletcher32=True, **codec)

    def write(self, name: str, start: int, data: np.ndarray) -> None:
        dataset = self._dataset(name)
        end = start + len(data)
        if end > dataset.shape[0]:
            dataset.resize(end, axis=0)
        dataset[start:end] = data
        self._missing.pop(name, None)

    def truncate(self, name: str, length: int) -> None:
        self._dataset(name).resize(length, axis=0)
        self._missing.pop(name, None)

    def set_attr(self, key: str, value: Any) -> None:
        if value is None:
            self._file.attrs.pop(key, None)  # type: ignore[attr-defined]
        else:
            self._file.attrs[key] = json.dumps(value, sort_keys=True)
        self._file.flush()  # an attribute marks a commit: make it and the data before it durable

    def close(self) -> None:
        self._handle.close()
