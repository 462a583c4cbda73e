"""The default batch size: 4096 padded tokens on a CPU, on a GPU what half its free memory holds."""

from __future__ import annotations

import torch

from cache_builder.build.engine import PrecomputeSettings, precompute
from cache_builder.build.settings import CPU_BATCH_TOKENS, MAX_BATCH_TOKENS, default_batch_tokens
from tests.cache_models import load
from tests.test_inputs import write_lines
from tests.tiny import tiny_bilm


def test_gpu_batches_grow_with_free_memory_in_powers_of_two(monkeypatch):
    bilm = tiny_bilm(0)
    free = {"bytes": 0}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free["bytes"], 80 << 30))
    cuda = torch.device("cuda")
    chosen = []
    for mib in (0, 4, 16, 64, 256, 1 << 22):
        free["bytes"] = mib << 20
        chosen.append(default_batch_tokens(bilm, cuda, "bfloat16"))
    assert chosen[0] == CPU_BATCH_TOKENS and chosen[-1] == MAX_BATCH_TOKENS
    assert chosen == sorted(chosen) and len(set(chosen)) > 2
    assert all(n & (n - 1) == 0 for n in chosen)
    free["bytes"] = 64 << 20  # float32 activations take twice the room of bfloat16's
    assert default_batch_tokens(bilm, cuda, "float32") == default_batch_tokens(bilm, cuda, "bfloat16") // 2
    assert default_batch_tokens(bilm, torch.device("cpu"), "float32") == CPU_BATCH_TOKENS


def test_the_default_is_decided_per_device_and_recorded(tmp_path, model_files, monkeypatch):
    assert PrecomputeSettings().batch_tokens is None
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 << 40, 1 << 40))
    bilm = load(model_files)
    gpu = PrecomputeSettings().for_device(bilm, torch.device("cuda"))
    assert gpu.batch_tokens == MAX_BATCH_TOKENS
    assert PrecomputeSettings(batch_tokens=64).for_device(bilm, torch.device("cuda")).batch_tokens == 64
    path = write_lines(tmp_path / "in.jsonl", [{"id": "a", "text": "one two three ."}])
    manifest = precompute(str(path), str(tmp_path / "s.zarr"), bilm, PrecomputeSettings(tokenizer="whitespace"),
                          device="cpu", progress=False)
    assert manifest["batching"]["batch_tokens"] == CPU_BATCH_TOKENS  # as every store before it recorded


def test_an_automatic_batch_size_resumes_with_the_stores_whatever_memory_is_free_now(tmp_path, model_files,
                                                                                    monkeypatch):
    """The automatic size is part of the run's identity; a re-run with less (or more) free memory
    must still resume or keep the store, not refuse it as one of other arguments."""
    import cache_builder.build.settings as settings_module

    bilm = load(model_files)
    path = write_lines(tmp_path / "in.jsonl", [{"id": "a", "text": "one two three ."}])
    for suffix in (".zarr", ".h5"):
        store = str(tmp_path / f"s{suffix}")
        for size in (2048, 8192):
            monkeypatch.setattr(settings_module, "default_batch_tokens", lambda *args, n=size: n)
            manifest = precompute(str(path), store, bilm, PrecomputeSettings(tokenizer="whitespace"),
                                  device="cpu", progress=False)
            assert manifest["batching"]["batch_tokens"] == 2048
