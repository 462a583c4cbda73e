"""The engine's own speed on any machine: ``precompute`` with a stand-in for the device.

The real ``precompute`` runs (Python API: planning, batching, tasks, prepare, encode, write,
commit) on a generated SQuAD-like JSONL, with a model of the full ELMo's width (3 layers of
1024) whose forward hands back, at no cost, what a GPU in half precision would hand back: the
layers in float16, views of one preallocated buffer. Whatever rate comes out is the ceiling
the engine puts on any device. Each stage's own rate is the stored tokens over the seconds
spent inside it (stages overlap in threads, so their times add up to more than the run's).

    python benchmarks/pipeline.py                        # ~1M stored tokens, --layers 0,1 float16
    python benchmarks/pipeline.py --tokens 200000 --folder /some/fast/disk --profile
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import json
import os
import pstats
import resource
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cache_builder.engine as engine  # noqa: E402
import cache_builder.plan as plan  # noqa: E402
from cache_builder.engine import PrecomputeSettings, precompute  # noqa: E402
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
    ``prepare`` (character ids of the batch's distinct types) stays the real one."""

    def __init__(self) -> None:
        super().__init__(BiLMOptions.from_dict(STAND_IN))
        self._buffer = torch.zeros(0)
        self.seconds = 0.0

    def _view(self, shape: Sequence[int]) -> torch.Tensor:
        """A ``shape`` float16 tensor over the front of one flat buffer, grown on demand."""
        n = int(np.prod(shape))
        if n > self._buffer.numel():
            self._buffer = torch.zeros(2 * n, dtype=torch.float16)
        return self._buffer[:n].view(*shape)

    def forward(self, batch: TokenBatch) -> BiLMOutput:
        start = time.perf_counter()
        n_batch, time_steps = batch.type_index.shape
        width = 2 * self.options.lstm.projection_dim
        layers = self._view((self.options.lstm.n_layers + 1, n_batch, time_steps - 2, width))
        mask = batch.type_index[:, 1:-1] != 0
        out = BiLMOutput(layers, mask, self._view((len(batch.types), width // 2)))
        self.seconds += time.perf_counter() - start
        return out

    def encode_types(self, types: Sequence[str]) -> torch.Tensor:
        return self._view((len(types), self.options.lstm.projection_dim))


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
    """Seconds spent inside each wrapped function, summed over calls and threads."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, name: str, stage: str) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - start

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()


def run(source: Path, folder: Path, bilm: StandInBiLM, layers: str, dtype: str, part_bytes: int,
        profile: cProfile.Profile | None) -> dict[str, Any]:
    """One ``precompute`` into ``folder``; each stage's seconds and the run's."""
    clock = StageClock()
    clock.wrap(engine, "plan_source", "planning")
    clock.wrap(plan, "make_tasks", "tasks")
    clock.wrap(bilm, "prepare", "prepare (char ids)")
    clock.wrap(FloatEncoding, "encode", "encode")
    clock.wrap(ZarrStore, "write", "write")
    clock.wrap(engine, "commit", "commit")
    bilm.seconds = 0.0
    store = folder / "pipeline.zarr"
    settings = PrecomputeSettings(parse_layer_spec(3, layers=layers), dtype=dtype, tokenizer="en",
                                  part_bytes=part_bytes)
    try:
        if profile is not None:
            profile.enable()
        start, cpu = time.perf_counter(), _cpu_seconds()
        manifest = precompute(str(source), str(store), bilm, settings, device="cpu", progress=False,
                              overwrite=True)
        wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    finally:
        if profile is not None:
            profile.disable()
        clock.restore()
    stages = {**clock.seconds, "model stand-in": bilm.seconds}
    return {"wall": wall, "cpu": cpu, "stages": stages, "counts": manifest["counts"]}


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (planning's): on a shared machine
    the run's wall time says more about the neighbours than about the engine."""
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                         resource.RUSAGE_CHILDREN)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=1_000_000, help="stored tokens of the input (about)")
    parser.add_argument("--layers", default="0,1")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--part-bytes", type=int, default=1 << 22,
                        help="input bytes per planning task (the default 32 MiB would make this input one part, "
                             "planned on one core)")
    parser.add_argument("--folder", help="where the input and the store go (default: a temporary folder)")
    parser.add_argument("--repeat", type=int, default=1, help="runs; the fastest is reported")
    parser.add_argument("--profile", action="store_true", help="cProfile the last run: top functions")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        folder = Path(tmp)
        source = folder / "squad_like.jsonl"
        records = make_input(source, args.tokens)
        bilm = StandInBiLM().eval()
        best: dict[str, Any] | None = None
        for i in range(args.repeat):
            profile = cProfile.Profile() if args.profile and i == args.repeat - 1 else None
            result = run(source, folder, bilm, args.layers, args.dtype, args.part_bytes, profile)
            if best is None or result["wall"] < best["wall"]:
                best = result
        assert best is not None
        stored = best["counts"]["tokens"]
        report = {"cpus": os.cpu_count(), "records": records, "input_MB": round(source.stat().st_size / 1e6, 1),
                  "layers": args.layers, "dtype": args.dtype, "part_bytes": args.part_bytes, "counts": best["counts"],
                  "wall_s": round(best["wall"], 2), "stored_tokens_per_s": round(stored / best["wall"]),
                  "cpu_s": round(best["cpu"], 2), "stored_tokens_per_cpu_s": round(stored / best["cpu"]),
                  "load_average": round(os.getloadavg()[0], 1),
                  "stages": {name: {"s": round(s, 2), "stored_tokens_per_s": round(stored / s) if s else None}
                             for name, s in sorted(best["stages"].items(), key=lambda kv: -kv[1])}}
        print(json.dumps(report, indent=2))
        if profile is not None:
            pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
