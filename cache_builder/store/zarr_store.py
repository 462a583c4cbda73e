"""Zarr v3 backend: sharded arrays; vectors uncompressed, index arrays blosc-zstd level 1 with
byte shuffle; CRC32C on every chunk and every shard index.

Why no codec for vectors (measured with ``benchmarks/read.py`` and ``benchmarks/precompute.py``
on the small ELMo shape, 2 cores): float16 activations compress only ≈1.09x with blosc-zstd-1 +
shuffle (blosc-lz4 saves under 1%, stronger codecs cost speed for little more), int8 values
about as little, while decompressing costs every lookup time: a lookup of a SQuAD context
touches 3-4 chunks. The int32/int64 index arrays (spans, offsets, ids) compress 3-4x and are
read whole at open or in long runs, so they keep the codec; ``token_row``, which every lookup of
layer 0 reads, does not (the layout decides: ``ArraySpec.compress``). Reads go through
:mod:`.chunks` and :mod:`.shards` (one read of each shard index, a decoded-chunk cache,
batched fetches); writes of whole storage objects (what tasks and the plan's appenders write)
through :mod:`.shard_writer`, one ``store.set`` per object, and any other write through zarr.

Sharding packs up to ``layout.SHARD_CHUNKS`` chunks into one object (≈16 MB with the layout's
64 KB vector chunks; tasks may own fewer), so a 40M-token store is a few thousand objects, not
hundreds of thousands, while lookups still read single chunks. Every chunk is written, all-zero ones too
(``write_empty_chunks``): a missing chunk or object is then damage, and reads raise instead of
returning the fill value. Resume relies on zarr's local store writing each object atomically
(temporary file + rename, zarr ≥ 3.1.3): a SIGKILL leaves every shard either old or new.
"""

from __future__ import annotations

import os
from typing import Any

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import LocalStore

from cache_builder.store.base import CorruptStoreError, writing
from cache_builder.store.chunks import ChunkCache, ChunkedArray
from cache_builder.store.layout import SHARD_CHUNKS
from cache_builder.store.shard_writer import ShardWriter
from cache_builder.store.shards import LocalObjects, StoreObjects, ZarrChunks

CODEC = "vectors none, index arrays blosc-zstd-1-shuffle"
CHECKSUM = "crc32c"
CACHE_BYTES = 32 << 20  # decoded chunks kept per process: a few shards' worth of a sequential read
WRITE_CONFIG = {"write_empty_chunks": True}

numcodecs.blosc.set_nthreads(os.cpu_count() or 1)


class ZarrStore:
    """A Zarr v3 group holding the store's arrays; attributes hold progress and manifest."""

    format = "zarr"

    def __init__(self, path: str, mode: str, storage_options: dict[str, Any] | None = None):
        """``mode``: "r" to read, "a" to create or continue, "w" to replace; ``path`` is a local
        folder or an fsspec URL, ``storage_options`` go to fsspec."""
        self.path, self.storage_options = path, storage_options
        try:
            self._group = zarr.open_group(path, mode=mode, zarr_format=3,
                                          storage_options=storage_options if "://" in path else None)
        except Exception as e:  # zarr raises several types for a missing or non-zarr path
            raise CorruptStoreError(f"{path}: not a readable Zarr v3 group ({e})") from None
        store = self._group.store
        self._objects = LocalObjects(str(store.root)) if isinstance(store, LocalStore) else StoreObjects(store)
        self._cache = ChunkCache(CACHE_BYTES)
        self._arrays: dict[str, zarr.Array] = {}  # opening an array reads its metadata: do it once
        self._readers: dict[str, ChunkedArray] = {}
        self._writers: dict[str, ShardWriter] = {}

    def __reduce__(self):  # a DataLoader worker started by spawn reopens the store
        return type(self), (self.path, "r", self.storage_options)

    def _array(self, name: str) -> zarr.Array:
        if name not in self._arrays:
            try:
                self._arrays[name] = self._group[name].with_config(WRITE_CONFIG)
            except KeyError:
                raise CorruptStoreError(f"{self.path}: array {name!r} is missing") from None
        return self._arrays[name]

    def _reader(self, name: str) -> ChunkedArray:
        if name not in self._readers:
            array = self._array(name)
            chunks = ZarrChunks(self._objects, array.path, array.metadata)
            self._readers[name] = ChunkedArray(name, chunks.shape, chunks.dtype, chunks.chunk_rows, chunks,
                                               self._cache)
        return self._readers[name]

    def names(self) -> set[str]:
        return set(self._group.array_keys())

    def length(self, name: str) -> int:
        return self._array(name).shape[0]

    def array(self, name: str) -> zarr.Array:
        return self._array(name)

    def chunk_rows(self, name: str) -> int:
        return self._array(name).chunks[0]

    def write_unit(self, name: str) -> int:
        array = self._array(name)
        return (array.shards or array.chunks)[0]

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self._reader(name).rows(start, stop)

    def read_ranges(self, name: str, ranges) -> list[np.ndarray]:
        return self._reader(name).read(ranges)

    def get_attr(self, key: str) -> Any | None:
        return self._group.attrs.get(key)

    def create(self, name: str, tail: tuple[int, ...], dtype: str, chunk_rows: int, rows: int = 0,
               shard_rows: int | None = None, *, compress: bool = True) -> None:
        typesize = np.dtype(dtype).itemsize
        codecs = [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=typesize)] if compress else []
        shard_rows = shard_rows or chunk_rows * SHARD_CHUNKS
        with writing(self.path, f"array {name!r}"):
            self._arrays[name] = self._group.create_array(
                name, shape=(rows, *tail), dtype=dtype, chunks=(chunk_rows, *tail),
                shards=(shard_rows, *tail) if shard_rows > chunk_rows else None, fill_value=0,
                compressors=[*codecs, Crc32cCodec()], config=WRITE_CONFIG)

    def delete(self, name: str) -> None:
        self._changed(name)
        self._arrays.pop(name, None)
        self._writers.pop(name, None)
        with writing(self.path, f"(deleting) array {name!r}"):
            del self._group[name]

    def _changed(self, name: str) -> None:
        """Forget what this process read of ``name`` before it changed it."""
        if self._readers.pop(name, None) is not None:
            self._cache.drop(name)
            self._objects.forget(self._array(name).path + "/")

    def write(self, name: str, start: int, data: np.ndarray) -> None:
        array = self._array(name)
        end = start + len(data)
        with writing(self.path, f"array {name!r} rows {start}:{end}"):
            if end > array.shape[0]:
                array.resize((end, *array.shape[1:]))
            writer = self._writer(name)
            if writer is None or start % writer.object_rows or end % writer.object_rows and end != array.shape[0]:
                array[start:end] = data  # part of an object: zarr merges it with what is stored
            else:
                prototype = default_buffer_prototype()
                for key, encoded in writer.objects(start, data, array.shape[0]):
                    sync(self._group.store.set(key, prototype.buffer.from_array_like(encoded)))
        self._changed(name)

    def _writer(self, name: str) -> ShardWriter | None:
        """The array's object writer; None for rows of no bytes (zarr stores nothing for them)."""
        if name not in self._writers:
            array = self._array(name)
            if not all(array.shape[1:]):
                return None
            self._writers[name] = ShardWriter(ZarrChunks(self._objects, array.path, array.metadata))
        return self._writers[name]

    def set_attr(self, key: str, value: Any) -> None:
        with writing(self.path, f"attribute {key!r}"):
            if value is None:
                self._group.attrs.pop(key, None)  # type: ignore[attr-defined]
            else:
                self._group.attrs[key] = value

    def close(self) -> None:
        self._objects.close()
