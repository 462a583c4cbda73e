"""The README's training-script example runs as written on the sample data, and the precompute
command it prints builds a collapsed store that reads what its learned mix computes."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from cache_builder import open_cache
from cli import main

REPO = Path(__file__).resolve().parent.parent


def _section(title: str) -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start = readme.index(f"### {title}")
    return readme[start:readme.index("\n### ", start + 1)]


def _cli(command: str) -> None:
    words = shlex.split(command)
    assert words[0] == "elmo-cache"
    assert main([*words[1:], "--quiet"]) == 0


def test_readme_training_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    section = _section("Training on a cache")
    shell = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip()
    script = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    (tmp_path / "data").symlink_to(REPO / "data")
    monkeypatch.chdir(tmp_path)
    _cli(shell)
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(script, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert "--mix-logits=" in printed
    _cli(printed)

    mix = namespace["model"].mix.eval()
    assert not torch.allclose(mix.logits.detach(), torch.zeros(3))  # it learned something
    with open_cache("sample_all.zarr") as cache, open_cache("sample_mixed.zarr") as mixed, torch.no_grad():
        for doc_id in cache:
            for field in cache.fields:
                expected = mixed.lookup(doc_id, field)
                got = mix(torch.from_numpy(cache.lookup(doc_id, field))).numpy()
                np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
