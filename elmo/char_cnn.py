"""The context-independent token encoder: characters → convolutions → max-pool → highway → projection.

The token layer depends only on the token's characters, so it is computed once per distinct
token type: callers pass a table of types ``(n_types, max_characters)`` and gather rows.
Which ids a token's characters get is the :class:`~elmo.chars.CharMapping`'s business (the
published UTF-8 bytes by default); a model may also have a word embedding, concatenated to
the highway output before the projection (ELMoForManyLangs models do).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elmo.chars import CharMapping, Utf8Chars
from elmo.options import CharCNNOptions
from elmo.runtime import ROW_BLOCK

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}

# Character columns a type is cut to come in multiples of this (see CharCNN._column_groups).
COLUMN_STEP = 8


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


class WordMapping(Protocol):
    """Token strings → word ids, for a model with a word embedding."""

    n_ids: int  # rows of the word embedding table

    def ids(self, tokens: Sequence[str]) -> np.ndarray:
        """``(n_tokens,)`` int32 ids of ``tokens``."""

    def vocabularies(self) -> dict[str, dict[str, int]]:
        """The dictionary the ids come from, by file name."""


class CharCNN(nn.Module):
    """Character-level token encoder (one vector per token type), with an optional word embedding.

    Args:
        options: the ``char_cnn`` section of the options.
        output_dim: the projection width (``lstm.projection_dim``).
        chars: token → character ids; the published UTF-8 convention when None.
        words: token → word ids, for options with a word embedding (``word_dim > 0``).
    """

    def __init__(self, options: CharCNNOptions, output_dim: int, chars: CharMapping | None = None,
                 words: WordMapping | None = None):
        super().__init__()
        if chars is None and options.characters != "utf8":
            raise ValueError(f"characters {options.characters!r} need the model's char mapping "
                             "(load the model directory with elmo.load_bilm)")
        if (words is None) != (options.word_dim == 0):
            raise ValueError(f"options with word_dim {options.word_dim} need "
                             f"{'a' if options.word_dim else 'no'} word mapping")
        self.options = options
        self.chars = chars if chars is not None else Utf8Chars(options.max_characters_per_token)
        self.words = words
        d = options.embedding_dim
        # With a mask row, row 0 is the mask id and the published file holds the other rows.
        self.char_embed = nn.Parameter(torch.empty(self.chars.n_ids, d).uniform_(-1.0, 1.0))
        self.word_embed = (nn.Parameter(torch.empty(words.n_ids, options.word_dim).uniform_(-0.25, 0.25))
                           if words is not None else None)
        self.convs = nn.ModuleList(nn.Conv1d(d, n, kernel_size=w) for w, n in options.filters)
        self.highway = Highway(options.n_filters, options.n_highway)
        self.projection = nn.Linear(options.word_dim + options.n_filters, output_dim)
        self._activation = _ACTIVATIONS[options.activation]

    @property
    def output_dim(self) -> int:
        return self.projection.out_features

    @property
    def boundary_tokens(self) -> tuple[str, str]:
        return self.chars.boundary_tokens

    def vocabularies(self) -> dict[str, dict[str, int]]:
        """Every dictionary that maps tokens to ids, by file name (none for the published model)."""
        return {**self.chars.vocabularies(), **(self.words.vocabularies() if self.words else {})}

    def type_inputs(self, types: Sequence[str]) -> Tensor:
        """The input :meth:`forward` takes for these token types: ``(n_types, max_characters)``
        character ids, after a first column of word ids when the model has a word embedding."""
        ids = self.chars.ids(types)
        if self.words is not None:
            ids = np.concatenate([self.words.ids(types)[:, None], ids], axis=1)
        return torch.from_numpy(ids)

    def forward(self, inputs: Tensor) -> Tensor:
        """Encode token types.

        Args:
            inputs: ``(n_types, [1 +] max_characters)`` integer ids from :meth:`type_inputs`.

        Returns:
            ``(n_types, output_dim)`` token-layer vectors.
        """
        n_types = inputs.shape[0]
        char_ids = inputs[:, 1:] if self.words is not None else inputs
        table = self.char_embed
        if self.chars.mask_row:  # id 0 always embeds to zeros
            table = torch.cat([torch.zeros_like(table[:1]), table[1:]])
        features = self.char_embed.new_empty(n_types, self.options.n_filters)  # (n_types, n_filters)
        for columns, rows in self._column_groups(char_ids):
            features[rows] = self._max_pooled_convolutions(char_ids[rows, :columns], table)
        # Max-pool before the activation: both activations are monotonic, so this is exact and
        # applies the nonlinearity to (n_types, n) instead of (n_types, n, positions).
        h = self.highway(_pad_rows(self._activation(features)))  # (padded n_types, n_filters)
        if self.words is not None:  # [word ‖ characters], the word columns first
            h = torch.cat([F.embedding(_pad_rows(inputs[:, 0]), self.word_embed), h], dim=1)
        return self.projection(h)[:n_types]

    def _max_pooled_convolutions(self, char_ids: Tensor, table: Tensor) -> Tensor:
        """``(n, columns)`` ids → ``(n, n_filters)``: each filter's maximum over the positions.

        ``table`` is the ``(n_ids, embedding_dim)`` character embedding with the mask row zeroed.
        Each convolution is one matrix product over the character windows: float32 stays IEEE
        on a GPU (cuDNN convolutions default to TF32, about 1e-3 relative error, and the switch
        is process-wide state no forward pass may touch), and on the CPU it is no slower.
        """
        n = char_ids.shape[0]
        x = F.embedding(_pad_rows(char_ids), table)  # (n, columns, embedding_dim)
        pooled = []
        for conv in self.convs:
            windows = x.unfold(1, conv.kernel_size[0], 1)  # (n, positions, embedding_dim, width)
            windows = windows.reshape(*windows.shape[:2], -1)  # (n, positions, embedding_dim * width)
            scores = windows @ conv.weight.reshape(conv.out_channels, -1).t()  # (n, positions, filters)
            pooled.append(scores.amax(dim=1) + conv.bias)  # adding after the max is exact (monotonic)
        return torch.cat(pooled, dim=-1)[:n]

    def _column_groups(self, char_ids: Tensor) -> list[tuple[int, Tensor]]:
        """Types grouped by the character columns they need, as ``(columns, row indices)``.

        A type needs its characters plus one window of padding per filter width: every window
        that lies wholly in the padding has the same value, so one keeps every maximum exact
        while most of the 50 positions of a short token are skipped. Needs are rounded up to
        ``COLUMN_STEP`` so a batch makes few groups; a type's group depends only on its own
        length, so its vector never depends on the other types of the call.
        """
        full = char_ids.shape[1]
        needed = (char_ids != self.chars.pad_id).sum(dim=1) + self.options.max_filter_width
        columns = (-(-needed // COLUMN_STEP) * COLUMN_STEP).clamp(max=full).cpu().numpy()  # one sync
        return [(int(c), torch.from_numpy(np.flatnonzero(columns == c)).to(char_ids.device))
                for c in np.unique(columns)]


def _pad_rows(x: Tensor) -> Tensor:
    """``x`` with copies of its first row appended up to a multiple of ``ROW_BLOCK`` rows, so a
    type's vector never depends on the other types of the call (memoized vectors, resumed runs)."""
    filler = (-x.shape[0]) % ROW_BLOCK
    return torch.cat([x, x[:1].expand(filler, *x.shape[1:])]) if filler else x
