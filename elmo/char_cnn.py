"""The context-independent token encoder: characters → convolutions → max-pool → highway → projection.

The token layer depends only on the token's characters, so it is computed once per distinct
token type: callers pass a table of types ``(n_types, max_characters)`` and gather rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elmo.chars import PAD_CHAR, SHIFT, char_id_matrix
from elmo.options import CharCNNOptions

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}

# BLAS kernels round differently for the last few rows of a matrix whose row count is not a
# multiple of their block; padding every call to whole blocks makes a type's vector bitwise
# independent of how many other types share the call (memoized vectors, resumed runs).
ROW_BLOCK = 32


@contextmanager
def _ieee_float32_convolutions() -> Iterator[None]:
    """cuDNN runs float32 convolutions in TF32 by default (about 1e-3 relative error), which
    would break float32 agreement with the published outputs; matmuls default to IEEE already."""
    allowed = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = allowed


class Highway(nn.Module):
    """Highway layers in the TensorFlow convention of the published weights.

    ``y = g * relu(x W_transform + b_transform) + (1 - g) * x`` with ``g = sigmoid(x W_carry + b_carry)``:
    the (confusingly named) carry gate multiplies the transform.
    """

    def __init__(self, dim: int, n_layers: int):
        super().__init__()
        # Stored as (in, out) like the HDF5 datasets: x @ W.
        self.w_transform = nn.Parameter(torch.empty(n_layers, dim, dim))
        self.b_transform = nn.Parameter(torch.zeros(n_layers, dim))
        self.w_carry = nn.Parameter(torch.empty(n_layers, dim, dim))
        self.b_carry = nn.Parameter(torch.zeros(n_layers, dim))
        for w in (self.w_transform, self.w_carry):
            nn.init.normal_(w, std=(1.0 / dim) ** 0.5)
        with torch.no_grad():
            self.b_carry.fill_(-2.0)  # start close to the identity, as bilm-tf does

    def forward(self, x: Tensor) -> Tensor:
        """``(n, dim)`` → ``(n, dim)``."""
        for k in range(self.w_transform.shape[0]):
            gate = torch.sigmoid(torch.addmm(self.b_carry[k], x, self.w_carry[k]))
            transform = torch.relu(torch.addmm(self.b_transform[k], x, self.w_transform[k]))
            x = gate * transform + (1.0 - gate) * x
        return x


class CharCNN(nn.Module):
    """Character-level token encoder of the published ELMo (one vector per token type).

    Args:
        options: the ``char_cnn`` section of the options.
        output_dim: the projection width (``lstm.projection_dim``).
    """

    def __init__(self, options: CharCNNOptions, output_dim: int):
        super().__init__()
        self.options = options
        d = options.embedding_dim
        # Row 0 is the mask id; the published file holds the other 261 rows.
        self.char_embed = nn.Parameter(torch.empty(PAD_CHAR + SHIFT + 1, d).uniform_(-1.0, 1.0))
        self.convs = nn.ModuleList(nn.Conv1d(d, n, kernel_size=w) for w, n in options.filters)
        self.highway = Highway(options.n_filters, options.n_highway)
        self.projection = nn.Linear(options.n_filters, output_dim)
        self._activation = _ACTIVATIONS[options.activation]

    @property
    def output_dim(self) -> int:
        return self.projection.out_features

    def type_inputs(self, types: Sequence[str]) -> Tensor:
        """The input :meth:`forward` takes for these token types: ``(n_types, max_characters)``."""
        return torch.from_numpy(char_id_matrix(types, self.options.max_characters_per_token))

    def forward(self, char_ids: Tensor) -> Tensor:
        """Encode token types.

        Args:
            char_ids: ``(n_types, max_characters)`` integer ids from :mod:`elmo.chars` (shifted, > 0).

        Returns:
            ``(n_types, output_dim)`` token-layer vectors.
        """
        n_types = char_ids.shape[0]
        filler = (-n_types) % ROW_BLOCK
        if filler:
            char_ids = torch.cat([char_ids, char_ids[:1].expand(filler, -1)])
        char_ids = self._trim_padding(char_ids)
        mask_row = torch.zeros_like(self.char_embed[:1])
        table = torch.cat([mask_row, self.char_embed[1:]])  # id 0 always embeds to zeros
        x = F.embedding(char_ids, table).transpose(1, 2)  # (n_types, embedding_dim, chars)
        # Max-pool before the activation: both activations are monotonic, so this is exact and
        # applies the nonlinearity to (n_types, n) instead of (n_types, n, positions).
        with _ieee_float32_convolutions():
            pooled = [conv(x).amax(dim=-1) for conv in self.convs]
        h = self._activation(torch.cat(pooled, dim=-1))  # (n_types, n_filters)
        return self.projection(self.highway(h))[:n_types]

    def _trim_padding(self, char_ids: Tensor) -> Tensor:
        """Drop trailing columns that are padding in every row; exact for the max-pool.

        Every window that lies wholly in the padding region has the same convolution value,
        so keeping one such window per filter width (``longest + max_width`` columns)
        preserves every maximum while skipping most of the 50 positions for short tokens.
        """
        not_pad = (char_ids != PAD_CHAR + SHIFT).any(dim=0)
        longest = int(not_pad.nonzero().max()) + 1 if bool(not_pad.any()) else 0
        keep = longest + self.options.max_filter_width
        return char_ids[:, :keep] if keep < char_ids.shape[1] else char_ids
