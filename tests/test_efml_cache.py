"""An ELMoForManyLangs model directory through the command line: precompute, lookup, verify."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import cli
from cache_builder import open_cache
from elmo import load_bilm
from elmo.efml.loader import convert_efml
from tests.efml_models import write_efml_model

CHINESE = [
    "我买了六斤苹果。今天天气真好！",
    "潮水退了就知道谁没穿裤子。",
    "我买了一个苹果7，the cat sat.",
    "我买了六斤苹果。今天天气真好！",  # a repeated text is stored once
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_efml_model(tmp_path_factory.mktemp("efml") / "zhs.model").folder


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("input") / "zh.txt"
    path.write_text("\n".join(CHINESE) + "\n", encoding="utf-8")
    return path


def precompute(text: Path, store: Path, model: Path, *extra: str) -> None:
    assert cli.main(["precompute", str(text), "-o", str(store), "--model", str(model), "--dtype", "float32",
                     "-q", *extra]) == 0


@pytest.mark.parametrize("tokenizer", ["zh", "auto"])
def test_precompute_lookup_verify_on_chinese_text(model_dir: Path, text: Path, tmp_path: Path, capsys,
                                                  tokenizer: str):
    store = tmp_path / "zh.zarr"
    precompute(text, store, model_dir, "--tokenizer", tokenizer)
    bilm = load_bilm(model_dir)
    with open_cache(store) as cache:
        model = cache.manifest["model"]
        assert model["family"] == "elmoformanylangs"
        assert model["dir"] == os.path.relpath(model_dir, store.parent)  # relative to the store's folder
        assert (model["options"], model["weights"]) == (None, None)
        assert cache.manifest["counts"]["segments"] == 3
        view = cache.tokens("0")
        assert "苹果" in view.tokens and "。" in view.tokens  # jieba words, not characters
        for doc in ("0", "1", "2"):
            tokens = cache.tokens(doc).tokens
            stored = cache.lookup(doc)
            expected = bilm.embed([tokens]).layers[:, 0].numpy()
            assert stored.shape == expected.shape == (3, len(tokens), 16)
            assert np.abs(stored - expected).max() <= 1e-6
    capsys.readouterr()
    assert cli.main(["lookup", str(store), "0"]) == 0
    assert "shape (3, " in capsys.readouterr().out
    assert cli.main(["verify", str(store)]) == 0  # the model from the manifest's record
    assert capsys.readouterr().out.strip().endswith("OK")


def test_verify_refuses_a_model_with_other_dictionaries(model_dir: Path, text: Path, tmp_path: Path, capsys):
    store = tmp_path / "zh.zarr"
    precompute(text, store, model_dir, "--tokenizer", "zh")
    other = shutil.copytree(model_dir, tmp_path / "other")
    lines = (other / "word.dic").read_text(encoding="utf-8").splitlines()
    a, b = lines.index(next(x for x in lines if x.startswith("苹果\t"))), lines.index(next(x for x in lines if x.startswith("我\t")))
    (ida, idb) = lines[a].split("\t")[1], lines[b].split("\t")[1]
    lines[a], lines[b] = f"苹果\t{idb}", f"我\t{ida}"
    (other / "word.dic").write_text("\n".join(lines) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["verify", str(store), "--model", str(other)]) == 1
    assert "fingerprint differs" in capsys.readouterr().out


def test_converted_model_builds_the_same_store(model_dir: Path, text: Path, tmp_path: Path):
    converted = convert_efml(model_dir, tmp_path / "converted")
    precompute(text, tmp_path / "a.zarr", model_dir, "--tokenizer", "zh")
    precompute(text, tmp_path / "b.h5", converted, "--tokenizer", "zh")
    with open_cache(tmp_path / "a.zarr") as a, open_cache(tmp_path / "b.h5") as b:
        assert a.manifest["model"]["fingerprint"] == b.manifest["model"]["fingerprint"]
        assert b.manifest["model"]["dir"] == "converted"  # relative to the store's folder
        for doc in ("0", "1", "2"):
            assert np.array_equal(a.lookup(doc), b.lookup(doc))
    assert cli.main(["verify", str(tmp_path / "b.h5")]) == 0


def test_embed_with_a_model_directory(model_dir: Path, tmp_path: Path, capsys):
    sentences = tmp_path / "s.txt"
    sentences.write_text("我 买了 六斤 苹果 。\nthe cat\n", encoding="utf-8")
    assert cli.main(["embed", "--model", str(model_dir), str(sentences)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("1\t5 tokens\tshape (3, 5, 16)") and lines[1].startswith("2\t2 tokens\tshape (3, 2, 16)")


def test_model_directory_and_options_pair_are_exclusive(model_dir: Path, text: Path, tmp_path: Path, capsys):
    assert cli.main(["precompute", str(text), "-o", str(tmp_path / "s.zarr"), "--model", str(model_dir),
                     "--options", "o.json", "--weights", "w.hdf5"]) == 2
    assert "not both" in capsys.readouterr().err
