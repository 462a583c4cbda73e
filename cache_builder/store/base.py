"""The store interface: named, appendable, chunked arrays plus JSON attributes.

Every backend (Zarr v3, HDF5) implements :class:`StoreReader` / :class:`StoreWriter`; the
logical layout on top of them (which arrays, what they mean) lives in
:mod:`cache_builder.store.layout` and is the same for all backends. Arrays grow along their
first axis (tokens, segments, ...); the other axes are fixed at creation.

A reader opens its files lazily per process: after a fork (``DataLoader`` workers) it reopens
them rather than share the parent's handles, and it pickles as its path (workers started by
spawn reopen it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class StoreError(ValueError):
    """A store that cannot be used: missing, foreign, incomplete, or mismatched."""


class CorruptStoreError(StoreError):
    """A storage object that is missing, partial, or fails its checksum or decompression: the
    store is damaged, and nothing is read in its place (never fill values)."""


class StoreReader(Protocol):
    path: str
    format: str  # "zarr" or "hdf5"

    def names(self) -> set[str]:
        """Arrays in the store."""

    def length(self, name: str) -> int:
        """Rows (first-axis length) of array ``name``."""

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of ``name``, reading only the chunks that hold them. The result
        may be a read-only view of a cached chunk: copy it before writing into it.

        Raises:
            CorruptStoreError: a chunk or object is missing, partial or fails its checksum, or
                the rows pass the array's end.
        """

    def read_ranges(self, name: str, ranges: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """``read`` of each ``(start, stop)`` range, fetching every chunk they touch once (one
        round trip to a remote store): a batch of lookups grouped by chunk."""

    def array(self, name: str) -> Rows:
        """``name`` as a lazy array (``shape``, ``dtype``, slicing) reading through ``read``, for dask."""

    def chunk_rows(self, name: str) -> int:
        """Rows per chunk of ``name``."""

    def get_attr(self, key: str) -> Any | None:
        """A JSON attribute of the store root, None when absent."""

    def close(self) -> None: ...


class StoreWriter(StoreReader, Protocol):
    def create(self, name: str, tail: tuple[int, ...], dtype: str, chunk_rows: int, *,
               compress: bool = True) -> None:
        """A new empty array of rows shaped ``tail``, chunked every ``chunk_rows`` rows; its chunks
        compressed with the backend's codec when ``compress`` (every chunk is checksummed)."""

    def write(self, name: str, start: int, data: np.ndarray) -> None:
        """Put ``data`` at rows ``[start, start + len(data))``, growing the array to its end."""

    def truncate(self, name: str, length: int) -> None:
        """Shrink ``name`` to ``length`` rows (resume drops what the last commit did not cover)."""

    def set_attr(self, key: str, value: Any) -> None:
        """Set (or, with None, delete) a JSON attribute of the store root."""

    def write_unit(self, name: str) -> int:
        """Rows per write that avoids read-modify-write of a storage object (a Zarr shard)."""


class Rows:
    """A store array as a lazy array-like (``shape``, ``dtype``, ``ndim``, row slicing) whose
    reads go through :meth:`StoreReader.read`: checksums and holes are checked as for lookups."""

    def __init__(self, store: StoreReader, name: str, shape: tuple[int, ...], dtype: np.dtype):
        self.store, self.name = store, name
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        rows = key[0] if key else slice(None)
        if isinstance(rows, slice) and rows.step in (None, 1):
            start, stop, _ = rows.indices(self.shape[0])
            return self.store.read(self.name, start, max(start, stop))[(slice(None), *key[1:])]
        return self.store.read(self.name)[key]


class Appender:
    """Buffers rows of one array and writes them in whole write units (shards).

    Writing whole shards means each shard object is encoded and written once in a clean run;
    :meth:`flush` writes the tail too, at a commit.
    """

    def __init__(self, store: StoreWriter, name: str, length: int):
        self.store, self.name = store, name
        self.written = length  # rows already handed to the store
        self.unit = store.write_unit(name)
        self._parts: list[np.ndarray] = []
        self._buffered = 0

    @property
    def length(self) -> int:
        """Rows appended so far, written or buffered."""
        return self.written + self._buffered

    def append(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        self._parts.append(rows)
        self._buffered += len(rows)
        end = self.length - self.length % self.unit
        if end > self.written:
            self._write(end)

    def flush(self) -> None:
        if self._buffered:
            self._write(self.length)

    def _write(self, end: int) -> None:
        data = self._parts[0] if len(self._parts) == 1 else np.concatenate(self._parts)
        n = end - self.written
        self.store.write(self.name, self.written, data[:n])
        rest = data[n:]
        self._parts = [rest] if len(rest) else []
        self._buffered = len(rest)
        self.written = end
