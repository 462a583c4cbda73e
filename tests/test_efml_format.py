"""ELMoForManyLangs directories, the format facts: .dic reading, ids, config resolution, layouts."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from elmo.efml import EfmlFormatError
from elmo.efml.config import SAMPLE_CONFIGS, architecture_options, read_architecture, resolve_config
from elmo.efml.dic import DictionaryError, read_dic, write_dic
from elmo.efml.state_dict import encoder_entries, token_embedder_entries
from elmo.efml.vocab import EfmlChars, EfmlWords
from elmo.bilm import BiLM
from elmo.char_cnn import CharCNN
from tests.efml_models import SAMPLE_NAME, write_efml_model


def dic(tmp_path: Path, text: str) -> dict[str, int]:
    path = tmp_path / "x.dic"
    path.write_bytes(text.encode("utf-8"))
    return read_dic(path)


# --- .dic reading: the original's rules, exactly ----------------------------------------


def test_lines_are_stripped_of_all_unicode_whitespace(tmp_path: Path):
    assert dic(tmp_path, "a\t0\n  b\t1 \n\u00a0c\t2\u3000\n\td\t3\r\n") == {"a": 0, "b": 1, "c": 2, "d": 3}


@pytest.mark.parametrize("space", [" ", "\u00a0", "\u3000", "\u2003"])
def test_a_whitespace_entry_reads_as_ideographic_space(tmp_path: Path, space: str):
    assert dic(tmp_path, f"a\t0\n{space}\t1\n") == {"a": 0, "\u3000": 1}


@pytest.mark.parametrize("brk", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\r"])
def test_lines_break_where_str_splitlines_breaks(tmp_path: Path, brk: str):
    assert dic(tmp_path, f"a\t0{brk}b\t1\n") == {"a": 0, "b": 1}


@pytest.mark.parametrize("text, line, words", [
    ("a\t0\nb\t1\t2\n", 2, "3 tab-separated fields"),
    ("a\t0\nb\tone\n", 2, "id 'one' is not an integer"),
    ("a\t0\n\nb\t1\n", 2, "id '' is not an integer"),  # a blank line: the original fails too
    ("a\t0\nb\t1\na\t2\n", 3, "'a' is already on line 1"),
    ("a\t0\n \t1\n\u3000\t2\n", 3, "already on line 2 (every whitespace entry reads as U+3000"),
    ("a\t0\nb\t0\n", 2, "id 0 of 'b' is already the id of 'a' (line 1)"),
    ("a\t0\nb\t5\n", 2, "id 5 of 'b' is outside 0..1"),
    ("a\t0\nb\t-1\n", 2, "outside"),
])
def test_malformed_or_duplicate_lines_name_file_and_line(tmp_path: Path, text: str, line: int, words: str):
    with pytest.raises(DictionaryError) as e:
        dic(tmp_path, text)
    assert f"x.dic:{line}: " in str(e.value) and words in str(e.value)


def test_invalid_utf8_names_the_line(tmp_path: Path):
    (tmp_path / "x.dic").write_bytes(b"a\t0\nb\t1\n\xff\t2\n")
    with pytest.raises(DictionaryError, match=r"x.dic:3: not UTF-8"):
        read_dic(tmp_path / "x.dic")


def test_written_dictionary_reads_back_identically(tmp_path: Path):
    table = {"<pad>": 2, "\u3000": 0, "苹": 1, "🍎": 3, "a b": 4}
    write_dic(table, tmp_path / "t.dic")
    assert read_dic(tmp_path / "t.dic") == table
    with pytest.raises(DictionaryError):
        write_dic({"a\u2028b": 0}, tmp_path / "u.dic")


# --- characters and words → ids --------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    return write_efml_model(tmp_path_factory.mktemp("efml") / "m", arch=None)


def chars_of(model, max_characters: int = 12) -> EfmlChars:
    return EfmlChars(read_dic(model.folder / "char.dic"), max_characters)


def test_char_dic_reads_as_training_wrote_it(model):
    table = read_dic(model.folder / "char.dic")
    assert table == model.chars
    assert list(table)[:5] == list("<bos>")  # training reads the characters of <bos> first
    assert list(table)[-6:] == ["<bos>", "<eos>", "<oov>", "<pad>", "<bow>", "<eow>"]
    assert read_dic(model.folder / "word.dic") == model.words
    assert list(model.words)[:4] == ["<oov>", "<bos>", "<eos>", "<pad>"]


def test_token_row_has_swapped_word_markers_then_padding(model):
    c = model.chars
    row = chars_of(model).ids(["苹果"])[0]
    assert row.tolist() == [c["<eow>"], c["苹"], c["果"], c["<bow>"]] + [c["<pad>"]] * 8


def test_sentence_boundaries_and_a_user_token_spelled_like_one(model):
    c, mapping = model.chars, chars_of(model)
    assert mapping.boundary_tokens == ("<bos>", "<eos>")
    rows = mapping.ids(["<bos>", "<eos>", "<S>", "<oov>"])
    assert rows[0, :4].tolist() == [c["<eow>"], c["<bos>"], c["<bow>"], c["<pad>"]]
    assert rows[1, :3].tolist() == [c["<eow>"], c["<eos>"], c["<bow>"]]
    assert rows[2, :5].tolist() == [c["<eow>"], c["<"], c["<oov>"], c[">"], c["<bow>"]]
    assert rows[3, 1:6].tolist() == [c["<"], c["o"], c["o"], c["v"], c[">"]]  # spelled out


def test_unknown_characters_are_oov_code_points_unnormalised(model):
    c, mapping = model.chars, chars_of(model)
    row = mapping.ids(["a未🍎Aé"])[0]
    # 未 is unknown; 🍎 is one code point; A is not lowercased; é (U+00E9) is not in the corpus.
    assert row[1:7].tolist() == [c["a"], c["<oov>"], c["🍎"], c["A"], c["<oov>"], c["<bow>"]]
    assert mapping.ids(["e\u0301"])[0, 1:3].tolist() == [c["e"], c["<oov>"]]  # no normalisation


def test_token_that_is_u3000_has_its_own_ids(model):
    row = chars_of(model).ids(["\u3000"])[0]
    assert row[1] == model.chars["\u3000"] != model.chars["<oov>"]
    words = EfmlWords(read_dic(model.folder / "word.dic"), 12)
    assert words.ids(["\u3000"])[0] == model.words["\u3000"] != model.words["<oov>"]


def test_long_tokens_are_cut_to_max_minus_two_code_points(model):
    c = model.chars
    mapping = chars_of(model, max_characters=50)
    row = mapping.ids(["苹" * 60])[0]
    assert row.tolist() == [c["<eow>"]] + [c["苹"]] * 48 + [c["<bow>"]]
    assert (mapping.ids(["苹" * 48]) == mapping.ids(["苹" * 60])).all()
    words = EfmlWords({**model.words, "苹" * 48: len(model.words)}, 50)  # the cut token is the word looked up
    assert words.ids(["苹" * 60, "苹" * 48, "苹" * 47]).tolist() == [len(model.words)] * 2 + [model.words["<oov>"]]


def test_word_ids_exact_case_sensitive_oov_and_literal_boundaries(model):
    w = model.words
    ids = EfmlWords(read_dic(model.folder / "word.dic"), 12).ids(["cat", "Cat", "苹果", "<bos>", "<eos>", "nope"])
    assert ids.tolist() == [w["cat"], w["<oov>"], w["苹果"], w["<bos>"], w["<eos>"], w["<oov>"]]


def test_special_ids_are_looked_up_by_name(tmp_path: Path):
    model = write_efml_model(tmp_path / "m", specials_first=True)
    c = model.chars
    assert c["<bos>"] == 0 and c["<eow>"] == 5
    row = chars_of(model).ids(["a"])[0]
    assert row[:4].tolist() == [5, c["a"], 4, 3]


def test_missing_special_entry_is_an_error(tmp_path: Path):
    with pytest.raises(DictionaryError, match=r"lacks the special entries \['<bow>'\]"):
        EfmlChars({"a": 0, "<bos>": 1, "<eos>": 2, "<oov>": 3, "<pad>": 4, "<eow>": 5}, 12, "char.dic")
    with pytest.raises(DictionaryError, match=r"word.dic: lacks the special entries \['<pad>'\]"):
        EfmlWords({"<oov>": 0}, 12, "word.dic")


# --- config.json → architecture --------------------------------------------------------


def test_relative_config_path_is_used_without_warning(tmp_path: Path, caplog):
    model = write_efml_model(tmp_path / "m", config_path="relative")
    with caplog.at_level(logging.WARNING):
        assert resolve_config(model.folder) == model.folder / "tiny_arch.json"
    assert not caplog.records


def test_stale_absolute_config_path_falls_back_to_the_directory(tmp_path: Path, caplog):
    model = write_efml_model(tmp_path / "m")  # config_path /users4/.../tiny_arch.json
    with caplog.at_level(logging.WARNING):
        assert resolve_config(model.folder) == model.folder / "tiny_arch.json"
    assert "does not exist; using" in caplog.text


def test_absolute_config_path_that_exists_is_kept(tmp_path: Path):
    model = write_efml_model(tmp_path / "m")
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text((model.folder / "tiny_arch.json").read_text())
    config = json.loads((model.folder / "config.json").read_text())
    (model.folder / "config.json").write_text(json.dumps({**config, "config_path": str(elsewhere)}))
    assert resolve_config(model.folder) == elsewhere


def test_missing_architecture_falls_back_to_the_bundled_sample(tmp_path: Path, caplog):
    model = write_efml_model(tmp_path / "m", config_path="sample")
    with caplog.at_level(logging.WARNING):
        assert resolve_config(model.folder) == SAMPLE_CONFIGS / SAMPLE_NAME
    arch = read_architecture(SAMPLE_CONFIGS / SAMPLE_NAME)
    assert arch["encoder"] == {"name": "elmo", "projection_dim": 512, "cell_clip": 3, "proj_clip": 3,
                               "dim": 4096, "n_layers": 2}
    assert arch["token_embedder"] == {
        "name": "cnn", "activation": "relu", "n_highway": 2, "word_dim": 100, "char_dim": 50,
        "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]],
        "max_characters_per_token": 50}
    zero = SAMPLE_CONFIGS / "cnn_0_100_512_4096_sample.json"
    assert zero.read_bytes() == (SAMPLE_CONFIGS / SAMPLE_NAME).read_bytes()  # not a chars-free model


def test_config_found_nowhere_names_every_place_tried(tmp_path: Path):
    model = write_efml_model(tmp_path / "m")
    (model.folder / "tiny_arch.json").unlink()
    with pytest.raises(EfmlFormatError) as e:
        resolve_config(model.folder)
    message = str(e.value)
    assert "config.json: config_path '/users4/conll18st/elmo/src/configs/tiny_arch.json'" in message
    assert str(model.folder / "tiny_arch.json") in message and str(SAMPLE_CONFIGS / "tiny_arch.json") in message


def test_sample_architecture_has_the_published_state_dict_layout():
    """22 + 16 keys; 18,503,744 + 100 V_w + 50 V_c and 75,563,008 parameters."""
    arch = read_architecture(SAMPLE_CONFIGS / SAMPLE_NAME)
    n_chars, n_words = 40, 30
    options = architecture_options(arch, n_chars, n_words, "sample")
    chars = EfmlChars({**{str(i): i for i in range(n_chars - 6)},
                       **{s: n_chars - 6 + k for k, s in enumerate(["<bos>", "<eos>", "<oov>", "<pad>", "<bow>", "<eow>"])}}, 50)
    words = EfmlWords({"<oov>": 0, "<pad>": 1, **{str(i): i for i in range(2, n_words)}}, 50)
    bilm = BiLM(options, token_encoder=CharCNN(options.char_cnn, 512, chars, words), type_memo_size=0)
    te, enc = token_embedder_entries(bilm.token_encoder), encoder_entries(bilm.lstm)
    assert len(te) == 22 and len(enc) == 16
    assert sum(np.prod(e.shape) for e in te) == 18_503_744 + 100 * n_words + 50 * n_chars
    assert sum(np.prod(e.shape) for e in enc) == 75_563_008
    shapes = {e.name: e.shape for e in te + enc}
    assert shapes["projection.weight"] == (512, 2148)
    assert shapes["highways._layers.1.weight"] == (4096, 2048)
    assert shapes["convolutions.6.weight"] == (1024, 50, 7)
    assert shapes["backward_layer_1.input_linearity.weight"] == (16384, 512)
    assert shapes["forward_layer_0.state_projection.weight"] == (512, 4096)
    assert [e.name for e in enc[:4]] == [f"forward_layer_0.{k}" for k in (
        "input_linearity.weight", "state_linearity.weight", "state_linearity.bias", "state_projection.weight")]


@pytest.mark.parametrize("change, words", [
    (lambda a: a["encoder"].update(name="lstm"), "encoder.name 'lstm' is not supported"),
    (lambda a: a["token_embedder"].update(name="lstm"), "token_embedder.name 'lstm' is not supported"),
    (lambda a: a["token_embedder"].update(char_dim=0), "words-only model"),
    (lambda a: a["token_embedder"].update(activation="gelu"), "token_embedder.activation"),
    (lambda a: a["encoder"].pop("dim"), "'dim' is a required property"),
])
def test_unsupported_or_invalid_architecture_is_named(tmp_path: Path, change, words: str):
    model = write_efml_model(tmp_path / "m")
    arch = json.loads((model.folder / "tiny_arch.json").read_text())
    change(arch)
    (model.folder / "tiny_arch.json").write_text(json.dumps(arch))
    with pytest.raises(EfmlFormatError, match="tiny_arch.json") as e:
        read_architecture(model.folder / "tiny_arch.json")
    assert words in str(e.value)


def test_upper_case_names_are_accepted(tmp_path: Path):
    model = write_efml_model(tmp_path / "m")
    arch = json.loads((model.folder / "tiny_arch.json").read_text())
    arch["encoder"]["name"], arch["token_embedder"]["name"] = "ELMo", "CNN"
    (model.folder / "tiny_arch.json").write_text(json.dumps(arch))
    assert read_architecture(model.folder / "tiny_arch.json")["encoder"]["name"] == "ELMo"

