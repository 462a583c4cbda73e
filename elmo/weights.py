"""Reading and writing the published ELMo HDF5 weight layout (the bilm-tf variable names).

Every dataset of the file is described once, by a :class:`WeightEntry` that knows its name,
its shape, and how to copy between the file's TensorFlow layout and our parameters; loading,
saving and fingerprinting all walk the same list. A model with a word embedding (an
ELMoForManyLangs model, converted) adds one dataset, ``word_embed``, to that layout.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from elmo.bilm import BiLM
from elmo.char_cnn import CharCNN
from elmo.lstm import BiLstm
from elmo.token_table import TokenTable


class WeightFileError(ValueError):
    """A weight file that is missing, unreadable, or does not fit the model's options."""


@dataclass(frozen=True)
class WeightEntry:
    name: str  # HDF5 dataset path
    shape: tuple[int, ...]  # shape in the file
    read: Callable[[], np.ndarray]  # our parameters → file layout
    write: Callable[[np.ndarray], None]  # file layout → our parameters


def _host_float32(tensor: torch.Tensor) -> np.ndarray:
    """A parameter as a float32 array, whatever its device and precision (numpy has no bfloat16)."""
    return tensor.detach().to("cpu", torch.float32).numpy()


def tensor_entry(name: str, tensor: torch.Tensor, to_file: Callable[[np.ndarray], np.ndarray] = lambda a: a,
                 from_file: Callable[[np.ndarray], np.ndarray] = lambda a: a) -> WeightEntry:
    """An entry stored in ``tensor`` (a parameter or a view of one), with layout conversions."""
    file_shape = to_file(np.zeros(tuple(tensor.shape), dtype=np.float32)).shape  # not empty: garbage may warn

    def write(array: np.ndarray) -> None:
        with torch.no_grad():
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(from_file(array))))

    return WeightEntry(name, tuple(file_shape), lambda: to_file(_host_float32(tensor)), write)


def _lstm_w0_entry(name: str, w_input: torch.Tensor, w_state: torch.Tensor) -> WeightEntry:
    """``W_0`` stacks the input and the recurrent weights: ``(input_dim + proj, 4 * cell)``."""
    n_in = w_input.shape[0]

    def write(array: np.ndarray) -> None:
        with torch.no_grad():
            w_input.copy_(torch.from_numpy(array[:n_in]))
            w_state.copy_(torch.from_numpy(array[n_in:]))

    def read() -> np.ndarray:
        return np.concatenate([_host_float32(w_input), _host_float32(w_state)])

    return WeightEntry(name, (n_in + w_state.shape[0], w_input.shape[1]), read, write)


def char_cnn_entries(cnn: CharCNN) -> list[WeightEntry]:
    """The token encoder's datasets: char (and word) embedding, convolutions, highway, projection."""
    entries = [tensor_entry("char_embed", cnn.char_embed[1:] if cnn.chars.mask_row else cnn.char_embed)]
    if cnn.word_embed is not None:
        entries.append(tensor_entry("word_embed", cnn.word_embed))
    for i, conv in enumerate(cnn.convs):
        # TF conv2d kernel (1, width, in, out) ↔ torch Conv1d (out, in, width).
        entries.append(tensor_entry(f"CNN/W_cnn_{i}", conv.weight,
                                    to_file=lambda a: a.transpose(2, 1, 0)[None],
                                    from_file=lambda a: a[0].transpose(2, 1, 0)))
        entries.append(tensor_entry(f"CNN/b_cnn_{i}", conv.bias))
    hw = cnn.highway
    for k in range(hw.w_transform.shape[0]):
        for part in ("transform", "carry"):
            entries.append(tensor_entry(f"CNN_high_{k}/W_{part}", getattr(hw, f"w_{part}")[k]))
            entries.append(tensor_entry(f"CNN_high_{k}/b_{part}", getattr(hw, f"b_{part}")[k]))
    entries.append(tensor_entry("CNN_proj/W_proj", cnn.projection.weight, to_file=np.transpose,
                                from_file=np.transpose))
    entries.append(tensor_entry("CNN_proj/b_proj", cnn.projection.bias))
    return entries


def lstm_entries(lstm: BiLstm) -> list[WeightEntry]:
    """The biLSTM's datasets; direction 0 is the forward LSTM, 1 the backward one."""
    entries = []
    for direction in (0, 1):
        for k, layer in enumerate(lstm.layers):
            cell = f"RNN_{direction}/RNN/MultiRNNCell/Cell{k}/LSTMCell"
            entries.append(_lstm_w0_entry(f"{cell}/W_0", layer.w_input[direction], layer.w_state[direction]))
            entries.append(tensor_entry(f"{cell}/B", layer.bias[direction]))
            entries.append(tensor_entry(f"{cell}/W_P_0", layer.w_proj[direction]))
    return entries


def weight_entries(bilm: BiLM) -> list[WeightEntry]:
    """Every published dataset this model has weights for, in a fixed order.

    A biLM running from a precomputed token table (method 2) has only the LSTM datasets.
    """
    encoder = bilm.token_encoder
    return (char_cnn_entries(encoder) if isinstance(encoder, CharCNN) else []) + lstm_entries(bilm.lstm)


def load_weights(bilm: BiLM, path: str | Path) -> None:
    """Copy a published weight file into ``bilm``.

    Raises:
        WeightFileError: naming the file, and the dataset with its expected and found shapes,
            when the file does not fit the model's options (or has datasets the options lack).
    """
    entries = weight_entries(bilm)
    try:
        f = h5py.File(path, "r")
    except (OSError, FileNotFoundError) as e:
        raise WeightFileError(f"{path}: cannot read weight file: {e}") from None
    with f:
        expected = {e.name for e in entries}
        found: list[str] = []
        f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
        for entry in entries:
            if entry.name not in f:
                raise WeightFileError(f"{path}: dataset {entry.name!r} is missing "
                                      f"(expected shape {entry.shape} from the options)")
            shape = f[entry.name].shape
            if shape != entry.shape:
                raise WeightFileError(f"{path}: dataset {entry.name!r} has shape {shape}, "
                                      f"but the options require {entry.shape}")
        # Extra datasets of a part we load mean the file has more layers/filters than the options.
        parts = tuple({name[:3] for name in expected} & {"CNN", "RNN"})
        unexpected = sorted(n for n in found if n not in expected and n.startswith(parts))
        if unexpected:
            raise WeightFileError(f"{path}: datasets {unexpected} are not part of a model with "
                                  "these options (more layers or filters than the options say?)")
        for entry in entries:
            entry.write(f[entry.name][...].astype(np.float32))
    bilm.clear_type_memo()


def save_weights(bilm: BiLM, path: str | Path) -> None:
    """Write ``bilm``'s weights in the published layout (float32)."""
    with h5py.File(path, "w") as f:
        for entry in weight_entries(bilm):
            f.create_dataset(entry.name, data=entry.read().astype(np.float32))


def model_fingerprint(bilm: BiLM) -> str:
    """SHA-256 over the canonical options, the token dictionaries (if the model has any) and
    every weight: the identity of a model's outputs.

    A precomputed token table (method 2) replaces the char CNN's weights: its vocabulary (in
    row order) and its rows count instead.
    """
    digest = hashlib.sha256(json.dumps(bilm.options.to_dict(), sort_keys=True).encode())
    if isinstance(bilm.token_encoder, CharCNN):
        for name, table in sorted(bilm.token_encoder.vocabularies().items()):
            digest.update(json.dumps([name, sorted(table.items())], ensure_ascii=False).encode())
    for entry in weight_entries(bilm):
        digest.update(entry.name.encode())
        digest.update(np.ascontiguousarray(entry.read(), dtype=np.float32))  # its bytes, not copied again
    encoder = bilm.token_encoder
    if isinstance(encoder, TokenTable):
        digest.update(json.dumps(list(encoder.token_ids), ensure_ascii=False).encode())
        digest.update(np.ascontiguousarray(_host_float32(encoder.table)))
    return digest.hexdigest()
