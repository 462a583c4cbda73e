"""``elmo-cache elmo``: AllenNLP's ``elmo`` command, its flags and its output layout, computed
by precompute + the AllenNLP export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from cli import main
from tests.cache_models import save_tiny_model

# A repeated sentence, a double space inside a line, spaces around one, Chinese.
LINES = ["The cat sat on the mat .", "我 买了  六斤 苹果 。", "  He went to the bank .  ",
         "The cat sat on the mat .", "a"]


@pytest.fixture(scope="module")
def allennlp_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model in a folder named as AllenNLP's downloads are."""
    folder = tmp_path_factory.mktemp("elmo_2x4096")
    options, weights = save_tiny_model(folder)
    options.rename(folder / "elmo_2x4096_512_2048cnn_2xhighway_options.json")
    weights.rename(folder / "elmo_2x4096_512_2048cnn_2xhighway_weights.hdf5")
    return folder


@pytest.fixture
def sentences(tmp_path: Path) -> Path:
    path = tmp_path / "sentences.txt"
    path.write_text("".join(line + "\n" for line in LINES), encoding="utf-8")
    return path


def _elmo(*args: str) -> None:
    assert main(["elmo", *args, "--cuda-device", "-1", "-q"]) == 0


def test_output_reads_as_allennlps_docs_read_it(allennlp_model: Path, sentences: Path, tmp_path: Path):
    out = tmp_path / "elmo_layers.hdf5"
    _elmo(str(sentences), str(out), "--all", "--model", str(allennlp_model))
    with h5py.File(out, "r") as h5py_file:  # the reading code of AllenNLP's ELMo how-to
        for i, line in enumerate(LINES):
            embedding = h5py_file.get(str(i))
            assert embedding.dtype == np.float32
            assert len(embedding) == 3  # one layer for each vector
            assert len(embedding[0]) == len(line.split())  # one entry for each word in the source sentence
            assert embedding.shape[2] == 16
        sentence_to_index = json.loads(h5py_file.get("sentence_to_index")[0])
        assert set(h5py_file) == {"0", "1", "2", "3", "4", "sentence_to_index"}
    # the stripped line (inner spacing kept) → its index; a repeated sentence → its last line
    assert sentence_to_index == {"The cat sat on the mat .": "3", "我 买了  六斤 苹果 。": "1",
                                 "He went to the bank .": "2", "a": "4"}
    assert not Path(f"{out}.elmo.zarr").exists()  # the staging store is gone once the file is whole


def test_values_equal_precompute_and_export(allennlp_model: Path, sentences: Path, tmp_path: Path):
    store = tmp_path / "all.zarr"
    assert main(["precompute", str(sentences), "-o", str(store), "--model", str(allennlp_model), "--tokenizer",
                 "whitespace", "--dtype", "float32", "--device", "cpu", "-q"]) == 0
    for mode in ("all", "top", "average"):
        exported, dropped_in = tmp_path / f"export_{mode}.hdf5", tmp_path / f"elmo_{mode}.hdf5"
        assert main(["export-allennlp", str(store), str(exported), f"--{mode}"]) == 0
        _elmo(str(sentences), str(dropped_in), f"--{mode}", "--model", str(allennlp_model))
        with h5py.File(exported, "r") as a, h5py.File(dropped_in, "r") as b:
            assert set(a) == set(b)
            for i, line in enumerate(LINES):
                shape = (3, len(line.split()), 16) if mode == "all" else (len(line.split()), 16)
                assert b[str(i)].shape == shape
                if mode == "average":  # a mix with weights 1/3 in the engine vs numpy's mean of the layers
                    np.testing.assert_allclose(b[str(i)][...], a[str(i)][...], rtol=0, atol=1e-6)
                else:
                    np.testing.assert_array_equal(b[str(i)][...], a[str(i)][...])


def test_sentence_keys_and_forgotten_sentences(allennlp_model: Path, sentences: Path, tmp_path: Path):
    model = ["--options-file", str(next(allennlp_model.glob("*options.json"))),
             "--weight-file", str(next(allennlp_model.glob("*weights.hdf5")))]
    _elmo(str(sentences), str(tmp_path / "forget.hdf5"), "--top", "--forget-sentences", *model)
    with h5py.File(tmp_path / "forget.hdf5", "r") as f:
        assert set(f) == {"0", "1", "2", "3", "4"}
    distinct = tmp_path / "distinct.txt"
    distinct.write_text("".join(line + "\n" for line in LINES[:3]), encoding="utf-8")
    _elmo(str(distinct), str(tmp_path / "keys.hdf5"), "--top", "--use-sentence-keys", "--batch-size", "1", *model)
    with h5py.File(tmp_path / "keys.hdf5", "r") as f, h5py.File(tmp_path / "forget.hdf5", "r") as g:
        assert set(f) == {line.strip() for line in LINES[:3]}
        # other batches, the same vectors (no state carried between batches; float rounding aside)
        np.testing.assert_allclose(f["我 买了  六斤 苹果 。"][...], g["1"][...], rtol=0, atol=1e-6)


def test_bad_inputs_are_named(allennlp_model: Path, sentences: Path, tmp_path: Path, capsys):
    model = ["--model", str(allennlp_model), "--cuda-device", "-1", "-q"]
    blank = tmp_path / "blank.txt"
    blank.write_text("a b\n\nc\n", encoding="utf-8")
    assert main(["elmo", str(blank), str(tmp_path / "o.hdf5"), "--all", *model]) == 2
    assert capsys.readouterr().err == (f"error: {blank}: blank line 2: elmo writes one dataset per line and "
                                       "refuses blank lines, as AllenNLP's does; remove them\n")
    assert main(["elmo", "/dev/stdin", str(tmp_path / "o.hdf5"), "--all", *model]) == 2
    assert capsys.readouterr().err.startswith("error: elmo reads its input twice (to embed, then for the keys): "
                                              "save /dev/stdin to a file first")
    old_mac = tmp_path / "old_mac.txt"  # a lone CR ends a line, as in AllenNLP (Python's universal newlines)
    old_mac.write_bytes("\r".join(LINES).encode())
    _elmo(str(old_mac), str(tmp_path / "mac.hdf5"), "--top", *model[:2])
    with h5py.File(tmp_path / "mac.hdf5", "r") as f:
        assert [f[str(i)].shape[0] for i in range(len(LINES))] == [len(line.split()) for line in LINES]
    assert main(["elmo", str(sentences), str(tmp_path / "o.hdf5"), "--all", "--use-sentence-keys", *model]) == 2
    assert "sentences.txt: line 4: the sentence of line 1 again" in capsys.readouterr().err
    assert not (tmp_path / "o.hdf5").exists()
    mine = tmp_path / "mine.hdf5"
    mine.write_text("not an export")
    assert main(["elmo", str(sentences), str(mine), "--all", *model]) == 2
    assert "exists and is not an AllenNLP export" in capsys.readouterr().err and mine.read_text() == "not an export"
    shutil.rmtree(tmp_path / "o.hdf5.elmo.zarr")
    with pytest.raises(SystemExit):  # a mode is required, as in AllenNLP
        main(["elmo", str(sentences), str(tmp_path / "o.hdf5")])
