"""Recorded LSTM time steps (``elmo.step_graphs``) give the plain path's vectors, bitwise.

On a GPU the steps are CUDA graphs; on the CPU ``BiLstm.step_graphs = True`` runs the same static
buffers and indices with each "replay" re-running the step, so everything but the capture itself
is checked here on any machine, through the model and through ``precompute``.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from cache_builder import open_cache
from elmo.lstm import BiLstm
from tests.test_engine_batch_independence import (
    efml,
    model_dir,
    ours,
    precompute,
    squad_records,
)
from tests.tiny import tiny_bilm

WORDS = ["a", "bb", "ccc", "dddd", "the", "of", "and", "x", "yy", "zzzzz"]


def batches(seed: int, n: int, most_sentences: int) -> list[list[list[str]]]:
    rng = random.Random(seed)
    return [[[rng.choice(WORDS) for _ in range(rng.randint(1, 30))] for _ in range(rng.randint(1, most_sentences))]
            for _ in range(n)]


def embed_all(bilm, sentences: list[list[list[str]]], graphs: bool, monkeypatch) -> list[torch.Tensor]:
    monkeypatch.setattr(BiLstm, "step_graphs", graphs)
    return [bilm.embed(s).layers for s in sentences]


def test_recorded_steps_give_the_plain_vectors_bitwise(monkeypatch):
    bilm = tiny_bilm(4, dim=64, projection_dim=16).eval()
    # Small batches first, then larger ones: the static buffers grow and steps are re-recorded.
    sentences = batches(0, 10, 8) + batches(1, 6, 60)
    plain = embed_all(bilm, sentences, False, monkeypatch)
    assert not any(g.replays for g in bilm.lstm.graphs)
    graphed = embed_all(bilm, sentences, True, monkeypatch)
    assert all(torch.equal(p, g) for p, g in zip(plain, graphed))
    assert all(g.replays for g in bilm.lstm.graphs)  # row counts seen twice were recorded
    assert bilm.lstm.graphs[0].gates.shape[1] >= max(len(s) for s in sentences)


def test_stateful_and_training_runs_keep_the_plain_path(monkeypatch):
    monkeypatch.setattr(BiLstm, "step_graphs", True)
    stateful = tiny_bilm(5)
    stateful.stateful = True
    for s in batches(2, 4, 6):
        stateful.embed(s)
    assert stateful._states is not None and not any(g.replays or g.seen for g in stateful.lstm.graphs)
    bilm = tiny_bilm(5).train()
    bilm(bilm.prepare(batches(3, 1, 6)[0]))  # autograd on: the finals and the graph stay plain
    assert not any(g.seen for g in bilm.lstm.graphs)


def test_a_model_with_recorded_steps_pickles_without_them(monkeypatch):
    """How a model reaches Dask workers: graphs and static buffers stay in their process."""
    monkeypatch.setattr(BiLstm, "step_graphs", True)
    bilm = tiny_bilm(6).eval()
    sentences = batches(4, 6, 10)
    before = [bilm.embed(s).layers for s in sentences]
    copy = pickle.loads(pickle.dumps(bilm))
    assert all(g.gates is None and not g.replays for g in copy.lstm.graphs)
    assert all(torch.equal(a, copy.embed(s).layers) for a, s in zip(before, sentences))


@pytest.mark.parametrize("kind", ["ours", "published", "efml-words"])
def test_precompute_stores_the_same_vectors_with_recorded_steps(kind: str, tmp_path: Path, monkeypatch, request):
    folders = {"ours": lambda: ours(tmp_path / "ours"), "efml-words": lambda: efml(tmp_path / "efml", 32),
               "published": lambda: model_dir("published", {}, request)}
    model = folders[kind]()
    records = squad_records(tmp_path / "squad.jsonl", seed=7, n=12)
    stores = {}
    for graphs in (False, True):
        monkeypatch.setattr(BiLstm, "step_graphs", graphs)
        stores[graphs] = tmp_path / f"{graphs}.zarr"
        precompute(records, stores[graphs], model, "--batch-tokens", "300")
    with open_cache(stores[False]) as plain, open_cache(stores[True]) as graphed:
        assert list(plain) == list(graphed) and len(plain) == 12
        for doc_id in plain:
            for field in plain.manifest["fields"]:
                assert np.array_equal(plain.lookup(doc_id, field), graphed.lookup(doc_id, field))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graphs_give_the_eager_gpu_vectors(dtype: torch.dtype, monkeypatch):
    bilm = tiny_bilm(7, dim=256, projection_dim=32).eval().to("cuda", dtype)
    sentences = batches(5, 8, 64)
    eager = embed_all(bilm, sentences, False, monkeypatch)
    graphed = embed_all(bilm, sentences, None, monkeypatch)  # the default on a GPU
    assert all(g.replays and not g.failed for g in bilm.lstm.graphs)
    worst = max(float((a.float() - b.float()).abs().max()) for a, b in zip(eager, graphed))
    assert worst <= (1e-6 if dtype == torch.float32 else 0.0), worst
    if dtype == torch.float32:  # and float32 stays within the bound of the CPU's vectors
        cpu = embed_all(tiny_bilm(7, dim=256, projection_dim=32), sentences, False, monkeypatch)
        worst_cpu = max(float((a - b.cpu()).abs().max()) for a, b in zip(cpu, graphed))
        assert worst_cpu <= 1e-5, worst_cpu
