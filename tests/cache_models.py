"""Tiny biLMs saved as published options/weights files, for cache-builder tests."""

from __future__ import annotations

from pathlib import Path

from elmo import BiLM, load_bilm
from elmo.weights import save_weights
from tests.tiny import tiny_bilm


def save_tiny_model(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write a tiny random biLM as ``options.json`` + ``weights.hdf5`` under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    bilm = tiny_bilm(seed)
    options, weights = folder / "options.json", folder / "weights.hdf5"
    bilm.options.save(options)
    save_weights(bilm, weights)
    return options, weights


def load(files: tuple[Path, Path]) -> BiLM:
    return load_bilm(*files)
