"""How vectors are stored: the one conversion from model output to stored rows, and back.

A store's ``dtype`` names an :class:`Encoding` (registry :data:`ENCODINGS`). The engine calls
``encode`` on the vectors it computed, ``(n_tokens, n_vector_layers, dim)`` float, and writes
each returned array's rows at the same token rows; a reader calls ``decode`` on what it read.
Every array an encoding returns holds one row per token: tasks write them region by region
(see ``layout.TASK_ARRAYS``).

- ``float32``, ``float16``: one array ``vectors``, the cast (float16 rounds to nearest: the
  error is at most 2^-11 of each value).
- ``int8``: ``vectors`` int8 and ``vector_scale`` float16 ``(n_tokens, n_vector_layers)``,
  ``x ≈ q * s`` with ``s = max|x| / 127`` over the ``dim`` values of one token and layer
  (rounded up to float16, so ``|q| <= 127``). The error is at most ``s / 2``: 1/254 of that
  token's largest value in that layer. One scale per token *and layer*, because the layers'
  ranges differ: a shared scale would spend a smaller layer's bits on a larger one's range. The scale is 2 bytes per ``dim``
  values (0.8% for dim 256). Measured by ``benchmarks/read.py`` (small ELMo shape): see the
  README's store section.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Encoding(Protocol):
    name: str
    carrier: str  # the float dtype ``encode`` takes without losing anything it keeps
    table_dtype: str  # dtype of layer 0's per-type table ``token_layer``
    relative_error: float  # bound of |decoded - x| as a share of max|x| of a token's layer

    def arrays(self, n_vector_layers: int, dim: int) -> dict[str, tuple[tuple[int, ...], str]]:
        """Name → (row shape, dtype) of the per-token arrays this encoding writes."""

    def encode(self, vectors: Any) -> dict[str, np.ndarray]:
        """``(n_tokens, n_vector_layers, dim)`` float (numpy or torch) → rows of each array."""

    def decode(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        """Rows read from each array → ``(n_tokens, n_vector_layers, dim)`` float (may be a view)."""


def _numpy(vectors: Any) -> np.ndarray:
    if hasattr(vectors, "detach"):  # a torch tensor (on the host)
        vectors = vectors.detach().cpu().numpy()
    return np.asarray(vectors)


@dataclass(frozen=True)
class FloatEncoding:
    """Vectors cast to one float dtype."""

    name: str
    relative_error: float

    @property
    def carrier(self) -> str:
        return self.name

    @property
    def table_dtype(self) -> str:
        return self.name

    def arrays(self, n_vector_layers: int, dim: int) -> dict[str, tuple[tuple[int, ...], str]]:
        return {"vectors": ((n_vector_layers, dim), self.name)}

    def encode(self, vectors: Any) -> dict[str, np.ndarray]:
        return {"vectors": _numpy(vectors).astype(self.name, copy=False)}

    def decode(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        return parts["vectors"]


@dataclass(frozen=True)
class Int8Encoding:
    """int8 values with a float16 scale per token and layer; decodes to float32."""

    name: str = "int8"
    carrier: str = "float32"
    # Layer 0's table stays float16: it holds one row per distinct token *type* (measured on
    # the benchmark's SQuAD-like set, a long tail of rare words: 6.9% of a ``--layers 0,1`` int8
    # store, so int8 would save ≈3.5%), and float16 keeps layer 0 within 2^-11.
    table_dtype: str = "float16"
    relative_error: float = (1 + 2**-10) / 254  # s/2 with s rounded up to float16

    def arrays(self, n_vector_layers: int, dim: int) -> dict[str, tuple[tuple[int, ...], str]]:
        return {"vectors": ((n_vector_layers, dim), "int8"), "vector_scale": ((n_vector_layers,), "float16")}

    def encode(self, vectors: Any) -> dict[str, np.ndarray]:
        x = _numpy(vectors).astype(np.float32, copy=False)  # (n_tokens, n_layers, dim)
        wanted = np.abs(x).max(axis=-1) / 127  # (n_tokens, n_layers)
        scale = wanted.astype(np.float16)
        low = scale.astype(np.float32) < wanted  # rounded down: |x| / scale could pass 127
        scale[low] = np.nextafter(scale[low], np.float16(np.inf))
        divisor = np.where(scale == 0, 1, scale).astype(np.float32)[..., None]
        q = np.rint(x / divisor).astype(np.int8)
        return {"vectors": q, "vector_scale": scale}

    def decode(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        return parts["vectors"] * parts["vector_scale"].astype(np.float32)[..., None]


ENCODINGS: dict[str, Encoding] = {
    "float16": FloatEncoding("float16", 2**-11),
    "float32": FloatEncoding("float32", 0.0),
    "int8": Int8Encoding(),
}


def get_encoding(dtype: str) -> Encoding:
    """The encoding a store's ``dtype`` names.

    Raises:
        ValueError: an unknown dtype, naming the choices.
    """
    if dtype not in ENCODINGS:
        raise ValueError(f"--dtype {dtype}: a store holds one of {tuple(ENCODINGS)}")
    return ENCODINGS[dtype]
