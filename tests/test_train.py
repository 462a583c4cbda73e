"""Training: perplexity drops, export round-trips, fine-tuning adapts, resume is exact, bad input fails."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import torch

import cli
from elmo import load_bilm
from elmo.train import TrainingError, export, load_trained, perplexity_of, train
from elmo.vocab import build_vocab, write_vocab
from tests.tiny import tiny_options

REPO = Path(__file__).resolve().parent.parent
ANIMALS, PLACES = ["cat", "dog", "bird", "fox"], ["mat", "roof", "tree", "box"]


def _sentences(n: int, seed: int, shifted: bool = False) -> list[str]:
    """A tiny regular language; the shifted one uses the same words in another order."""
    rng = random.Random(seed)
    if shifted:
        return [f"on a {rng.choice(PLACES)} sleeps the {rng.choice(ANIMALS)} ." for _ in range(n)]
    return [f"the {rng.choice(ANIMALS)} sat on the {rng.choice(PLACES)} ." for _ in range(n)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and a busy machine cannot oversubscribe it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Train/held-out files of both languages, a vocabulary of both, and a config."""
    d = tmp_path_factory.mktemp("data")
    for name, n, seed, shifted in [("train", 400, 0, False), ("heldout", 60, 1, False),
                                   ("shift_train", 400, 2, True), ("shift_heldout", 60, 3, True)]:
        (d / f"{name}.txt").write_text("\n".join(_sentences(n, seed, shifted)) + "\n", encoding="utf-8")
    tokens, _ = build_vocab(s.split() for s in _sentences(400, 0) + _sentences(400, 2, shifted=True))
    write_vocab(tokens, d / "vocab.txt")
    _write_config(d / "config.json", checkpoint_every=20, eval_every=50)
    return d


def _write_config(path: Path, **training) -> Path:
    config = {"model": tiny_options().to_dict(),
              "training": {"seed": 3, "batch_size": 8, "unroll_steps": 20, "optimizer": "adam",
                           "learning_rate": 0.01, "dropout": 0.0, **training}}
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def _train(data: Path, save_dir: Path, steps: int, **kwargs):
    return train([str(data / "train.txt")], save_dir, config=data / "config.json", vocab=data / "vocab.txt",
                 max_steps=steps, device="cpu", progress=False, **kwargs)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> Path:
    save_dir = tmp_path_factory.mktemp("run")
    _train(data, save_dir, 300)
    return save_dir


def test_training_lowers_heldout_perplexity_far_below_vocab_size(data, trained):
    n_vocab = len((data / "vocab.txt").read_text(encoding="utf-8").splitlines())
    ppl = perplexity_of(trained, [str(data / "heldout.txt")], device="cpu")
    # Uniform guessing gives n_vocab (15); the language has ~2.3 bits of choice per sentence.
    assert ppl.forward < n_vocab / 4 and ppl.backward < n_vocab / 4
    assert ppl.mean == pytest.approx((ppl.forward * ppl.backward) ** 0.5)
    assert ppl.n_tokens == 60 * 9 - 1  # every transition of the stream, once per direction


def test_export_then_load_gives_identical_outputs(trained, tmp_path):
    model_dir = export(trained, tmp_path / "model")
    options = json.loads((model_dir / "options.json").read_text())
    assert options["char_cnn"]["n_characters"] == 262
    lm, _ = load_trained(trained)
    loaded = load_bilm(model_dir / "options.json", model_dir / "weights.hdf5")
    sentences = [["the", "cat", "sat"], ["on", "a", "roof", "sleeps", "the", "unseen-word", "."]]
    expected, got = lm.bilm.embed(sentences), loaded.embed(sentences)
    assert torch.equal(expected.layers, got.layers)


def _datasets(path: Path) -> dict[str, tuple[int, ...]]:
    found: dict[str, tuple[int, ...]] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.update({name: obj.shape}) if isinstance(obj, h5py.Dataset) else None)
    return found


def test_export_has_the_layout_of_a_published_file(elmo_fixture, data, tmp_path):
    published = json.loads((elmo_fixture / "options.json").read_text())
    published["char_cnn"]["n_characters"] = 261  # as in a training options file
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model": published, "training": {"batch_size": 4}}))
    train([str(data / "train.txt")], tmp_path / "run", config=config, vocab=data / "vocab.txt", max_steps=2,
          device="cpu", progress=False)
    model_dir = export(tmp_path / "run", tmp_path / "model")
    assert _datasets(model_dir / "weights.hdf5") == _datasets(elmo_fixture / "lm_weights.hdf5")
    options = json.loads((model_dir / "options.json").read_text())
    published["char_cnn"]["n_characters"] = 262
    assert (options["char_cnn"], options["lstm"]) == (published["char_cnn"], published["lstm"])


def test_finetuning_from_export_lowers_perplexity_on_shifted_corpus(data, trained, tmp_path):
    base = export(trained, tmp_path / "base")
    shifted = [str(data / "shift_heldout.txt")]
    before = train([str(data / "shift_train.txt")], tmp_path / "ft", init_from=base, heldout=shifted,
                   config=_write_config(tmp_path / "ft.json", eval_every=1000), max_steps=1,
                   device="cpu", progress=False)  # one step: the starting perplexity
    result = train([str(data / "shift_train.txt")], tmp_path / "ft2", init_from=base, heldout=shifted,
                   config=_write_config(tmp_path / "ft2.json", eval_every=25, patience=2), max_steps=400,
                   device="cpu", progress=False)
    after = perplexity_of(tmp_path / "ft2", shifted, device="cpu")
    assert after.mean < 0.5 * before.heldout.mean
    # Held-out perplexity stopped improving: early stop, and the save dir's model is the best one.
    assert result.stopped_early and result.step < 400 and after.mean <= result.heldout.mean
    # The one-step run started from the export: it still knows the original corpus.
    assert perplexity_of(tmp_path / "ft", [str(data / "heldout.txt")], device="cpu").mean < 3


def test_resume_after_sigkill_continues_at_same_step_and_data_position(data, tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "cli.py", "train", "--train", str(data / "train.txt"),
                             "--vocab", str(data / "vocab.txt"), "--config", str(data / "config.json"),
                             "--save-dir", str(killed), "--max-steps", "100000", "--device", "cpu",
                             "--no-progress"], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (killed / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 60 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ckpt = torch.load(killed / "checkpoint.pt", weights_only=True)
    step = ckpt["step"]
    assert step >= 20 and step % 20 == 0  # checkpoint_every = 20

    resumed = train([str(data / "train.txt")], killed, resume=True, max_steps=step + 30, device="cpu",
                    progress=False)
    reference = _train(data, tmp_path / "reference", step + 30)
    assert (resumed.step, resumed.epoch, resumed.window) == (reference.step, reference.epoch, reference.window)
    got = torch.load(killed / "checkpoint.pt", weights_only=True)["model"]
    want = torch.load(tmp_path / "reference" / "checkpoint.pt", weights_only=True)["model"]
    for name in want:  # same data in the same order, same carried states, same optimizer state
        assert torch.equal(got[name], want[name]), name


def test_config_that_does_not_fit_the_checkpoint_is_an_error(data, trained, tmp_path):
    bigger = _write_config(tmp_path / "bigger.json", checkpoint_every=20, eval_every=50)
    raw = json.loads(bigger.read_text())
    raw["model"]["lstm"]["dim"] = 32
    bigger.write_text(json.dumps(raw))
    with pytest.raises(TrainingError, match=r"does not fit the checkpoint.*\n  model.lstm.dim: 32 vs 24"):
        train([str(data / "train.txt")], trained, config=bigger, resume=True, device="cpu", progress=False)
    model_dir = export(trained, tmp_path / "model")
    with pytest.raises(TrainingError, match=r"does not fit the model.*\n  lstm.dim: 32 vs 24"):
        train([str(data / "train.txt")], tmp_path / "ft", config=bigger, init_from=model_dir,
              device="cpu", progress=False)


def test_bad_training_inputs_are_clear_errors(data, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(TrainingError, match="empty corpus.*empty.txt"):
        train([str(tmp_path / "empty.txt")], tmp_path / "a", config=data / "config.json",
              vocab=data / "vocab.txt", device="cpu", progress=False)
    with pytest.raises(TrainingError, match="no file matches"):
        train([str(tmp_path / "missing*.txt")], tmp_path / "b", config=data / "config.json",
              vocab=data / "vocab.txt", device="cpu", progress=False)
    bad = _write_config(tmp_path / "bad.json", optimizer="sgd", learning_rate=-1)
    code = cli.main(["train", "--train", str(data / "train.txt"), "--vocab", str(data / "vocab.txt"),
                     "--config", str(bad), "--save-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "training.learning_rate" in err and "training.optimizer" in err
    (tmp_path / "novocab.txt").write_text("cat\ndog\n", encoding="utf-8")
    code = cli.main(["train", "--train", str(data / "train.txt"), "--vocab", str(tmp_path / "novocab.txt"),
                     "--config", str(data / "config.json"), "--save-dir", str(tmp_path / "d")])
    assert code == 2 and "novocab.txt: line 1: expected '<S>'" in capsys.readouterr().err


def test_sampled_softmax_training_also_learns(data, tmp_path):
    config = _write_config(tmp_path / "sampled.json", sampled_softmax_min_vocab=1, n_negative_samples=6)
    train([str(data / "train.txt")], tmp_path / "run", config=config, vocab=data / "vocab.txt", max_steps=150,
          device="cpu", progress=False)
    assert perplexity_of(tmp_path / "run", [str(data / "heldout.txt")], device="cpu").mean < 4


def test_cli_perplexity_and_export(trained, data, tmp_path, capsys):
    assert cli.main(["perplexity", "--save-dir", str(trained), "--data", str(data / "heldout.txt"),
                     "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("perplexity over 539 tokens: forward ")
    assert cli.main(["export", "--save-dir", str(trained), "--out-dir", str(tmp_path / "m")]) == 0
    assert {p.name for p in (tmp_path / "m").iterdir()} == {
        "options.json", "weights.hdf5", "vocab.txt", "softmax.hdf5"}


class _RunsCode:
    """Unpickling this (with a full unpickler) runs ``os.system``: it touches a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_checkpoint_is_refused_and_runs_no_code(trained, data, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    crafted = tmp_path / "crafted"
    crafted.mkdir()
    ckpt = {key: value for key, value in torch.load(trained / "checkpoint.pt", weights_only=True).items()}
    ckpt["vocab"] = _RunsCode(marker)
    torch.save(ckpt, crafted / "checkpoint.pt")
    calls = {
        "resume": lambda: train([str(data / "train.txt")], crafted, resume=True, device="cpu", progress=False),
        "perplexity": lambda: perplexity_of(crafted, [str(data / "heldout.txt")], device="cpu"),
        "export": lambda: export(crafted, tmp_path / "model"),
    }
    for name, call in calls.items():
        with pytest.raises(TrainingError, match=r"checkpoint.pt: refused on purpose: reading it would run posix.system.*may run code"):
            call()
        assert not marker.exists(), name
    assert cli.main(["export", "--save-dir", str(crafted), "--out-dir", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and not marker.exists()
    (crafted / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrainingError, match="not a readable checkpoint"):
        export(crafted, tmp_path / "model")
