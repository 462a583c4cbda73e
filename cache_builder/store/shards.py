"""Reading Zarr v3 sharded arrays chunk by chunk, as lookups need them.

Why not ``zarr.Array`` slicing: measured here (zarr 3.1.6, 2 cores), one 150-row slice costs
≈1.5 ms: every call crosses to zarr's event-loop thread, re-reads the shard index and decodes
through the generic codec pipeline. A byte-range read of a local file costs ≈3 µs and a CRC32C
of 64 KB ≈2 µs. So this module reads the objects zarr wrote (the same bytes, the same
checksums) directly:

- each shard's index is read once and kept (16 bytes per chunk);
- decoded chunks go into a small LRU cache (:class:`ChunkCache`), so a sequential epoch
  decodes each chunk once however many documents share it;
- :meth:`ShardedArray.read` takes many row ranges at once and fetches every chunk they touch
  in one request batch (one round trip for a remote store, ``lookup_many`` grouped by chunk);
- objects come from a :class:`Objects` source: local files by ``os.pread`` (no shared file
  position, so safe across fork), any other zarr store (fsspec URLs, memory) through zarr's
  store API as concurrent byte-range reads of exactly the index and chunks needed.

A missing object, a missing chunk of a shard, a short object or a checksum mismatch raise
:class:`CorruptStoreError`: a complete store has every chunk (writers use
``write_empty_chunks``), so a hole is damage, never fill values.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

import google_crc32c
import numcodecs
import numpy as np
from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, Endian, ShardingCodec
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from cache_builder.store.base import CorruptStoreError, StoreError

EMPTY = 2**64 - 1  # a shard index entry of a chunk that was never written


class Objects(Protocol):
    def fetch(self, requests: Sequence[tuple[str, int, int | None]]) -> list[bytes | None]:
        """Bytes ``[start, stop)`` of each object key (``start < 0, stop None``: the last ``-start``
        bytes); None where the object does not exist. A short object gives fewer bytes."""


class LocalObjects:
    """Files under a directory, opened once per process and read with ``os.pread``."""

    def __init__(self, root: str):
        self.root = root
        self._files: dict[str, int] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def _fd(self, key: str) -> int | None:
        if self._pid != os.getpid():  # a forked child: its own descriptors, opened on demand
            self._files, self._pid = {}, os.getpid()
        fd = self._files.get(key)
        if fd is None:
            try:
                fd = os.open(os.path.join(self.root, key), os.O_RDONLY)
            except FileNotFoundError:
                return None
            with self._lock:
                if key in self._files:
                    os.close(fd)
                    fd = self._files[key]
                else:
                    self._files[key] = fd
        return fd

    def fetch(self, requests: Sequence[tuple[str, int, int | None]]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for key, start, stop in requests:
            fd = self._fd(key)
            if fd is None:
                out.append(None)
                continue
            if start < 0:
                size = os.fstat(fd).st_size
                start, stop = max(0, size + start), size
            out.append(os.pread(fd, stop - start, start))
        return out

    def forget(self, prefix: str) -> None:
        """Close the files under ``prefix`` (an array rewritten by this process)."""
        with self._lock:
            for key in [k for k in self._files if k.startswith(prefix)]:
                os.close(self._files.pop(key))

    def close(self) -> None:
        if self._pid == os.getpid():
            for fd in self._files.values():
                os.close(fd)
        self._files = {}


class StoreObjects:
    """Any zarr store (fsspec URL, memory): every request of a batch concurrently, in one
    round trip through zarr's event loop."""

    def __init__(self, store: Any):
        self.store = store

    def fetch(self, requests: Sequence[tuple[str, int, int | None]]) -> list[bytes | None]:
        prototype = default_buffer_prototype()

        async def get_all():
            return await asyncio.gather(*(
                self.store.get(key, prototype, SuffixByteRequest(-start) if start < 0 else RangeByteRequest(start, stop))
                for key, start, stop in requests))

        return [None if b is None else b.to_bytes() for b in sync(get_all())]

    def forget(self, prefix: str) -> None:
        pass

    def close(self) -> None:
        pass


class ChunkCache:
    """Decoded chunks by (array, chunk number), least recently used evicted past ``max_bytes``."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.nbytes = max_bytes, 0
        self._chunks: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int]) -> np.ndarray | None:
        with self._lock:
            chunk = self._chunks.get(key)
            if chunk is not None:
                self._chunks.move_to_end(key)
            return chunk

    def put(self, key: tuple[str, int], chunk: np.ndarray) -> None:
        with self._lock:
            if key not in self._chunks:
                self._chunks[key] = chunk
                self.nbytes += chunk.nbytes
            while self.nbytes > self.max_bytes and len(self._chunks) > 1:
                self.nbytes -= self._chunks.popitem(last=False)[1].nbytes

    def drop(self, name: str) -> None:
        with self._lock:
            for key in [k for k in self._chunks if k[0] == name]:
                self.nbytes -= self._chunks.pop(key).nbytes


class ShardedArray:
    """One array of a Zarr v3 group, as this tool writes them: a sharding codec over row chunks
    (every other axis whole), inner codecs bytes [+ blosc] + crc32c, index bytes + crc32c at the
    end of each shard object.

    Args:
        objects: where the group's objects are read from.
        path: the array's key prefix in ``objects`` (its zarr path).
        metadata: the array's parsed ``zarr.json`` (``zarr.Array.metadata``).
        cache: decoded chunks, shared by the store's arrays.

    Raises:
        StoreError: an array laid out otherwise (not written by this tool).
    """

    def __init__(self, objects: Objects, path: str, metadata: Any, cache: ChunkCache):
        self.objects, self.path, self.cache = objects, path, cache
        self.shape: tuple[int, ...] = tuple(metadata.shape)
        self.dtype = np.dtype(metadata.dtype.to_native_dtype()).newbyteorder("<")
        sharding = metadata.codecs[0] if len(metadata.codecs) == 1 else None
        names = [type(c) for c in sharding.codecs] if isinstance(sharding, ShardingCodec) else []
        if (names not in ([BytesCodec, Crc32cCodec], [BytesCodec, BloscCodec, Crc32cCodec])
                or sharding.codecs[0].endian not in (None, Endian.little)
                or [type(c) for c in sharding.index_codecs] != [BytesCodec, Crc32cCodec]
                or sharding.index_location.value != "end"
                or tuple(sharding.chunk_shape[1:]) != self.shape[1:]
                or tuple(metadata.chunk_grid.chunk_shape[1:]) != self.shape[1:]):
            raise StoreError(f"array {path!r}: not laid out as elmo-cache writes arrays ({metadata.codecs})")
        self.blosc = BloscCodec in names
        self.chunk_rows = sharding.chunk_shape[0]
        self.shard_chunks = metadata.chunk_grid.chunk_shape[0] // self.chunk_rows
        self._chunk_shape = (self.chunk_rows, *self.shape[1:])
        self._chunk_bytes = int(np.prod(self._chunk_shape)) * self.dtype.itemsize
        self._zeros = (0,) * (len(self.shape) - 1)
        self._key_encoding = metadata.chunk_key_encoding
        self._indexes: dict[int, np.ndarray] = {}  # shard → (shard_chunks, 2) uint64 (offset, nbytes)

    def _key(self, shard: int) -> str:
        return f"{self.path}/{self._key_encoding.encode_chunk_key((shard, *self._zeros))}"

    def read(self, ranges: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """Rows ``[a, b)`` per range, fetching each chunk they touch once. The results may be
        read-only views of cached chunks.

        Raises:
            CorruptStoreError: a range beyond the array, or a missing, short or damaged object.
        """
        rows, length = self.chunk_rows, self.shape[0]
        needed: set[int] = set()
        for a, b in ranges:
            if not 0 <= a <= b <= length:
                raise CorruptStoreError(f"array {self.path!r} has {length} rows, rows {a}:{b} were asked "
                                        "for: the index and the data disagree")
            needed.update(range(a // rows, (b - 1) // rows + 1) if b > a else ())
        chunks = self._chunks(sorted(needed))
        out = []
        for a, b in ranges:
            first, last = a // rows, (b - 1) // rows
            if b <= a:
                out.append(np.empty((0, *self.shape[1:]), self.dtype))
            elif first == last:
                out.append(chunks[first][a - first * rows : b - first * rows])
            else:
                out.append(np.concatenate([chunks[c][max(a - c * rows, 0) : min(b - c * rows, rows)]
                                           for c in range(first, last + 1)]))
        return out

    def _chunks(self, numbers: list[int]) -> dict[int, np.ndarray]:
        found, missing = {}, []
        for c in numbers:
            chunk = self.cache.get((self.path, c))
            if chunk is None:
                missing.append(c)
            else:
                found[c] = chunk
        if not missing:
            return found
        self._load_indexes(sorted({c // self.shard_chunks for c in missing} - self._indexes.keys()))
        requests = []
        for c in missing:
            shard, slot = divmod(c, self.shard_chunks)
            offset, nbytes = (int(x) for x in self._indexes[shard][slot])
            if offset == EMPTY:
                raise CorruptStoreError(f"array {self.path!r}: chunk {c} (rows {c * self.chunk_rows}:"
                                        f"{(c + 1) * self.chunk_rows}) is missing from object "
                                        f"{self._key(shard)!r}")
            requests.append((self._key(shard), offset, offset + nbytes))
        for c, (key, start, stop), raw in zip(missing, requests, self.objects.fetch(requests)):
            found[c] = chunk = self._decode(raw, stop - start, key, c)
            self.cache.put((self.path, c), chunk)
        return found

    def _load_indexes(self, shards: list[int]) -> None:
        size = 16 * self.shard_chunks + 4
        for shard, raw in zip(shards, self.objects.fetch([(self._key(s), -size, None) for s in shards])):
            key = self._key(shard)
            if raw is None:
                raise CorruptStoreError(f"array {self.path!r}: storage object {key!r} is missing")
            if len(raw) != size or not _crc_ok(raw):
                raise CorruptStoreError(f"array {self.path!r}: storage object {key!r} is partial or "
                                        "damaged (its shard index fails its checksum)")
            self._indexes[shard] = np.frombuffer(raw, "<u8", count=2 * self.shard_chunks).reshape(-1, 2)

    def _decode(self, raw: bytes | None, nbytes: int, key: str, c: int) -> np.ndarray:
        where = f"array {self.path!r}: chunk {c} in object {key!r}"
        if raw is None:
            raise CorruptStoreError(f"{where}: the object is missing")
        if len(raw) != nbytes or not _crc_ok(raw):
            raise CorruptStoreError(f"{where} is partial or damaged (checksum mismatch)")
        body: Any = memoryview(raw)[:-4]
        if self.blosc:
            try:
                body = numcodecs.blosc.decompress(body)
            except Exception as e:
                raise CorruptStoreError(f"{where} cannot be decompressed ({e})") from None
        if len(body) != self._chunk_bytes:
            raise CorruptStoreError(f"{where} holds {len(body)} bytes, not {self._chunk_bytes}")
        return np.frombuffer(body, self.dtype).reshape(self._chunk_shape)


def _crc_ok(raw: bytes) -> bool:
    """Whether the last 4 bytes are the CRC32C (little-endian) of the rest, as zarr writes it."""
    body = np.frombuffer(raw, np.uint8)[:-4]  # a read-only view: google_crc32c refuses memoryviews
    return len(raw) >= 4 and google_crc32c.value(body) == int.from_bytes(raw[-4:], "little")
