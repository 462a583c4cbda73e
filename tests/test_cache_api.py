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
from cache_builder.build.engine import PrecomputeSettings, precompute
from cache_builder.layers import LayerSpec, parse_layer_spec
from cache_builder.read.cache import EmbeddingCache, pad_collate
from cache_builder.read.export import export_allennlp
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
                               ("fields", squad, LayerSpec((0, 1, 2))), ("low", squad, LayerSpec((0, 1)))]:
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
        record = cache.lookup_record("1")  # a dict on a one-field store too
        assert list(record) == cache.fields == ["text"]
        np.testing.assert_array_equal(record["text"], cache.lookup("1", "text"))
        with pytest.raises(KeyError, match="'nope'"):
            cache.lookup("nope")
        with pytest.raises(KeyError, match="no field 'question'"):
            cache.lookup("0", "question")
    with open_cache(str(stores["fields"])) as cache:
        both = cache.lookup_record("q1")
        assert set(both) == {"context", "question"}
        np.testing.assert_array_equal(both["question"], cache.lookup("q1", "question"))
        with pytest.warns(FutureWarning, match=r"name the field \(lookup\(doc_id, field\)\) or call lookup_record"):
            old = cache.lookup("q1")  # the form code written for a dict on multi-field stores uses
        assert set(old) == set(both) and all(np.array_equal(old[f], both[f]) for f in both)
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


def test_export_allennlp_writes_what_the_store_holds(stores, tmp_path: Path):
    # --layers 0,1 (the README's recommendation) and mixed stores export as they are.
    assert export_allennlp(str(stores["low"]), str(tmp_path / "low.hdf5")) == 4
    assert export_allennlp(str(stores["mix"]), str(tmp_path / "mix.hdf5")) == 4
    low, mix = open_cache(str(stores["low"])), open_cache(str(stores["mix"]))
    with h5py.File(tmp_path / "low.hdf5") as f, h5py.File(tmp_path / "mix.hdf5") as g:
        assert set(f) == {"q1.context", "q1.question", "q2.context", "q2.question", "sentence_to_index"}
        assert f["q1.context"].shape == (2, 4, 16)
        np.testing.assert_array_equal(f["q2.question"][...], low.lookup("q2", "question"))
        assert json.loads(f["sentence_to_index"][0])["Three ?"] == "q2.question"
        assert g["3"].shape == (6, 16)
        np.testing.assert_array_equal(g["3"][...], mix.lookup("3"))
    for store, mode, holds in (("low", "top", "layers 0,1"), ("mix", "average", "mix 0.2,0.3,0.5 gamma 1"),
                               ("top", "average", "layers 2")):
        with pytest.raises(ValueError, match=f"this store holds {holds}: export it with --all"):
            export_allennlp(str(stores[store]), str(tmp_path / "x.hdf5"), mode)
    assert not (tmp_path / "x.hdf5").exists()
    out = subprocess.run([sys.executable, str(REPO / "cli.py"), "export-allennlp", str(stores["low"]),
                          str(tmp_path / "cli.hdf5")], capture_output=True, text=True)
    assert out.returncode == 0 and "4 sentences" in out.stdout


def _store_of_ids(folder: Path, ids: list[str]) -> Path:
    files = save_tiny_model(folder / "model")
    data = write_lines(folder / "ids.jsonl", [{"id": i, "text": f"text of {k} ."} for k, i in enumerate(ids)])
    precompute(str(data), str(folder / "ids.zarr"), load(files), PrecomputeSettings(LayerSpec((1, 2)),
               tokenizer="whitespace"), progress=False)
    return folder / "ids.zarr"


@pytest.mark.parametrize("ids, message", [
    (["a/b", "x", "a_b"], r"ids 'a/b' and 'a_b' both become the dataset 'a_b'"),
    (["x", "sentence_to_index"], r"id 'sentence_to_index' would be the dataset 'sentence_to_index'"),
])
def test_export_allennlp_refuses_ids_it_cannot_keep_apart(tmp_path: Path, ids: list[str], message: str):
    store = _store_of_ids(tmp_path, ids)
    with pytest.raises(ValueError, match=message):
        export_allennlp(str(store), str(tmp_path / "out.hdf5"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.jsonl", "ids.zarr", "model"]


def test_export_allennlp_never_leaves_a_half_written_file(stores, tmp_path: Path, monkeypatch):
    out = tmp_path / "out.hdf5"
    export_allennlp(str(stores["all"]), str(out))
    before = out.read_bytes()
    reads = []

    def failing_read(self, segment):  # the third segment read fails (a damaged chunk, a full disk, Ctrl-C)
        reads.append(segment)
        if len(reads) == 3:
            raise OSError("No space left on device")
        return original(self, segment)

    original = EmbeddingCache.segment_vectors
    monkeypatch.setattr(EmbeddingCache, "segment_vectors", failing_read)
    with pytest.raises(OSError, match="No space left"):
        export_allennlp(str(stores["top"]), str(out), "top")
    assert out.read_bytes() == before  # the earlier export is untouched
    with pytest.raises(OSError, match="No space left"):
        reads.clear()
        export_allennlp(str(stores["all"]), str(tmp_path / "new.hdf5"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.hdf5"]  # no partial file beside it
    monkeypatch.undo()
    (tmp_path / "notes.txt").write_text("mine")
    for target in (tmp_path / "notes.txt", stores["all"]):
        with pytest.raises(ValueError, match="not an AllenNLP export|is the store being exported"):
            export_allennlp(str(stores["all"]), str(target))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_cli_info_and_lookup(stores):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], capture_output=True, text=True)

    info = cli("info", str(stores["fields"]))
    assert info.returncode == 0 and json.loads(info.stdout)["fields"] == ["context", "question"]
    found = cli("lookup", str(stores["fields"]), "q1", "--field", "question")
    assert found.returncode == 0 and "shape (3, 2, 16)" in found.stdout and "Two ?" in found.stdout
    missing = cli("lookup", str(stores["fields"]), "zz")
    assert missing.returncode == 2 and missing.stderr.startswith("error: document id 'zz' is not in")


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
