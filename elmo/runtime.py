"""Device and precision choices shared by every entry point."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# BLAS kernels round a row of a matrix product differently with the number of rows the product
# has, but not with where the row is among them once that number is a whole number of blocks
# (MKL, measured: 2-d products agree from 12 rows on at multiples of 4, batched ones from 4 rows
# on). Every product of the model has whole blocks of rows, so a sentence's vectors are bitwise
# the same whatever shares its batch or its char-CNN call: an LSTM amplifies small differences
# (by ~3x per step with large random weights), and close is not enough. The char CNN runs once
# per type and takes a wide margin; the LSTM's time loop is the hot path and takes a small one.
ROW_BLOCK = 32
LSTM_ROW_BLOCK = 8


def whole_blocks(rows: int, block: int) -> int:
    """``rows`` rounded up to a multiple of ``block``."""
    return -(-rows // block) * block


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
    """Model precision by name. bfloat16 runs anywhere (about 2x float32 on CPUs with bf16
    instructions); float16 only on a GPU, since CPU float16 kernels are many times slower.

    Raises:
        ValueError: an unknown name, or float16 on the CPU.
    """
    if name not in DTYPES:
        raise ValueError(f"unknown compute dtype {name!r}; choose one of {sorted(DTYPES)}")
    if name == "float16" and device.type != "cuda":
        raise ValueError("--compute-dtype float16 needs a GPU; on the CPU use float32 or bfloat16")
    return DTYPES[name]
