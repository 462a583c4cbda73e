"""``config.json`` → the architecture JSON → our :class:`~elmo.options.BiLMOptions`.

``config.json`` holds the training run's arguments; inference reads only ``config_path``,
which published models often carry as a stale absolute path from the training machine. It is
resolved as the original resolves it:

1. ``model_dir / config_path`` (an absolute ``config_path`` stays as it is);
2. ``model_dir / basename(config_path)``, with a warning;
3. the sample of that name bundled here (``configs/``, ELMoForManyLangs' own samples, which
   the published models use), with a warning;
4. otherwise an error naming ``config.json``, its ``config_path`` and every place tried.

Only the ``cnn`` token embedder with the ``elmo`` encoder is supported: the original's
``lstm`` token embedder crashes at inference, and its ``lstm`` encoder returns only the top layer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from elmo.efml import EfmlFormatError
from elmo.options import BiLMOptions
from elmo.schemas import read_json, schema_errors

SAMPLE_CONFIGS = Path(__file__).resolve().parent / "configs"
CONFIG_JSON = "config.json"

log = logging.getLogger(__name__)


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    raw = read_json(path, EfmlFormatError, what)
    if not isinstance(raw, dict):
        raise EfmlFormatError(f"{path}: expected a JSON object, found {type(raw).__name__}")
    return raw


def resolve_config(model_dir: str | Path) -> Path:
    """The architecture JSON of an ELMoForManyLangs model directory (see the module doc).

    Raises:
        EfmlFormatError: no ``config.json``, no ``config_path`` in it, or no such file anywhere.
    """
    config_json = Path(model_dir) / CONFIG_JSON
    config_path = _read_json_object(config_json, "the model's config.json").get("config_path")
    if not isinstance(config_path, str) or not config_path:
        raise EfmlFormatError(f"{config_json}: key 'config_path' (the architecture JSON's path) "
                              f"is missing or not a non-empty string: {config_path!r}")
    name = os.path.basename(config_path)
    candidates = [Path(model_dir, config_path), Path(model_dir, name), SAMPLE_CONFIGS / name]
    for k, candidate in enumerate(candidates):
        if candidate.is_file():
            if k:
                log.warning("%s: config_path %r does not exist; using %s", config_json, config_path, candidate)
            return candidate
    raise EfmlFormatError(
        f"{config_json}: config_path {config_path!r} names no file; tried "
        f"{', '.join(str(c) for c in candidates)}. Put the architecture JSON (e.g. "
        "cnn_50_100_512_4096_sample.json) in the model directory, or set config_path to it")


def read_architecture(path: str | Path) -> dict[str, Any]:
    """The architecture JSON, checked against ``elmo/schemas/efml_config.schema.json``.

    Raises:
        EfmlFormatError: naming the file and every offending key, or an unsupported model kind.
    """
    raw = _read_json_object(Path(path), "architecture JSON")
    errors = schema_errors(raw, "efml_config")
    if errors:
        raise EfmlFormatError(f"{path}: invalid ELMoForManyLangs architecture:\n  " + "\n  ".join(errors))
    encoder, embedder = raw["encoder"], raw["token_embedder"]
    if encoder["name"].lower() != "elmo":
        raise EfmlFormatError(f"{path}: encoder.name {encoder['name']!r} is not supported; only 'elmo' "
                              "(the 'lstm' encoder returns only its top layer)")
    if embedder["name"].lower() != "cnn":
        raise EfmlFormatError(f"{path}: token_embedder.name {embedder['name']!r} is not supported; only "
                              "'cnn' (the original's 'lstm' token embedder crashes at inference)")
    if embedder["char_dim"] == 0:
        raise EfmlFormatError(f"{path}: token_embedder.char_dim is 0 (a words-only model): not supported; "
                              "published models have character embeddings")
    return raw


def architecture_options(architecture: dict[str, Any], n_characters: int, n_words: int,
                         source: str | Path) -> BiLMOptions:
    """Our options for a checked architecture, with the dictionary sizes of the model directory."""
    encoder, embedder = architecture["encoder"], architecture["token_embedder"]
    char_cnn: dict[str, Any] = {
        "embedding": {"dim": embedder["char_dim"]},
        "filters": embedder["filters"],
        "n_highway": embedder["n_highway"],
        "n_characters": n_characters,
        "max_characters_per_token": embedder["max_characters_per_token"],
        "activation": embedder["activation"],
        "characters": "elmoformanylangs",
    }
    if embedder["word_dim"]:
        char_cnn["word_embedding"] = {"dim": embedder["word_dim"], "n_words": n_words}
    lstm = {
        "dim": encoder["dim"],
        "projection_dim": encoder["projection_dim"],
        "n_layers": encoder["n_layers"],
        "cell_clip": encoder["cell_clip"] or None,  # 0 means no clipping
        "proj_clip": encoder["proj_clip"] or None,
        "use_skip_connections": True,  # layers after the first add their input
    }
    return BiLMOptions.from_dict({"char_cnn": char_cnn, "lstm": lstm}, source=str(source))
