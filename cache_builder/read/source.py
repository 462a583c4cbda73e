"""What the views over a store read through: a field's tokens (:class:`TokenView`) and the small
interface (:class:`VectorSource`) that pooling and export need. ``EmbeddingCache`` is one; the
views import this module, never the cache, so reading has no import circle."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class TokenView:
    """A field's tokens and their ``(n_tokens, 2)`` (start, end) character spans in its text."""

    tokens: list[str]
    spans: np.ndarray


class VectorSource(Protocol):
    """Documents with named text fields, each field a sequence of token vectors."""

    manifest: dict[str, Any]  # the store's manifest: settings, counts, model fingerprint
    fields: list[str]  # the text fields, in the store's order

    def __iter__(self) -> Iterator[str]:
        """Document ids, in store order."""

    def segments(self, doc_id: str) -> dict[str, int]:
        """Field → segment number of a document (documents with the same text share one)."""

    def tokens(self, doc_id: str, field: str | None = None) -> TokenView:
        """A field's tokens and character spans."""

    def lookup(self, doc_id: str, field: str | None = None) -> np.ndarray:
        """A field's vectors: ``(n_layers_kept, n_tokens, dim)``, or ``(n_tokens, dim)`` mixed."""
