"""The engine's own speed on any machine: ``precompute`` with a stand-in for the device.

The real ``precompute`` runs (Python API: planning, batching, tasks, prepare, encode, write,
commit) on a generated SQuAD-like JSONL, with a model of the full ELMo's width (3 layers of
1024) whose forward hands back, at no cost, what a GPU in half precision would hand back: the
layers in float16, views of one preallocated buffer. Whatever rate comes out is the ceiling
the engine puts on any device. With ``--device-rate`` the stand-in waits as for a device of
that speed, and the share of the run it waited (the device's busy share) shows whether the
engine keeps such a device fed. Each stage's own rate is the stored tokens over the seconds
spent inside it (stages overlap in threads, so their times add up to more than the run's).

With ``--model full --device cuda`` the same run measures the real thing on a GPU (the full
model's shape, random weights), and adds the share of the run's time the GPU was busy
(``nvidia-smi`` samples), after planning and overall. CPU seconds (this process and its
planning processes) are printed too: on a shared machine wall time depends on the neighbours.

    python benchmarks/pipeline.py                        # ~1M stored tokens, --layers 0,1 float16
    python benchmarks/pipeline.py --tokens 200000 --folder /some/fast/disk --profile
    python benchmarks/pipeline.py --device-rate 1e6 --batch-tokens 65536  # as if an H200 computed
    python benchmarks/pipeline.py --model full --device cuda --compute-dtype bfloat16 --layers 0,1,2
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bilm_throughput import model_options  # noqa: E402

import cache_builder.build.engine as engine  # noqa: E402
import cache_builder.build.plan as plan  # noqa: E402
from cache_builder.build.engine import PrecomputeSettings, precompute  # noqa: E402
from cache_builder.layers import parse_layer_spec  # noqa: E402
from cache_builder.store import ZarrStore  # noqa: E402
from cache_builder.store.encoding import FloatEncoding  # noqa: E402
from elmo import BiLM, BiLMOptions  # noqa: E402
from elmo.bilm import BiLMOutput, TokenBatch  # noqa: E402

# The full model's width (projection 512, so 1024 per layer, 2 LSTM layers); the rest is kept
# small because nothing of it runs.
STAND_IN = {
    "char_cnn": {"embedding": {"dim": 4}, "filters": [[1, 4], [2, 4]], "n_highway": 1, "n_characters": 262,
                 "max_characters_per_token": 50, "activation": "relu"},
    "lstm": {"dim": 16, "projection_dim": 512, "n_layers": 2, "cell_clip": 3, "proj_clip": 3,
             "use_skip_connections": True},
}
COMMON = ("the of and to in a is that for it as was with be by on not he this are or his from at which but "
          "have an had they you were their one all we can her has there been if more when will would who so "
          "no what where when why how did does , . ' \" ( ) - ; :").split()


class StandInBiLM(BiLM):
    """A :class:`BiLM` whose forward costs nothing: it returns float16 layers of the right shape
    (views of one buffer, grown on demand), as a GPU in half precision would after its work.
    ``prepare`` (character ids of the batch's distinct types) stays the real one.

    Args:
        device_rate: tokens/s of a device to wait for, as the host waits for a GPU's results
            (sleeping, without the GIL; the LSTM runs packed sequences, so padding costs
            nothing); None: no wait.
    """

    def __init__(self, device_rate: float | None = None) -> None:
        super().__init__(BiLMOptions.from_dict(STAND_IN))
        self._buffer = torch.zeros(0)
        self.device_rate = device_rate

    def _view(self, shape: Sequence[int]) -> torch.Tensor:
        """A ``shape`` float16 tensor over the front of one flat buffer, grown on demand."""
        n = int(np.prod(shape))
        if n > self._buffer.numel():
            self._buffer = torch.zeros(2 * n, dtype=torch.float16)
        return self._buffer[:n].view(*shape)

    def forward(self, batch: TokenBatch) -> BiLMOutput:
        n_batch, time_steps = batch.type_index.shape
        if self.device_rate:
            time.sleep(int(batch.lengths.sum() - 2 * n_batch) / self.device_rate)
        width = 2 * self.options.lstm.projection_dim
        layers = self._view((self.options.lstm.n_layers + 1, n_batch, time_steps - 2, width))
        mask = batch.type_index[:, 1:-1] != 0
        return BiLMOutput(layers, mask, self._view((len(batch.types), width // 2)))

    def encode_types(self, types: Sequence[str]) -> torch.Tensor:
        return self._view((len(types), self.options.lstm.projection_dim))


def full_model() -> BiLM:
    """The published full ELMo's shape (4096 cells, projection 512, 2048 filters), random weights."""
    torch.manual_seed(0)
    bilm = BiLM(model_options("full")).eval()
    with torch.no_grad():
        for p in bilm.parameters():
            p.uniform_(-0.1, 0.1)
    return bilm


def zipf_vocabulary(n_types: int, rng: np.random.Generator) -> list[str]:
    """Common English words first, then made-up words of 2-12 letters (a long tail)."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    made = {"".join(rng.choice(letters, size=int(rng.integers(2, 13)))) for _ in range(n_types)}
    words = list(COMMON) + sorted(made - set(COMMON))
    return words[:n_types]


def make_input(path: Path, stored_tokens: int, seed: int = 0) -> int:
    """A SQuAD-like JSONL (``id``, ``context``, ``question``): contexts of 4-9 sentences, 5
    questions each, words drawn from a Zipf law over 50,000 types. Returns the records written."""
    rng = np.random.default_rng(seed)
    vocab = np.array(zipf_vocabulary(50_000, rng), dtype=object)
    ranks = np.arange(1, len(vocab) + 1)
    p = 1.0 / ranks ** 1.05
    p /= p.sum()
    tokens = records = c = 0
    with open(path, "w", encoding="utf-8") as f:
        while tokens < stored_tokens:
            sentences = []
            for _ in range(int(rng.integers(4, 10))):
                n = int(rng.integers(12, 30))
                sentences.append(" ".join(vocab[rng.choice(len(vocab), size=n, p=p)]).capitalize() + ".")
            context = " ".join(sentences)
            tokens += len(context.split()) + len(sentences)
            for q in range(5):
                words = vocab[rng.choice(len(vocab), size=int(rng.integers(5, 15)), p=p)]
                question = "What " + " ".join(words) + "?"
                tokens += len(words) + 2
                f.write(json.dumps({"id": f"c{c}q{q}", "context": context, "question": question}) + "\n")
                records += 1
            c += 1
    return records


class StageClock:
    """Seconds spent inside each wrapped function, summed over calls and threads, and when each
    stage last ended."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.ended: dict[str, float] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, name: str, stage: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.ended[stage] = time.perf_counter()
                self.seconds[stage] += self.ended[stage] - start

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()


class GpuBusy:
    """The share of time a GPU runs kernels, sampled by ``nvidia-smi`` every 100 ms."""

    def __init__(self, index: int) -> None:
        self.samples: list[tuple[float, float]] = []
        self._smi = subprocess.Popen(["nvidia-smi", "-i", str(index), "--query-gpu=utilization.gpu",
                                      "--format=csv,noheader,nounits", "-lms", "100"],
                                     stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._smi.stdout is not None
        for line in self._smi.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append((time.perf_counter(), float(line) / 100))

    def stop(self) -> None:
        self._smi.terminate()
        self._smi.wait()

    def share(self, start: float, end: float) -> float | None:
        window = [u for t, u in self.samples if start <= t <= end]
        return round(sum(window) / len(window), 3) if window else None


def run(source: Path, folder: Path, bilm: BiLM, args: argparse.Namespace,
        profile: cProfile.Profile | None) -> dict[str, Any]:
    """One ``precompute`` into ``folder``; each stage's seconds and the run's."""
    clock = StageClock()
    clock.wrap(engine, "plan_source", "planning")
    clock.wrap(plan, "make_tasks", "tasks")
    clock.wrap(bilm, "prepare", "prepare (char ids)")
    clock.wrap(bilm, "forward", "model (host time)")
    clock.wrap(FloatEncoding, "encode", "encode")
    clock.wrap(ZarrStore, "write", "write")
    clock.wrap(engine, "commit", "commit")
    store = folder / "pipeline.zarr"
    settings = PrecomputeSettings(parse_layer_spec(3, layers=args.layers), dtype=args.dtype, tokenizer="en",
                                  compute_dtype=args.compute_dtype, part_bytes=args.part_bytes,
                                  batch_tokens=args.batch_tokens)
    sampled = args.device.startswith("cuda") and shutil.which("nvidia-smi") is not None
    busy = GpuBusy(torch.device(args.device).index or 0) if sampled else None
    try:
        if profile is not None:
            profile.enable()
        start, cpu = time.perf_counter(), _cpu_seconds()
        manifest = precompute(str(source), str(store), bilm, settings, device=args.device, progress=False,
                              overwrite=True)
        end = time.perf_counter()
        wall, cpu = end - start, _cpu_seconds() - cpu
    finally:
        if profile is not None:
            profile.disable()
        if busy is not None:
            busy.stop()
        clock.restore()
    result = {"wall": wall, "cpu": cpu, "stages": dict(clock.seconds), "counts": manifest["counts"],
              "batch_tokens": manifest["batching"]["batch_tokens"]}
    if args.device_rate:  # the stand-in's waits are the device's busy time
        result["stand_in_device_busy_after_planning"] = round(
            clock.seconds["model (host time)"] / (end - clock.ended["planning"]), 3)
    if busy is not None:
        result["gpu_busy_after_planning"] = busy.share(clock.ended["planning"], end)
        result["gpu_busy_whole_run"] = busy.share(start, end)
    return result


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (planning's): on a shared machine
    the run's wall time says more about the neighbours than about the engine."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                         resource.RUSAGE_CHILDREN)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1_000_000, help="stored tokens of the input (about)")
    parser.add_argument("--layers", default="0,1", help="kept layers, e.g. 0,1 or 0,1,2")
    parser.add_argument("--dtype", default="float16", help="stored precision")
    parser.add_argument("--model", choices=("stand-in", "full"), default="stand-in",
                        help="the free stand-in, or the full model's shape with random weights (for a GPU)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--device-rate", type=float,
                        help="the stand-in waits as for a device of this many tokens/s (e.g. 1e6 for "
                             "the full model on an H200), and the share of the run it waited is reported")
    parser.add_argument("--batch-tokens", type=int, help="padded tokens per batch (default: the device's)")
    parser.add_argument("--compute-dtype", default="float32", help="the model's precision (full model)")
    parser.add_argument("--part-bytes", type=int, default=1 << 22,
                        help="input bytes per planning task (the default 32 MiB would make this input one part, "
                             "planned on one core)")
    parser.add_argument("--folder", help="where the input and the store go (default: a temporary folder)")
    parser.add_argument("--input", help="the input file: read when it exists, else generated there and kept "
                                        "(so that several runs share one)")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the fastest is reported")
    parser.add_argument("--profile", action="store_true", help="cProfile the last run: top functions")
    parser.add_argument("--torch-profile", action="store_true",
                        help="torch.profiler over the last run: top operators by device (else host) time")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        source = Path(args.input) if args.input else folder / "squad_like.jsonl"
        if not source.exists():
            make_input(source, args.tokens)
        records = sum(1 for _ in open(source, "rb"))
        bilm = (StandInBiLM(args.device_rate) if args.model == "stand-in" else full_model()).eval()
        best: dict[str, Any] | None = None
        for i in range(args.repeat):
            last = i == args.repeat - 1
            profile = cProfile.Profile() if args.profile and last else None
            with _torch_profile(args.torch_profile and last, args.device) as report_ops:
                result = run(source, folder, bilm, args, profile)
            if best is None or result["wall"] < best["wall"]:
                best = result
        assert best is not None
        stored = best.pop("counts")["tokens"]
        stages = best.pop("stages")
        report = {"cpus": os.cpu_count(), "device": _device_name(args.device), "model": args.model,
                  "compute_dtype": args.compute_dtype if args.model == "full" else "float16 (stand-in)",
                  "records": records, "input_MB": round(source.stat().st_size / 1e6, 1), "stored_tokens": stored,
                  "layers": args.layers, "dtype": args.dtype, "part_bytes": args.part_bytes,
                  "wall_s": round(best["wall"], 2), "stored_tokens_per_s": round(stored / best["wall"]),
                  "cpu_s": round(best["cpu"], 2), "stored_tokens_per_cpu_s": round(stored / best["cpu"]),
                  "load_average": round(os.getloadavg()[0], 1),
                  **{k: v for k, v in best.items() if k not in ("wall", "cpu")},
                  "stages": {name: {"s": round(s, 2), "stored_tokens_per_s": round(stored / s) if s else None}
                             for name, s in sorted(stages.items(), key=lambda kv: -kv[1])}}
        print(json.dumps(report, indent=2))
        if profile is not None:
            pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(25)
        report_ops()


@contextlib.contextmanager
def _torch_profile(enabled: bool, device: str) -> Iterator[Callable[[], None]]:
    """A torch.profiler over the block when ``enabled``; yields what prints its summary."""
    if not enabled:
        yield lambda: None
        return
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        yield lambda: print(prof.key_averages().table(
            sort_by="self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total", row_limit=20))


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({os.cpu_count()} cores)"


if __name__ == "__main__":
    main()
