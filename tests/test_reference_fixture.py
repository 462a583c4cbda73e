"""Our biLM against the outputs the original TensorFlow implementation produced for the fixture."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from elmo import load_bilm
from elmo.token_table import TokenTable, dump_token_embeddings
from elmo.vocab import read_vocab

TOLERANCE = 1e-6  # the reference's own tests use absolute 1e-6 (float32, CPU)


def expected_top_layer(fixture, group: int, batch: int) -> np.ndarray:
    """``(n_tokens, 32)``: forward and backward halves of the reference top layer, concatenated."""
    with h5py.File(fixture / f"lm_embeddings_{group}.hdf5", "r") as f:
        halves = f[str(batch)][...]
    return np.concatenate([halves[0], halves[1]], axis=-1)


def max_error_against_reference(bilm, fixture, sentences, batches) -> float:
    worst = 0.0
    for i in batches:
        batch = [sentences[k][i] for k in range(3)]
        top = bilm.embed(batch).layers[-1].cpu().numpy()
        for k, sentence in enumerate(batch):
            worst = max(worst, float(np.abs(top[k, : len(sentence)] - expected_top_layer(fixture, k, i)).max()))
    return worst


def test_stateless_batch_0_matches_reference(elmo_fixture, fixture_sentences):
    bilm = load_bilm(elmo_fixture / "options.json", elmo_fixture / "lm_weights.hdf5")
    assert max_error_against_reference(bilm, elmo_fixture, fixture_sentences, [0]) < TOLERANCE


def test_stateful_batches_0_to_9_match_reference(elmo_fixture, fixture_sentences):
    bilm = load_bilm(elmo_fixture / "options.json", elmo_fixture / "lm_weights.hdf5", stateful=True)
    assert max_error_against_reference(bilm, elmo_fixture, fixture_sentences, range(10)) < TOLERANCE


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_float32_stateful_batches_match_reference(elmo_fixture, fixture_sentences):
    """float32 on a GPU is IEEE float32 (no TF32 anywhere); only the summation order differs."""
    bilm = load_bilm(elmo_fixture / "options.json", elmo_fixture / "lm_weights.hdf5", stateful=True, device="cuda")
    assert max_error_against_reference(bilm, elmo_fixture, fixture_sentences, range(10)) < 1e-5


def test_stateless_differs_from_reference_after_batch_0(elmo_fixture, fixture_sentences):
    """Batches 1-9 of the reference carry state: a stateless run must not (and does not) match them."""
    bilm = load_bilm(elmo_fixture / "options.json", elmo_fixture / "lm_weights.hdf5")
    assert max_error_against_reference(bilm, elmo_fixture, fixture_sentences, [1]) > 1e-3


def test_token_layer_matches_reference_embeddings(elmo_fixture):
    bilm = load_bilm(elmo_fixture / "options.json", elmo_fixture / "lm_weights.hdf5")
    # 458 tokens: the file's last line ("function") has no trailing newline, so `wc -l` says 457.
    vocab = read_vocab(elmo_fixture / "vocab_test.txt")
    with h5py.File(elmo_fixture / "elmo_token_embeddings.hdf5", "r") as f:
        expected = f["embedding"][...]
    assert len(vocab) == expected.shape[0] == 458
    with torch.no_grad():
        ours = bilm.token_encoder(bilm.token_encoder.type_inputs(vocab)).numpy()
    assert np.abs(ours - expected).max() < TOLERANCE


def test_token_id_input_gives_character_input_outputs(elmo_fixture, fixture_sentences, tmp_path):
    options, weights = elmo_fixture / "options.json", elmo_fixture / "lm_weights.hdf5"
    char_bilm = load_bilm(options, weights)
    table_file = tmp_path / "embedding.hdf5"
    assert dump_token_embeddings(char_bilm, elmo_fixture / "vocab_test.txt", table_file) == 458
    table = TokenTable.from_files(elmo_fixture / "vocab_test.txt", table_file)
    id_bilm = load_bilm(options, weights, token_encoder=table)
    batch = [fixture_sentences[k][0] for k in range(3)]
    assert all(tok in table.token_ids for s in batch for tok in s)  # otherwise <UNK> would differ
    torch.testing.assert_close(id_bilm.embed(batch).layers, char_bilm.embed(batch).layers, rtol=0, atol=0)


def test_token_table_maps_unknown_tokens_to_unk(elmo_fixture, tmp_path):
    bilm = load_bilm(elmo_fixture / "options.json", elmo_fixture / "lm_weights.hdf5")
    dump_token_embeddings(bilm, elmo_fixture / "vocab_test.txt", tmp_path / "e.hdf5")
    table = TokenTable.from_files(elmo_fixture / "vocab_test.txt", tmp_path / "e.hdf5")
    assert table.type_inputs(["zzz-not-a-word"]).tolist() == [table.token_ids["<UNK>"]]
    without_unk = TokenTable(["<S>", "</S>", "a"], torch.zeros(3, 16))
    with pytest.raises(KeyError, match="not in the vocabulary"):
        without_unk.type_inputs(["b"])
