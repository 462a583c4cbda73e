"""Which biLM layers a store keeps: a subset, or one fixed scalar mix (ELMo paper, eq. 1).

The biLM gives ``(n_layers, batch, time, dim)``: layer 0 is the context-independent token
layer (the projection duplicated to ``dim``), layers 1.. the biLSTM layers. A store splits that
into *contextual* vectors ``(n_tokens, n_vector_layers, dim)`` and, when layer 0 is kept, the
token layer at projection width, stored once per distinct token (see :mod:`cache_builder.store`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class LayerSpec:
    """What is stored per token.

    Attributes:
        layers: kept biLM layers, ascending; for a mix, the layers it reads (``--layers 1,2
            --mix 0.5,0.5``; by default every layer).
        mix: normalized weights ``s_j``, one per layer of ``layers``, when the store is
            collapsed, else None.
        logits: the raw weights the user gave with ``--mix-logits`` (recorded, not used).
        gamma: the mix's scale.
    """

    layers: tuple[int, ...]
    mix: tuple[float, ...] | None = None
    logits: tuple[float, ...] | None = None
    gamma: float = 1.0

    def __post_init__(self) -> None:
        numbers = (*(self.mix or ()), *(self.logits or ()), self.gamma)
        if not all(map(math.isfinite, numbers)):
            raise ValueError(f"the mix weights and gamma must be finite numbers, got {self.describe()}")
        if self.mix is not None and len(self.mix) != len(self.layers):
            raise ValueError(f"the mix has {len(self.mix)} weights for {len(self.layers)} layers "
                             f"({','.join(map(str, self.layers))})")

    @property
    def keeps_token_layer(self) -> bool:
        """Layer 0 stored as a per-type table (only for an unmixed store that keeps it)."""
        return self.mix is None and 0 in self.layers

    @property
    def vector_layers(self) -> tuple[int, ...]:
        """biLM layers in the ``vectors`` node; ``()`` plus a mix means one collapsed layer."""
        return () if self.mix is not None else tuple(k for k in self.layers if k != 0)

    @property
    def n_vector_layers(self) -> int:
        return 1 if self.mix is not None else len(self.vector_layers)

    def apply(self, layers: Tensor) -> Tensor:
        """``(n_layers, batch, time, dim)`` → ``(batch, time, n_vector_layers, dim)``."""
        if self.mix is not None:
            weights = torch.tensor(self.mix, dtype=layers.dtype, device=layers.device)
            mixed = self.gamma * torch.einsum("l,lbtd->btd", weights, layers[list(self.layers)])
            return mixed.unsqueeze(2)
        kept = self.vector_layers
        if kept and kept == tuple(range(kept[0], kept[-1] + 1)):  # a view, no copy (the usual case)
            return layers[kept[0] : kept[-1] + 1].permute(1, 2, 0, 3)
        return layers[list(kept)].permute(1, 2, 0, 3)

    def to_manifest(self) -> dict[str, Any]:
        if self.mix is None:
            return {"layers": list(self.layers)}
        out: dict[str, Any] = {"mix": {"weights": list(self.mix), "gamma": self.gamma}}
        if self.logits is not None:
            out["mix"]["logits"] = list(self.logits)
        if self.layers != tuple(range(len(self.mix))):  # recorded only when not the default 0..n-1
            out["mix"]["layers"] = list(self.layers)
        return out

    def describe(self) -> str:
        layers = "layers " + ",".join(map(str, self.layers))
        if self.mix is None:
            return layers
        of = f" of {layers}" if self.layers != tuple(range(len(self.mix))) else ""
        return f"mix {','.join(f'{s:g}' for s in self.mix)}{of} gamma {self.gamma:g}"


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if not all(map(math.isfinite, values)):
        raise ValueError(f"{what} {text}: every weight must be a finite number")
    return values


def parse_layer_spec(n_layers: int, *, layers: str | None = None, mix: str | None = None,
                     mix_logits: str | None = None, gamma: float = 1.0) -> LayerSpec:
    """Build a :class:`LayerSpec` from command-line style strings.

    Args:
        n_layers: layers the biLM produces (token layer + LSTM layers, usually 3).
        layers: ``"0,1"``: keep these layers; with a mix, the layers it mixes, in ascending
            order (``layers="1,2", mix="0.5,0.5"``). Default: every layer.
        mix: ``"s0,s1,s2"``: normalized weights (non-negative, summing to 1), one per layer.
        mix_logits: ``"w0,w1,w2"``: raw scalar-mix parameters, normalized with a softmax.
        gamma: the mix's scale (ELMo eq. 1).

    Raises:
        ValueError: conflicting options, a wrong count, an unknown layer, or unnormalized ``mix``.
    """
    if mix is not None and mix_logits is not None:
        raise ValueError("give one of --mix, --mix-logits")
    if not math.isfinite(gamma):
        raise ValueError(f"--gamma must be a finite number, got {gamma}")
    kept = tuple(range(n_layers)) if layers is None else _layer_numbers(layers, n_layers)
    if mix is None and mix_logits is None:
        return LayerSpec(kept)
    if mix is not None:
        weights, logits = _floats(mix, "--mix"), None
        if any(s < 0 for s in weights) or abs(sum(weights) - 1) > 1e-4:
            raise ValueError(f"--mix {mix}: weights must be non-negative and sum to 1 "
                             "(use --mix-logits for raw scalar-mix parameters)")
    else:
        logits = _floats(mix_logits, "--mix-logits")
        top = max(logits)
        exp = [math.exp(w - top) for w in logits]
        weights = tuple(e / sum(exp) for e in exp)
    if len(weights) != len(kept):
        which = (f"one per layer of --layers {layers}" if layers is not None else
                 f"one per layer 0..{n_layers - 1}; to mix fewer, name them with --layers, e.g. "
                 f"--layers {','.join(map(str, range(1, n_layers)))}")
        raise ValueError(f"the mix needs {len(kept)} weights ({which}), got {len(weights)}")
    return LayerSpec(kept, mix=weights, logits=logits, gamma=gamma)


def _layer_numbers(text: str, n_layers: int) -> tuple[int, ...]:
    """``"0,1"`` → ``(0, 1)``, refusing unknown layers and repeats."""
    try:
        numbers = [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--layers: expected comma-separated layer numbers, got {text!r}") from None
    if not numbers or min(numbers) < 0 or max(numbers) >= n_layers:
        raise ValueError(f"--layers {text}: this biLM has layers 0..{n_layers - 1}")
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"--layers {text}: a layer is named twice")
    return tuple(sorted(numbers))


def layer_spec_from_manifest(entry: dict[str, Any]) -> LayerSpec:
    """Inverse of :meth:`LayerSpec.to_manifest`."""
    if "mix" in entry:
        mix = entry["mix"]
        logits = tuple(mix["logits"]) if "logits" in mix else None
        layers = tuple(mix.get("layers", range(len(mix["weights"]))))
        return LayerSpec(layers, mix=tuple(mix["weights"]), logits=logits, gamma=mix["gamma"])
    return LayerSpec(tuple(entry["layers"]))
