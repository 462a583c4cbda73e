"""A learnable scalar mix over the layers a cache kept (ELMo paper, eq. 1).

Cache the biLM once with the layers to mix (``precompute --layers 0,1,2``, or a subset such as
``--layers 0,1``), learn the task weights in the training script with :class:`ScalarMix`, then,
if you like, collapse the store with the learned weights (``precompute --layers=0,1,2
--mix-logits=... --gamma=...``, from :meth:`ScalarMix.cli_args`): the collapsed store reads the
vectors the trained mix computes, in one layer.

No layer norm (AllenNLP's ``do_layer_norm``): it normalizes each layer by the mean and
variance of the whole batch, so a token's vector would depend on its batch, and no collapsed
store could reproduce it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from cache_builder.read.cache import EmbeddingCache


class ScalarMix(nn.Module):
    """``gamma * sum_j softmax(w)_j h_j`` with learnable logits ``w`` and scale ``gamma``.

    Args:
        n_layers: layers in each input (3 for a store that kept layers 0,1,2 of the usual biLM).
        layers: the biLM layers the inputs hold, ascending (``for_cache`` takes them from the
            store); default ``0..n_layers-1``. Only :meth:`cli_args` and :meth:`precompute_args` use them.
        layer_dropout: in training, each layer's logit is dropped (set to -inf before the
            softmax) with this probability, so the mix cannot lean on one layer (the layer
            dropout of UDify, Kondratyuk & Straka 2019). A draw that drops every layer drops none.
            Evaluation mode never drops.
        initial_logits: ``w`` at the start; default zeros (the plain average).
        gamma: ``gamma`` at the start.
    """

    def __init__(self, n_layers: int, *, layers: Sequence[int] | None = None, layer_dropout: float = 0.0,
                 initial_logits: Sequence[float] | None = None, gamma: float = 1.0):
        super().__init__()
        if not 0 <= layer_dropout < 1:
            raise ValueError(f"layer_dropout must be in [0, 1), got {layer_dropout}")
        logits = [0.0] * n_layers if initial_logits is None else list(initial_logits)
        if len(logits) != n_layers:
            raise ValueError(f"initial_logits has {len(logits)} values for {n_layers} layers")
        self.layers = tuple(range(n_layers)) if layers is None else tuple(layers)
        if len(self.layers) != n_layers or list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"layers must be {n_layers} ascending distinct layer numbers, got {layers}")
        self.layer_dropout = layer_dropout
        self.logits = nn.Parameter(torch.tensor(logits, dtype=torch.float32))  # (n_layers,)
        self.gamma = nn.Parameter(torch.tensor(float(gamma)))  # ()

    @classmethod
    def for_cache(cls, cache: EmbeddingCache, **kwargs: Any) -> ScalarMix:
        """A mix over the layers ``cache`` kept (keyword arguments as for the constructor).

        Raises:
            ValueError: the store is already collapsed to one mixed layer.
        """
        if cache.spec.mix is not None:
            raise ValueError("this store is already mixed to one layer; a learnable mix needs a store "
                             "that kept the layers (precompute --layers 0,1,2)")
        return cls(len(cache.spec.layers), layers=cache.spec.layers, **kwargs)

    def weights(self) -> Tensor:
        """The normalized weights ``softmax(w)``: ``(n_layers,)``, float64, no dropout."""
        # float64, as precompute normalizes --mix-logits: the collapsed store then reads the same vectors.
        return torch.softmax(self.logits.double(), dim=0)

    def forward(self, layers: Tensor) -> Tensor:
        """Mix the layer axis away.

        Args:
            layers: ``(batch, n_layers, time, dim)`` as ``pad_collate`` gives a store's
                ``vectors``, or any ``(..., n_layers, time, dim)`` (one ``lookup``:
                ``(n_layers, time, dim)``). float16 is widened to float32. Padded positions
                are zero and stay zero.

        Returns:
            ``(batch, time, dim)`` (the input's shape without the layer axis).
        """
        if layers.shape[-3] != len(self.logits):
            raise ValueError(f"expected {len(self.logits)} layers on axis -3, got shape {tuple(layers.shape)}")
        logits = self.logits.double()
        if self.training and self.layer_dropout > 0:
            dropped = torch.rand_like(logits) < self.layer_dropout
            logits = torch.where(dropped.all(), logits, logits.masked_fill(dropped, float("-inf")))
        dtype = torch.promote_types(layers.dtype, self.gamma.dtype)
        weights = torch.softmax(logits, dim=0).to(dtype)  # (n_layers,)
        return self.gamma * torch.einsum("l,...ltd->...td", weights, layers.to(dtype))

    def precompute_args(self) -> dict[str, Any]:
        """The learned mix as keyword arguments of :func:`cache_builder.layers.parse_layer_spec`
        (``layers``, ``mix_logits`` as exact decimal text, ``gamma``): a store built with them
        reads what this module returns in evaluation mode."""
        return {"layers": ",".join(map(str, self.layers)),
                "mix_logits": ",".join(repr(w) for w in self.logits.tolist()), "gamma": self.gamma.item()}

    def cli_args(self) -> str:
        """The same as ``precompute`` options: ``--layers=0,1,2 --mix-logits=w0,w1,w2 --gamma=g``
        (with ``=``, so that argparse reads a negative first logit as a value, not an option)."""
        args = self.precompute_args()
        return f"--layers={args['layers']} --mix-logits={args['mix_logits']} --gamma={args['gamma']!r}"

    def extra_repr(self) -> str:
        return f"layers={self.layers}, layer_dropout={self.layer_dropout}"
