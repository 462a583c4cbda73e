"""Every fenced Python and shell block of the README runs as written.

The blocks run in README order, in one folder laid out like a fresh clone (the repository's
files linked into it), so a block may use what an earlier one wrote (``sample.zarr``), as a
reader pasting them top to bottom would. A block marked ``<!-- skip: REASON; twin: TEST -->``
on the line before it (it needs a GPU, object storage, a cluster, a download, or installs
packages) is skipped with its reason, and must name a twin that runs the same thing locally:
a test (``tests/FILE.py::NAME``) or ``.ci/run``.

Speed: ``elmo-cache`` commands and ``python SCRIPT.py`` run in this process (the installed
command's own ``main``, after bash has expanded the words), so that each costs no interpreter
start and torch import; a command with a pipe or a redirection runs in bash as it stands,
with ``elmo-cache`` and ``python`` on its PATH running this checkout.
"""

from __future__ import annotations

import os
import re
import runpy
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from elmo_cache.cli import main

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
LANGUAGES = {"python": "python", "bash": "shell", "sh": "shell", "shell": "shell"}
SKIP = re.compile(r"^<!--\s*skip:\s*(?P<reason>[^;]+?)\s*;\s*twin:\s*(?P<twins>.+?)\s*-->$")
NOT_LINKED = {".git", ".venv", ".whl", "build", "dist", "__pycache__", ".pytest_cache"}


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    kind: str  # "python" or "shell"
    code: str
    skip: str | None = None  # the reason
    twins: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"README.md:{self.line}:{self.kind}"


def read_blocks(text: str) -> list[Block]:
    """The README's fenced blocks in Python or a shell language, with their skip markers."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = re.match(r"^(\s*)```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        indent, language, start = len(fence.group(1)), fence.group(2), i
        i += 1
        body = []
        while lines[i].strip() != "```":
            body.append(lines[i][indent:])
            i += 1
        i += 1
        if language not in LANGUAGES:
            continue
        before = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = SKIP.match(before)
        blocks.append(Block(start + 1, LANGUAGES[language], "\n".join(body) + "\n",
                            marker["reason"] if marker else None,
                            tuple(t.strip() for t in marker["twins"].split(",")) if marker else ()))
        if before.startswith("<!--") and "skip" in before and not marker:
            raise ValueError(f"README.md:{start}: malformed marker {before!r} (<!-- skip: REASON; twin: TEST -->)")
    return blocks


BLOCKS = read_blocks(README.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory):
    """A folder that looks like a fresh clone, with ``elmo-cache`` and ``python`` on PATH running
    this checkout, and one torch thread (the README's advice for a shared machine)."""
    folder = tmp_path_factory.mktemp("clone")
    for entry in REPO.iterdir():
        if entry.name not in NOT_LINKED and not entry.name.endswith(".egg-info"):
            (folder / entry.name).symlink_to(entry)
    bin_dir = tmp_path_factory.mktemp("bin")
    for name, command in (("elmo-cache", f'"{sys.executable}" -m elmo_cache.cli'), ("python", f'"{sys.executable}"')):
        (bin_dir / name).write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield folder, env
    torch.set_num_threads(threads)


def _commands(code: str) -> list[str]:
    """A shell block's commands: continued lines joined, blank and comment lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _is_simple(command: str) -> bool:
    """No pipe, redirection, list or subshell: one program with its words."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return not any(token and set(token) <= set("();<>|&") for token in lexer) and "$(" not in command


def _words(command: str, cwd: Path, env: dict[str, str]) -> list[str]:
    """The command's words as bash makes them (quotes, globs, variables; comments dropped)."""
    out = subprocess.run(["bash", "-c", f"printf '%s\\0' {command}"], cwd=cwd, env=env, capture_output=True,
                         check=True)
    return out.stdout.decode().split("\0")[:-1]


def _run_shell(block: Block, cwd: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for command in _commands(block.code):
        words = _words(command, cwd, env) if _is_simple(command) else []
        if words[:1] == ["elmo-cache"]:
            try:
                status = main(words[1:])
            except SystemExit as e:  # argparse's --help
                status = e.code or 0
            assert status == 0, f"{block}: {command}"
        elif words[:1] == ["python"] and len(words) > 1 and words[1].endswith(".py"):
            monkeypatch.setattr(sys, "argv", words[1:])
            runpy.run_path(words[1], run_name="__main__")
        else:
            done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", command], cwd=cwd, env=env,
                                  capture_output=True, text=True)
            sys.stdout.write(done.stdout)
            assert done.returncode == 0, f"{block}: {command}\n{done.stderr}"


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_readme_block_runs_as_written(block: Block, clone, monkeypatch: pytest.MonkeyPatch):
    if block.skip:
        pytest.skip(f"{block.skip} (twin: {', '.join(block.twins)})")
    folder, env = clone
    monkeypatch.chdir(folder)
    if block.kind == "python":
        exec(compile(block.code, str(block), "exec"), {"__name__": "__main__"})
    else:
        _run_shell(block, folder, env, monkeypatch)


def test_every_skipped_block_names_a_twin_that_exists():
    skipped = [block for block in BLOCKS if block.skip]
    assert skipped and len(BLOCKS) > 2 * len(skipped), "most blocks run"
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    for block in skipped:
        for twin in block.twins:
            if twin == ".ci/run":  # what the block installs or runs, .ci/run does too
                for word in ("torch==2.13.0", "constraints.txt", "pytest"):
                    assert word not in block.code or word in ci, f"{block}: .ci/run lacks {word}"
                continue
            path, _, name = twin.partition("::")
            assert (REPO / path).is_file(), f"{block}: twin {twin}: no such file"
            assert re.search(rf"^def {re.escape(name)}\(", (REPO / path).read_text(encoding="utf-8"), re.M), \
                f"{block}: twin {twin}: no such test"


def test_blocks_are_found_with_their_markers():
    blocks = read_blocks("text\n<!-- skip: needs a GPU; twin: tests/a.py::b, .ci/run -->\n```bash\nx \\\n  y\n```\n"
                         "```\nnot run\n```\n  ```python\n  print(1)\n  ```\n")
    assert blocks == [Block(3, "shell", "x \\\n  y\n", "needs a GPU", ("tests/a.py::b", ".ci/run")),
                      Block(10, "python", "print(1)\n")]
    assert _commands(blocks[0].code) == ["x  y"]  # a continuation joins as bash joins it: a space stays
    assert _is_simple("elmo-cache lookup s.zarr id   # a comment (with parentheses)")
    assert not _is_simple("head -3 f | elmo-cache embed -") and not _is_simple("printf 'x' > f")
    with pytest.raises(ValueError, match="malformed marker"):
        read_blocks("<!-- skip: no twin -->\n```bash\nx\n```\n")
