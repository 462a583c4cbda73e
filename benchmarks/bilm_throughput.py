"""biLM throughput and peak memory: our BiLM against a plain per-time-step implementation.

The baseline computes the same model the straightforward way (as AllenNLP's ``_ElmoBiLm``
does): the char CNN over every padded position of every token at all 50 characters, and an
LSTM cell loop over time that multiplies each step's input inside the loop. It shares our
weights, and its outputs are checked against ours before anything is timed.

Each (model, implementation) runs in its own subprocess so that peak RSS is its own.
Ratios come from runs made one after the other in one invocation of this script.

    python benchmarks/bilm_throughput.py                      # CPU: fixture, small, full
    python benchmarks/bilm_throughput.py --models small --batches 8
    python benchmarks/bilm_throughput.py --cpu-dtypes float32,bfloat16   # also ours in bfloat16
    python benchmarks/bilm_throughput.py --devices cuda --models full  # GPU only: the H100 target
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from elmo import BiLM, BiLMOptions  # noqa: E402
from elmo.bilm import TokenBatch  # noqa: E402
from elmo.chars import sentence_char_ids  # noqa: E402

from peak_rss import peak_rss_bytes  # noqa: E402

PUBLISHED_FILTERS = [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]]
MODELS = {
    "fixture": dict(filters=[[1, 4], [2, 8], [3, 16], [4, 32], [5, 64]], embed=4, n_highway=2, cell=64, proj=16),
    "small": dict(filters=PUBLISHED_FILTERS, embed=16, n_highway=1, cell=1024, proj=128),
    "full": dict(filters=PUBLISHED_FILTERS, embed=16, n_highway=2, cell=4096, proj=512),
}


def model_options(name: str) -> BiLMOptions:
    m = MODELS[name]
    return BiLMOptions.from_dict({
        "char_cnn": {"embedding": {"dim": m["embed"]}, "filters": m["filters"], "n_highway": m["n_highway"],
                     "n_characters": 262, "max_characters_per_token": 50, "activation": "relu"},
        "lstm": {"dim": m["cell"], "projection_dim": m["proj"], "n_layers": 2, "cell_clip": 3,
                 "proj_clip": 3, "use_skip_connections": True},
    })


def make_batches(n_batches: int, batch_size: int, seed: int = 0) -> list[list[list[str]]]:
    """English-like text: Zipf-distributed word types of realistic lengths, sentences of 5–60 tokens.

    Sentence lengths follow a log-normal clipped to [5, 60] with a mean near 23.6 tokens (the
    distribution the DESIGN figures were measured with).
    """
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0,
               1.9, 1.5, 1.0, 0.8, 0.2, 0.2, 0.1, 0.1]
    n_types = 50_000
    vocab = ["".join(rng.choices(letters, weights, k=max(1, min(20, round(rng.lognormvariate(1.5, 0.45))))))
             for _ in range(n_types)]
    vocab[:6] = [".", ",", "the", "of", "and", "to"]
    zipf = [1.0 / (rank + 1) for rank in range(n_types)]
    batches = []
    for _ in range(n_batches):
        lengths = [min(60, max(5, round(rng.lognormvariate(3.05, 0.5)))) for _ in range(batch_size)]
        batches.append([rng.choices(vocab, zipf, k=n) for n in lengths])
    return batches


def baseline_forward(bilm: BiLM, sentences: list[list[str]]) -> torch.Tensor:
    """The plain implementation: ``(n_layers, batch, time, dim)``, same weights as ``bilm``."""
    cnn, options = bilm.token_encoder, bilm.options
    with_boundaries = [["<S>", *s, "</S>"] for s in sentences]
    char_ids = torch.from_numpy(sentence_char_ids(with_boundaries)).long()  # (B, T, 50)
    n_batch, time_steps, _ = char_ids.shape
    # Char CNN on every position, padding included, at the full 50 characters.
    table = torch.cat([torch.zeros_like(cnn.char_embed[:1]), cnn.char_embed[1:]])
    x = F.embedding(char_ids.view(-1, char_ids.shape[-1]), table).transpose(1, 2)
    act = torch.relu if options.char_cnn.activation == "relu" else torch.tanh
    h = torch.cat([act(conv(x)).max(dim=-1).values for conv in cnn.convs], dim=-1)
    h = cnn.projection(cnn.highway(h))
    token_layer = h.view(n_batch, time_steps, -1)

    lengths = torch.tensor([len(s) for s in with_boundaries])
    order = torch.argsort(lengths, descending=True)
    layers = [torch.cat([token_layer, token_layer], dim=-1)]
    inputs = [token_layer[order], token_layer[order]]  # per direction, rows sorted by length
    sorted_lengths = lengths[order].tolist()
    for layer in bilm.lstm.layers:
        outputs = []
        for direction in (0, 1):
            w_in, w_state, w_proj = layer.w_input[direction], layer.w_state[direction], layer.w_proj[direction]
            bias = layer.bias[direction] + layer.forget_bias
            out = inputs[direction].new_zeros(n_batch, time_steps, w_proj.shape[1])
            hidden = out.new_zeros(n_batch, w_proj.shape[1])
            cell = out.new_zeros(n_batch, w_proj.shape[0])
            for step in range(time_steps):
                active = sum(1 for n in sorted_lengths if n > step)
                # The backward LSTM reads each row from its own last position to its first.
                index = torch.tensor([step if direction == 0 else sorted_lengths[r] - 1 - step
                                      for r in range(active)])
                x_t = inputs[direction][torch.arange(active), index]
                gates = x_t @ w_in + hidden[:active] @ w_state + bias
                i, j, f, o = gates.chunk(4, dim=-1)
                c = torch.sigmoid(f) * cell[:active] + torch.sigmoid(i) * torch.tanh(j)
                c = c.clamp(-layer.cell_clip, layer.cell_clip)
                new_h = (torch.sigmoid(o) * torch.tanh(c) @ w_proj).clamp(-layer.proj_clip, layer.proj_clip)
                cell = torch.cat([c, cell[active:]])
                hidden = torch.cat([new_h, hidden[active:]])
                out[torch.arange(active), index] = new_h
            if options.lstm.use_skip_connections and len(layers) > 1:
                out = out + inputs[direction]
            outputs.append(out)
        inputs = outputs
        unsorted = torch.empty_like(torch.cat(outputs, dim=-1))
        unsorted[order] = torch.cat(outputs, dim=-1)
        layers.append(unsorted)
    return torch.stack(layers)[:, :, 1:-1]


def run_one(model: str, impl: str, n_batches: int, batch_size: int, device: str, dtype: str) -> dict:
    """Time one implementation in this process; returns tokens/s, peak RSS and peak GPU memory.

    On a GPU, ours gets its batches prepared and copied one ahead by a thread, as ``precompute``
    feeds it; on the CPU every implementation prepares its own batches inside the timing.
    """
    torch.manual_seed(0)
    bilm = BiLM(model_options(model)).eval().to(device, getattr(torch, dtype))
    if impl == "eager":  # ours without CUDA graphs of the LSTM's time steps
        bilm.lstm.step_graphs = False
    batches = make_batches(n_batches + 1, batch_size)
    cuda = device.startswith("cuda")
    if impl == "baseline":
        inputs, run = batches, lambda b: baseline_forward(bilm, b)
    elif cuda:
        inputs, run = prefetched(bilm, batches, device), lambda b: bilm(b).layers
    else:
        inputs, run = batches, lambda b: bilm.embed(b).layers
    inputs = iter(inputs)
    with torch.inference_mode():
        run(next(inputs))  # warm-up
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in inputs:
            run(batch)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    n_tokens = sum(len(s) for batch in batches[1:] for s in batch)
    return {"model": model, "impl": impl, "device": device, "dtype": dtype, "tokens": n_tokens,
            "seconds": seconds, "tokens_per_s": n_tokens / seconds,
            "peak_rss_gb": peak_rss_bytes() / 2**30,
            "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0}


def prefetched(bilm: BiLM, batches: list[list[list[str]]], device: str) -> Iterator[TokenBatch]:
    """``batches`` prepared, pinned and copied to the GPU ``device`` by a thread, up to two ahead."""
    ready: queue.Queue[TokenBatch | None] = queue.Queue(maxsize=2)

    def produce() -> None:
        for batch in batches:
            ready.put(bilm.prepare(batch).pin_memory().to(device))
        ready.put(None)

    threading.Thread(target=produce, daemon=True).start()
    while (batch := ready.get()) is not None:
        yield batch


def max_error(model: str, device: str, dtype: str, reference_impl: str = "ours") -> float:
    """Max abs difference of ``dtype`` on ``device`` (ours) against float32 on the CPU (``reference_impl``)."""
    torch.manual_seed(0)
    bilm = BiLM(model_options(model)).eval()
    batch = make_batches(1, 16, seed=1)[0]
    with torch.inference_mode():
        reference = bilm.embed(batch)
        if reference_impl == "baseline":  # it leaves padding positions non-zero: compare real tokens
            return float(((baseline_forward(bilm, batch) - reference.layers) * reference.mask[..., None]).abs().max())
        ours = bilm.to(device, getattr(torch, dtype)).embed(batch).layers.float().cpu()
    return float((ours - reference.layers).abs().max())


def in_subprocess(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="fixture,small,full")
    parser.add_argument("--batches", type=int, default=0, help="timed batches per run (default: by model)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--gpu-batch-size", type=int, default=4096,
                        help="sentences per GPU batch (large: each LSTM step is one launch-bound kernel chain)")
    parser.add_argument("--cpu-dtypes", default="float32",
                        help="precisions of ours on the CPU, e.g. float32,bfloat16 (bfloat16 pays off "
                             "on CPUs with bf16 instructions)")
    parser.add_argument("--devices", default="cpu,cuda",
                        help="cpu (baseline comparison), cuda (when present), or both (default)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--worker", nargs=6, metavar=("MODEL", "IMPL", "BATCHES", "SIZE", "DEVICE", "DTYPE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        model, impl, n, size, device, dtype = args.worker
        print(json.dumps(run_one(model, impl, int(n), int(size), device, dtype)))
        return

    default_batches = {"fixture": 20, "small": 6, "full": 3}
    threads = ["--threads", str(args.threads)] if args.threads else []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch {args.batch_size}, "
          "sentences of 5–60 tokens, random weights, stateless")
    devices = args.devices.split(",")
    if "cuda" in devices and not torch.cuda.is_available():
        print("no CUDA GPU: GPU measurements skipped")
    for model in args.models.split(","):
        n = str(args.batches or default_batches[model])
        if "cpu" in devices:
            compare_on_cpu(model, n, args.batch_size, args.cpu_dtypes.split(","), threads)
        if "cuda" in devices and torch.cuda.is_available():
            measure_on_gpu(model, n, args.gpu_batch_size)


def compare_on_cpu(model: str, n: str, batch_size: int, dtypes: list[str], threads: list[str]) -> None:
    """Baseline against ours in float32 (speed-up, memory), then ours in the other ``dtypes``."""
    check = max_error(model, "cpu", "float32", reference_impl="baseline")
    assert check < 1e-4, f"baseline and ours disagree on {model}: {check}"
    base = in_subprocess(*threads, "--worker", model, "baseline", n, str(batch_size), "cpu", "float32")
    ours = in_subprocess(*threads, "--worker", model, "ours", n, str(batch_size), "cpu", "float32")
    print(f"cpu  {model:8s} baseline {base['tokens_per_s']:9.0f} tok/s {base['peak_rss_gb']:5.2f} GB | "
          f"ours {ours['tokens_per_s']:9.0f} tok/s {ours['peak_rss_gb']:5.2f} GB | "
          f"speed-up {ours['tokens_per_s'] / base['tokens_per_s']:5.1f}x, "
          f"memory {ours['peak_rss_gb'] / base['peak_rss_gb']:.2f}x (outputs agree to {check:.1e})")
    for dtype in dtypes:
        if dtype == "float32":
            continue
        half = in_subprocess(*threads, "--worker", model, "ours", n, str(batch_size), "cpu", dtype)
        print(f"cpu  {model:8s} {dtype:8s} ours {half['tokens_per_s']:9.0f} tok/s "
              f"{half['peak_rss_gb']:5.2f} GB | {half['tokens_per_s'] / ours['tokens_per_s']:.2f}x float32, "
              f"max abs error vs float32 {max_error(model, 'cpu', dtype):.2e}")


def measure_on_gpu(model: str, n: str, batch_size: int) -> None:
    """Ours on the GPU in each precision: tokens/s, peak GPU memory, max error against float32 CPU."""
    for dtype in ("float32", "float16", "bfloat16"):
        gpu = in_subprocess("--worker", model, "ours", n, str(batch_size), "cuda", dtype)
        err = max_error(model, "cuda", dtype)
        print(f"cuda {model:8s} {dtype:8s} ours {gpu['tokens_per_s']:11.0f} tok/s "
              f"{gpu['peak_gpu_gb']:6.2f} GB GPU (batch {batch_size}), max abs error vs float32 CPU {err:.2e}")


if __name__ == "__main__":
    main()
