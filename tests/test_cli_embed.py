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
