"""Where a biLM comes from: every supported model location behind one loader.

================================  =========================================================
location                          files
================================  =========================================================
a published pair                  ``options.json`` + ``weights.hdf5`` (bilm-tf / AllenNLP)
a model directory of ours         ``options.json``, ``weights.hdf5`` (+ ``char.dic``,
                                  ``word.dic``): the bundled model, ``export``, ``convert-efml``;
                                  or any folder with one options JSON and one weights HDF5,
                                  whatever their names (AllenNLP's downloads)
an ELMoForManyLangs directory     ``config.json``, ``char.dic``, ``word.dic``,
                                  ``token_embedder.pkl``, ``encoder.pkl`` (e.g. ``zhs.model``)
================================  =========================================================

:func:`load_model` returns the biLM and a JSON-able record of its family and location, which a
store's manifest keeps; :func:`load_recorded_model` loads a model back from such a record.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from elmo.bilm import BiLM, TokenEncoder
from elmo.efml.config import CONFIG_JSON
from elmo.efml.loader import load_efml
from elmo.model_dir import OPTIONS_JSON, load_model_dir
from elmo.options import BiLMOptions
from elmo.weights import load_weights

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"

# The model family of each character convention (``char_cnn.characters``).
FAMILIES = {"utf8": "elmo", "elmoformanylangs": "elmoformanylangs"}



def model_family(bilm: BiLM) -> str:
    """``"elmo"`` (the published convention) or ``"elmoformanylangs"``."""
    return FAMILIES[bilm.options.char_cnn.characters]


def load_directory(folder: str | Path, *, stateful: bool = False) -> BiLM:
    """An ELMoForManyLangs directory (marked by its ``config.json``), else a folder with one
    options JSON and one weights HDF5 (:func:`elmo.model_dir.find_model_files`).

    Raises:
        ValueError: no such folder, or one that holds both ``options.json`` and ``config.json``.
        ModelDirError: no options/weights pair (or an ambiguous one), listing what was found.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such model directory")
    if (folder / CONFIG_JSON).is_file():
        if (folder / OPTIONS_JSON).is_file():
            raise ValueError(f"{folder}: not a model directory: it holds both {OPTIONS_JSON} and {CONFIG_JSON} "
                             "(ours, or an ELMoForManyLangs directory?); pass --options FILE --weights FILE")
        return load_efml(folder, stateful=stateful)
    return load_model_dir(folder, stateful=stateful)


BUNDLED = "<bundled>"  # the record's "dir" of the bundled default model, wherever it is installed


def load_model(model: str | Path | None = None, *, options: str | Path | None = None,
               weights: str | Path | None = None, device: str | torch.device = "cpu", stateful: bool = False,
               token_encoder: TokenEncoder | None = None) -> tuple[BiLM, dict[str, Any]]:
    """Load a biLM from a model directory, a published pair, or (given neither) the bundled model.

    Args:
        model: a model directory of ours or an ELMoForManyLangs directory.
        options, weights: a published ``options.json`` + ``weights.hdf5`` pair instead.
        stateful: carry LSTM state from batch to batch (only to reproduce published outputs).
        token_encoder: replaces the char CNN of a published pair, e.g. a
            :class:`elmo.token_table.TokenTable` (then only the LSTM weights are read).

    Returns:
        The biLM in eval mode on ``device``, and its record for a store's manifest:
        ``{"family", "dir", "options", "weights"}`` with absolute paths (None where unused;
        the bundled model's "dir" is :data:`BUNDLED`).
    """
    if model is not None and (options or weights):
        raise ValueError("pass a model directory or an options/weights pair, not both")
    if bool(options) != bool(weights):
        raise ValueError("pass both --options and --weights, or neither")
    if options:
        bilm = BiLM(BiLMOptions.from_file(options), token_encoder=token_encoder, stateful=stateful)
        load_weights(bilm, weights)
        where = {"dir": None, "options": os.path.abspath(options), "weights": os.path.abspath(weights)}
    else:
        if token_encoder is not None:
            raise ValueError("a token encoder replaces the char CNN of an options/weights pair only")
        folder = DEFAULT_MODEL_DIR if model is None else model
        bilm = load_directory(folder, stateful=stateful)
        where = {"dir": BUNDLED if model is None else os.path.abspath(folder), "options": None, "weights": None}
    return bilm.to(device).eval(), {"family": model_family(bilm), **where}


def load_bilm(model_or_options: str | Path, weight_file: str | Path | None = None, *,
              device: str | torch.device = "cpu", stateful: bool = False,
              token_encoder: TokenEncoder | None = None) -> BiLM:
    """A :class:`BiLM` in eval mode from a model directory (``load_bilm("zhs.model")``) or a
    published pair (``load_bilm("options.json", "weights.hdf5")``); see :func:`load_model`."""
    if weight_file is None:
        return load_model(model_or_options, device=device, stateful=stateful, token_encoder=token_encoder)[0]
    return load_model(options=model_or_options, weights=weight_file, device=device, stateful=stateful,
                      token_encoder=token_encoder)[0]


def load_default_bilm(*, device: str | torch.device = "cpu") -> BiLM:
    """The small biLM bundled with the project (``elmo/default_model``), trained on the sample corpus."""
    return load_model(device=device)[0]


def model_record(bilm: BiLM, source: dict[str, Any] | tuple[str, str] | None) -> dict[str, Any]:
    """What a store's manifest says about where ``bilm`` came from.

    Args:
        source: the record :func:`load_model` returned, an ``(options, weights)`` pair, or None
            (a model built in memory: the family is recorded, no location).
    """
    if isinstance(source, tuple):
        source = {"options": source[0], "weights": source[1]}
    return {"family": model_family(bilm), "dir": None, "options": None, "weights": None, **(source or {})}


def model_folder(record: dict[str, Any]) -> Path | None:
    """The folder a model record names: its directory, or the folder of its options file."""
    if record.get("dir"):
        return DEFAULT_MODEL_DIR if record["dir"] == BUNDLED else Path(record["dir"])
    return Path(record["options"]).parent if record.get("options") else None


def load_recorded_model(record: dict[str, Any]) -> BiLM | None:
    """The model a manifest's ``model`` record names, or None when it names no location."""
    if record.get("dir"):
        return load_model(None if record["dir"] == BUNDLED else record["dir"])[0]
    if record.get("options") and record.get("weights"):
        return load_model(options=record["options"], weights=record["weights"])[0]
    return None
