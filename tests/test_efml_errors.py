"""ELMoForManyLangs directories that are broken or hostile: one clear error naming the file."""

from __future__ import annotations

import json
import pickle
import shutil
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import cli
from elmo import load_bilm
from elmo.efml import EfmlFormatError
from elmo.efml.dic import DictionaryError
from elmo.efml.loader import convert_efml
from tests.efml_models import tiny_architecture, write_efml_model


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_efml_model(tmp_path_factory.mktemp("efml") / "zhs.model").folder


@pytest.fixture
def model_dir(pristine: Path, tmp_path: Path) -> Path:
    return shutil.copytree(pristine, tmp_path / "zhs.model")


@pytest.mark.parametrize("name", ["char.dic", "word.dic", "token_embedder.pkl", "encoder.pkl", "tiny_arch.json"])
def test_missing_file_is_named(model_dir: Path, name: str):
    (model_dir / name).unlink()
    with pytest.raises((EfmlFormatError, DictionaryError)) as e:
        load_bilm(model_dir)
    assert str(model_dir / name) in str(e.value) or (name == "tiny_arch.json" and "tiny_arch.json" in str(e.value))


def test_missing_config_json_says_what_a_model_directory_holds(model_dir: Path):
    (model_dir / "config.json").unlink()
    with pytest.raises(ValueError, match=r"no biLM options JSON found \(looked at: tiny_arch.json\).*config.json"):
        load_bilm(model_dir)


def test_cli_reports_one_line_naming_the_file(model_dir: Path, capsys):
    (model_dir / "encoder.pkl").unlink()
    sentences = model_dir.parent / "s.txt"
    sentences.write_text("我 买了 苹果\n", encoding="utf-8")
    assert cli.main(["embed", "--model", str(model_dir), str(sentences)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {model_dir / 'encoder.pkl'}: file not found"


def edit_arch(model_dir: Path, **overrides) -> None:
    (model_dir / "tiny_arch.json").write_text(json.dumps(tiny_architecture(**overrides)))


@pytest.mark.parametrize("overrides, file, words", [
    ({"filters": [[1, 4], [2, 6], [3, 9]]}, "token_embedder.pkl",
     "key 'convolutions.2.weight' has shape (8, 6, 3), but"),
    ({"filters": [[1, 4], [2, 6]]}, "token_embedder.pkl", "keys ['convolutions.2.bias', 'convolutions.2.weight'] are not part"),
    ({"word_dim": 7}, "token_embedder.pkl", "key 'word_emb_layer.embedding.weight' has shape"),
    ({"word_dim": 0}, "token_embedder.pkl", "keys ['word_emb_layer.embedding.weight'] are not part"),
    ({"n_layers": 1}, "encoder.pkl", "are not part of the model"),
    ({"n_layers": 3}, "encoder.pkl", "key 'forward_layer_2.input_linearity.weight' is missing"),
    ({"dim": 32}, "encoder.pkl", "key 'forward_layer_0.input_linearity.weight' has shape (64, 8), but"),
])
def test_config_that_does_not_fit_the_state_dict_is_named(model_dir: Path, overrides, file: str, words: str):
    edit_arch(model_dir, **overrides)
    with pytest.raises(EfmlFormatError) as e:
        load_bilm(model_dir)
    message = str(e.value)
    assert message.startswith(f"{model_dir / file}: ") and words in message
    assert str(model_dir / "tiny_arch.json") in message


def test_dictionary_that_does_not_fit_the_state_dict_is_named(model_dir: Path):
    with open(model_dir / "char.dic", "a", encoding="utf-8") as f:
        f.write(f"新\t{len((model_dir / 'char.dic').read_text(encoding='utf-8').splitlines())}\n")
    with pytest.raises(EfmlFormatError, match=r"token_embedder.pkl: key 'char_emb_layer.embedding.weight' has shape"
                                              r" \(\d+, 6\), but .* \(\d+ characters, \d+ words\) requires"):
        load_bilm(model_dir)


@pytest.mark.parametrize("line, words", [("苹\t3\t4", "3 tab-separated fields"), ("苹", "id '苹' is not an integer"),
                                         ("b\t0", "'b' is already on line")])
def test_malformed_or_duplicate_dic_line_is_named(model_dir: Path, line: str, words: str):
    lines = (model_dir / "char.dic").read_text(encoding="utf-8").splitlines()
    lines.insert(10, line)
    (model_dir / "char.dic").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DictionaryError) as e:
        load_bilm(model_dir)
    assert str(e.value).startswith(f"{model_dir / 'char.dic'}:11: ") and words in str(e.value)


class CreatesAFile:
    """A pickle payload: unpickling it calls ``open(path, "w")``, creating the file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


HOSTILE_SAVERS = {
    "zip": lambda obj, path: torch.save(obj, path),
    "legacy": lambda obj, path: torch.save(obj, path, _use_new_zipfile_serialization=False),
    "plain pickle": lambda obj, path: path.write_bytes(pickle.dumps(obj, protocol=2)),
}


@pytest.mark.parametrize("fmt", HOSTILE_SAVERS)
@pytest.mark.parametrize("name", ["token_embedder.pkl", "encoder.pkl"])
def test_pickle_with_code_is_refused_and_never_runs(model_dir: Path, tmp_path: Path, fmt: str, name: str):
    marker = tmp_path / "code-ran"
    payload = OrderedDict(weight=CreatesAFile(marker)) if fmt != "plain pickle" else CreatesAFile(marker)
    HOSTILE_SAVERS[fmt](payload, model_dir / name)
    # The payload is live: a plain unpickling of the object runs it.
    pickle.loads(pickle.dumps(CreatesAFile(marker)))
    assert marker.exists()
    marker.unlink()
    with pytest.raises(EfmlFormatError) as e:
        load_bilm(model_dir)
    assert str(e.value).startswith(f"{model_dir / name}: refused on purpose: reading it would run ")
    assert "io.open" in str(e.value) and "safe_globals" not in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("content, words", [
    ({"convolutions.0.weight": 1.5}, "entry 'convolutions.0.weight' holds a float"),
    ({"convolutions.0.weight": torch.zeros(2, dtype=torch.int64)}, "holds a torch.int64 tensor"),
    ([torch.zeros(2)], "holds a list, not a state dict"),
    (torch.zeros(2), "holds a Tensor, not a state dict"),
])
def test_pickle_of_anything_but_named_tensors_is_refused(model_dir: Path, content, words: str):
    torch.save(content, model_dir / "token_embedder.pkl")
    with pytest.raises(EfmlFormatError) as e:
        load_bilm(model_dir)
    assert str(e.value).startswith(f"{model_dir / 'token_embedder.pkl'}: ") and words in str(e.value)


@pytest.mark.parametrize("data", [b"", b"not a pickle at all", None])
def test_truncated_or_foreign_pickle_is_named(model_dir: Path, data: bytes | None):
    path = model_dir / "encoder.pkl"
    path.write_bytes(path.read_bytes()[:300] if data is None else data)
    with pytest.raises(EfmlFormatError, match=f"^{path}: not a readable torch state dict"):
        load_bilm(model_dir)


def test_converted_directory_with_other_dictionaries_is_named(model_dir: Path, tmp_path: Path):
    converted = convert_efml(model_dir, tmp_path / "converted")
    with open(converted / "word.dic", "a", encoding="utf-8") as f:
        f.write("新词\t16\n")
    with pytest.raises(DictionaryError, match=f"^{converted / 'word.dic'}: has 17 entries, but the options.json"):
        load_bilm(converted)
    (converted / "char.dic").unlink()
    with pytest.raises(DictionaryError, match=f"^{converted / 'char.dic'}: file not found"):
        load_bilm(converted)


def test_classifier_pickle_is_never_read(model_dir: Path, tmp_path: Path):
    """Training's optional classifier.pkl plays no part at inference, even a hostile one."""
    marker = tmp_path / "code-ran"
    torch.save(OrderedDict(weight=CreatesAFile(marker)), model_dir / "classifier.pkl")
    assert load_bilm(model_dir).embed([["苹果"]]).layers.shape == (3, 1, 1, 16)
    assert not marker.exists()
