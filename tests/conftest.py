"""Shared test fixtures: the published ELMo fixture (from ../shared or $ELMO_FIXTURES) and tiny models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURE_DIR = Path(os.environ.get("ELMO_FIXTURES", REPO.parent / "shared" / "fixtures" / "elmo"))


@pytest.fixture(scope="session")
def elmo_fixture() -> Path:
    """The reference fixture directory; tests that need it skip with the reason when it is absent."""
    if not (FIXTURE_DIR / "lm_weights.hdf5").exists():
        pytest.skip(f"ELMo reference fixture not found at {FIXTURE_DIR} (set ELMO_FIXTURES)")
    return FIXTURE_DIR


@pytest.fixture(scope="session")
def fixture_sentences(elmo_fixture: Path) -> list[list[list[str]]]:
    """``sentences[k][i]``: sentence i of list k, whitespace-tokenized."""
    with open(elmo_fixture / "sentences.json", encoding="utf-8") as f:
        return [[s.split() for s in group] for group in json.load(f)]


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny random biLM saved as ``options.json`` + ``weights.hdf5``."""
    from tests.cache_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("model"))
