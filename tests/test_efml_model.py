"""ELMoForManyLangs models through our biLM: outputs, layers, determinism, conversion."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from elmo import load_bilm
from elmo.efml.loader import convert_efml
from elmo.models import load_model
from elmo.weights import model_fingerprint
from tests.efml_models import reference_layers, tiny_architecture, write_efml_model

# A sentence of every kind the format has a rule for: Chinese, an emoji, U+3000 as a token, an
# out-of-vocabulary character, a token past max_characters (12) code points, a user token
# spelled like a boundary, one spelled like another model's boundary, and an empty sentence.
SENTENCES = [
    ["我", "买了", "六斤", "苹果", "。"],
    ["the", "cat", "🍎", "\u3000", "未知", "abcdefghijklmnopqrstuvwxyz"],
    ["<bos>", "<S>", "<eos>", "苹果"],
    [],
    ["今天", "天气", "真", "好", "阿", "，", "潮水", "退", "了", "就", "知道", "谁", "没", "穿", "裤子"],
]
REFERENCE_TOLERANCE = 1e-5  # float32, step by step vs batched; the original's own outputs agree as closely


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    return write_efml_model(tmp_path_factory.mktemp("efml") / "zhs.model")


def check_against_reference(model, bilm, sentences) -> float:
    out = bilm.embed(sentences)
    n_layers = model.arch["encoder"]["n_layers"] + 1
    assert out.layers.shape == (n_layers, len(sentences), max(map(len, sentences)),
                                2 * model.arch["encoder"]["projection_dim"])
    worst = 0.0
    for b, sentence in enumerate(sentences):
        expected = reference_layers(model, sentence)
        got = out.layers[:, b, : len(sentence)].numpy()
        assert got.shape == expected.shape
        worst = max(worst, float(np.abs(got - expected).max(initial=0.0)))
        assert not out.layers[:, b, len(sentence):].any()  # padding stays zero
    assert worst < REFERENCE_TOLERANCE
    return worst


@pytest.mark.parametrize("fmt", ["legacy-gpu", "legacy", "zip"])
def test_outputs_match_the_reference_for_every_pickle_format(tmp_path: Path, fmt: str):
    model = write_efml_model(tmp_path / "m", seed=1, fmt=fmt)
    check_against_reference(model, load_bilm(model.folder), SENTENCES)


@pytest.mark.parametrize("overrides", [
    {"word_dim": 0},  # no word embedding (word.dic is then not read)
    {"activation": "tanh", "n_highway": 1, "max_characters_per_token": 50},
    {"n_layers": 3, "cell_clip": 0, "proj_clip": 0},  # 0 means no clipping
])
def test_other_architectures_match_the_reference(tmp_path: Path, overrides):
    model = write_efml_model(tmp_path / "m", seed=2, arch=tiny_architecture(**overrides))
    if not overrides.get("word_dim", 1):
        (model.folder / "word.dic").unlink()
    check_against_reference(model, load_bilm(model.folder), SENTENCES)


def test_layer_assembly(model):
    """Layer 0 is the token layer twice, bit for bit; then [forward ‖ backward] per LSTM layer."""
    out = load_bilm(model.folder).embed(SENTENCES[:1]).layers
    p = model.arch["encoder"]["projection_dim"]
    assert out.shape == (3, 1, 5, 2 * p)
    assert torch.equal(out[0, ..., :p], out[0, ..., p:])
    assert np.abs(out[:, 0].numpy() - reference_layers(model, SENTENCES[0])).max() < REFERENCE_TOLERANCE
    # The forward half of the first token has read only it; the backward half the whole sentence.
    first_alone = load_bilm(model.folder).embed([SENTENCES[0][:1]]).layers[:, 0, 0]
    assert (out[1:, 0, 0, :p] - first_alone[1:, :p]).abs().max() <= 1e-6
    assert (out[1:, 0, 0, p:] - first_alone[1:, p:]).abs().max() > 1e-3


def test_swapped_word_markers_are_what_the_model_reads(model):
    out = load_bilm(model.folder).embed(SENTENCES[:1]).layers[:, 0].numpy()
    textbook = reference_layers(model, SENTENCES[0], swapped=False)
    assert np.abs(out - reference_layers(model, SENTENCES[0])).max() < REFERENCE_TOLERANCE
    assert np.abs(out - textbook).max() > 0.05


def test_word_embedding_is_concatenated_before_the_projection(tmp_path: Path):
    """Zeroing the projection's first word_dim input columns removes exactly the word vectors."""
    model = write_efml_model(tmp_path / "m", seed=3)
    bilm = load_bilm(model.folder)
    word_dim = model.arch["token_embedder"]["word_dim"]
    before = bilm.embed([["苹果", "cat"]]).layers[0, 0]
    with torch.no_grad():
        w = bilm.token_encoder.projection.weight
        words = bilm.token_encoder.word_embed[[model.words["苹果"], model.words["cat"]]]
        expected = before[:, : w.shape[0]] - words @ w[:, :word_dim].T
        w[:, :word_dim] = 0
    bilm.clear_type_memo()
    after = bilm.embed([["苹果", "cat"]]).layers[0, 0, :, : w.shape[0]]
    assert torch.allclose(after, expected, atol=1e-6)


def test_outputs_are_deterministic_and_independent_of_the_batch(model):
    """Unlike the original (stateful, random batch order), a sentence's vectors depend on it alone."""
    bilm = load_bilm(model.folder)
    rng = random.Random(0)
    words = ["我", "买了", "六斤", "苹果", "。", "今天", "天气", "真", "好", "the", "cat", "🍎", "未"]
    sentences = [[rng.choice(words) for _ in range(rng.randint(1, 30))] for _ in range(40)]
    together = bilm.embed(sentences).layers
    again = bilm.embed(sentences).layers
    assert torch.equal(together, again)  # repeatable bit for bit (type memo warm or not)
    order = list(range(len(sentences)))
    rng.shuffle(order)
    shuffled = bilm.embed([sentences[i] for i in order[:17]]).layers
    worst = 0.0
    for b, i in enumerate(order[:17]):
        n = len(sentences[i])
        alone = bilm.embed([sentences[i]]).layers[:, 0]
        worst = max(worst, float((alone - together[:, i, :n]).abs().max()),
                    float((shuffled[:, b, :n] - together[:, i, :n]).abs().max()))
    assert worst <= 1e-6
    assert together.dtype == torch.float32


def test_stateful_mode_carries_state_as_the_original_does(model):
    stateless = load_bilm(model.folder)
    stateful = load_bilm(model.folder, stateful=True)
    first = stateful.embed(SENTENCES[:1]).layers
    second = stateful.embed(SENTENCES[:1]).layers
    assert torch.equal(first, stateless.embed(SENTENCES[:1]).layers)
    assert torch.equal(first[0], second[0]) and (first[1:] - second[1:]).abs().max() > 1e-3
    stateful.reset_states()
    assert torch.equal(stateful.embed(SENTENCES[:1]).layers, first)


def test_converted_model_gives_the_same_outputs_bit_for_bit(tmp_path: Path):
    model = write_efml_model(tmp_path / "zhs.model", seed=4)
    original = load_bilm(model.folder)
    expected = original.embed(SENTENCES).layers
    out = convert_efml(model.folder, tmp_path / "converted")
    shutil.rmtree(model.folder)  # the converted directory needs nothing of the original
    assert sorted(p.name for p in out.iterdir()) == ["char.dic", "options.json", "weights.hdf5", "word.dic"]
    converted, record = load_model(out)
    assert record == {"family": "elmoformanylangs", "dir": str(out), "options": None, "weights": None}
    assert model_fingerprint(converted) == model_fingerprint(original)
    assert torch.equal(converted.embed(SENTENCES).layers, expected)


def test_conversion_refuses_an_existing_folder_and_leaves_it_alone(model, tmp_path: Path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an empty directory"):
        convert_efml(model.folder, target)
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    assert convert_efml(model.folder, empty) == empty and (empty / "weights.hdf5").exists()


def test_fingerprint_covers_the_dictionaries(model, tmp_path: Path):
    """The same weights read through another char.dic give other vectors and another fingerprint."""
    other = shutil.copytree(model.folder, tmp_path / "other")
    lines = (other / "char.dic").read_text(encoding="utf-8").splitlines()
    a, b = lines.index(f"苹\t{model.chars['苹']}"), lines.index(f"果\t{model.chars['果']}")
    lines[a], lines[b] = f"苹\t{model.chars['果']}", f"果\t{model.chars['苹']}"
    (other / "char.dic").write_text("\n".join(lines) + "\n", encoding="utf-8")
    original, swapped = load_bilm(model.folder), load_bilm(other)
    assert model_fingerprint(original) != model_fingerprint(swapped)
    assert not torch.equal(original.embed([["苹果"]]).layers, swapped.embed([["苹果"]]).layers)
    assert torch.equal(original.embed([["cat"]]).layers, swapped.embed([["cat"]]).layers)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_outputs_match_the_cpu(model):
    cpu = load_bilm(model.folder).embed(SENTENCES).layers
    gpu = load_bilm(model.folder, device="cuda")
    batch = gpu.prepare(SENTENCES).pin_memory().to("cuda")  # the path precompute feeds
    with torch.inference_mode():
        assert (gpu(batch).layers.cpu() - cpu).abs().max() <= 1e-5
