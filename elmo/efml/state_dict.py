"""``token_embedder.pkl`` and ``encoder.pkl``: read as tensors only, mapped onto our parameters.

Both files are ``torch.save``-d state dicts, the published ones in torch 0.4's legacy (non-zip)
format with storages tagged by the GPU they were saved from. They are read with
``torch.load(path, map_location="cpu", weights_only=True)`` and in no other way: torch's
restricted unpickler builds tensors and plain containers and refuses every other object, so a
crafted file cannot run code. Anything but a flat mapping of names to floating-point tensors
is an error.

Each key is described once by a :class:`~elmo.weights.WeightEntry` (its name and shape in the
file, and the copy into our parameters); P is the projection, C the LSTM cell, F the filter
total, w the word dimension:

- ``char_emb_layer.embedding.weight`` ``(V_c, d)`` and ``word_emb_layer.embedding.weight``
  ``(V_w, w)``: the embeddings, every row used (the ``<pad>`` row is a trained vector).
- ``convolutions.{i}.weight`` ``(n, d, width)``, ``.bias``: the torch ``Conv1d`` layout, as ours.
- ``highways._layers.{k}.weight`` ``(2F, F)``, ``.bias`` ``(2F)``: rows ``0..F-1`` the
  transform, ``F..2F-1`` the gate ``g`` of ``y = g * x + (1 - g) * relu(transform)``. Our
  highway's gate multiplies the transform (the TensorFlow convention), so its gate weights
  are the file's negated (``sigmoid(-z) = 1 - sigmoid(z)``).
- ``projection.weight`` ``(P, w + F)``, ``.bias``: input columns word first, then characters.
- ``{forward,backward}_layer_{l}.input_linearity.weight`` ``(4C, P)``,
  ``.state_linearity.weight`` ``(4C, P)``, ``.state_linearity.bias`` ``(4C)``,
  ``.state_projection.weight`` ``(P, C)``: AllenNLP's LSTM cell, gate row blocks
  (input, forget, candidate, output). Ours stores ``x @ W`` with the gates in TensorFlow order
  (input, candidate, forget, output) and adds 1.0 to the forget gate at run time, so the
  blocks are reordered, transposed, and 1.0 is taken off the stored forget bias once here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from elmo.char_cnn import CharCNN
from elmo.efml import EfmlFormatError
from elmo.lstm import BiLstm
from elmo.safe_load import load_tensors_only
from elmo.weights import WeightEntry, tensor_entry

TOKEN_EMBEDDER_PKL, ENCODER_PKL = "token_embedder.pkl", "encoder.pkl"
_GATE_ORDER = [0, 2, 1, 3]  # file gate blocks (i, f, g, o) → ours (i, g, f, o); its own inverse


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """A state dict saved by ``torch.save``, loaded without running any code it might hold.

    Raises:
        EfmlFormatError: the file is missing or unreadable, holds anything but named
            floating-point tensors, or would run code (refused, see :mod:`elmo.safe_load`).
    """
    path = Path(path)
    if not path.is_file():
        raise EfmlFormatError(f"{path}: file not found")
    state = load_tensors_only(path, EfmlFormatError, "torch state dict")
    if not isinstance(state, Mapping):
        raise EfmlFormatError(f"{path}: holds a {type(state).__name__}, not a state dict (names → tensors)")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor) or not value.is_floating_point():
            what = f"a {value.dtype} tensor" if isinstance(value, Tensor) else f"a {type(value).__name__}"
            raise EfmlFormatError(f"{path}: entry {key!r} holds {what}; a state dict of floating-point "
                                  "tensors was expected")
    return dict(state)


def token_embedder_entries(cnn: CharCNN) -> list[WeightEntry]:
    """The keys of ``token_embedder.pkl`` for a token encoder of these options."""
    entries = [tensor_entry("char_emb_layer.embedding.weight", cnn.char_embed)]
    if cnn.word_embed is not None:
        entries.insert(0, tensor_entry("word_emb_layer.embedding.weight", cnn.word_embed))
    for i, conv in enumerate(cnn.convs):
        entries += [tensor_entry(f"convolutions.{i}.weight", conv.weight),
                    tensor_entry(f"convolutions.{i}.bias", conv.bias)]
    hw = cnn.highway
    for k in range(hw.w_transform.shape[0]):
        entries += [_highway_entry(f"highways._layers.{k}.weight", hw.w_transform[k], hw.w_carry[k]),
                    _highway_entry(f"highways._layers.{k}.bias", hw.b_transform[k], hw.b_carry[k])]
    return entries + [tensor_entry("projection.weight", cnn.projection.weight),
                      tensor_entry("projection.bias", cnn.projection.bias)]


def _highway_entry(name: str, transform: Tensor, carry: Tensor) -> WeightEntry:
    """A file tensor ``[transform; gate]`` (rows, ``x W^T`` layout) ↔ our ``x @ W`` pair; our
    gate multiplies the transform, the file's multiplies ``x``: one is the other negated."""
    n = transform.shape[0]  # F (the input width of a weight, the length of a bias)

    def write(array: np.ndarray) -> None:
        with torch.no_grad():
            transform.copy_(torch.from_numpy(np.ascontiguousarray(array[:n].T)))
            carry.copy_(torch.from_numpy(np.ascontiguousarray(-array[n:].T)))

    def read() -> np.ndarray:
        return np.concatenate([transform.detach().cpu().float().numpy().T,
                               -carry.detach().cpu().float().numpy().T])

    return WeightEntry(name, (2 * n, *transform.shape[1:]), read, write)


def _gate_blocks(array: np.ndarray) -> np.ndarray:
    """Reorder the four gate blocks of axis 0 (file order ↔ ours, the same permutation)."""
    return array.reshape(4, -1, *array.shape[1:])[_GATE_ORDER].reshape(array.shape)


def encoder_entries(lstm: BiLstm) -> list[WeightEntry]:
    """The keys of ``encoder.pkl`` for a biLSTM of these options."""
    entries = []
    for k, layer in enumerate(lstm.layers):
        forget = np.zeros(4 * layer.cell_dim, dtype=np.float32)
        forget[2 * layer.cell_dim : 3 * layer.cell_dim] = 1.0  # our forget block, added at run time
        for d, direction in enumerate(("forward", "backward")):
            prefix = f"{direction}_layer_{k}"
            entries += [
                tensor_entry(f"{prefix}.input_linearity.weight", layer.w_input[d],
                             to_file=lambda a: _gate_blocks(a.T), from_file=lambda a: _gate_blocks(a).T),
                tensor_entry(f"{prefix}.state_linearity.weight", layer.w_state[d],
                             to_file=lambda a: _gate_blocks(a.T), from_file=lambda a: _gate_blocks(a).T),
                tensor_entry(f"{prefix}.state_linearity.bias", layer.bias[d],
                             to_file=lambda a, f=forget: _gate_blocks(a + f),
                             from_file=lambda a, f=forget: _gate_blocks(a) - f),
                tensor_entry(f"{prefix}.state_projection.weight", layer.w_proj[d],
                             to_file=np.transpose, from_file=np.transpose),
            ]
    return entries


def copy_state_dict(entries: list[WeightEntry], path: str | Path, architecture: str | Path) -> None:
    """Copy the state dict in ``path`` into the parameters ``entries`` describe.

    Raises:
        EfmlFormatError: naming ``path`` and the key, with the shape ``architecture`` (the
            architecture JSON and dictionaries) requires, when the two do not fit.
    """
    state = read_state_dict(path)
    unexpected = sorted(set(state) - {e.name for e in entries})
    if unexpected:
        raise EfmlFormatError(f"{path}: keys {unexpected} are not part of the model {architecture} "
                              "describes (more layers, filters or embeddings than it says?)")
    for entry in entries:
        if entry.name not in state:
            raise EfmlFormatError(f"{path}: key {entry.name!r} is missing (shape {entry.shape} "
                                  f"expected from {architecture})")
        shape = tuple(state[entry.name].shape)
        if shape != entry.shape:
            raise EfmlFormatError(f"{path}: key {entry.name!r} has shape {shape}, but {architecture} "
                                  f"requires {entry.shape}")
    for entry in entries:
        entry.write(state[entry.name].float().numpy())

