"""Benchmark of the read path: lookups against AllenNLP's per-sentence HDF5 file, DataLoader
epochs, bytes per token and int8's error, measured in one run.

Stores are built with ``precompute`` from a generated SQuAD-like set (one question per
context, so every document's context is its own) by a random-weight biLM whose vectors have
the small ELMo shape (projection 128: dim 256, two LSTM layers); its LSTM cell (256, not
1024) and char CNN (three small filters) are cut down, because computing is not what this
measures and the read path sees only the vectors. The AllenNLP-layout file is written from
the float32 store's vectors: one float32 dataset ``(3, n_tokens, dim)`` per sentence key, as
``allennlp elmo --all`` writes it. One torch thread throughout (see ``main``).

Reports:

- lookup p50/p99 of one field (the context) and of a whole record (context + question), ours
  (Zarr, HDF5; float16 and int8, all layers) against ``h5py`` reads of the same sentences
  from the AllenNLP file, interleaved in rounds (target: ours no slower, p50 and p99);
- ``DataLoader`` tokens/s over the context field in store order and shuffled, in-process and
  with 2 worker processes (target: ≥ 1M tokens/s in store order, shuffled within 2x);
- bytes per stored token of every store built (all layers, ``--layers 0,1``, a mix; float16
  and int8) against AllenNLP's float32 ``--all`` (3 × dim × 4 bytes; target for ``--layers 0,1``
  int8 ≤ 1/10), with layer 0's table's share of the Zarr stores;
- int8's error against float32 (max and mean absolute, and max as a share of each token
  layer's largest value; the stated bound is 1/254).

Usage: ``python benchmarks/read.py [--contexts 1000] [--lookups 5000] [--epochs 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from precompute import make_squad  # noqa: E402

from cache_builder import open_cache  # noqa: E402
from cache_builder.build.engine import PrecomputeSettings, precompute  # noqa: E402
from cache_builder.layers import parse_layer_spec  # noqa: E402
from cache_builder.read.cache import pad_collate  # noqa: E402
from cache_builder.store.encoding import get_encoding  # noqa: E402
from elmo import BiLM, BiLMOptions  # noqa: E402

SHAPE = {  # the small ELMo shape's vectors from a cheaper model (see the docstring)
    "char_cnn": {"embedding": {"dim": 16}, "filters": [[1, 32], [2, 32], [3, 64]], "n_highway": 1,
                 "n_characters": 262, "max_characters_per_token": 50, "activation": "relu"},
    "lstm": {"dim": 256, "projection_dim": 128, "n_layers": 2, "cell_clip": 3, "proj_clip": 3,
             "use_skip_connections": True},
}


def small_bilm() -> BiLM:
    torch.manual_seed(0)
    bilm = BiLM(BiLMOptions.from_dict(SHAPE)).eval()
    with torch.no_grad():
        for p in bilm.parameters():
            p.uniform_(-0.1, 0.1)
    return bilm


STORES = {  # name → (layer choice as parse_layer_spec takes it, dtype)
    "f32.zarr": ({"layers": "0,1,2"}, "float32"),
    "f16.zarr": ({"layers": "0,1,2"}, "float16"), "f16.h5": ({"layers": "0,1,2"}, "float16"),
    "i8.zarr": ({"layers": "0,1,2"}, "int8"), "i8.h5": ({"layers": "0,1,2"}, "int8"),
    "l01_f16.zarr": ({"layers": "0,1"}, "float16"), "l01_i8.zarr": ({"layers": "0,1"}, "int8"),
    "mix_f16.zarr": ({"mix": "0.2,0.3,0.5"}, "float16"), "mix_i8.zarr": ({"mix": "0.2,0.3,0.5"}, "int8"),
}


def build(squad: Path, store: Path, bilm: BiLM, layers: dict[str, str], dtype: str) -> dict:
    settings = PrecomputeSettings(parse_layer_spec(3, **layers), dtype=dtype, tokenizer="en")
    return precompute(str(squad), str(store), bilm, settings, progress=False)


def store_bytes(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def write_allennlp(reference: Path, out: Path) -> list[str]:
    """AllenNLP's ``--all`` layout from the float32 store: returns the document ids."""
    with open_cache(str(reference)) as cache, h5py.File(out, "w") as f:
        ids = list(cache)
        for doc_id in ids:
            for field, vectors in cache.lookup_record(doc_id).items():
                f.create_dataset(f"{doc_id}.{field}", data=vectors.astype(np.float32))  # (3, n, dim)
    return ids


def lookup_latency(readers: dict, ids: list[str], n: int, rounds: int = 10) -> dict[str, dict]:
    """p50/p99 of each reader on the same random ids, the readers interleaved in rounds, after an
    untimed pass over every id (steady state: the page cache mapped, indexes read; our decoded-
    chunk cache then holds the last 32 MB read): wall time, and the thread's CPU time (what a
    lookup costs, without the waits a shared machine adds to the wall time's tail)."""
    rng = random.Random(1)
    sample = [rng.choice(ids) for _ in range(n)]
    for read in readers.values():  # untimed: one pass, as a first epoch would, touches every file page
        for doc_id in random.Random(2).sample(ids, len(ids)):
            read(doc_id)
    wall: dict[str, list[float]] = {name: [] for name in readers}
    cpu: dict[str, list[float]] = {name: [] for name in readers}
    for r in range(rounds):
        part = sample[r * n // rounds : (r + 1) * n // rounds]
        for name, read in readers.items():
            for doc_id in part:
                start, start_cpu = time.perf_counter(), time.thread_time()
                read(doc_id)
                cpu[name].append(time.thread_time() - start_cpu)
                wall[name].append(time.perf_counter() - start)

    def ms(times: list[float], q: int) -> float:
        return round(1e3 * float(np.percentile(times, q)), 3)

    return {name: {"p50_ms": ms(wall[name], 50), "p99_ms": ms(wall[name], 99),
                   "cpu_p50_ms": ms(cpu[name], 50), "cpu_p99_ms": ms(cpu[name], 99)} for name in readers}


def epoch_rate(path: Path, shuffle: bool, workers: int, epochs: int) -> float:
    """Best tokens/s of a DataLoader epoch over the context field (batch 32, padded), after a
    first epoch that starts the (persistent) workers."""
    cache = open_cache(str(path))
    dataset = cache.dataset("context")
    tokens = sum(len(cache.tokens(doc_id, "context").tokens) for doc_id in cache)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, shuffle=shuffle, num_workers=workers,
                                         persistent_workers=workers > 0, collate_fn=pad_collate)
    best = 0.0
    for epoch in range(epochs + 1):
        start = time.perf_counter()
        for _batch in loader:
            pass
        if epoch:
            best = max(best, tokens / (time.perf_counter() - start))
    return best


def int8_error(reference: Path, quantized: Path) -> dict[str, dict[str, float]]:
    """Per layer kept by the ``quantized`` store: its lookups against the float32 store's, over
    every document (layer 0 is the float16 per-type table, layers 1-2 int8 values)."""
    with open_cache(str(reference)) as ref, open_cache(str(quantized)) as q:
        layers = list(q.spec.layers)
        errors: list[list[np.ndarray]] = [[] for _ in layers]
        shares: list[list[np.ndarray]] = [[] for _ in layers]
        for doc_id in ref:
            for field, exact in ref.lookup_record(doc_id).items():
                exact = exact[layers]  # (n_layers, n_tokens, dim)
                error = np.abs(q.lookup(doc_id, field) - exact)
                peak = np.abs(exact).max(axis=-1, keepdims=True)  # per token and layer
                for i in range(len(layers)):
                    errors[i].append(error[i].ravel())
                    shares[i].append((error[i] / np.where(peak[i] == 0, 1, peak[i])).max(axis=-1))
    out = {}
    for i, k in enumerate(layers):
        e, share = np.concatenate(errors[i]), np.concatenate(shares[i])
        out[f"layer {k}"] = {"max_abs": float(e.max()), "mean_abs": float(e.mean()),
                             "max_share_of_token_layer_max": float(share.max())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, default=1000, help="SQuAD-like records (one question each)")
    parser.add_argument("--lookups", type=int, default=5000, help="random lookups per reader")
    parser.add_argument("--epochs", type=int, default=3, help="DataLoader epochs per setting (best kept)")
    args = parser.parse_args()
    # One torch thread: per-op threads only cost time on a shared 2-core machine, in the model
    # that builds the stores and in the main process of a DataLoader.
    torch.set_num_threads(1)
    results: dict[str, object] = {"cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
                                  "vectors": "dim 256 (small ELMo shape), random weights"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        squad = folder / "squad.json"
        make_squad(squad, args.contexts, 1, seed=0)
        bilm = small_bilm()
        for name, (layers, dtype) in STORES.items():
            manifest = build(squad, folder / name, bilm, layers, dtype)
        counts = manifest["counts"]
        results["documents"], results["stored_tokens"] = counts["documents"], counts["tokens"]
        ids = write_allennlp(folder / "f32.zarr", folder / "allennlp.hdf5")
        os.sync()  # no reader should meet the kernel writing back what was just written

        allennlp = h5py.File(folder / "allennlp.hdf5", "r")
        caches = {name: open_cache(str(folder / name)) for name in ("f16.zarr", "f16.h5", "i8.zarr", "i8.h5")}
        field = {"allennlp h5py": lambda d: allennlp[f"{d}.context"][...]}
        record = {"allennlp h5py": lambda d: (allennlp[f"{d}.context"][...], allennlp[f"{d}.question"][...])}
        for name, cache in caches.items():
            field[f"ours {name}"] = lambda d, c=cache: c.lookup(d, "context")
            record[f"ours {name}"] = lambda d, c=cache: c.lookup_record(d)
        results["lookup_one_field"] = lookup_latency(field, ids, args.lookups)
        results["lookup_record"] = lookup_latency(record, ids, args.lookups)

        loaders = {}
        for name in ("f16.zarr", "f16.h5", "i8.zarr"):
            for workers in (0, 2):
                order = epoch_rate(folder / name, False, workers, args.epochs)
                shuffled = epoch_rate(folder / name, True, workers, args.epochs)
                loaders[f"{name} workers={workers}"] = {"store_order_tokens_per_s": round(order),
                                                        "shuffled_tokens_per_s": round(shuffled),
                                                        "shuffled_vs_order": round(shuffled / order, 3)}
        results["dataloader_context_field"] = loaders

        dim = 2 * SHAPE["lstm"]["projection_dim"]
        reference = 3 * dim * 4
        sizes = {"allennlp_all_float32_bytes_per_token": reference}
        for name in STORES:
            total = store_bytes(folder / name)
            sizes[name] = {"bytes_per_stored_token": round(total / counts["tokens"], 1),
                           "vs_allennlp": f"1/{reference * counts['tokens'] / total:.2f}"}
            if name.endswith(".zarr") and (folder / name / "token_layer").exists():
                sizes[name]["token_layer_share"] = round(store_bytes(folder / name / "token_layer") / total, 3)
        results["bytes"] = sizes
        results["int8_error_vs_float32"] = {"stated_bound_share": get_encoding("int8").relative_error,
                                            **int8_error(folder / "f32.zarr", folder / "i8.zarr")}
        allennlp.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
