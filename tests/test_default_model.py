"""The bundled default model: loads, stays small, and shows context-dependent vectors."""

from __future__ import annotations

import torch

import cli
from elmo import load_default_bilm
from elmo.models import DEFAULT_MODEL_DIR


def _cosines(bilm, first: str, second: str, word: str) -> torch.Tensor:
    a, b = first.split(), second.split()
    layers = bilm.embed([a, b]).layers  # (n_layers, 2, time, dim)
    return torch.cosine_similarity(layers[:, 0, a.index(word)], layers[:, 1, b.index(word)], dim=-1)


def test_default_model_is_small_and_complete():
    sizes = {p.name: p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir()}
    assert {"options.json", "weights.hdf5", "vocab.txt", "tokenizer.json", "TRAINING.md"} <= set(sizes)
    assert sum(sizes.values()) < 20 * 2**20


def test_same_word_same_token_layer_different_context_vectors():
    bilm = load_default_bilm()
    fruit, phone, fruit2 = "我 买了 六斤 苹果 。", "我 买了 一个 苹果 7 。", "奶奶 买了 三斤 苹果 。"
    senses = _cosines(bilm, fruit, phone, "苹果")
    same_sense = _cosines(bilm, fruit, fruit2, "苹果")
    assert senses[0] > 0.9999  # layer 0 sees only the word
    assert senses[2] < 0.8 and senses[2] < same_sense[2] - 0.2
    money, river = "He went to the bank to deposit some money .", "We walked along the river bank today ."
    bank = _cosines(bilm, money, river, "bank")
    assert bank[0] > 0.9999 and bank[2] < 0.8


def test_cli_embed_uses_default_model(tmp_path, capsys):
    (tmp_path / "s.txt").write_text("我 买了 六斤 苹果 。\n", encoding="utf-8")
    assert cli.main(["embed", str(tmp_path / "s.txt"), "--device", "cpu"]) == 0
    assert "shape (3, 5, 128)" in capsys.readouterr().out
