"""Reading a store: :func:`open_cache` → :class:`EmbeddingCache`, lazy per-document lookups."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from cache_builder.layers import LayerSpec, layer_spec_from_manifest
from cache_builder.read.source import TokenView
from cache_builder.store import StoreError, StoreReader, open_reader
from cache_builder.store.encoding import Encoding
from cache_builder.store.layout import FAILED, check_description, decode_strings, manifest_kind
from cache_builder.store.lock import writer_of
from elmo.schemas import schema_errors


class EmbeddingCache:
    """A complete store opened for reading. Only the index (ids, offsets) and layer 0's per-type
    table are loaded at open; vectors are read chunk by chunk on lookup.

    ``lookup(doc_id, field)`` returns one array, always: ``(n_layers_kept, n_tokens, dim)``
    (the axis order of AllenNLP's ``--all`` output), or ``(n_tokens, dim)`` for a mixed store,
    as float16 for a float16 store and float32 for float32 and int8 ones (int8 decoded, within
    ``encoding.relative_error`` of each token's largest value in that layer). ``field`` may be
    left out on a one-field store. ``lookup_record(doc_id)`` returns a dict field → array,
    always (one entry on a one-field store).

    Usable from ``DataLoader`` workers: forked ones reopen the store's files, spawned ones
    unpickle the cache as its store's path.
    """

    def __init__(self, store: StoreReader):
        self.store = store
        manifest = store.get_attr("manifest")
        if manifest is None:
            progress = store.get_attr("progress")
            if progress is not None:
                writer = writer_of(store.path)
                if writer is not None:
                    raise StoreError(f"{store.path}: a run is writing this store ({writer}); open it "
                                     "once that run has finished")
                if isinstance(progress, dict) and progress.get("stage") == FAILED:
                    raise StoreError(f"{store.path}: failed: {progress.get('error')}; it holds no "
                                     "vectors: fix the input or the arguments and re-run precompute "
                                     "(it replaces this store, no --overwrite needed)")
                raise StoreError(f"{store.path}: incomplete store (its run was interrupted); re-run "
                                 "precompute with the same arguments to finish it")
            raise StoreError(f"{store.path}: not an elmo-cache store (no manifest)")
        why = manifest_kind(manifest)
        if why is not None:
            raise StoreError(f"{store.path}: not an elmo-cache store ({why})")
        errors = schema_errors(manifest, "cache_manifest", "cache_builder.schemas")
        if errors:
            raise StoreError(f"{store.path}: invalid manifest: " + "; ".join(errors))
        self.manifest: dict[str, Any] = manifest
        self.spec: LayerSpec = layer_spec_from_manifest(manifest["layers"])
        self.fields: list[str] = manifest["fields"]
        self._entry_field = store.read("entry_field")
        self.encoding: Encoding
        self.encoding, self.arrays = check_description(store, manifest, self.spec, self._entry_field)
        self._dim = manifest["model"]["dim"]
        self._vector_arrays = list(self.encoding.arrays(self.spec.n_vector_layers, self._dim))
        # where each kept layer comes from: None for layer 0's table, else its column of ``vectors``
        self._sources = ([] if self.spec.mix is not None else
                         [None if k == 0 else self.spec.vector_layers.index(k) for k in self.spec.layers])
        ids = decode_strings(store.read("doc_id_utf8"), store.read("doc_id_offsets"))
        self._doc_rows = {doc_id: i for i, doc_id in enumerate(ids)}
        self._doc_offsets = store.read("doc_offsets")
        self._entry_segment = store.read("entry_segment")
        self._segment_offsets = store.read("segment_offsets")
        # Layer 0's table is small (distinct tokens × projection): keep it in memory, widened to
        # the LSTM width (the projection twice, as the biLM does) in the lookup dtype.
        self._table: np.ndarray | None = None
        if self.spec.keeps_token_layer:
            table = store.read("token_layer")
            self._table = np.concatenate([table, table], axis=1).astype(self.encoding.carrier)
        self._types: list[str] | None = None

    def __reduce__(self):  # pickled (DataLoader workers started by spawn) as its store, reopened
        return EmbeddingCache, (self.store,)

    # -- mapping protocol over document ids
    def __len__(self) -> int:
        return len(self._doc_rows)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._doc_rows

    def __iter__(self) -> Iterator[str]:
        return iter(self._doc_rows)

    def info(self) -> dict[str, Any]:
        """The manifest (settings, counts, model fingerprint, backend)."""
        return self.manifest

    def segments(self, doc_id: str) -> dict[str, int]:
        """Field → segment number of a document.

        Raises:
            KeyError: naming ``doc_id`` when the store does not have it.
        """
        row = self._doc_rows.get(doc_id)
        if row is None:
            raise KeyError(f"document id {doc_id!r} is not in the cache {self.store.path}")
        a, b = self._doc_offsets[row], self._doc_offsets[row + 1]
        return {self.fields[f]: int(s) for f, s in zip(self._entry_field[a:b], self._entry_segment[a:b])}

    def _segment(self, doc_id: str, field: str | None) -> dict[str, int]:
        segments = self.segments(doc_id)
        if field is None:
            return segments
        if field not in segments:
            raise KeyError(f"document id {doc_id!r} has no field {field!r} (it has {sorted(segments)})")
        return {field: segments[field]}

    def _field(self, field: str | None) -> str | None:
        """``field``, or the store's only field; None (every field) on a store of several."""
        return self.fields[0] if field is None and len(self.fields) == 1 else field

    def _ranges(self, segments: Sequence[int]) -> list[tuple[int, int]]:
        off = self._segment_offsets
        return [(int(off[s]), int(off[s + 1])) for s in segments]

    def _shape(self, n_tokens: int) -> tuple[int, ...]:
        return (n_tokens, self._dim) if self.spec.mix is not None else (len(self.spec.layers), n_tokens, self._dim)

    def _fill(self, ranges: Sequence[tuple[int, int]], targets: Sequence[np.ndarray]) -> None:
        """Token rows ``[a, b)`` of each range into its target, ``self._shape(b - a)``; every
        chunk the ranges touch is fetched once."""
        parts = {name: self.store.read_ranges(name, ranges) for name in self._vector_arrays}
        rows = self.store.read_ranges("token_row", ranges) if self._table is not None else None
        for i, target in enumerate(targets):
            vectors = self.encoding.decode({name: p[i] for name, p in parts.items()})  # (n, n_vector_layers, dim)
            if self.spec.mix is not None:
                target[...] = vectors[:, 0]
                continue
            for j, source in enumerate(self._sources):
                target[j] = self._table[rows[i]] if source is None else vectors[:, source]

    def _read(self, ranges: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        targets = [np.empty(self._shape(b - a), self.encoding.carrier) for a, b in ranges]
        self._fill(ranges, targets)
        return targets

    def segment_vectors(self, segment: int) -> np.ndarray:
        """One segment: ``(n_layers_kept, n_tokens, dim)``, or ``(n_tokens, dim)`` when mixed."""
        return self._read(self._ranges([segment]))[0]

    def lookup(self, doc_id: str, field: str | None = None) -> np.ndarray:
        """One field of a document, reading only the chunks that hold it.

        Args:
            doc_id: the record's id.
            field: which text field; may be left out when the store has one field.

        Returns:
            ``(n_layers_kept, n_tokens, dim)`` (``(n_tokens, dim)`` for a mixed store).

        Raises:
            KeyError: an unknown id or field.
            CorruptStoreError: a storage object it needs is missing, partial or damaged.

        For every field at once use :meth:`lookup_record`. Leaving ``field`` out on a store of
        several fields still returns :meth:`lookup_record`'s dict, as before, with a
        ``FutureWarning``: that form will become a ``KeyError``.
        """
        return self.lookup_many([doc_id], field)[0]

    def lookup_record(self, doc_id: str) -> dict[str, np.ndarray]:
        """Every field of a document: field → ``lookup(doc_id, field)``, read in one call."""
        return self._lookup_records([doc_id], None)[0]

    def lookup_many(self, doc_ids: Sequence[str], field: str | None = None) -> list[np.ndarray]:
        """``lookup`` for each id, in order, reading every chunk the batch touches once."""
        field = self._field(field)
        if field is None:
            warnings.warn(f"lookup without a field on a store of fields {self.fields} returns a dict; name the "
                          "field (lookup(doc_id, field)) or call lookup_record(doc_id)", FutureWarning, stacklevel=3)
        return [found if field is None else found[field] for found in self._lookup_records(doc_ids, field)]

    def _lookup_records(self, doc_ids: Sequence[str], field: str | None) -> list[dict[str, np.ndarray]]:
        """field → array for each id (only ``field`` when given), every chunk read once."""
        per_doc = [self._segment(doc_id, field) for doc_id in doc_ids]
        arrays = iter(self._read(self._ranges([s for segments in per_doc for s in segments.values()])))
        return [{name: next(arrays) for name in segments} for segments in per_doc]

    def lookup_batch(self, doc_ids: Sequence[str], field: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One field of each document, read straight into one zero-padded array.

        Args:
            doc_ids: the batch's documents.
            field: the text field (may be omitted for one-field stores).

        Returns:
            ``vectors`` ``(batch, n_layers_kept, time, dim)`` (``(batch, time, dim)`` mixed),
            zero past each document's end, and ``lengths`` ``(batch,)`` int64 tokens.
        """
        field = self._field(field)
        if field is None:
            raise KeyError(f"the store has fields {self.fields}: name one")
        segments = [self._segment(doc_id, field) for doc_id in doc_ids]
        ranges = self._ranges([next(iter(s.values())) for s in segments])
        lengths = np.array([b - a for a, b in ranges], dtype=np.int64)
        vectors = np.empty((len(ranges), *self._shape(int(lengths.max(initial=0)))), self.encoding.carrier)
        for b, n in enumerate(lengths.tolist()):
            vectors[b, ..., n:, :] = 0
        self._fill(ranges, [vectors[b, ..., :n, :] for b, n in enumerate(lengths.tolist())])
        return vectors, lengths

    def tokens(self, doc_id: str, field: str | None = None) -> TokenView:
        """A field's tokens and character spans (``field`` may be omitted for one-field stores)."""
        field = self._field(field)
        if field is None:
            raise KeyError(f"the store has fields {self.fields}: name one")
        return self.segment_tokens(self._segment(doc_id, field)[field])

    def segment_tokens(self, segment: int) -> TokenView:
        """One segment's tokens and ``(n_tokens, 2)`` spans."""
        a, b = int(self._segment_offsets[segment]), int(self._segment_offsets[segment + 1])
        if self._types is None:
            self._types = decode_strings(self.store.read("type_utf8"), self.store.read("type_offsets"))
        rows = self.store.read("token_row", a, b)
        return TokenView([self._types[r] for r in rows.tolist()], np.array(self.store.read("token_spans", a, b)))

    @property
    def n_segments(self) -> int:
        return len(self._segment_offsets) - 1

    def dataset(self, field: str | None = None) -> CacheDataset:
        """A ``torch.utils.data.Dataset`` over documents; pair it with :func:`pad_collate`."""
        return CacheDataset(self, field)

    def to_dask(self):
        """Every stored token as a lazy dask array: ``(n_tokens, n_layers_kept, dim)``, or
        ``(n_tokens, dim)`` for a mixed store; segment s is rows ``segment_offsets[s]:[s+1]``."""
        import dask.array as da

        rows = _TokenRows(self)
        return da.from_array(rows, chunks=(self.store.chunk_rows("vectors"),) + (-1,) * (rows.ndim - 1), asarray=False)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- training-side views, each in its own module (imported here, so that reading needs none)
    def pooled(self, doc_id: str, field: str | None = None) -> np.ndarray | dict[str, np.ndarray]:
        """Mean over a field's tokens, float32: ``(n_layers_kept, dim)`` (``(dim,)`` mixed); see
        :func:`cache_builder.read.pooling.pooled`."""
        from cache_builder.read.pooling import pooled

        return pooled(self, doc_id, field)

    def to_hf_dataset(self, fields: Sequence[str] | None = None, **kwargs: Any):
        """A Hugging Face ``datasets.Dataset``, one row per document field; see
        :func:`cache_builder.read.interop.to_hf_dataset`."""
        from cache_builder.read.interop import to_hf_dataset

        return to_hf_dataset(self, fields, **kwargs)

    def to_memmap(self, folder: str):
        """``vectors.npy`` ``(n_tokens_total, n_layers_kept, dim)`` + ``offsets.npy`` + ``index.jsonl``
        under ``folder``; see :func:`cache_builder.read.interop.to_memmap`."""
        from cache_builder.read.interop import to_memmap

        return to_memmap(self, folder)


def open_cache(path: str) -> EmbeddingCache:
    """Open a complete store (Zarr directory, HDF5 file).

    Raises:
        StoreError: no store, a foreign one, or an incomplete one (an interrupted run).
        CorruptStoreError: an array missing or damaged, or a manifest that its arrays contradict
            (dtype, fields, the vectors' rows).
    """
    return EmbeddingCache(open_reader(path))


class _TokenRows:
    """A cache's tokens as an array-like of ``(n_tokens, n_layers_kept, dim)`` (``(n_tokens, dim)``
    mixed) that reads through :meth:`EmbeddingCache._read`, for dask."""

    def __init__(self, cache: EmbeddingCache):
        self.cache = cache
        shape = cache._shape(int(cache._segment_offsets[-1]))  # lookup's axis order: tokens second
        self.shape = shape if len(shape) == 2 else (shape[1], shape[0], shape[2])
        self.dtype, self.ndim = np.dtype(cache.encoding.carrier), len(self.shape)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        start, stop, _ = key[0].indices(self.shape[0])
        rows = self.cache._read([(start, max(start, stop))])[0]
        return (rows if self.ndim == 2 else rows.transpose(1, 0, 2))[(slice(None), *key[1:])]


class CacheDataset:
    """``dataset[i]`` → (doc_id, ``torch.Tensor`` of one field's vectors) over documents in
    store order; a ``torch.utils.data.Dataset`` (map-style).

    A ``DataLoader`` fetches a whole batch with one ``__getitems__`` call: it is read grouped by
    chunk into one zero-padded array (:meth:`EmbeddingCache.lookup_batch`), and each item is a
    view of its row, which :func:`pad_collate` then hands over without copying.
    """

    def __init__(self, cache: EmbeddingCache, field: str | None):
        if field is None and len(cache.fields) > 1:
            raise ValueError(f"the store has fields {cache.fields}: name one")
        self.cache, self.field = cache, field
        self.ids = list(cache)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list:
        import torch

        ids = [self.ids[i] for i in indices]
        vectors, lengths = self.cache.lookup_batch(ids, self.field)
        batch = torch.from_numpy(vectors)
        return [(doc_id, batch[b, ..., :n, :]) for b, (doc_id, n) in enumerate(zip(ids, lengths.tolist()))]


def pad_collate(items: list) -> dict[str, Any]:
    """Batch :class:`CacheDataset` items, padding the token axis with zeros.

    Returns:
        ``ids``; ``vectors`` ``(batch, n_layers_kept, time, dim)`` (``(batch, time, dim)`` mixed);
        ``mask`` ``(batch, time)`` bool, True at real tokens.
    """
    import torch

    ids = [doc_id for doc_id, _ in items]
    tensors = [v for _, v in items]
    lengths = np.array([v.shape[-2] for v in tensors])
    base = tensors[0]._base
    if (base is not None and len(base) == len(tensors) and base.shape[-2] == lengths.max()
            and all(v._base is base and v.dim() == base.dim() - 1 and v.data_ptr() == base[b].data_ptr()
                    for b, v in enumerate(tensors))):
        vectors = base  # the items are the rows of one padded batch (CacheDataset.__getitems__)
    else:
        vectors = torch.empty((len(tensors), *tensors[0].shape[:-2], int(lengths.max()), tensors[0].shape[-1]),
                              dtype=tensors[0].dtype)
        out = vectors.numpy()  # copied by numpy: torch's per-op threads cost more than they save here
        for b, (v, n) in enumerate(zip(tensors, lengths)):
            out[b, ..., :n, :] = v.numpy()
            out[b, ..., n:, :] = 0
    mask = torch.from_numpy(np.arange(vectors.shape[-2]) < lengths[:, None])
    return {"ids": ids, "vectors": vectors, "mask": mask}
