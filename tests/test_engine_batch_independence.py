"""Every model kind gives each stored segment the vectors the model gives it alone, whatever the
run's batch size, task size or worker processes.

``precompute`` runs through the command line (engine, real Zarr store, float32) at several
``--batch-tokens``, once on a Dask LocalCluster of two worker processes, and every stored segment
is compared with ``embed([tokens])`` of that segment by itself. The LSTM weights are large
(uniform in ±0.6 over 256 cells, like the ELMoForManyLangs test directories): such an LSTM
amplifies a rounding difference about 3x per step, so a segment whose vectors depended on its
batch companions would be off by whole units within a few tokens, not by 1e-7.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import cli
from cache_builder import open_cache
from elmo import BiLM, load_bilm
from elmo.model_dir import save_model_dir
from tests.efml_models import tiny_architecture, write_efml_model
from tests.test_inputs import make_squad
from tests.tiny import tiny_bilm

TOLERANCE = 1e-5
LSTM = {"dim": 256, "projection_dim": 32}
BATCHINGS = [["--batch-tokens", "1"], ["--batch-tokens", "200", "--task-tokens", "256"], []]  # [] = defaults
CMRC = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cmrc2018_dev.json"


def ours(folder: Path) -> Path:
    """A tiny biLM of ours with large random LSTM weights, as a model directory."""
    bilm = tiny_bilm(3, **LSTM)
    with torch.no_grad():
        for p in bilm.lstm.parameters():
            p.uniform_(-0.6, 0.6)
    return save_model_dir(bilm, folder)


def efml(folder: Path, word_dim: int) -> Path:
    """An ELMoForManyLangs directory: char CNN only (``word_dim`` 0) or with a word embedding."""
    model = write_efml_model(folder, seed=5, arch=tiny_architecture(word_dim=word_dim, **LSTM))
    if not word_dim:
        (model.folder / "word.dic").unlink()
    return model.folder


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"ours": ours(root / "ours"), "efml-words": efml(root / "efml-words", 32),
            "efml-chars": efml(root / "efml-chars", 0)}


def model_dir(kind: str, models: dict[str, Path], request: pytest.FixtureRequest) -> Path:
    return request.getfixturevalue("elmo_fixture") if kind == "published" else models[kind]


def squad_records(path: Path, seed: int, n: int, language: str = "en") -> Path:
    """``n`` JSONL records with a context and a question field (contexts shared by several)."""
    squad = make_squad(seed, language=language, articles=2, paragraphs=-(-n // 4), questions=2)
    records = [{"id": qa["id"], "context": p["context"], "question": qa["question"]}
               for article in squad["data"] for p in article["paragraphs"] for qa in p["qas"]][:n]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def cmrc_records(path: Path, n: int) -> Path:
    """The first ``n`` questions of the real CMRC 2018 dev set, as context + question records."""
    if not CMRC.is_file():
        pytest.skip(f"the CMRC 2018 dev set is not at {CMRC}")
    data = json.loads(CMRC.read_text(encoding="utf-8"))["data"]
    records = [{"id": qa["id"], "context": p["context"], "question": qa["question"]}
               for article in data for p in article["paragraphs"] for qa in p["qas"]][:n]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def precompute(records: Path, store: Path, model: Path, *flags: str) -> None:
    assert cli.main(["precompute", str(records), "-o", str(store), "--model", str(model), "--dtype", "float32",
                     "--max-tokens", "2048", "-q", *flags]) == 0


def assert_vectors_alone(store: Path, bilm: BiLM, alone: dict[tuple[str, ...], np.ndarray] | None = None) -> None:
    """Every stored field equals the model's vectors for it alone (all layers, within TOLERANCE).

    Args:
        alone: the model's ``(n_layers, time, dim)`` vectors by tokens, filled as they are computed
            (pass one dict to several calls with the same model).
    """
    alone = {} if alone is None else alone
    differences: dict[tuple[str, ...], float] = {}
    with open_cache(store) as cache:
        fields = cache.manifest["fields"]
        for doc_id in cache:
            for field in fields:
                tokens = tuple(cache.tokens(doc_id, field).tokens)
                if tokens not in differences:
                    if tokens not in alone:
                        alone[tokens] = bilm.embed([list(tokens)]).layers[:, 0].numpy()
                    stored = cache.lookup(doc_id, field)
                    assert stored.shape == alone[tokens].shape
                    differences[tokens] = float(np.abs(stored - alone[tokens]).max())
    assert len(differences) > 4
    worst = max(differences, key=differences.get)
    assert differences[worst] <= TOLERANCE, (f"{sum(d > TOLERANCE for d in differences.values())} of "
                                             f"{len(differences)} segments differ from their vectors alone, "
                                             f"by up to {differences[worst]:.3g} ({len(worst)} tokens)")


@pytest.mark.parametrize("kind", ["ours", "published", "efml-words", "efml-chars"])
def test_every_segment_gets_its_vectors_alone_at_any_batch_size(kind: str, models, request, tmp_path: Path):
    model = model_dir(kind, models, request)
    bilm = load_bilm(model)
    records, alone = squad_records(tmp_path / "squad.jsonl", seed=1, n=12), {}
    for k, flags in enumerate(BATCHINGS):
        store = tmp_path / f"{k}.zarr"
        precompute(records, store, model, *flags)
        assert_vectors_alone(store, bilm, alone)


def test_two_worker_processes_give_each_segment_its_vectors_alone(models, tmp_path: Path):
    model = models["efml-words"]
    records = squad_records(tmp_path / "squad.jsonl", seed=2, n=12)
    precompute(records, tmp_path / "two.zarr", model, "--workers", "2", "--batch-tokens", "200",
               "--task-tokens", "256")
    assert_vectors_alone(tmp_path / "two.zarr", load_bilm(model))


def test_chinese_records_with_the_zh_tokenizer(models, tmp_path: Path):
    model = models["efml-words"]
    records = cmrc_records(tmp_path / "cmrc.jsonl", 8)
    precompute(records, tmp_path / "zh.zarr", model, "--tokenizer", "zh", "--batch-tokens", "1500")
    assert_vectors_alone(tmp_path / "zh.zarr", load_bilm(model))


def test_verify_passes_on_an_efml_store_of_20_squad_records(models, tmp_path: Path, capsys):
    model, store = models["efml-words"], tmp_path / "squad.zarr"
    records = squad_records(tmp_path / "squad.jsonl", seed=3, n=20)
    assert cli.main(["precompute", str(records), "-o", str(store), "--model", str(model), "-q"]) == 0
    capsys.readouterr()
    assert cli.main(["verify", str(store), "--sample", "1000"]) == 0, capsys.readouterr()
    assert capsys.readouterr().out.strip().endswith("OK")
