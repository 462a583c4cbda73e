"""Writing whole storage objects of a Zarr v3 array, encoded here: the bytes zarr-python writes.

Why not ``zarr.Array.__setitem__``: zarr-python encodes every inner chunk of a shard as its
own asynchronous task (a 16 MB shard of 64 KB chunks is 256 tasks and as many event-loop round
trips); a profile of ``precompute`` spent 60% of its time there. Measured with
``benchmarks/writers.py`` (the README's table): a shard encoded with numpy and written with one
``store.set`` is the fastest of zarr-python's default pipeline, the ``zarrs`` pipeline,
``tensorstore`` and itself, and takes a fifth of zarr-python's CPU time or less.

The layout is the one :class:`~cache_builder.store.shards.ZarrChunks` reads: chunks of whole
rows, codecs bytes (little-endian) [+ blosc] + crc32c, in shards (the sharding codec, index
``(offset, nbytes)`` uint64 pairs + crc32c at the end) or one chunk per object. As zarr-python
does with ``write_empty_chunks``: every chunk that holds a row of the array is written (the
last one padded with the fill value 0), chunks of a last shard past the array's end are
absent from its index, and inner chunks follow row order (Morton order on a grid of one
column). ``tests/test_shard_writer.py`` checks the objects equal zarr-python's, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from cache_builder.store.chunks import crc32c
from cache_builder.store.shards import EMPTY, ZarrChunks


class ShardWriter:
    """Encodes rows of one array into its storage objects.

    Args:
        layout: the array as its reader sees it (chunking, codecs, object keys).
    """

    def __init__(self, layout: ZarrChunks):
        self.layout = layout
        self.chunk_rows = layout.chunk_rows
        self.object_chunks = layout.shard_chunks or 1
        self.object_rows = self.chunk_rows * self.object_chunks  # rows per storage object

    def objects(self, start: int, data: np.ndarray, length: int) -> Iterator[tuple[str, np.ndarray]]:
        """(key, encoded bytes as a uint8 array) of every object holding rows
        ``[start, start + len(data))``, which must be whole objects or end at the array's end.

        Args:
            start: a multiple of the rows per object.
            data: ``(n, *tail)`` rows, any dtype that casts to the array's without loss.
            length: the array's rows (its last object holds the rows up to it).

        Raises:
            ValueError: rows that do not cover their objects whole.
        """
        end = start + len(data)
        if start % self.object_rows or (end % self.object_rows and end != length) or end > length:
            raise ValueError(f"array {self.layout.path!r}: rows {start}:{end} of {length} are not whole "
                             f"storage objects of {self.object_rows} rows")
        data = np.ascontiguousarray(data, dtype=self.layout.dtype)
        for first in range(start, end, self.object_rows):
            rows = data[first - start : first - start + self.object_rows]
            yield self.layout.key(first // self.object_rows), self.encode(rows)

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """One object's bytes from its rows (the array's dtype, C order; fewer than an object's
        rows only for the array's last object)."""
        chunk_bytes = self.chunk_rows * rows[:1].nbytes
        n = -(-len(rows) // self.chunk_rows)  # chunks holding a row
        flat = rows.reshape(-1).view(np.uint8)
        if self.layout.blosc is None:
            out = np.empty(n * (chunk_bytes + 4) + (16 * self.object_chunks + 4 if self.layout.shard_chunks else 0),
                           np.uint8)
            body = out[: n * (chunk_bytes + 4)].reshape(n, chunk_bytes + 4)
            full = len(flat) // chunk_bytes
            body[:full, :chunk_bytes] = flat[: full * chunk_bytes].reshape(full, chunk_bytes)
            if full < n:  # the array's last chunk: zarr pads it with the fill value
                body[full, :chunk_bytes] = 0
                body[full, : len(flat) - full * chunk_bytes] = flat[full * chunk_bytes :]
            crcs = np.array([crc32c(body[i, :chunk_bytes]) for i in range(n)], "<u4")
            body[:, chunk_bytes:] = crcs.view(np.uint8).reshape(n, 4)
            sizes = np.full(n, chunk_bytes + 4, np.uint64)
        else:
            padded = np.zeros(n * chunk_bytes, np.uint8)
            padded[: len(flat)] = flat
            parts = []
            for i in range(n):
                encoded = self.layout.blosc.encode(padded[i * chunk_bytes : (i + 1) * chunk_bytes]
                                                   .view(self.layout.dtype))
                parts += [encoded, np.uint32(crc32c(encoded)).astype("<u4").tobytes()]
            sizes = np.array([len(p) + 4 for p in parts[::2]], np.uint64)
            index_size = 16 * self.object_chunks + 4 if self.layout.shard_chunks else 0
            out = np.empty(int(sizes.sum()) + index_size, np.uint8)
            out[: int(sizes.sum())] = np.frombuffer(b"".join(parts), np.uint8)
        if self.layout.shard_chunks:
            index = np.full((self.object_chunks, 2), EMPTY, "<u8")
            index[:n, 1] = sizes
            index[:n, 0] = np.cumsum(sizes) - sizes
            raw = index.reshape(-1).view(np.uint8)
            out[-(len(raw) + 4) : -4] = raw
            out[-4:] = np.array([crc32c(raw)], "<u4").view(np.uint8)
        return out
