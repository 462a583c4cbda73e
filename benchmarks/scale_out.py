"""Benchmark of one precompute spread over Dask workers (small ELMo shape, random weights).

Prints, measured in one run:

- tokens/s of the single-process path (all cores) and of LocalClusters of 1 and 2 worker
  processes of one thread each on the CPU: on a 2-core machine, 2 workers x 1 thread against
  1 process x 2 threads; the Dask path must cost at most 10%. Runs alternate, each
  configuration keeps its best; clusters are started before the clock (their start-up is
  printed on its own);
- the planning pass: its share of the run's wall time and its tokens/s per worker;
- the driver's merge rate in tokens/s (it must stay above 2.5M tokens/s, so that eight GPUs at
  300k tokens/s each never wait on it), on a larger generated input;
- with a GPU: tokens/s per GPU end to end with the full-size model, in bfloat16.

Usage: ``python benchmarks/scale_out.py [--contexts 800] [--repeat 2] [--merge-contexts 20000]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bilm_throughput import model_options  # noqa: E402

from cache_builder.build.distributed import local_cluster  # noqa: E402
from cache_builder.build.engine import PrecomputeSettings, precompute  # noqa: E402
from cache_builder.build.inputs import ReadStats, RecordLog  # noqa: E402
from cache_builder.build.plan import PlanWriter, read_part  # noqa: E402
from cache_builder.build.sources import embedded_fields, open_source  # noqa: E402
from cache_builder.layers import LayerSpec  # noqa: E402
from cache_builder.store import ZarrStore  # noqa: E402
from cache_builder.store.layout import array_specs  # noqa: E402
from elmo import BiLM  # noqa: E402
from elmo.tokenize import get_tokenizer  # noqa: E402


def make_squad_jsonl(path: Path, contexts: int, questions: int, vocab: int, seed: int) -> None:
    """SQuAD-style JSONL: contexts of 80-200 words, each asked ``questions`` times."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)] + ["the", "of", "and", ".", ","] * 50
    with open(path, "w") as f:
        for c in range(contexts):
            context = " ".join(rng.choice(words) for _ in range(rng.randint(80, 200)))
            for q in range(questions):
                question = " ".join(rng.choice(words) for _ in range(rng.randint(6, 14))) + " ?"
                f.write(json.dumps({"id": f"c{c}q{q}", "context": context, "question": question}) + "\n")


def random_model(name: str) -> BiLM:
    torch.manual_seed(0)
    bilm = BiLM(model_options(name)).eval()
    with torch.no_grad():
        for p in bilm.parameters():
            p.uniform_(-0.1, 0.1)
    return bilm


class _Phases(logging.Handler):
    """Collects the engine's "plan: ... in X s" and "embed: ... in X s" lines."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        found = re.match(r"(plan|embed): .* in ([\d.]+) s", record.getMessage())
        if found:
            self.seconds[found[1]] = float(found[2])


def timed_run(source: Path, store: Path, bilm: BiLM, settings: PrecomputeSettings, **where) -> dict:
    phases = _Phases()
    logger = logging.getLogger("elmo_cache")
    logger.addHandler(phases)
    logger.setLevel(logging.INFO)
    try:
        start = time.perf_counter()
        manifest = precompute(str(source), str(store), bilm, settings, progress=False, overwrite=True, **where)
        wall = time.perf_counter() - start
    finally:
        logger.removeHandler(phases)
    tokens = manifest["counts"]["tokens"]
    return {"wall_s": wall, "tokens_per_s": tokens / wall, "plan_s": phases.seconds.get("plan", 0.0),
            "plan_tokens_in_documents": manifest["counts"]["tokens_in_documents"], "tokens": tokens}


def cpu_comparison(folder: Path, args: argparse.Namespace) -> dict:
    source = folder / "squad.jsonl"
    make_squad_jsonl(source, args.contexts, 5, vocab=5000, seed=0)
    bilm = random_model("small")
    settings = PrecomputeSettings(LayerSpec((0, 1)), tokenizer="whitespace", part_bytes=1 << 18)
    cores = os.cpu_count() or 1
    results: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        start = time.perf_counter()
        clients = {n: stack.enter_context(local_cluster(n, dashboard_address=":0")) for n in (1, 2)}
        results["cluster_start_s"] = {"both": round(time.perf_counter() - start, 2)}
        for _ in range(args.repeat):
            torch.set_num_threads(cores)
            for name, where in (("single_process", {}), ("workers_1", {"client": clients[1]}),
                                ("workers_2", {"client": clients[2]})):
                run = timed_run(source, folder / f"{name}.zarr", bilm, settings, **where)
                if name not in results or run["tokens_per_s"] > results[name]["tokens_per_s"]:
                    results[name] = run
    # A cluster given as a client keeps its workers' own thread count: Dask starts them with 1.
    out = {"threads": {"single_process": cores, "workers_1": 1, "workers_2": 1},
           "stored_tokens": results["single_process"]["tokens"]}
    for name in ("single_process", "workers_1", "workers_2"):
        r = results[name]
        out[name] = {"tokens_per_s": round(r["tokens_per_s"]), "wall_s": round(r["wall_s"], 2),
                     "plan_share_of_wall": round(r["plan_s"] / r["wall_s"], 3),
                     "plan_tokens_per_s_per_worker": round(r["plan_tokens_in_documents"] / max(r["plan_s"], 1e-9)
                                                           / (2 if name == "workers_2" else 1))}
    out["workers_2_vs_single_process"] = round(results["workers_2"]["tokens_per_s"]
                                               / results["single_process"]["tokens_per_s"], 3)
    out["workers_1_vs_single_process"] = round(results["workers_1"]["tokens_per_s"]
                                               / results["single_process"]["tokens_per_s"], 3)
    out["cluster_start_s"] = results["cluster_start_s"]["both"]
    return out


def merge_rate(folder: Path, contexts: int) -> dict:
    """The driver's share: planning results (read and tokenized beforehand) merged into a store."""
    source = folder / "merge.jsonl"
    make_squad_jsonl(source, contexts, 5, vocab=20000, seed=1)
    src = open_source(str(source))
    fields = embedded_fields(src, None)
    tokenizer = get_tokenizer("whitespace")
    parts = [read_part(p, src, fields, "id", "raise", tokenizer) for p in src.parts(1 << 23)]
    store = ZarrStore(str(folder / "merge.zarr"), "w")
    writer = PlanWriter(store, array_specs(LayerSpec((0, 1)), 256, 128, "float16"), src, fields,
                        RecordLog("line", "id", "raise", None, ReadStats()))
    start = time.perf_counter()
    for part in parts:
        writer.add(part)
    writer.finish()
    seconds = time.perf_counter() - start
    return {"parts": len(parts), "tokens_in_documents": writer.counts.tokens_in_documents,
            "stored_tokens": writer.counts.tokens, "seconds": round(seconds, 2),
            "stored_tokens_per_s": round(writer.counts.tokens / seconds),
            "document_tokens_per_s": round(writer.counts.tokens_in_documents / seconds)}


def gpu_rate(folder: Path, contexts: int) -> dict:
    """Full-size model, bfloat16, one worker per GPU: tokens/s per GPU end to end."""
    source = folder / "gpu.jsonl"
    make_squad_jsonl(source, contexts, 5, vocab=50000, seed=2)
    settings = PrecomputeSettings(LayerSpec((0, 1, 2)), compute_dtype="bfloat16", tokenizer="whitespace",
                                  batch_tokens=1 << 17, task_tokens=1 << 18)
    gpus = torch.cuda.device_count()
    run = timed_run(source, folder / "gpu.zarr", random_model("full"), settings,
                    **({"workers": gpus} if gpus > 1 else {"device": "cuda"}))
    return {"gpus": gpus, "card": torch.cuda.get_device_name(0), "stored_tokens": run["tokens"],
            "tokens_per_s_per_gpu": round(run["tokens_per_s"] / gpus)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, default=800, help="SQuAD-like contexts for the CPU comparison")
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs per configuration")
    parser.add_argument("--merge-contexts", type=int, default=20000, help="contexts for the merge rate")
    parser.add_argument("--gpu-contexts", type=int, default=20000, help="contexts for the GPU run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results = {"cpu": cpu_comparison(folder, args), "driver_merge": merge_rate(folder, args.merge_contexts)}
        if torch.cuda.is_available():
            results["gpu"] = gpu_rate(folder, args.gpu_contexts)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
