"""Device and precision choices shared by every entry point."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(spec: str | None = None) -> torch.device:
    """``None``/"auto" → the first GPU when one is present, else the CPU; otherwise ``spec`` checked.

    Raises:
        ValueError: a CUDA device was asked for on a machine without one.
    """
    if spec in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested, but torch sees no CUDA GPU on this machine")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Model precision by name; half precisions only on a GPU (CPU kernels for them are slow)."""
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)}")
    dtype = DTYPES[name]
    if dtype != torch.float32 and device.type != "cuda":
        raise ValueError(f"--dtype {name} needs a GPU; run float32 on the CPU")
    return dtype
