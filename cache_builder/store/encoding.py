"""How vectors are stored: the one conversion from model output to stored rows, and back.

A store's ``dtype`` names an :class:`Encoding` (registry :data:`ENCODINGS`), and its ``vectors``
array's own dtype tells which (:func:`stored_encoding`: a reader trusts the array). The engine calls
``encode`` on the vectors it computed, ``(n_tokens, n_vector_layers, dim)`` float, and writes
each returned array's rows at the same token rows; a reader calls ``decode`` on what it read.
Every array an encoding returns holds one row per token: tasks write them region by region
(see ``layout.TASK_ARRAYS``).

- ``float32``, ``float16``: one array ``vectors``, the cast (float16 rounds to nearest: the
  error is at most 2^-11 of each value, or 2^-25 absolute below 2^-14, where float16 is subnormal).
- ``int8``: ``vectors`` int8 and ``vector_scale`` float16 ``(n_tokens, n_vector_layers)``,
  ``x ≈ q * s`` with ``q = round(x / s)`` and ``s`` the float16 just below ``max|x| / 127``
  over the ``dim`` values of one token and layer (so ``|q| <= 127``, and ``|x - q s| <= s / 2``
  stays within 1/254 of that token's largest value in that layer: a scale rounded up would
  pass it). Below ``127 * 2**-14`` (≈0.008) float16 scales are subnormal and too coarse to
  round down, so they round up and the bound gains ``2**-24`` absolute. One scale per token
  *and layer*, because the layers' ranges differ: a shared scale would spend a smaller layer's
  bits on a larger one's range. The scale is 2 bytes per ``dim`` values (0.8% for dim 256).
  Measured by ``benchmarks/read.py`` (small ELMo shape): see the README's store section.
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
    relative_error: float = 1 / 254  # s/2 with s at most max|x| / 127 (plus 2**-24 below ≈0.008)

    def arrays(self, n_vector_layers: int, dim: int) -> dict[str, tuple[tuple[int, ...], str]]:
        return {"vectors": ((n_vector_layers, dim), "int8"), "vector_scale": ((n_vector_layers,), "float16")}

    def encode(self, vectors: Any) -> dict[str, np.ndarray]:
        x = _numpy(vectors).astype(np.float32, copy=False)  # (n_tokens, n_layers, dim)
        scale = _int8_scales(np.abs(x).max(axis=-1))  # (n_tokens, n_layers)
        divisor = np.where(scale == 0, 1, scale).astype(np.float32)[..., None]
        q = np.rint(x / divisor).astype(np.int8)
        return {"vectors": q, "vector_scale": scale}

    def decode(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        return parts["vectors"] * parts["vector_scale"].astype(np.float32)[..., None]


def _int8_scales(peak: np.ndarray) -> np.ndarray:
    """float16 scales for rows whose largest magnitude is ``peak`` (float32, any shape): at most
    ``peak / 127``, so ``|x - round(x / s) s| <= peak / 254``, yet large enough that
    ``|round(x / s)| <= 127``. A scale is aimed a hair (2**-14) below ``peak / 127``: float32's
    rounding of ``x / s`` may move a code past a tie, adding up to ``2**-24 * 127.5`` of ``s``."""
    wanted = peak / np.float32(127)
    scale = _to_float16(wanted * np.float32(1 - 2**-14), up=False)
    # Subnormal scales (peak below ≈0.008) are too coarse to round down: codes could pass 127.
    coarse = scale < wanted * np.float32(127 / 127.4)
    scale[coarse] = _to_float16(wanted[coarse], up=True)
    return scale


def _to_float16(x: np.ndarray, up: bool) -> np.ndarray:
    """float32 ``x`` → the nearest float16 at or above it (``up``), or at or below it."""
    y = x.astype(np.float16)
    off = y.astype(np.float32) < x if up else y.astype(np.float32) > x
    y[off] = np.nextafter(y[off], np.float16(np.inf if up else 0))
    return y


ENCODINGS: dict[str, Encoding] = {
    "float16": FloatEncoding("float16", 2**-11),
    "float32": FloatEncoding("float32", 0.0),
    "int8": Int8Encoding(),
}


def stored_encoding(vectors_dtype: str) -> Encoding | None:
    """The encoding whose ``vectors`` array is stored as ``vectors_dtype`` (each stores it in a
    dtype of its own), None for none: how a reader decodes, whatever the manifest says."""
    return next((e for e in ENCODINGS.values() if e.arrays(1, 1)["vectors"][1] == vectors_dtype), None)


def get_encoding(dtype: str) -> Encoding:
    """The encoding a store's ``dtype`` names.

    Raises:
        ValueError: an unknown dtype, naming the choices.
    """
    if dtype not in ENCODINGS:
        raise ValueError(f"--dtype {dtype}: a store holds one of {tuple(ENCODINGS)}")
    return ENCODINGS[dtype]
