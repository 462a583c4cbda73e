"""HDF5 backend: chunked datasets with gzip (level 1) + shuffle + Fletcher-32 checksums.

gzip and fletcher32 are built into every HDF5 library, so plain ``h5py`` (and any other HDF5
reader) opens the store without a plugin package; faster codecs (blosc, zstd via hdf5plugin)
would need that plugin on every reader. The choice is recorded in the manifest.
"""

from __future__ import annotations

import json
from typing import Any

import h5py
import numpy as np

from cache_builder.store.base import CorruptStoreError

CODEC = "gzip-1-shuffle"
CHECKSUM = "fletcher32"
WRITE_CHUNKS = 16  # chunks per write: fewer, larger dataset extensions


class Hdf5Store:
    """One HDF5 file; arrays are root datasets, attributes are JSON strings on the root."""

    format = "hdf5"

    def __init__(self, path: str, mode: str):
        """``mode``: "r" to read, "a" to create or continue."""
        self.path = path
        try:
            self._file = h5py.File(path, mode)
        except OSError as e:
            raise CorruptStoreError(f"{path}: not a readable HDF5 file ({e})") from None

    def names(self) -> set[str]:
        return {k for k, v in self._file.items() if isinstance(v, h5py.Dataset)}

    def length(self, name: str) -> int:
        return self._file[name].shape[0]

    def array(self, name: str) -> h5py.Dataset:
        return self._file[name]

    def chunk_rows(self, name: str) -> int:
        return self._file[name].chunks[0]

    def write_unit(self, name: str) -> int:
        return self._file[name].chunks[0] * WRITE_CHUNKS

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        try:
            return self._file[name][start:stop]
        except OSError as e:
            raise CorruptStoreError(f"{self.path}: dataset {name!r} rows {start}:{stop} cannot be "
                                    f"read (checksum or decompression failed: {e})") from None

    def get_attr(self, key: str) -> Any | None:
        value = self._file.attrs.get(key)
        return None if value is None else json.loads(value)

    def create(self, name: str, tail: tuple[int, ...], dtype: str, chunk_rows: int, rows: int = 0,
               shard_rows: int | None = None) -> None:
        self._file.create_dataset(name, shape=(rows, *tail), maxshape=(None, *tail), dtype=dtype,
                                  chunks=(chunk_rows, *tail), compression="gzip", compression_opts=1,
                                  shuffle=True, fletcher32=True)

    def write(self, name: str, start: int, data: np.ndarray) -> None:
        dataset = self._file[name]
        end = start + len(data)
        if end > dataset.shape[0]:
            dataset.resize(end, axis=0)
        dataset[start:end] = data

    def delete(self, name: str) -> None:
        del self._file[name]


    def set_attr(self, key: str, value: Any) -> None:
        if value is None:
            self._file.attrs.pop(key, None)  # type: ignore[attr-defined]
        else:
            self._file.attrs[key] = json.dumps(value, sort_keys=True)
        self._file.flush()  # an attribute marks a commit: make it and the data before it durable

    def close(self) -> None:
        self._file.close()
