"""The reading side: EmbeddingCache's mapping API, torch and dask views, CLI info/lookup,
and export to AllenNLP's HDF5 layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from cache_builder import open_cache
from cache_builder.cache import pad_collate
from cache_builder.engine import PrecomputeSettings, precompute
from cache_builder.export import export_allennlp
from cache_builder.layers import LayerSpec, parse_layer_spec
from tests.cache_models import load, save_tiny_model
from tests.test_inputs import write_lines

REPO = Path(__file__).resolve().parent.parent
LINES = ["the cat sat on the mat .", "a dog .", "the cat sat on the mat .", "birds fly south in winter ."]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("stores")
    files = save_tiny_model(folder / "model")
    text = write_lines(folder / "in.txt", LINES)
    squad = write_lines(folder / "in.jsonl", [{"id": "q1", "context": "One two three .", "question": "Two ?"},
                                              {"id": "q2", "context": "One two three .", "question": "Three ?"}])
    out = {}
    for name, source, spec in [("all", text, LayerSpec((0, 1, 2))), ("top", text, LayerSpec((2,))),
                               ("mix", text, parse_layer_spec(3, mix="0.2,0.3,0.5")),
                               ("fields", squad, LayerSpec((0, 1, 2)))]:
        out[name] = folder / f"{name}.zarr"
        precompute(str(source), str(out[name]), load(files),
                   PrecomputeSettings(spec, tokenizer="whitespace", dtype="float32"), progress=False)
    return out


def test_mapping_api(stores):
    with open_cache(str(stores["all"])) as cache:
        assert len(cache) == 4 and list(cache) == ["0", "1", "2", "3"] and "2" in cache and "9" not in cache
        assert cache.info()["counts"]["segments"] == 3
        many = cache.lookup_many(["0", "2"])
        np.testing.assert_array_equal(many[0], many[1])
        assert cache.lookup("1").shape == (3, 3, 16)
        with pytest.raises(KeyError, match="'nope'"):
            cache.lookup("nope")
        with pytest.raises(KeyError, match="no field 'question'"):
            cache.lookup("0", "question")
    with open_cache(str(stores["fields"])) as cache:
        both = cache.lookup("q1")
        assert set(both) == {"context", "question"}
        np.testing.assert_array_equal(cache.lookup("q1", "context"), cache.lookup("q2", "context"))
        assert cache.segments("q1")["context"] == cache.segments("q2")["context"]
        assert cache.tokens("q2", "question").tokens == ["Three", "?"]
        assert cache.tokens("q2", "question").spans.tolist() == [[0, 5], [6, 7]]


def test_torch_dataset_pads_and_masks(stores):
    cache = open_cache(str(stores["all"]))
    loader = torch.utils.data.DataLoader(cache.dataset(), batch_size=4, collate_fn=pad_collate)
    batch = next(iter(loader))
    assert batch["ids"] == ["0", "1", "2", "3"]
    assert batch["vectors"].shape == (4, 3, 7, 16) and batch["mask"].shape == (4, 7)
    assert batch["mask"].sum(1).tolist() == [7, 3, 7, 6]
    assert torch.equal(batch["vectors"][1, :, :3], torch.from_numpy(cache.lookup("1")))
    assert batch["vectors"][1, :, 3:].abs().sum() == 0
    mixed = pad_collate([open_cache(str(stores["mix"])).dataset()[i] for i in range(2)])
    assert mixed["vectors"].shape == (2, 7, 16)
    with pytest.raises(ValueError, match="name one"):
        open_cache(str(stores["fields"])).dataset()


def test_dask_view_matches_lookups(stores):
    cache = open_cache(str(stores["all"]))
    array = cache.to_dask()
    assert array.shape == (cache.info()["counts"]["tokens"], 3, 16)
    offsets = cache.store.read("segment_offsets")
    segment = cache.segments("3")["text"]
    np.testing.assert_array_equal(array[offsets[segment]:offsets[segment + 1]].compute().transpose(1, 0, 2),
                                  cache.lookup("3"))
    assert open_cache(str(stores["mix"])).to_dask().shape[1:] == (16,)


def test_export_allennlp_layouts(stores, tmp_path: Path):
    cache = open_cache(str(stores["all"]))
    assert export_allennlp(str(stores["all"]), str(tmp_path / "all.hdf5"), "all") == 4
    export_allennlp(str(stores["all"]), str(tmp_path / "avg.hdf5"), "average")
    export_allennlp(str(stores["top"]), str(tmp_path / "top.hdf5"), "top")
    with h5py.File(tmp_path / "all.hdf5") as f, h5py.File(tmp_path / "avg.hdf5") as g, \
            h5py.File(tmp_path / "top.hdf5") as h:
        index = json.loads(f["sentence_to_index"][0])
        assert index["a dog ."] == "1"
        assert f["3"].shape == (3, 6, 16) and f["3"].dtype == np.float32
        np.testing.assert_array_equal(f["3"][...], cache.lookup("3"))
        np.testing.assert_allclose(g["3"][...], cache.lookup("3").mean(0), rtol=1e-6)
        np.testing.assert_array_equal(h["3"][...], cache.lookup("3")[2])
    with pytest.raises(ValueError, match="every layer"):
        export_allennlp(str(stores["top"]), str(tmp_path / "x.hdf5"), "all")


def test_cli_info_and_lookup(stores):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], capture_output=True, text=True)

    info = cli("info", str(stores["fields"]))
    assert info.returncode == 0 and json.loads(info.stdout)["fields"] == ["context", "question"]
    found = cli("lookup", str(stores["fields"]), "q1", "--field", "question")
    assert found.returncode == 0 and "shape (3, 2, 16)" in found.stdout and "Two ?" in found.stdout
    missing = cli("lookup", str(stores["fields"]), "zz")
    assert missing.returncode == 2 and "'zz'" in missing.stderr


def test_cli_precompute_dry_run_and_mix(tmp_path: Path, capsys):
    import cli

    options, weights = map(str, save_tiny_model(tmp_path / "model"))
    text = write_lines(tmp_path / "in.txt", LINES)
    model = ["--options", options, "--weights", weights, "--tokenizer", "whitespace", "-q"]
    assert cli.main(["precompute", str(text), "--dry-run", *model]) == 0
    out = capsys.readouterr().out
    assert "documents 4" in out and "segments after dedup 3" in out and "float16" in out
    assert not (tmp_path / "in.elmo.zarr").exists()
    assert cli.main(["precompute", str(text), "--mix-logits", "0,0,1", "--gamma", "2", *model]) == 0
    assert "4 documents, 3 segments" in capsys.readouterr().out
    cache = open_cache(str(tmp_path / "in.elmo.zarr"))
    assert cache.lookup("0").shape == (7, 16) and cache.info()["layers"]["mix"]["gamma"] == 2
    assert cache.info()["model"]["options"] == "model/options.json"  # relative to the store's folder
    assert cli.main(["precompute", str(text), "--layers", "0,1", *model]) == 2
    assert "--overwrite" in capsys.readouterr().err
