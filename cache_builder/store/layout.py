"""The store's logical layout: which arrays exist, their shapes, and the manifest checks.

Arrays (first axis grows; ``n_tokens`` is every stored token, duplicates removed by dedup):

============== ================================ =============================================
name           shape, dtype                     meaning
============== ================================ =============================================
vectors        (n_tokens, n_vector_layers, dim)  contextual layers kept (or the one mixed layer)
token_layer    (n_types, projection_dim)         layer 0 once per distinct token (if kept)
token_row      (n_tokens,) int32                 each token's type: row of ``token_layer``
token_spans    (n_tokens, 2) int32               (start, end) characters into the original text
type_offsets   (n_types + 1,) int64              type t is ``type_utf8[off[t]:off[t+1]]``
type_utf8      (n_type_bytes,) uint8             token strings, UTF-8, concatenated
segment_offsets(n_segments + 1,) int64           segment s is token rows ``[off[s], off[s+1])``
segment_hash   (n_segments, 16) uint8            content hash of the tokenized text (dedup)
doc_offsets    (n_docs + 1,) int64               document d owns entries ``[off[d], off[d+1])``
doc_id_offsets (n_docs + 1,) int64               document ids, as for types
doc_id_utf8    (n_doc_id_bytes,) uint8
entry_field    (n_entries,) int16                field number (manifest ``fields``)
entry_segment  (n_entries,) int64                segment of that document field
============== ================================ =============================================
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cache_builder.layers import LayerSpec

FORMAT_NAME = "elmo-cache"
FORMAT_VERSION = 1
CHUNK_BYTES = 1 << 20  # ~1 MB chunks: one lookup decompresses little
SHARD_CHUNKS = 16  # chunks per storage object (a Zarr shard): few objects, single-chunk reads


def array_specs(spec: LayerSpec, dim: int, projection_dim: int, dtype: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name → (row shape, dtype) of every array a store with these settings has."""
    arrays: dict[str, tuple[tuple[int, ...], str]] = {
        "vectors": ((spec.n_vector_layers, dim), dtype),
        "token_row": ((), "int32"),
        "token_spans": ((2,), "int32"),
        "type_offsets": ((), "int64"),
        "type_utf8": ((), "uint8"),
        "segment_offsets": ((), "int64"),
        "segment_hash": ((16,), "uint8"),
        "doc_offsets": ((), "int64"),
        "doc_id_offsets": ((), "int64"),
        "doc_id_utf8": ((), "uint8"),
        "entry_field": ((), "int16"),
        "entry_segment": ((), "int64"),
    }
    if spec.keeps_token_layer:
        arrays["token_layer"] = ((projection_dim,), dtype)
    return arrays


OFFSET_ARRAYS = ("type_offsets", "segment_offsets", "doc_offsets", "doc_id_offsets")  # start with a 0 row


def chunk_rows(tail: tuple[int, ...], dtype: str) -> int:
    """A power of two near ``CHUNK_BYTES`` per chunk (at least 256 rows)."""
    row_bytes = int(np.prod(tail, dtype=np.int64)) * np.dtype(dtype).itemsize
    rows = max(256, CHUNK_BYTES // max(row_bytes, 1))
    return 1 << (rows.bit_length() - 1)


def task_chunking(tail: tuple[int, ...], dtype: str, task_rows: int) -> tuple[int, int]:
    """(chunk rows, rows per storage object) of an array that tasks of about ``task_rows`` rows
    write: a task writes whole storage objects, so none holds more rows than a task."""
    cap = 1 << (max(task_rows, 1).bit_length() - 1)
    chunk = min(chunk_rows(tail, dtype), cap)
    return chunk, min(chunk * SHARD_CHUNKS, max(cap, chunk))


def decode_strings(utf8: np.ndarray, offsets: np.ndarray) -> list[str]:
    """Concatenated UTF-8 bytes + ``(n + 1,)`` offsets → n strings."""
    raw = utf8.tobytes()
    return [raw[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]


def encode_strings(strings: list[str], start: int) -> tuple[np.ndarray, np.ndarray]:
    """n strings → (UTF-8 bytes, ``(n,)`` end offsets after ``start``): rows to append."""
    encoded = [s.encode("utf-8") for s in strings]
    ends = start + np.cumsum([len(b) for b in encoded], dtype=np.int64)
    return np.frombuffer(b"".join(encoded), dtype=np.uint8), ends


def bytes_per_token_estimate(spec: LayerSpec, dim: int, dtype: str) -> int:
    """Uncompressed bytes each token costs (vectors, type row, span), layer 0's table aside."""
    return spec.n_vector_layers * dim * np.dtype(dtype).itemsize + 4 + 8


def manifest_kind(manifest: Any) -> str | None:
    """None when ``manifest`` looks like ours, else why not."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        return "no elmo-cache manifest"
    if manifest.get("format_version") != FORMAT_VERSION:
        return (f"format version {manifest.get('format_version')} (this tool reads version "
                f"{FORMAT_VERSION})")
    return None
