"""options.json validation and the published HDF5 weight layout."""

from __future__ import annotations

import json

import h5py
import pytest
import torch

from elmo import BiLM, BiLMOptions, OptionsError, load_bilm
from elmo.token_table import TokenTable
from elmo.weights import WeightFileError, model_fingerprint, save_weights
from tests.tiny import tiny_bilm, tiny_options

SENTENCES = [["The", "cat", "sat", "."], ["苹果", "很", "好吃"], ["x" * 200]]


def test_fixture_options_parse(elmo_fixture):
    options = BiLMOptions.from_file(elmo_fixture / "options.json")
    assert options.char_cnn.filters == ((1, 4), (2, 8), (3, 16), (4, 32), (5, 64))
    assert options.lstm.use_skip_connections and options.output_dim == 32


@pytest.mark.parametrize("mutate, message", [
    (lambda o: o["lstm"].pop("dim"), "lstm: 'dim' is a required property"),
    (lambda o: o["char_cnn"].update(activation="gelu"), "char_cnn.activation"),
    (lambda o: o["char_cnn"].update(filters=[[1]]), "char_cnn.filters.0"),
    (lambda o: o.pop("char_cnn"), "'char_cnn' is a required property"),
])
def test_invalid_options_name_the_key(tmp_path, mutate, message):
    raw = tiny_options().to_dict()
    mutate(raw)
    path = tmp_path / "options.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(OptionsError, match="options.json") as err:
        BiLMOptions.from_file(path)
    assert message in str(err.value)


def test_options_file_that_is_not_json(tmp_path):
    path = tmp_path / "options.json"
    path.write_text('{"lstm": ')
    with pytest.raises(OptionsError, match="line 1: not valid JSON"):
        BiLMOptions.from_file(path)


@pytest.mark.parametrize("overrides", [
    {"use_skip_connections": False},
    {"activation": "tanh", "n_highway": 0},
    {"n_layers": 3, "n_highway": 3},
    {"n_layers": 1, "filters": [[2, 5], [4, 7]], "cell_clip": None, "proj_clip": None},
])
def test_every_option_round_trips_through_the_weight_file(tmp_path, overrides):
    bilm = tiny_bilm(**overrides)
    options_path, weights_path = tmp_path / "options.json", tmp_path / "weights.hdf5"
    bilm.options.save(options_path)
    save_weights(bilm, weights_path)
    loaded = load_bilm(options_path, weights_path)
    out = loaded.embed(SENTENCES)
    assert out.layers.shape == (1 + bilm.options.lstm.n_layers, 3, 4, bilm.options.output_dim)
    torch.testing.assert_close(out.layers, bilm.embed(SENTENCES).layers, rtol=0, atol=0)
    assert model_fingerprint(loaded) == model_fingerprint(bilm)


def test_skip_connections_change_the_output():
    with_skip, without = tiny_bilm(use_skip_connections=True), tiny_bilm(use_skip_connections=False)
    assert not torch.allclose(with_skip.embed(SENTENCES).layers[2], without.embed(SENTENCES).layers[2])


def test_fixture_weight_file_round_trips_dataset_for_dataset(elmo_fixture, tmp_path):
    bilm = load_bilm(elmo_fixture / "options.json", elmo_fixture / "lm_weights.hdf5")
    save_weights(bilm, tmp_path / "w.hdf5")
    with h5py.File(elmo_fixture / "lm_weights.hdf5") as original, h5py.File(tmp_path / "w.hdf5") as ours:
        names = []
        original.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        for name in names:
            assert (original[name][...] == ours[name][...]).all(), name


def _weights_with(tmp_path, edit) -> tuple:
    bilm = tiny_bilm()
    options_path, weights_path = tmp_path / "options.json", tmp_path / "weights.hdf5"
    bilm.options.save(options_path)
    save_weights(bilm, weights_path)
    with h5py.File(weights_path, "a") as f:
        edit(f)
    return options_path, weights_path


def test_weight_shape_mismatch_names_dataset_and_shapes(tmp_path):
    name = "RNN_0/RNN/MultiRNNCell/Cell1/LSTMCell/W_P_0"

    def edit(f):
        del f[name]
        f.create_dataset(name, data=torch.zeros(24, 9).numpy())
    options_path, weights_path = _weights_with(tmp_path, edit)
    with pytest.raises(WeightFileError, match=r"W_P_0' has shape \(24, 9\), but the options require \(24, 8\)"):
        load_bilm(options_path, weights_path)


def test_missing_dataset_is_named(tmp_path):
    options_path, weights_path = _weights_with(tmp_path, lambda f: f.__delitem__("CNN_high_0/W_carry"))
    with pytest.raises(WeightFileError, match="'CNN_high_0/W_carry' is missing"):
        load_bilm(options_path, weights_path)


def test_weight_file_with_more_layers_than_options(tmp_path):
    def edit(f):
        f.create_dataset("RNN_0/RNN/MultiRNNCell/Cell2/LSTMCell/B", data=torch.zeros(96).numpy())
    options_path, weights_path = _weights_with(tmp_path, edit)
    with pytest.raises(WeightFileError, match="Cell2/LSTMCell/B"):
        load_bilm(options_path, weights_path)


def test_weight_file_that_is_not_hdf5(tmp_path):
    (tmp_path / "w.hdf5").write_text("not hdf5")
    tiny_options().save(tmp_path / "o.json")
    with pytest.raises(WeightFileError, match="cannot read weight file"):
        load_bilm(tmp_path / "o.json", tmp_path / "w.hdf5")


def test_fingerprint_changes_with_any_weight():
    bilm = tiny_bilm()
    before = model_fingerprint(bilm)
    with torch.no_grad():
        bilm.lstm.layers[1].w_proj[1, 0, 0] += 1e-3
    assert model_fingerprint(bilm) != before


def test_fingerprint_covers_a_token_table_encoder():
    bilm = tiny_bilm()
    vocab = ["<S>", "</S>", "<UNK>", "cat", "dog"]
    with torch.no_grad():
        table = bilm.token_encoder(bilm.token_encoder.type_inputs(vocab))  # (n_vocab, projection_dim)

    def with_table(tokens: list[str], rows: torch.Tensor) -> str:
        fast = BiLM(bilm.options, token_encoder=TokenTable(tokens, rows.clone()))
        fast.lstm.load_state_dict(bilm.lstm.state_dict())
        return model_fingerprint(fast)

    same = with_table(vocab, table)
    assert with_table(vocab, table) == same
    changed = table.clone()
    changed[3, 0] += 1e-3
    assert with_table(vocab, changed) != same  # one vector of one token
    assert with_table(vocab[:3] + ["dog", "cat"], table) != same  # the rows mean other tokens


def _model_folder(folder, options_name: str, weights_name: str, seed: int = 0):
    folder.mkdir()
    bilm = tiny_bilm(seed)
    bilm.options.save(folder / options_name)
    save_weights(bilm, folder / weights_name)
    return bilm


def test_model_folder_with_allennlp_names_loads(tmp_path):
    prefix = "elmo_2x4096_512_2048cnn_2xhighway"
    bilm = _model_folder(tmp_path / "allennlp", f"{prefix}_options.json", f"{prefix}_weights.hdf5")
    (tmp_path / "allennlp" / "notes.json").write_text('{"source": "s3"}')  # other files are ignored
    loaded = load_bilm(tmp_path / "allennlp")
    assert model_fingerprint(loaded) == model_fingerprint(bilm)


def test_fixture_folder_loads_by_content(elmo_fixture):
    """bilm-tf's lm_weights.hdf5 beside reference outputs (other HDF5 files without LSTM weights)."""
    loaded = load_bilm(elmo_fixture)
    reference = load_bilm(elmo_fixture / "options.json", elmo_fixture / "lm_weights.hdf5")
    assert model_fingerprint(loaded) == model_fingerprint(reference)


def test_model_folder_without_a_pair_lists_what_it_found(tmp_path):
    _model_folder(tmp_path / "two", "options.json", "a.hdf5")
    save_weights(tiny_bilm(1), tmp_path / "two" / "b.h5")
    with pytest.raises(ValueError, match=r"2 files could be its weights HDF5 \(a.hdf5, b.h5\).*--options FILE "
                                         r"--weights FILE"):
        load_bilm(tmp_path / "two")
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "config.yaml.json").write_text("[]")
    with pytest.raises(ValueError, match=r"no biLM options JSON found \(looked at: config.yaml.json\)"):
        load_bilm(tmp_path / "none")
