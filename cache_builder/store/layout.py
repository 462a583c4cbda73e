"""The store's logical layout: which arrays exist, their shapes, and the manifest checks.

Arrays (first axis grows; ``n_tokens`` is every stored token, duplicates removed by dedup):

============== ================================ =============================================
name           shape, dtype                     meaning
============== ================================ =============================================
vectors        (n_tokens, n_vector_layers, dim)  contextual layers kept (or the one mixed layer),
                                                 in the store's encoding (:mod:`.encoding`)
vector_scale   (n_tokens, n_vector_layers) f16   int8 stores only: each token's scale per layer
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
entry_field    (n_entries,) int16                field number: a row of the field names
entry_segment  (n_entries,) int64                segment of that document field
field_offsets  (n_fields + 1,) int64             field names (manifest ``fields``), as for types
field_utf8     (n_field_bytes,) uint8
============== ================================ =============================================

The arrays carry what reading depends on, so that the manifest cannot contradict them
(:func:`check_description`): the encoding is ``vectors``' own dtype (plus its scale array), the
field names are ``field_utf8``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cache_builder.layers import LayerSpec
from cache_builder.store.base import CorruptStoreError, StoreReader
from cache_builder.store.encoding import Encoding, get_encoding, stored_encoding

FORMAT_NAME = "elmo-cache"
# 2: vectors in small uncompressed chunks, every chunk written (a missing object is an error,
# never the fill value), int8. Version-1 stores may lack all-zero chunks by design: re-run them.
FORMAT_VERSION = 2

# Chunk sizes, chosen with ``benchmarks/read.py`` (small ELMo shape, 2 cores): a lookup reads
# every chunk its rows touch, so vector chunks stay small (a SQuAD context of ~150 tokens × 1 KB
# touches 3-4 chunks of 64 rows); index arrays are read whole at open or in long runs.
VECTOR_CHUNK_BYTES = 1 << 16
INDEX_CHUNK_BYTES = 1 << 16
SHARD_CHUNKS = 256  # chunks per storage object (a Zarr shard): ≈16 MB objects, single-chunk reads

# Arrays of vector data, written by tasks region by region and never appended: the plan creates
# them at their final length, each task writes whole write units (``StoreWriter.write_unit``) of
# its own. ``vectors`` and ``vector_scale`` share the token axis and one chunking (so one write
# unit); ``token_layer`` has one row per distinct token type and is written by type tasks. Every
# other array (index, ids, tokens, spans, type table, offsets) is written by the plan, appending.
TASK_ARRAYS = frozenset({"vectors", "vector_scale", "token_layer"})

# The stage a store's ``progress`` attribute names when its run failed on bad input while planning:
# it holds no vectors, so a reader says what failed and a re-run replaces it.
FAILED = "failed"


@dataclass(frozen=True)
class ArraySpec:
    """One array: rows shaped ``tail`` of ``dtype``, ``chunk_rows`` per chunk, and whether its
    chunks are compressed (index arrays compress 3-4x; activations ~1.1x, not worth a codec)."""

    tail: tuple[int, ...]
    dtype: str
    chunk_rows: int
    compress: bool


def _rows(tail: tuple[int, ...], dtype: str, target: int, least: int) -> int:
    """A power of two of rows near ``target`` bytes per chunk (at least ``least`` rows)."""
    row_bytes = int(np.prod(tail, dtype=np.int64)) * np.dtype(dtype).itemsize
    rows = max(least, target // max(row_bytes, 1))
    return 1 << (rows.bit_length() - 1)


def array_specs(spec: LayerSpec, dim: int, projection_dim: int, dtype: str) -> dict[str, ArraySpec]:
    """Name → :class:`ArraySpec` of every array a store with these settings has."""
    encoding = get_encoding(dtype)
    per_token = encoding.arrays(spec.n_vector_layers, dim)
    vector_rows = _rows(*per_token["vectors"], VECTOR_CHUNK_BYTES, 1)  # one chunking for the token axis
    arrays = {name: ArraySpec(tail, dt, vector_rows, False) for name, (tail, dt) in per_token.items()}
    index = {
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
        "field_offsets": ((), "int64"),
        "field_utf8": ((), "uint8"),
    }
    for name, (tail, dt) in index.items():  # token_row is read by every lookup of layer 0: no codec
        arrays[name] = ArraySpec(tail, dt, _rows(tail, dt, INDEX_CHUNK_BYTES, 256), name != "token_row")
    if spec.keeps_token_layer:
        tail = (projection_dim,)
        arrays["token_layer"] = ArraySpec(tail, encoding.table_dtype,
                                          _rows(tail, encoding.table_dtype, VECTOR_CHUNK_BYTES, 1), False)
    return arrays


OFFSET_ARRAYS = ("type_offsets", "segment_offsets", "doc_offsets", "doc_id_offsets",
                 "field_offsets")  # start with a 0 row
# Arrays added within format version 2: a store written before lacks them, and reading checks
# what it can without them.
LATER_ARRAYS = frozenset({"field_offsets", "field_utf8"})


def task_chunking(array: ArraySpec, task_rows: int) -> tuple[int, int]:
    """(chunk rows, rows per storage object) of a task-written array when tasks write about
    ``task_rows`` rows: a task writes whole storage objects, so none holds more rows than a task."""
    cap = 1 << (max(task_rows, 1).bit_length() - 1)
    chunk = min(array.chunk_rows, cap)
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
    arrays = get_encoding(dtype).arrays(spec.n_vector_layers, dim).values()
    return sum(int(np.prod(tail)) * np.dtype(dt).itemsize for tail, dt in arrays) + 4 + 8


def check_description(store: StoreReader, manifest: dict[str, Any], spec: LayerSpec,
                      entry_field: np.ndarray) -> tuple[Encoding, dict[str, ArraySpec]]:
    """Check what the manifest says reading depends on against the arrays themselves, so that an
    edited manifest cannot change what lookups return.

    Args:
        store: a complete store.
        manifest: its (schema-valid) manifest; ``spec`` its layers.
        entry_field: ``(n_entries,)`` the store's ``entry_field`` array.

    Returns:
        The encoding the arrays hold (``vectors``' own dtype) and the store's arrays
        (:func:`array_specs`, less :data:`LATER_ARRAYS` a store written before them lacks).

    Raises:
        CorruptStoreError: one line naming the store and what disagrees (the dtype, the fields, a
            vector array's rows) or is missing.
    """
    path, names, model, dtype = store.path, store.names(), manifest["model"], manifest["dtype"]
    encoding = get_encoding(dtype)
    if "vectors" in names:  # else reported missing below
        stored = str(store.array("vectors").dtype)
        found = stored_encoding(stored)
        if found is None or found.name != dtype:
            raise CorruptStoreError(f"{path}: the manifest says dtype {dtype}, but the vectors are stored as {stored}")
        encoding = found
    arrays = array_specs(spec, model["dim"], model["projection_dim"], encoding.name)
    absent = set(arrays) - names
    if absent and absent != LATER_ARRAYS:  # a store written before them lacks them all
        raise CorruptStoreError(f"{path}: arrays {sorted(absent - LATER_ARRAYS) or sorted(absent)} are missing "
                                "from a complete store")
    for name in sorted(TASK_ARRAYS & arrays.keys()):  # the arrays whose rows the manifest describes
        array, want = store.array(name), arrays[name]
        tail, held = tuple(array.shape[1:]), str(array.dtype)
        if (tail, held) != (want.tail, want.dtype):
            raise CorruptStoreError(f"{path}: {name} holds rows of {tail} {held}, but the manifest's layers, "
                                    f"model and dtype say {want.tail} {want.dtype}")
    fields = manifest["fields"]
    if not absent:
        stored_fields = decode_strings(store.read("field_utf8"), store.read("field_offsets"))
        if stored_fields != fields:
            raise CorruptStoreError(f"{path}: the manifest says fields {fields}, but the index holds fields "
                                    f"{stored_fields}")
    elif (numbered := int(entry_field.max(initial=-1)) + 1) != len(fields):  # without the names: their count
        raise CorruptStoreError(f"{path}: the manifest names {len(fields)} fields {fields}, but the index numbers "
                                f"{numbered}")
    return encoding, {name: a for name, a in arrays.items() if name not in absent}


def manifest_kind(manifest: Any) -> str | None:
    """None when ``manifest`` looks like ours, else why not."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        return "no elmo-cache manifest"
    if manifest.get("format_version") != FORMAT_VERSION:
        return (f"format version {manifest.get('format_version')} (this tool reads version "
                f"{FORMAT_VERSION})")
    return None
