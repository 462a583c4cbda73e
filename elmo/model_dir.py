"""A model directory of ours: ``options.json`` + ``weights.hdf5`` (+ the token dictionaries).

This is what the bundled default model, ``export`` and ``convert-efml`` are: the published
options and HDF5 weight layout, plus, for a model whose characters are not the published
UTF-8 bytes, the dictionaries its ``char_cnn.characters`` convention reads (ELMoForManyLangs:
``char.dic``, and ``word.dic`` with a word embedding). Nothing in it is a pickle.

The pair may have other names: any folder with one options JSON and one weights HDF5 loads
(:func:`find_model_files`), so AllenNLP's downloads
(``elmo_2x4096_512_2048cnn_2xhighway_options.json`` + ``..._weights.hdf5``) and bilm-tf's
``lm_weights.hdf5`` need no renaming.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py

from elmo.bilm import BiLM
from elmo.char_cnn import CharCNN
from elmo.efml.dic import write_dic
from elmo.efml.vocab import read_token_encoder
from elmo.options import BiLMOptions, CharCNNOptions
from elmo.weights import load_weights, save_weights

OPTIONS_JSON, WEIGHTS_HDF5 = "options.json", "weights.hdf5"
HDF5_SUFFIXES = (".hdf5", ".h5")


class ModelDirError(ValueError):
    """A folder that holds no options/weights pair, or more than one candidate for either."""


def _is_options(path: Path) -> bool:
    """A JSON object with the biLM's ``char_cnn`` and ``lstm`` sections (read as data, nothing run)."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(value, dict) and {"char_cnn", "lstm"} <= value.keys()


def _is_weights(path: Path) -> bool:
    """An HDF5 file with the published layout's LSTM weights (``RNN_0``)."""
    try:
        with h5py.File(path, "r") as f:
            return "RNN_0" in f
    except OSError:
        return False


def find_model_files(folder: str | Path) -> tuple[Path, Path]:
    """The options JSON and the weights HDF5 of a model folder, whatever their names.

    ``options.json`` and ``weights.hdf5`` when present; otherwise the folder's one JSON file that
    holds biLM options (``char_cnn`` and ``lstm``) and its one HDF5 file (``.hdf5``, ``.h5``)
    that holds LSTM weights (``RNN_0``). Other files (``tokenizer.json``, ``softmax.hdf5``,
    reference outputs) are ignored.

    Raises:
        ModelDirError: no candidate, or several, for either file; the message lists the files
            looked at and suggests ``--options FILE --weights FILE``.
    """
    folder = Path(folder)
    found = []
    for exact, suffixes, fits, what in ((OPTIONS_JSON, (".json",), _is_options, "biLM options JSON"),
                                        (WEIGHTS_HDF5, HDF5_SUFFIXES, _is_weights, "weights HDF5")):
        if (folder / exact).is_file():
            found.append(folder / exact)
            continue
        seen = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file())
        fit = [p for p in seen if fits(p)]
        if len(fit) != 1:
            looked = ", ".join(p.name for p in seen) or f"no {'/'.join(suffixes)} file"
            problem = (f"{len(fit)} files could be its {what} ({', '.join(p.name for p in fit)})" if fit
                       else f"no {what} found (looked at: {looked})")
            raise ModelDirError(f"{folder}: {problem}. A model directory holds one options JSON and one "
                                "weights HDF5 (any names), or is an ELMoForManyLangs directory (config.json, "
                                "char.dic, word.dic, token_embedder.pkl, encoder.pkl); name the files with "
                                "--options FILE --weights FILE")
        found.append(fit[0])
    return found[0], found[1]

# How each character convention (``char_cnn.characters``) builds its token encoder from the
# files of a model directory: None means the published char CNN.
ENCODER_READERS: dict[str, Callable[[Path, CharCNNOptions, int], CharCNN | None]] = {
    "utf8": lambda folder, options, output_dim: None,
    "elmoformanylangs": read_token_encoder,
}


def load_model_dir(folder: str | Path, *, stateful: bool = False) -> BiLM:
    """A model directory of ours (or any folder with one options/weights pair, see
    :func:`find_model_files`) → a float32 CPU biLM in eval mode.

    Raises:
        ModelDirError: the folder holds no pair, or an ambiguous one.
        OptionsError, WeightFileError, DictionaryError: naming the file that is missing or wrong.
    """
    folder = Path(folder)
    options_file, weights_file = find_model_files(folder)
    options = BiLMOptions.from_file(options_file)
    encoder = ENCODER_READERS[options.char_cnn.characters](folder, options.char_cnn, options.lstm.projection_dim)
    bilm = BiLM(options, token_encoder=encoder, stateful=stateful)
    load_weights(bilm, weights_file)
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
