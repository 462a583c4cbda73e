"""`python cli.py --help` and the `embed` smoke tool."""

from __future__ import annotations

import subprocess
import sys

from cli import main
from tests.conftest import REPO


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, str(REPO / "cli.py"), "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "embed" in out


def test_embed_prints_shape_per_sentence(elmo_fixture, tmp_path, capsys):
    text = tmp_path / "sentences.txt"
    text.write_text("The cat sat on the mat .\n苹果 很 好吃\n", encoding="utf-8")
    code = main(["embed", str(text), "--options", str(elmo_fixture / "options.json"),
                 "--weights", str(elmo_fixture / "lm_weights.hdf5"), "--device", "cpu", "--batch-size", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0].startswith("1\t7 tokens\tshape (3, 7, 32)")
    assert lines[1].startswith("2\t3 tokens\tshape (3, 3, 32)")


def test_embed_reports_a_bad_weight_file(elmo_fixture, tmp_path, capsys):
    bad = tmp_path / "weights.hdf5"
    bad.write_bytes(b"nope")
    code = main(["embed", "--options", str(elmo_fixture / "options.json"), "--weights", str(bad)])
    assert code == 2
    assert "cannot read weight file" in capsys.readouterr().err


def test_embed_an_empty_line_prints_no_nan(tmp_path, capsys):
    (tmp_path / "s.txt").write_text("a b\n\nc\n", encoding="utf-8")
    assert main(["embed", str(tmp_path / "s.txt"), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "nan" not in "".join(lines).lower()
    assert lines[1] == "2\t0 tokens\tshape (3, 0, 128)\tempty line: no vectors"


def test_strings_for_sentences_are_a_type_error_with_the_fix():
    import pytest

    from elmo import load_default_bilm

    bilm = load_default_bilm()
    with pytest.raises(TypeError, match=r"sentence 1 is the string 'a sentence', not a list of tokens: "
                                        r"pass \[s.split\(\) for s in sentences\]"):
        bilm.embed([["ok"], "a sentence"])
    with pytest.raises(TypeError, match=r"use \['a sentence'.split\(\)\]"):
        bilm.embed("a sentence")
    assert bilm.embed([["a", "sentence"]]).layers.shape == (3, 1, 2, 128)


def test_an_unknown_id_is_named_once_without_stray_quotes(tmp_path, capsys):
    store = tmp_path / "s.zarr"
    (tmp_path / "in.txt").write_text("a b\n", encoding="utf-8")
    assert main(["precompute", str(tmp_path / "in.txt"), "-o", str(store), "--device", "cpu", "-q"]) == 0
    capsys.readouterr()
    assert main(["lookup", str(store), "nope"]) == 2
    assert capsys.readouterr().err == f"error: document id 'nope' is not in the cache {store}\n"
