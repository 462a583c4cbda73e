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

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np


@contextlib.contextmanager
def writing(path: str, what: str) -> Iterator[None]:
    """Turn an ``OSError`` while writing (a full disk, a lost connection) into one that names the
    store and what was being written; the run can be re-run once the cause is gone."""
    try:
        yield
    except OSError as e:
        raise OSError(e.errno, f"{path}: writing {what} failed: {e.strerror or e}") from None


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
        """Rows ``[start, stop)`` of ``name`` (as slicing gives them: ``stop`` past the end is the
        end), reading only the chunks that hold them.

        Raises:
            CorruptStoreError: a chunk or object is missing, partial or fails its checksum.
        """

    def read_ranges(self, name: str, ranges: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """Rows ``[start, stop)`` of each range, fetching every chunk they touch once (one round
        trip to a remote store): a batch of lookups grouped by chunk. The results may be
        read-only views of cached chunks.

        Raises:
            CorruptStoreError: as ``read``, or a range that passes the array's end (the index
                and the data disagree)."""

    def array(self, name: str) -> Any:
        """The backend's own lazy array (``shape``, ``dtype``, slicing). Its reads are the
        backend's: a chunk never written reads as the fill value (progress markers rely on it),
        so data is read with :meth:`read`, which refuses holes."""

    def chunk_rows(self, name: str) -> int:
        """Rows per chunk of ``name``."""

    def get_attr(self, key: str) -> Any | None:
        """A JSON attribute of the store root, None when absent."""

    def close(self) -> None: ...


class StoreWriter(StoreReader, Protocol):
    def create(self, name: str, tail: tuple[int, ...], dtype: str, chunk_rows: int, rows: int = 0,
               shard_rows: int | None = None, *, compress: bool = True) -> None:
        """A new array of ``rows`` rows shaped ``tail`` (none written yet), chunked every
        ``chunk_rows`` rows, ``shard_rows`` rows per storage object (a multiple of
        ``chunk_rows``; None: the backend's choice); its chunks compressed with the backend's
        codec when ``compress`` (every chunk is checksummed, and every chunk is written: a
        missing one is damage)."""

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
