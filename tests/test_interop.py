"""Exports for other tools: the Hugging Face dataset and the numpy memmap files equal the lookups,
for every id and field, on both backends, all-layer, top-layer and mixed stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cache_builder import open_cache
from cache_builder.build.engine import PrecomputeSettings, precompute
from cache_builder.layers import LayerSpec, parse_layer_spec
from tests.cache_models import load, save_tiny_model
from tests.test_inputs import write_lines

RECORDS = [{"id": "q1", "context": "One two three four .", "question": "Two ?"},
           {"id": "q2", "context": "One two three four .", "question": "Which number comes after three ?"},
           {"id": "q3", "context": "Birds fly south in winter .", "question": "Two ?"},
           {"id": "长城", "context": "长城 很 长 。", "question": "长城 长 吗 ？"}]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("interop")
    files = save_tiny_model(folder / "model")
    source = write_lines(folder / "in.jsonl", RECORDS)
    out = {}
    for name, spec, dtype in [("all.zarr", LayerSpec((0, 1, 2)), "float32"), ("top.h5", LayerSpec((2,)), "float16"),
                              ("mix.zarr", parse_layer_spec(3, mix_logits="0.1,-0.4,0.9", gamma=1.3), "float16")]:
        out[name] = folder / name
        precompute(str(source), str(out[name]), load(files),
                   PrecomputeSettings(spec, tokenizer="whitespace", dtype=dtype), progress=False)
    return out


@pytest.mark.parametrize("name", ["all.zarr", "top.h5", "mix.zarr"])
def test_hugging_face_export_round_trips(stores, name: str, tmp_path: Path):
    with open_cache(str(stores[name])) as cache:
        dataset = cache.to_hf_dataset(cache_dir=tmp_path)
        rows = [(doc_id, field) for doc_id in cache for field in cache.fields]
        assert len(dataset) == len(rows)
        torch_rows = dataset.with_format("torch")
        for i, (doc_id, field) in enumerate(rows):
            row = torch_rows[i]
            assert (row["id"], row["field"]) == (doc_id, field)
            expected = cache.lookup(doc_id, field)  # (n_layers, n_tokens, dim) or (n_tokens, dim) mixed
            vectors = row["vectors"]  # token-major: (n_tokens, n_layers, dim) or (n_tokens, dim)
            assert isinstance(vectors, torch.Tensor)
            got = vectors.permute(1, 0, 2) if expected.ndim == 3 else vectors
            assert got.shape == expected.shape
            np.testing.assert_array_equal(got.numpy(), expected.astype(np.float32))  # float16 widens exactly
            view = cache.tokens(doc_id, field)
            assert dataset[i]["tokens"] == view.tokens
            np.testing.assert_array_equal(row["spans"].numpy(), view.spans)


def test_hugging_face_export_is_keyed_by_the_store_and_fields(stores, tmp_path: Path):
    with open_cache(str(stores["all.zarr"])) as cache:
        first = cache.to_hf_dataset(cache_dir=tmp_path)
        again = cache.to_hf_dataset(cache_dir=tmp_path)
        assert again.cache_files == first.cache_files  # the same store is exported once
        questions = cache.to_hf_dataset(["question"], cache_dir=tmp_path)
        assert questions["field"] == ["question"] * 4 and questions["id"] == [r["id"] for r in RECORDS]
        assert questions.cache_files != first.cache_files
        with pytest.raises(ValueError, match=r"not \['title'\]"):
            cache.to_hf_dataset(["title"], cache_dir=tmp_path)
        # a batch of rows pads on the token axis, the first
        rows = questions.with_format("torch")
        batch = torch.nn.utils.rnn.pad_sequence([rows[i]["vectors"] for i in range(4)], batch_first=True)
        assert batch.shape == (4, 6, 3, 16)  # (batch, time, n_layers, dim)
    with open_cache(str(stores["mix.zarr"])) as cache:
        assert cache.to_hf_dataset(cache_dir=tmp_path).cache_files != first.cache_files


@pytest.mark.parametrize("name", ["all.zarr", "top.h5", "mix.zarr"])
def test_memmap_export_equals_the_lookups(stores, name: str, tmp_path: Path):
    with open_cache(str(stores[name])) as cache:
        folder = cache.to_memmap(str(tmp_path / "out"))
        vectors = np.load(folder / "vectors.npy", mmap_mode="r")
        offsets = np.load(folder / "offsets.npy")
        index = [json.loads(line) for line in open(folder / "index.jsonl", encoding="utf-8")]
        counts = cache.info()["counts"]
        assert vectors.shape[0] == counts["tokens"] and len(offsets) == counts["segments"] + 1
        assert vectors.dtype == np.dtype(cache.info()["dtype"])
        assert [(e["id"], e["field"]) for e in index] == [(d, f) for d in cache for f in cache.fields]
        for entry in index:
            expected = cache.lookup(entry["id"], entry["field"])
            rows = vectors[offsets[entry["segment"]]:offsets[entry["segment"] + 1]]
            np.testing.assert_array_equal(rows.transpose(1, 0, 2) if expected.ndim == 3 else rows, expected)
        assert sorted(p.name for p in folder.iterdir()) == ["index.jsonl", "offsets.npy", "vectors.npy"]
        with pytest.raises(FileExistsError, match="vectors.npy exists"):
            cache.to_memmap(str(folder))
