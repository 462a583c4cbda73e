"""Export a store for the tools users already have: a Hugging Face ``datasets.Dataset`` and numpy
files for FAISS-style work. Both stream: one document's vectors in memory at a time.

Both are token-major, ``(n_tokens, n_layers_kept, dim)`` (``(n_tokens, dim)`` for a mixed store),
the store's own row layout: a batch of variable-length rows pads on its first axis
(``torch.nn.utils.rnn.pad_sequence``), and Arrow can only leave the first axis of a fixed-shape
array open. ``lookup`` gives ``(n_layers_kept, n_tokens, dim)``: ``.permute(1, 0, 2)`` maps one to
the other.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cache_builder.read.source import VectorSource

if TYPE_CHECKING:
    import datasets

# Rows per Arrow record batch: datasets' default (1000) holds ~1 GB of SQuAD contexts of the full
# ELMo in memory (1,000 × 150 tokens × 3 layers × 1024 × 2 bytes); 64 holds ~60 MB.
WRITER_BATCH_ROWS = 64
MEMMAP_FILES = ("vectors.npy", "offsets.npy", "index.jsonl")


def _token_major(vectors: np.ndarray) -> np.ndarray:
    """``lookup``'s ``(n_layers, n_tokens, dim)`` → ``(n_tokens, n_layers, dim)``; a mixed
    ``(n_tokens, dim)`` is already token-major."""
    return vectors.transpose(1, 0, 2) if vectors.ndim == 3 else vectors


def _entries(cache: VectorSource, fields: Sequence[str] | None) -> Iterator[tuple[str, str, int]]:
    """``(doc_id, field, segment)`` for every document field, in store order."""
    for doc_id in cache:
        for field, segment in cache.segments(doc_id).items():
            if fields is None or field in fields:
                yield doc_id, field, segment


def _hf_rows(cache: VectorSource, fields: Sequence[str] | None) -> Iterator[dict[str, Any]]:
    for doc_id, field, _ in _entries(cache, fields):
        view = cache.tokens(doc_id, field)
        yield {"id": doc_id, "field": field, "tokens": view.tokens, "spans": view.spans.astype(np.int64),
               "vectors": _token_major(cache.lookup(doc_id, field))}


def to_hf_dataset(cache: VectorSource, fields: Sequence[str] | None = None, *,
                  cache_dir: str | os.PathLike[str] | None = None) -> datasets.Dataset:
    """Every document field as one row of a Hugging Face dataset, written to Arrow files on disk
    one record batch at a time (``Dataset.from_generator``) and memory-mapped.

    Args:
        fields: which fields to export (default: all). A text that several ids share (SQuAD
            contexts) is written once per id: the store's dedup does not carry over.
        cache_dir: where datasets keeps its Arrow files (default ``~/.cache/huggingface/datasets``).
            The same store and fields are exported once: the key is the manifest, which names the
            model, the input's hash and every setting.

    Returns:
        Columns ``id``, ``field``, ``tokens`` (strings), ``spans`` ``(n_tokens, 2)`` character
        offsets, ``vectors`` ``(n_tokens, n_layers_kept, dim)`` (``(n_tokens, dim)`` mixed) in the
        store's dtype. ``.with_format("torch")`` gives tensors of those shapes (datasets
        widens float16 to float32).

    Raises:
        ValueError: an empty store, or a field the store does not have.
    """
    import datasets  # optional dependency: pip install 'elmo-cache[hf]'

    if fields is not None and not set(fields) <= set(cache.fields):
        raise ValueError(f"the store has fields {cache.fields}, not {sorted(set(fields) - set(cache.fields))}")
    first = next(_entries(cache, fields), None)
    if first is None:
        raise ValueError("nothing to export: the store has no documents with these fields")
    sample = _token_major(cache.lookup(first[0], first[1]))
    array = datasets.Array3D if sample.ndim == 3 else datasets.Array2D
    features = datasets.Features({
        "id": datasets.Value("string"), "field": datasets.Value("string"),
        "tokens": datasets.List(datasets.Value("string")), "spans": datasets.Array2D((None, 2), "int64"),
        "vectors": array((None, *sample.shape[1:]), sample.dtype.name),
    })
    key = json.dumps({"manifest": cache.manifest, "fields": None if fields is None else list(fields)}, sort_keys=True)
    return datasets.Dataset.from_generator(
        _hf_rows, features=features, cache_dir=None if cache_dir is None else str(cache_dir),
        gen_kwargs={"cache": cache, "fields": fields}, writer_batch_size=WRITER_BATCH_ROWS,
        fingerprint=hashlib.sha256(key.encode()).hexdigest()[:32])


def to_memmap(cache: VectorSource, folder: str | os.PathLike[str]) -> Path:
    """Write every stored token to numpy files that ``np.load(path, mmap_mode="r")`` maps:

    - ``vectors.npy``: ``(n_tokens_total, n_layers_kept, dim)`` (``(n_tokens_total, dim)`` for
      a mixed store), the store's dtype, layers as ``lookup`` gives them (layer 0 at full width);
    - ``offsets.npy``: ``(n_segments + 1,)`` int64; segment s is rows ``offsets[s]:offsets[s+1]``;
    - ``index.jsonl``: one ``{"id", "field", "segment"}`` line per document field (identical
      texts share a segment, as in the store).

    A row of a FAISS index built on ``vectors`` maps back through ``offsets`` and ``index``.
    Files are written as ``NAME.partial`` and renamed when all are complete, so an interrupted
    export never looks finished.

    Returns:
        ``folder``.

    Raises:
        FileExistsError: one of the files is already there (nothing is overwritten).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in MEMMAP_FILES:
        if (folder / name).exists():
            raise FileExistsError(f"{folder / name} exists; remove it or export elsewhere")
    first_use: dict[int, tuple[str, str]] = {}  # segment → a (doc_id, field) that reads it
    with open(folder / "index.jsonl.partial", "w", encoding="utf-8") as index:
        for doc_id, field, segment in _entries(cache, None):
            index.write(json.dumps({"id": doc_id, "field": field, "segment": segment}, ensure_ascii=False) + "\n")
            first_use.setdefault(segment, (doc_id, field))
    counts = cache.manifest["counts"]
    if not first_use:
        raise ValueError("nothing to export: the store has no documents")
    if sorted(first_use) != list(range(counts["segments"])):
        raise ValueError(f"the index references {len(first_use)} segments, the manifest counts {counts['segments']}")
    offsets = np.zeros(len(first_use) + 1, dtype=np.int64)
    vectors = None
    for segment in range(len(first_use)):  # store order: sequential reads
        rows = _token_major(cache.lookup(*first_use[segment]))
        if vectors is None:
            vectors = np.lib.format.open_memmap(folder / "vectors.npy.partial", mode="w+", dtype=rows.dtype,
                                                shape=(counts["tokens"], *rows.shape[1:]))
        offsets[segment + 1] = offsets[segment] + len(rows)
        vectors[offsets[segment]:offsets[segment + 1]] = rows
    if offsets[-1] != counts["tokens"]:
        raise ValueError(f"the segments hold {offsets[-1]} tokens, the manifest counts {counts['tokens']}")
    vectors.flush()
    del vectors
    with open(folder / "offsets.npy.partial", "wb") as f:  # a file, or np.save appends ".npy"
        np.save(f, offsets, allow_pickle=False)
    for name in MEMMAP_FILES:
        os.replace(folder / f"{name}.partial", folder / name)
    return folder
