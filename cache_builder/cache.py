"""Reading a store: :func:`open_cache` → :class:`EmbeddingCache`, lazy per-document lookups."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cache_builder.store.lock import writer_of
from cache_builder.layers import LayerSpec, layer_spec_from_manifest
from cache_builder.store import StoreError, StoreReader, open_reader
from cache_builder.store.layout import decode_strings, manifest_kind
from elmo.schemas import schema_errors


@dataclass(frozen=True)
class TokenView:
    """A field's tokens and their ``(n_tokens, 2)`` (start, end) character spans in its text."""

    tokens: list[str]
    spans: np.ndarray


class EmbeddingCache:
    """A complete store opened for reading. Only the index (ids, offsets) is loaded at open;
    vectors are read chunk by chunk on lookup.

    ``lookup`` returns ``(n_layers_kept, n_tokens, dim)`` per field (the axis order of
    AllenNLP's ``--all`` output), or ``(n_tokens, dim)`` for a mixed store.
    """

    def __init__(self, store: StoreReader):
        self.store = store
        manifest = store.get_attr("manifest")
        if manifest is None:
            if store.get_attr("progress") is not None:
                writer = writer_of(store.path)
                if writer is not None:
                    raise StoreError(f"{store.path}: a run is writing this store ({writer}); open it "
                                     "once that run has finished")
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
        ids = decode_strings(store.read("doc_id_utf8"), store.read("doc_id_offsets"))
        self._doc_rows = {doc_id: i for i, doc_id in enumerate(ids)}
        self._doc_offsets = store.read("doc_offsets")
        self._entry_field = store.read("entry_field")
        self._entry_segment = store.read("entry_segment")
        self._segment_offsets = store.read("segment_offsets")
        # Layer 0's table is small (distinct tokens × projection): keep it in memory.
        self._token_layer = store.read("token_layer") if self.spec.keeps_token_layer else None
        self._types: list[str] | None = None

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

    def segment_vectors(self, segment: int) -> np.ndarray:
        """One segment: ``(n_layers_kept, n_tokens, dim)``, or ``(n_tokens, dim)`` when mixed."""
        a, b = int(self._segment_offsets[segment]), int(self._segment_offsets[segment + 1])
        vectors = self.store.read("vectors", a, b)  # (n_tokens, n_vector_layers, dim)
        if self.spec.mix is not None:
            return vectors[:, 0]
        layers = []
        for k in self.spec.layers:
            if k == 0:  # widen the projection back to the LSTM width, as the biLM does
                table = self._token_layer[self.store.read("token_row", a, b)]
                layers.append(np.concatenate([table, table], axis=-1))
            else:
                layers.append(vectors[:, self.spec.vector_layers.index(k)])
        return np.stack(layers) if layers else vectors.transpose(1, 0, 2)

    def lookup(self, doc_id: str, field: str | None = None) -> np.ndarray | dict[str, np.ndarray]:
        """A document's vectors, reading only the chunks that hold them.

        Args:
            doc_id: the record's id.
            field: which text field; None returns the only field's array, or a dict
                field → array when the store has several fields.

        Returns:
            ``(n_layers_kept, n_tokens, dim)`` (``(n_tokens, dim)`` for a mixed store).
        """
        segments = self._segment(doc_id, field)
        if len(segments) == 1:
            return self.segment_vectors(next(iter(segments.values())))
        return {name: self.segment_vectors(s) for name, s in segments.items()}

    def lookup_many(self, doc_ids: Sequence[str], field: str | None = None) -> list[np.ndarray | dict[str, np.ndarray]]:
        """``lookup`` for each id, in order."""
        return [self.lookup(doc_id, field) for doc_id in doc_ids]

    def tokens(self, doc_id: str, field: str | None = None) -> TokenView:
        """A field's tokens and character spans (``field`` may be omitted for one-field stores)."""
        segments = self._segment(doc_id, field)
        if len(segments) != 1:
            raise KeyError(f"document id {doc_id!r} has fields {sorted(segments)}: name one")
        return self.segment_tokens(next(iter(segments.values())))

    def segment_tokens(self, segment: int) -> TokenView:
        """One segment's tokens and ``(n_tokens, 2)`` spans."""
        a, b = int(self._segment_offsets[segment]), int(self._segment_offsets[segment + 1])
        if self._types is None:
            self._types = decode_strings(self.store.read("type_utf8"), self.store.read("type_offsets"))
        rows = self.store.read("token_row", a, b)
        return TokenView([self._types[r] for r in rows], self.store.read("token_spans", a, b))

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

        vectors = da.from_array(self.store.array("vectors"), chunks=(self.store.chunk_rows("vectors"), -1, -1))
        if self.spec.mix is not None:
            return vectors[:, 0]
        layers = []
        for k in self.spec.layers:
            if k == 0:
                rows = da.from_array(self.store.array("token_row"), chunks=vectors.chunks[0])
                table = self._token_layer
                layers.append(rows.map_blocks(lambda r: np.concatenate([table[r], table[r]], axis=-1),
                                              new_axis=1, chunks=(vectors.chunks[0], (vectors.shape[2],)),
                                              dtype=table.dtype))
            else:
                layers.append(vectors[:, self.spec.vector_layers.index(k)])
        return da.stack(layers, axis=1)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- training-side views, each in its own module (imported here, so that reading needs none)
    def pooled(self, doc_id: str, field: str | None = None) -> np.ndarray | dict[str, np.ndarray]:
        """Mean over a field's tokens, float32: ``(n_layers_kept, dim)`` (``(dim,)`` mixed); see
        :func:`cache_builder.pooling.pooled`."""
        from cache_builder.pooling import pooled

        return pooled(self, doc_id, field)

    def to_hf_dataset(self, fields: Sequence[str] | None = None, **kwargs: Any):
        """A Hugging Face ``datasets.Dataset``, one row per document field; see
        :func:`cache_builder.interop.to_hf_dataset`."""
        from cache_builder.interop import to_hf_dataset

        return to_hf_dataset(self, fields, **kwargs)

    def to_memmap(self, folder: str):
        """``vectors.npy`` ``(n_tokens_total, n_layers_kept, dim)`` + ``offsets.npy`` + ``index.jsonl``
        under ``folder``; see :func:`cache_builder.interop.to_memmap`."""
        from cache_builder.interop import to_memmap

        return to_memmap(self, folder)


def open_cache(path: str) -> EmbeddingCache:
    """Open a complete store (Zarr directory, HDF5 file).

    Raises:
        StoreError: no store, a foreign one, or an incomplete one (an interrupted run).
    """
    return EmbeddingCache(open_reader(path))


class CacheDataset:
    """``dataset[i]`` → (doc_id, ``torch.Tensor`` of one field's vectors) over documents in
    store order; a ``torch.utils.data.Dataset`` (map-style)."""

    def __init__(self, cache: EmbeddingCache, field: str | None):
        if field is None and len(cache.fields) > 1:
            raise ValueError(f"the store has fields {cache.fields}: name one")
        self.cache, self.field = cache, field
        self.ids = list(cache)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        import torch

        return self.ids[i], torch.from_numpy(self.cache.lookup(self.ids[i], self.field))


def pad_collate(items: list) -> dict[str, Any]:
    """Batch :class:`CacheDataset` items, padding the token axis with zeros.

    Returns:
        ``ids``; ``vectors`` ``(batch, n_layers_kept, time, dim)`` (``(batch, time, dim)`` mixed);
        ``mask`` ``(batch, time)`` bool, True at real tokens.
    """
    import torch

    ids = [doc_id for doc_id, _ in items]
    arrays = [v for _, v in items]
    time_axis = arrays[0].dim() - 2
    time = max(a.shape[time_axis] for a in arrays)
    shape = list(arrays[0].shape)
    shape[time_axis] = time
    vectors = arrays[0].new_zeros((len(arrays), *shape))
    mask = torch.zeros(len(arrays), time, dtype=torch.bool)
    for b, a in enumerate(arrays):
        n = a.shape[time_axis]
        vectors[b].narrow(time_axis, 0, n).copy_(a)
        mask[b, :n] = True
    return {"ids": ids, "vectors": vectors, "mask": mask}
