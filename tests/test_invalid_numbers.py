"""Invalid numbers never pass: non-finite settings are refused with the setting named, and
``verify`` fails on any NaN or infinity stored in a store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import cli
from cache_builder.build.engine import PrecomputeSettings, precompute
from cache_builder.layers import LayerSpec
from cache_builder.read.verify import verify
from cache_builder.store import ZarrStore
from elmo import BiLMOptions, OptionsError
from elmo.train import TrainConfig, TrainingError
from elmo.weights import save_weights
from tests.cache_models import load, save_tiny_model
from tests.test_inputs import write_lines
from tests.tiny import tiny_bilm, tiny_options

LINES = ["the cat sat .", "a dog ran home .", "the cat sat ."]


@pytest.mark.parametrize("flags", [["--mix-logits", "1,2,nan"], ["--mix", "0.5,0.5,inf"],
                                   ["--mix-logits", "1,1e999,2"], ["--mix", "0.2,0.3,0.5", "--gamma", "nan"],
                                   ["--layers", "0,1", "--gamma=-inf"]])
def test_non_finite_layer_settings_are_refused(tmp_path: Path, capsys, flags: list[str]):
    options, weights = map(str, save_tiny_model(tmp_path / "model"))
    text = write_lines(tmp_path / "in.txt", LINES)
    code = cli.main(["precompute", str(text), "-o", str(tmp_path / "s.zarr"), "--options", options,
                     "--weights", weights, "--tokenizer", "whitespace", "-q", *flags])
    err = capsys.readouterr().err
    assert code == 2 and "finite number" in err and ("--gamma" in err or flags[0] in err), err
    assert not (tmp_path / "s.zarr").exists()


def test_library_layer_specs_refuse_non_finite_weights():
    with pytest.raises(ValueError, match="finite"):
        LayerSpec((0, 1, 2), mix=(float("nan"), 0.5, 0.5))
    with pytest.raises(ValueError, match="finite"):
        LayerSpec((0, 1, 2), mix=(0.2, 0.3, 0.5), gamma=float("inf"))


def test_non_finite_numbers_in_config_and_options_files_are_refused(tmp_path: Path):
    config = tmp_path / "config.json"
    config.write_text('{"model": %s, "training": {"learning_rate": NaN, "clip_norm": 1e999}}'
                      % json.dumps(tiny_options().to_dict()), encoding="utf-8")
    with pytest.raises(TrainingError, match=r"training.clip_norm: inf is not a finite number\n"
                                            r"  training.learning_rate: nan is not a finite number"):
        TrainConfig.from_file(config)
    raw = tiny_options().to_dict()
    raw["lstm"]["cell_clip"] = float("nan")
    options = tmp_path / "options.json"
    options.write_text(json.dumps(raw), encoding="utf-8")  # json writes NaN, and reads it back
    with pytest.raises(OptionsError, match="lstm.cell_clip: nan is not a finite number"):
        BiLMOptions.from_file(options)


def test_verify_fails_on_stored_infinity_and_nan(tmp_path: Path):
    # A model whose token layer exceeds float16's range (65504): the float16 store holds infinity.
    bilm = tiny_bilm()
    with torch.no_grad():
        bilm.token_encoder.projection.weight.mul_(1e6)
    folder = tmp_path / "huge"
    folder.mkdir()
    bilm.options.save(folder / "options.json")
    save_weights(bilm, folder / "weights.hdf5")
    files = (folder / "options.json", folder / "weights.hdf5")
    text = write_lines(tmp_path / "in.txt", LINES)
    store = tmp_path / "huge.zarr"
    precompute(str(text), str(store), load(files), PrecomputeSettings(LayerSpec((0, 1, 2)), tokenizer="whitespace"),
               model_files=tuple(map(str, files)), progress=False)
    report = verify(str(store), sample=0)
    assert not report.ok and any(p.startswith("token_layer: ") and "NaN or infinite" in p for p in report.problems)

    # A NaN written into an otherwise sound store (as a broken model or a bad writer would).
    files = save_tiny_model(tmp_path / "model")
    store = tmp_path / "s.zarr"
    precompute(str(text), str(store), load(files), PrecomputeSettings(LayerSpec((1, 2)), tokenizer="whitespace"),
               model_files=tuple(map(str, files)), progress=False)
    assert verify(str(store), sample=0).ok
    writer = ZarrStore(str(store), "a")
    try:
        rows = writer.read("vectors", 3, 5)
        rows[1, 0, 2] = float("nan")
        writer.write("vectors", 3, rows)
    finally:
        writer.close()
    report = verify(str(store), sample=0)
    assert report.problems == ["vectors: 1 rows from row 4 hold NaN or infinite values"]
    assert cli.main(["verify", str(store), "--sample", "0"]) == 1
