"""Zarr v3 arrays as :class:`~cache_builder.store.chunks.ChunkSource`: the objects zarr wrote
(the same bytes, the same checksums), read directly.

- a sharded array's chunks are found through its shards' indexes, each read once and kept
  (16 bytes per chunk); an array with one chunk per object reads whole objects;
- objects come from an :class:`Objects` source: local files memory-mapped (read without a
  copy, shared across fork), any other zarr store (fsspec URLs, memory) through zarr's
  store API as concurrent byte-range reads of exactly the indexes and chunks needed.

A missing object, a missing chunk of a shard, a short object or a checksum mismatch raise
:class:`CorruptStoreError`: a complete store has every chunk (writers use
``write_empty_chunks``), so a hole is damage, never fill values.
"""

from __future__ import annotations

import asyncio
import mmap
import os
import threading
from collections.abc import Sequence
from typing import Any, Protocol

import numcodecs
import numpy as np
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, Endian, ShardingCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from cache_builder.store.base import CorruptStoreError, StoreError
from cache_builder.store.chunks import crc32c

EMPTY = 2**64 - 1  # a shard index entry of a chunk that was never written


class Objects(Protocol):
    def fetch(self, requests: Sequence[tuple[str, int, int | None]]) -> list[bytes | None]:
        """Bytes ``[start, stop)`` of each object key (``stop`` None: to its end; ``start < 0``:
        the last ``-start`` bytes); None where the object does not exist. A short object gives
        fewer bytes."""


class LocalObjects:
    """Files under a directory, each memory-mapped read-only on first use.

    A chunk is then a view of the page cache: no copy, and no allocation per read (measured:
    ``os.pread`` into fresh buffers made the p99 of a lookup 2x its p50, from malloc returning
    and re-faulting memory). Maps are shared by forked processes (``DataLoader`` workers) and
    never written. zarr replaces an object by renaming a new file over it, so a map keeps the
    old object whole; only truncating a shard file in place while it is read would fault.
    """

    def __init__(self, root: str):
        self.root = root
        self._maps: dict[str, memoryview] = {}
        self._lock = threading.Lock()

    def _map(self, key: str) -> memoryview | None:
        view = self._maps.get(key)
        if view is None:
            try:
                with open(os.path.join(self.root, key), "rb") as f:
                    view = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
            except FileNotFoundError:
                return None
            except ValueError:  # an empty file cannot be mapped
                view = memoryview(b"")
            with self._lock:
                view = self._maps.setdefault(key, view)
        return view

    def fetch(self, requests: Sequence[tuple[str, int, int | None]]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for key, start, stop in requests:
            view = self._map(key)
            out.append(None if view is None else view[start:stop])
        return out

    def forget(self, prefix: str) -> None:
        """Drop the maps of files under ``prefix`` (an array rewritten by this process); each is
        unmapped once no chunk read from it is referenced."""
        with self._lock:
            for key in [k for k in self._maps if k.startswith(prefix)]:
                del self._maps[key]

    def close(self) -> None:
        self._maps = {}


class StoreObjects:
    """Any zarr store (fsspec URL, memory): every request of a batch concurrently, in one
    round trip through zarr's event loop."""

    def __init__(self, store: Any):
        self.store = store

    def fetch(self, requests: Sequence[tuple[str, int, int | None]]) -> list[bytes | None]:
        prototype = default_buffer_prototype()

        def byte_range(start: int, stop: int | None):
            if start < 0:
                return SuffixByteRequest(-start)
            return None if stop is None else RangeByteRequest(start, stop)  # (whole objects start at 0)

        async def get_all():
            return await asyncio.gather(*(self.store.get(key, prototype, byte_range(start, stop))
                                          for key, start, stop in requests))

        return [None if b is None else b.to_bytes() for b in sync(get_all())]

    def forget(self, prefix: str) -> None:
        pass

    def close(self) -> None:
        pass


class ZarrChunks:
    """The chunks of one array of a Zarr v3 group, as this tool writes them: chunks of whole rows
    (every other axis whole), codecs bytes [+ blosc] + crc32c, either packed into shards (a
    sharding codec with those inner codecs, index bytes + crc32c at the end of each object) or
    one chunk per object.

    Args:
        objects: where the group's objects are read from.
        path: the array's key prefix in ``objects`` (its zarr path).
        metadata: the array's parsed ``zarr.json`` (``zarr.Array.metadata``).

    Raises:
        StoreError: an array laid out otherwise (not written by this tool).
    """

    def __init__(self, objects: Objects, path: str, metadata: Any):
        self.objects, self.path = objects, path
        self.shape: tuple[int, ...] = tuple(metadata.shape)
        self.dtype = np.dtype(metadata.dtype.to_native_dtype()).newbyteorder("<")
        codecs, sharding = metadata.codecs, None
        if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
            sharding = codecs[0]
            codecs = sharding.codecs
        kinds = [type(c) for c in codecs]
        outer = tuple(metadata.chunk_grid.chunk_shape)
        inner = tuple(sharding.chunk_shape) if sharding else outer
        if (kinds not in ([BytesCodec, Crc32cCodec], [BytesCodec, BloscCodec, Crc32cCodec])
                or codecs[0].endian not in (None, Endian.little) or inner[1:] != self.shape[1:]
                or outer[1:] != self.shape[1:]
                or sharding and ([type(c) for c in sharding.index_codecs] != [BytesCodec, Crc32cCodec]
                                 or sharding.index_location.value != "end")):
            raise StoreError(f"array {path!r}: not laid out as elmo-cache writes arrays ({metadata.codecs})")
        # the numcodecs compressor of zarr's BloscCodec (its settings), None when uncompressed
        self.blosc = _numcodecs_blosc(codecs[1]) if BloscCodec in kinds else None
        self.chunk_rows = inner[0]
        self.shard_chunks = outer[0] // self.chunk_rows if sharding else None  # None: one chunk per object
        self._zeros = (0,) * (len(self.shape) - 1)
        self._key_encoding = metadata.chunk_key_encoding
        self._indexes: dict[int, np.ndarray] = {}  # shard → (shard_chunks, 2) uint64 (offset, nbytes)
        self._keys: dict[int, str] = {}

    def key(self, shard: int) -> str:
        """The key of storage object ``shard`` (of chunk ``shard`` when unsharded)."""
        key = self._keys.get(shard)
        if key is None:
            key = self._keys[shard] = f"{self.path}/{self._key_encoding.encode_chunk_key((shard, *self._zeros))}"
        return key

    def fetch(self, numbers: Sequence[int]) -> list[bytes]:
        if self.shard_chunks is None:
            requests = [(self.key(c), 0, None) for c in numbers]
            return [self._decode(raw, None, key, c)
                    for c, (key, _, _), raw in zip(numbers, requests, self.objects.fetch(requests))]
        self._load_indexes(sorted({c // self.shard_chunks for c in numbers} - self._indexes.keys()))
        requests = []
        for c in numbers:
            shard, slot = divmod(c, self.shard_chunks)
            offset, nbytes = (int(x) for x in self._indexes[shard][slot])
            if offset == EMPTY:
                raise CorruptStoreError(f"array {self.path!r}: chunk {c} (rows {c * self.chunk_rows}:"
                                        f"{(c + 1) * self.chunk_rows}) is missing from object "
                                        f"{self.key(shard)!r}")
            requests.append((self.key(shard), offset, offset + nbytes))
        return [self._decode(raw, stop - start, key, c)
                for c, (key, start, stop), raw in zip(numbers, requests, self.objects.fetch(requests))]

    def _load_indexes(self, shards: list[int]) -> None:
        size = 16 * self.shard_chunks + 4
        for shard, raw in zip(shards, self.objects.fetch([(self.key(s), -size, None) for s in shards])):
            key = self.key(shard)
            if raw is None:
                raise CorruptStoreError(f"array {self.path!r}: storage object {key!r} is missing")
            if len(raw) != size or not _crc_ok(raw):
                raise CorruptStoreError(f"array {self.path!r}: storage object {key!r} is partial or "
                                        "damaged (its shard index fails its checksum)")
            self._indexes[shard] = np.frombuffer(raw, "<u8", count=2 * self.shard_chunks).reshape(-1, 2)

    def _decode(self, raw: bytes | None, nbytes: int | None, key: str, c: int) -> bytes:
        """A chunk's stored bytes (``nbytes`` of them, when the shard index says) → its data."""
        where = f"array {self.path!r}: chunk {c} in object {key!r}"
        if raw is None:
            raise CorruptStoreError(f"{where}: the object is missing")
        if nbytes is not None and len(raw) != nbytes or not _crc_ok(raw):
            raise CorruptStoreError(f"{where} is partial or damaged (checksum mismatch)")
        body = memoryview(raw)[:-4]
        if self.blosc is None:
            return body
        try:
            return numcodecs.blosc.decompress(body)
        except Exception as e:
            raise CorruptStoreError(f"{where} cannot be decompressed ({e})") from None


def _numcodecs_blosc(codec: BloscCodec) -> numcodecs.Blosc:
    """The compressor zarr's ``BloscCodec`` encodes with (zarr-python 3 builds the same one)."""
    shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[codec.shuffle.value]
    return numcodecs.Blosc(cname=codec.cname.value, clevel=codec.clevel, shuffle=shuffle,
                           blocksize=codec.blocksize, typesize=codec.typesize)


def _crc_ok(raw: bytes) -> bool:
    """Whether the last 4 bytes are the CRC32C (little-endian) of the rest, as zarr writes it."""
    return len(raw) >= 4 and crc32c(memoryview(raw)[:-4]) == int.from_bytes(raw[-4:], "little")
