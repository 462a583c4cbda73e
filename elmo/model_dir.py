"""A model directory of ours: ``options.json`` + ``weights.hdf5`` (+ the token dictionaries).

This is what the bundled default model, ``export`` and ``convert-efml`` are: the published
options and HDF5 weight layout, plus, for a model whose characters are not the published
UTF-8 bytes, the dictionaries its ``char_cnn.characters`` convention reads (ELMoForManyLangs:
``char.dic``, and ``word.dic`` with a word embedding). Nothing in it is a pickle.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from elmo.bilm import BiLM
from elmo.char_cnn import CharCNN
from elmo.efml.dic import write_dic
from elmo.efml.vocab import read_token_encoder
from elmo.options import BiLMOptions, CharCNNOptions
from elmo.weights import load_weights, save_weights

OPTIONS_JSON, WEIGHTS_HDF5 = "options.json", "weights.hdf5"

# How each character convention (``char_cnn.characters``) builds its token encoder from the
# files of a model directory: None means the published char CNN.
ENCODER_READERS: dict[str, Callable[[Path, CharCNNOptions, int], CharCNN | None]] = {
    "utf8": lambda folder, options, output_dim: None,
    "elmoformanylangs": read_token_encoder,
}


def load_model_dir(folder: str | Path, *, stateful: bool = False) -> BiLM:
    """A model directory of ours → a float32 CPU biLM in eval mode.

    Raises:
        OptionsError, WeightFileError, DictionaryError: naming the file that is missing or wrong.
    """
    folder = Path(folder)
    options = BiLMOptions.from_file(folder / OPTIONS_JSON)
    encoder = ENCODER_READERS[options.char_cnn.characters](folder, options.char_cnn, options.lstm.projection_dim)
    bilm = BiLM(options, token_encoder=encoder, stateful=stateful)
    load_weights(bilm, folder / WEIGHTS_HDF5)
    return bilm.eval()


def require_free(out_dir: str | Path) -> Path:
    """``out_dir``, which must not exist or be an empty directory.

    Raises:
        FileExistsError: it holds something (which is left alone).
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: already exists and is not an empty directory; choose a new one")
    return out


def save_model_dir(bilm: BiLM, out_dir: str | Path) -> Path:
    """Write ``bilm`` as a model directory at ``out_dir``, which must not exist or be empty.

    The files are written into a hidden folder beside ``out_dir`` and renamed into place at the
    end, so a killed run never leaves a directory that looks complete.

    Raises:
        FileExistsError: ``out_dir`` exists and is not an empty directory (nothing is touched).
    """
    out = require_free(out_dir)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    staging.mkdir()
    try:
        bilm.options.save(staging / OPTIONS_JSON)
        save_weights(bilm, staging / WEIGHTS_HDF5)
        encoder = bilm.token_encoder
        for name, table in (encoder.vocabularies() if isinstance(encoder, CharCNN) else {}).items():
            write_dic(table, staging / name)
        os.replace(staging, out)  # an empty out_dir is replaced
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
