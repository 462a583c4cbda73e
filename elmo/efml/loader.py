"""An ELMoForManyLangs model directory → a :class:`~elmo.BiLM`, and its conversion to ours.

The model is the published ELMo architecture with the family's own front end (code-point
characters through ``char.dic``, a word embedding from ``word.dic``), so it becomes our
:class:`~elmo.char_cnn.CharCNN` with an :class:`~elmo.efml.vocab.EfmlChars` mapping under the
same biLSTM as every other model. Like every biLM here it is stateless unless asked: the
original carries LSTM state from batch to batch (its outputs depend on what ran before), and
our stateless vectors equal its first call on a fresh ``Embedder`` with every sentence in one
batch.
"""

from __future__ import annotations

from pathlib import Path

from elmo.bilm import BiLM
from elmo.char_cnn import CharCNN
from elmo.efml import EfmlFormatError
from elmo.efml.config import architecture_options, read_architecture, resolve_config
from elmo.efml.state_dict import (ENCODER_PKL, TOKEN_EMBEDDER_PKL, copy_state_dict, encoder_entries,
                                  token_embedder_entries)
from elmo.efml.vocab import read_vocabularies
from elmo.model_dir import require_free, save_model_dir


def load_efml(model_dir: str | Path, *, stateful: bool = False) -> BiLM:
    """Read an ELMoForManyLangs model directory (e.g. ``zhs.model``) into a float32 CPU biLM in eval mode.

    Raises:
        EfmlFormatError, DictionaryError: a missing file, a config that does not fit the state
            dicts, a malformed ``.dic``, a pickle holding anything but tensors; each names the file.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise EfmlFormatError(f"{model_dir}: not a directory (an ELMoForManyLangs model directory "
                              "holds config.json, char.dic, word.dic, token_embedder.pkl, encoder.pkl)")
    config = resolve_config(model_dir)
    architecture = read_architecture(config)
    embedder = architecture["token_embedder"]
    chars, words = read_vocabularies(model_dir, embedder["max_characters_per_token"], embedder["word_dim"])
    options = architecture_options(architecture, chars.n_ids, words.n_ids if words else 0, config)
    encoder = CharCNN(options.char_cnn, options.lstm.projection_dim, chars=chars, words=words)
    bilm = BiLM(options, token_encoder=encoder, stateful=stateful)
    sizes = f"{chars.n_ids} characters" + (f", {words.n_ids} words" if words else "")
    fits = f"{config} with its dictionaries ({sizes})"
    copy_state_dict(token_embedder_entries(encoder), model_dir / TOKEN_EMBEDDER_PKL, fits)
    copy_state_dict(encoder_entries(bilm.lstm), model_dir / ENCODER_PKL, fits)
    bilm.clear_type_memo()
    return bilm.eval()


def convert_efml(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the model of an ELMoForManyLangs directory as a model directory of ours
    (``options.json``, ``weights.hdf5``, ``char.dic``, ``word.dic``): later loads read no pickle
    and give the same outputs bit for bit. Returns ``out_dir``."""
    require_free(out_dir)  # before the load, which takes a while for a full-size model
    return save_model_dir(load_efml(model_dir), out_dir)
