"""Pooled vectors: the mean over a field's tokens, for one document or a padded batch."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cache_builder.read.source import VectorSource


def pooled(cache: VectorSource, doc_id: str, field: str | None = None) -> np.ndarray | dict[str, np.ndarray]:
    """The mean of a document's token vectors, in float32 (``EmbeddingCache.pooled``).

    Args:
        doc_id: the record's id.
        field: which text field; may be left out on a one-field store (as for ``lookup``,
            whose deprecated dict form, on a store of several fields, gives a dict here too).

    Returns:
        ``(n_layers_kept, dim)``, or ``(dim,)`` for a mixed store.
    """
    vectors = cache.lookup(doc_id, field)  # (n_layers_kept, n_tokens, dim) or (n_tokens, dim)
    if isinstance(vectors, dict):
        return {name: v.mean(axis=-2, dtype=np.float32) for name, v in vectors.items()}
    return vectors.mean(axis=-2, dtype=np.float32)


def masked_mean(vectors: Tensor, mask: Tensor) -> Tensor:
    """The mean over the real tokens of each row of a padded batch (``pad_collate``'s output).

    Args:
        vectors: ``(batch, n_layers_kept, time, dim)`` or ``(batch, time, dim)``.
        mask: ``(batch, time)``, True at real tokens.

    Returns:
        ``(batch, n_layers_kept, dim)`` or ``(batch, dim)``, float32 at least; a row without
        tokens gives zeros.
    """
    dtype = torch.promote_types(vectors.dtype, torch.float32)
    weights = mask.to(dtype)  # (batch, time)
    if vectors.dim() == 4:
        weights = weights[:, None]  # (batch, 1, time): the same tokens in every layer
    total = (vectors.to(dtype) * weights[..., None]).sum(-2)  # padded positions weigh 0
    return total / weights.sum(-1)[..., None].clamp(min=1)
