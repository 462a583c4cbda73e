"""One tokenizer for training and precompute: the tokens precompute sees are the tokens the
model was trained on (vocab → train → export → precompute), through the record a model
directory keeps; the bundled default model carries its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cli
from cache_builder import open_cache
from elmo.models import DEFAULT_MODEL_DIR
from elmo.tokenize import RECORD, UserDictionary, get_tokenizer, load_tokenizer, model_tokenizer
from elmo.train import export, train
from elmo.vocab import read_vocab
from tests.test_inputs import write_lines
from tests.tiny import tiny_options

REPO = Path(__file__).resolve().parent.parent
RAW = ["我买了六斤苹果。", "奶奶买了三斤苹果。", "他买了一个苹果7。", "I don't like the bank.", "我们买了手机。"] * 8
# A CMRC 2018-style record: the answer is a character span of the context.
CONTEXT, QUESTION, ANSWER = "我买了六斤苹果。", "我买了几斤苹果？", (1, 3)  # "买了"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny model trained on text that ``vocab`` segmented with a user dictionary, exported."""
    work = tmp_path_factory.mktemp("record")
    raw = write_lines(work / "raw.txt", RAW)
    user_dict = work / "terms.txt"
    user_dict.write_text("买了 100000\n", encoding="utf-8")
    assert cli.main(["vocab", str(raw), "--out", str(work / "vocab.txt"), "--user-dict", str(user_dict),
                     "--segmented-out", str(work / "seg")]) == 0
    config = work / "config.json"
    config.write_text(json.dumps({"model": tiny_options().to_dict(), "training": {"batch_size": 4, "max_steps": 2}}))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train([str(work / "seg" / "raw.txt")], work / "run", config=config, vocab=work / "vocab.txt",
              device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    out = export(work / "run", work / "model")
    user_dict.unlink()  # the model directory is self-contained
    return out


def _precompute(tmp_path: Path, model: Path, *extra: str) -> dict:
    data = write_lines(tmp_path / "cmrc.jsonl", [{"id": "q1", "context": CONTEXT, "question": QUESTION}])
    store = tmp_path / f"s{len(extra)}.zarr"
    assert cli.main(["precompute", str(data), "-o", str(store), "--options", str(model / "options.json"),
                     "--weights", str(model / "weights.hdf5"), "-q", *extra]) == 0
    return {field: open_cache(str(store)).tokens("q1", field) for field in ("context", "question")} | {
        "manifest": open_cache(str(store)).info()}


def test_precompute_sees_the_tokens_the_model_was_trained_on(model_dir: Path, tmp_path: Path):
    recorded = model_tokenizer(model_dir)
    assert recorded is not None and recorded.name == "auto"
    assert [(d.name, d.text) for d in recorded.user_dicts] == [("terms.txt", "买了 100000\n")]
    trained_on = (model_dir.parent / "seg" / "raw.txt").read_text(encoding="utf-8").splitlines()
    assert trained_on[0] == "我 买了 六斤 苹果 。" and trained_on[3] == "I do n't like the bank ."
    vocab = set(read_vocab(model_dir / "vocab.txt"))

    got = _precompute(tmp_path, model_dir)
    assert got["context"].tokens == trained_on[0].split()
    assert set(got["context"].tokens) <= vocab
    # The answer's characters are whole tokens: it maps to a token range.
    starts, ends = got["context"].spans[:, 0].tolist(), got["context"].spans[:, 1].tolist()
    assert ANSWER[0] in starts and ANSWER[1] in ends
    assert got["manifest"]["tokenizer"]["settings"] == recorded.settings()

    # An explicit --tokenizer replaces the record; --user-dict adds to whichever is used.
    assert _precompute(tmp_path, model_dir, "--tokenizer", "zh")["context"].tokens[:3] == ["我", "买", "了"]


def test_fine_tuning_keeps_the_models_tokenizer(model_dir: Path, tmp_path: Path):
    torch.set_num_threads(1)
    train([str(model_dir.parent / "seg" / "raw.txt")], tmp_path / "ft", init_from=model_dir, max_steps=1,
          device="cpu", progress=False)
    tuned = export(tmp_path / "ft", tmp_path / "tuned")
    assert json.loads((tuned / RECORD).read_text()) == json.loads((model_dir / RECORD).read_text())


def test_the_default_model_records_its_tokenizer_and_precompute_uses_it(tmp_path: Path):
    recorded = load_tokenizer(DEFAULT_MODEL_DIR / RECORD)
    repo_dict = UserDictionary.read(Path(__file__).resolve().parent.parent / "data" / "user_dict.txt")
    assert recorded.settings() == get_tokenizer("auto", user_dicts=[repo_dict]).settings()
    data = write_lines(tmp_path / "zh.jsonl", [{"id": "a", "text": "她买了六斤苹果，苹果又甜又脆。"},
                                               {"id": "b", "text": "我买了一个苹果7。"}])
    assert cli.main(["precompute", str(data), "-o", str(tmp_path / "s.zarr"), "-q", "--device", "cpu"]) == 0
    cache = open_cache(str(tmp_path / "s.zarr"))
    vocab = set(read_vocab(DEFAULT_MODEL_DIR / "vocab.txt"))
    assert cache.tokens("a").tokens[:3] == ["她", "买了", "六斤"]
    assert all(set(cache.tokens(doc_id).tokens) <= vocab for doc_id in ("a", "b"))
    assert cache.info()["tokenizer"]["settings"]["zh"]["user_dicts"] == [
        {"name": "user_dict.txt", "sha256": repo_dict.sha256}]


def test_quiet_precompute_of_chinese_prints_nothing_on_stderr(tmp_path: Path):
    data = write_lines(tmp_path / "zh.jsonl", [{"id": "a", "text": "她买了六斤苹果。"}])
    run = subprocess.run([sys.executable, str(REPO / "cli.py"), "precompute", str(data), "-o",
                          str(tmp_path / "s.zarr"), "-q", "--device", "cpu"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stderr == ""  # no jieba start-up lines
    assert run.stdout.startswith(f"{tmp_path / 's.zarr'}: 1 documents")
