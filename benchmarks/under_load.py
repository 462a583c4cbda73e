"""Benchmark: how ``precompute`` degrades beside other CPU-bound work, per thread policy.

A run that shares the machine should take about its fair share: with two busy processes beside
it on 2 cores, at most about 2.2x its time on the idle machine (torch's OpenMP threads that spin
while they wait for work made it 3.8x), without losing more than 5% when the machine is idle.

For each policy, a fresh process (OpenMP reads its settings when torch loads) embeds the SQuAD
sample (``data/sample_squad.jsonl``, its records repeated with distinct texts up to
``--records``) with the bundled model, once on the idle machine and once beside ``--hogs``
processes that spin; ``--repeats`` runs each, the median kept. Policies:

- ``share``: what ``precompute`` does: OpenMP's spinning threads, as many as the other processes
  leave cores free (``cache_builder/build/core_share.py``), measured a few times a second;
- ``spin``: OpenMP's own default (threads spin a while before they sleep), one thread per core
  whatever the neighbours do;
- ``passive``: ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep), one thread per core;
- ``one-thread``: a single torch thread.

The last three hold the thread count fixed. Prints per policy the idle and loaded seconds,
loaded / idle, idle / spin's idle (what the policy costs on an idle machine), and the share of
the machine's cores the loaded run used (its CPU seconds over wall seconds times cores), beside
the fair share, 1 / (hogs + 1). A run that uses both cores well when idle cannot be less than
about (hogs + 1) times slower at its fair share; loaded / idle is only small for policies that
are slow when idle.

Usage: ``python benchmarks/under_load.py [--records 3000] [--repeats 3] [--hogs 2]``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample_squad.jsonl"
FIXED = "UNDER_LOAD_FIXED_THREADS"  # tells the child to keep its thread count
POLICIES = {"spin": {FIXED: "1"}, "share": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE", FIXED: "1"},
            "one-thread": {"OMP_NUM_THREADS": "1"}}


def records(n: int) -> list[dict]:
    """The sample's records, repeated with a number in every text so that none is deduplicated."""
    sample = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{**r, "id": f"{r['id']}-{k}", "context": f"{r['context']} ({k})", "question": f"{r['question']} ({k})"}
            for k in range(n // len(sample) + 1) for r in sample][:n]


def child(path: str) -> None:
    """One run of ``precompute`` over the JSONL at ``path``: prints its wall and CPU seconds
    (imports excluded; CPU of the process and its planning processes)."""
    sys.path.insert(0, str(REPO))
    from cache_builder.build.core_share import CoreShare
    from cache_builder.build.engine import PrecomputeSettings, precompute

    if os.environ.get(FIXED):
        CoreShare.update = lambda self: None

    with tempfile.TemporaryDirectory() as out:
        started, cpu = time.perf_counter(), cpu_seconds()
        precompute(path, os.path.join(out, "s.zarr"), settings=PrecomputeSettings(tokenizer="en"), progress=False)
        print(time.perf_counter() - started, cpu_seconds() - cpu)


def cpu_seconds() -> float:
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))


def run_once(path: str, env: dict[str, str]) -> tuple[float, float]:
    environ = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", FIXED)}
    out = subprocess.run([sys.executable, __file__, "--child", path], env={**environ, **env}, check=True,
                         capture_output=True, text=True)
    wall, cpu = out.stdout.split()[-2:]
    return float(wall), float(cpu)


def hog(stop: multiprocessing.synchronize.Event) -> None:
    while not stop.is_set():
        for _ in range(100_000):
            pass


def measure(path: str, env: dict[str, str], repeats: int, hogs: int) -> tuple[float, float]:
    """The median run's wall seconds, and the share of the machine's cores it used."""
    stop = multiprocessing.Event()
    workers = [multiprocessing.Process(target=hog, args=(stop,), daemon=True) for _ in range(hogs)]
    for w in workers:
        w.start()
    try:
        wall, cpu = sorted(run_once(path, env) for _ in range(repeats))[repeats // 2]
        return wall, cpu / wall / (os.cpu_count() or 1)
    finally:
        stop.set()
        for w in workers:
            w.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--hogs", type=int, default=2)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "squad.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records(args.records))
        load = os.getloadavg()[0]
        print(f"{os.cpu_count()} cores, load average {load:.1f}; {args.records} records, "
              f"median of {args.repeats}; {args.hogs} spinning processes beside the loaded runs")
        if load > 0.5:
            print("the machine is not idle: 'idle' runs share it, so the ratios are not the ones to report")
        print(f"fair share of the cores beside them: {1 / (args.hogs + 1):.2f}")
        print(f"{'policy':<11} {'idle s':>7} {'loaded s':>9} {'loaded/idle':>12} {'idle/spin idle':>15} "
              f"{'loaded share':>13}")
        baseline = None
        for name in args.policies.split(","):
            idle, _ = measure(path, POLICIES[name], args.repeats, 0)
            loaded, share = measure(path, POLICIES[name], args.repeats, args.hogs)
            baseline = baseline or idle
            print(f"{name:<11} {idle:>7.2f} {loaded:>9.2f} {loaded / idle:>11.2f}x {idle / baseline:>14.2f}x "
                  f"{share:>13.2f}", flush=True)


if __name__ == "__main__":
    main()
