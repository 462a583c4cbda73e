"""The store interface: named, appendable, chunked arrays plus JSON attributes.

Every backend (Zarr v3, HDF5) implements :class:`StoreReader` / :class:`StoreWriter`; the
logical layout on top of them (which arrays, what they mean) lives in
:mod:`cache_builder.store.layout` and is the same for all backends. Arrays grow along their
first axis (tokens, segments, ...); the other axes are fixed at creation.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class StoreError(ValueError):
    """A store that cannot be used: missing, foreign, incomplete, or mismatched."""


class CorruptStoreError(StoreError):
    """A chunk whose checksum (or decompression) fails: the store is damaged, not silently read."""


class StoreReader(Protocol):
    path: str
    format: str  # "zarr" or "hdf5"

    def names(self) -> set[str]:
        """Arrays in the store."""

    def length(self, name: str) -> int:
        """Rows (first-axis length) of array ``name``."""

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``[start, stop)`` of ``name``, reading only the chunks that hold them.

        Raises:
            CorruptStoreError: a chunk fails its checksum.
        """

    def array(self, name: str) -> Any:
        """The backend's lazy array object (``shape``, ``dtype``, slicing), for dask."""

    def chunk_rows(self, name: str) -> int:
        """Rows per chunk of ``name``."""

    def get_attr(self, key: str) -> Any | None:
        """A JSON attribute of the store root, None when absent."""

    def close(self) -> None: ...


class StoreWriter(StoreReader, Protocol):
    def create(self, name: str, tail: tuple[int, ...], dtype: str, chunk_rows: int, rows: int = 0,
               shard_rows: int | None = None) -> None:
        """A new array of ``rows`` rows shaped ``tail`` (none written yet), chunked every
        ``chunk_rows`` rows, ``shard_rows`` rows per storage object (a multiple of
        ``chunk_rows``; None: the backend's choice)."""

    def delete(self, name: str) -> None:
        """Remove array ``name`` and its data."""

    def write(self, name: str, start: int, data: np.ndarray) -> None:
        """Put ``data`` at rows ``[start, start + len(data))``, growing the array to its end."""


    def set_attr(self, key: str, value: Any) -> None:
        """Set (or, with None, delete) a JSON attribute of the store root."""

    def write_unit(self, name: str) -> int:
        """Rows per write that avoids read-modify-write of a storage object (a Zarr shard)."""


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
