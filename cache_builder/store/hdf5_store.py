"""HDF5 backend: chunked root datasets, no filter; each chunk's CRC32C in ``crc32c/<name>``.

Why no filter (measured with ``benchmarks/read.py``, small ELMo shape, 2 cores): gzip decodes
at ≈100-300 MB/s and saves ≈10% on float16 activations, and HDF5's Fletcher-32 filter, its only
built-in checksum, costs half of a 150-token ``h5py`` slice (0.11 ms vs 0.045 ms unfiltered).
Unfiltered chunks are stored as plain bytes, so the reader maps the file and reads each
chunk at the offset HDF5's chunk index gives (``chunk_iter``, once per dataset; ``h5py``'s
``read_direct_chunk`` costs ≈22 µs a call), checks a CRC32C kept beside the data, and shares
the read path and its decoded-chunk cache with Zarr (:mod:`.chunks`). Any HDF5 reader opens
the file without a plugin and reads ordinary datasets; elmo-cache (and ``verify``) checks
every chunk it reads against its checksum. The index arrays lose their 3-4x compression:
2-3% of a store.

An unallocated chunk of a complete store (HDF5 would read the fill value) or a truncated
file raise :class:`CorruptStoreError` on the read that needs the chunk.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np

from cache_builder.store.base import CorruptStoreError, writing
from cache_builder.store.chunks import ChunkCache, ChunkedArray, crc32c

CODEC = "none"
CHECKSUM = "crc32c"
CRC_GROUP = "crc32c"  # crc32c/<name>: (n_chunks,) uint32, the CRC32C of each chunk's stored bytes
WRITE_CHUNKS = 16  # chunks per write: fewer, larger dataset extensions
CACHE_BYTES = 32 << 20  # decoded chunks kept per process


class _Chunks:
    """A dataset's chunks as stored, read from the file's map at the offsets HDF5's chunk index
    gives (listed once, on the first read), each checked against its CRC32C."""

    def __init__(self, path: str, dataset: h5py.Dataset, crcs: h5py.Dataset, view: memoryview):
        self.path, self.dataset, self.crcs, self.view = path, dataset, crcs, view
        self._located: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # offsets, sizes, crcs

    def _locate(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._located is None:
            rows = self.dataset.chunks[0]
            n = -(-self.dataset.shape[0] // rows)
            offsets, sizes = np.full(n, -1, np.int64), np.zeros(n, np.int64)

            def note(info) -> None:
                c = info.chunk_offset[0] // rows
                if c < n:
                    offsets[c], sizes[c] = info.byte_offset, info.size

            self.dataset.id.chunk_iter(note)
            self._located = offsets, sizes, self.crcs[:]
        return self._located

    def fetch(self, numbers: Sequence[int]) -> list[bytes]:
        offsets, sizes, crcs = self._locate()
        rows, name = self.dataset.chunks[0], self.dataset.name.lstrip("/")
        out = []
        for c in numbers:
            where = f"{self.path}: dataset {name!r} chunk {c} (rows {c * rows}:{(c + 1) * rows})"
            if offsets[c] < 0:
                raise CorruptStoreError(f"{where} was never written")
            raw = self.view[offsets[c] : offsets[c] + sizes[c]]
            if len(raw) != sizes[c] or c >= len(crcs) or crc32c(raw) != crcs[c]:
                raise CorruptStoreError(f"{where} is partial or damaged (checksum mismatch)")
            out.append(raw)
        return out


class Hdf5Store:
    """One HDF5 file; arrays are root datasets, attributes are JSON strings on the root."""

    format = "hdf5"

    def __init__(self, path: str, mode: str):
        """``mode``: "r" to read, "a" to create or continue, "w" to replace."""
        self.path, self.mode = path, mode
        self._open()

    def _open(self) -> None:
        try:
            self._handle = h5py.File(self.path, self.mode)
        except OSError as e:
            raise CorruptStoreError(f"{self.path}: not a readable HDF5 file ({e})") from None
        self._pid = os.getpid()
        self._view: memoryview | None = None  # the file, mapped read-only on the first chunk read
        self._cache = ChunkCache(CACHE_BYTES)
        self._readers: dict[str, ChunkedArray] = {}

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
        try:
            return self._file[name]
        except KeyError:
            raise CorruptStoreError(f"{self.path}: dataset {name!r} is missing") from None

    def _reader(self, name: str) -> ChunkedArray:
        reader = self._readers.get(name) if self._pid == os.getpid() else None
        if reader is None:
            dataset, crcs = self._dataset(name), self._file.get(f"{CRC_GROUP}/{name}")
            if crcs is None:
                raise CorruptStoreError(f"{self.path}: the checksums of dataset {name!r} are missing")
            if self._view is None:
                with open(self.path, "rb") as f:
                    self._view = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
            reader = self._readers[name] = ChunkedArray(name, dataset.shape, dataset.dtype, dataset.chunks[0],
                                                        _Chunks(self.path, dataset, crcs, self._view), self._cache)
        return reader

    def length(self, name: str) -> int:
        return self._dataset(name).shape[0]

    def array(self, name: str) -> h5py.Dataset:
        return self._dataset(name)

    def chunk_rows(self, name: str) -> int:
        return self._dataset(name).chunks[0]

    def write_unit(self, name: str) -> int:
        return self._dataset(name).chunks[0] * WRITE_CHUNKS

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self._reader(name).rows(start, stop)

    def read_ranges(self, name: str, ranges) -> list[np.ndarray]:
        return self._reader(name).read(ranges)

    def get_attr(self, key: str) -> Any | None:
        value = self._file.attrs.get(key)
        return None if value is None else json.loads(value)

    def create(self, name: str, tail: tuple[int, ...], dtype: str, chunk_rows: int, rows: int = 0,
               shard_rows: int | None = None, *, compress: bool = True) -> None:
        """As :meth:`StoreWriter.create`; HDF5 chunks are never compressed (see the module note)."""
        with writing(self.path, f"dataset {name!r}"):
            self._file.create_dataset(name, shape=(rows, *tail), maxshape=(None, *tail), dtype=dtype,
                                      chunks=(chunk_rows, *tail))
            self._file.create_dataset(f"{CRC_GROUP}/{name}", shape=(-(-rows // chunk_rows),), maxshape=(None,),
                                      dtype="uint32", chunks=(1 << 14,))

    def delete(self, name: str) -> None:
        self._changed(name)
        del self._file[name]
        del self._file[f"{CRC_GROUP}/{name}"]

    def write(self, name: str, start: int, data: np.ndarray) -> None:
        dataset, crcs = self._dataset(name), self._file[f"{CRC_GROUP}/{name}"]
        end = start + len(data)
        rows, zeros = dataset.chunks[0], (0,) * (dataset.ndim - 1)
        first, stop = start // rows, -(-end // rows)
        with writing(self.path, f"dataset {name!r} rows {start}:{end}"):
            if end > dataset.shape[0]:
                dataset.resize(end, axis=0)
            dataset[start:end] = data
            if stop > crcs.shape[0]:
                crcs.resize(stop, axis=0)
            crcs[first:stop] = [crc32c(dataset.id.read_direct_chunk((c * rows, *zeros))[1])
                                for c in range(first, stop)]
        self._changed(name)

    def _changed(self, name: str) -> None:
        self._view = None  # the file grew: map it again
        if self._readers.pop(name, None) is not None:
            self._cache.drop(name)

    def set_attr(self, key: str, value: Any) -> None:
        with writing(self.path, f"attribute {key!r}"):
            if value is None:
                self._file.attrs.pop(key, None)  # type: ignore[attr-defined]
            else:
                self._file.attrs[key] = json.dumps(value, sort_keys=True)
            self._file.flush()  # an attribute marks a commit: make it and the data before it durable

    def close(self) -> None:
        self._handle.close()
