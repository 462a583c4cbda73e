"""Torch pickles read without running code, and torch's refusals said in one line.

A pickle is a program: reading one may call any function it names. Every pickle this project
reads (ELMoForManyLangs state dicts, training checkpoints) goes through
``torch.load(weights_only=True)``, whose restricted unpickler builds tensors and plain
containers and refuses anything else. That refusal is on purpose here, but torch's message
opens with how to load the file anyway (``weights_only=False``, which would run whatever the
file holds) and names what it refused near its end, in wording that changes between versions.
:func:`load_tensors_only` replaces it with the file, what it would have had to run, and why
it is refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

# What torch's weights-only unpickler names when it refuses an object (torch 2.6 - 2.13 wording).
_REFUSED = [
    r"GLOBAL ([\w.]+)",  # "Unsupported global: GLOBAL io.open", "unsupported GLOBAL posix.system whose module..."
    r"call reduce for unrecognized function (.+?)(?: which belongs to .*)?$",
    r"(?:Can only create new object|Can only build).* but got (<class '[^']+'>|\S+)",
]
# Sentences of torch's message that are advice on loading the file anyway, or pointers to its docs.
_ADVICE = re.compile(r"weights_only|safe_globals|trust|documentation|PyTorch 2\.6|two options", re.IGNORECASE)


def load_tensors_only(path: str | Path, error: type[Exception], kind: str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors and plain data only.

    Args:
        error: the exception type to raise (the caller's, e.g. ``EfmlFormatError``).
        kind: what the file should be, for the message of an unreadable one ("torch state dict").

    Raises:
        error: ``"PATH: refused on purpose: reading it would run NAME; ..."`` when the file holds
            anything the restricted unpickler refuses (a global such as ``posix.system``, an
            object of another class); ``"PATH: not a readable KIND (...)"`` when it is damaged,
            truncated or no torch file. Never with torch's advice to load it another way.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # whatever torch raises, name the file
        message = " ".join(str(e).split())
        refused = next((m[1] for p in _REFUSED if (m := re.search(p, message))), None)
        if refused is not None:
            raise error(f"{path}: refused on purpose: reading it would run {refused}, and nothing this tool "
                        "reads may run code (a pickle may call any function it names; only tensors and plain "
                        "data are loaded)") from None
        raise error(f"{path}: not a readable {kind} ({type(e).__name__}: {_reason(message)})") from None


def _reason(message: str) -> str:
    """torch's reason, without its advice: e.g. ``Unsupported operand 110``."""
    message = message.split("WeightsUnpickler error: ")[-1]
    sentences = [s for s in re.split(r"(?<=[.!?]) ", message) if s and not _ADVICE.search(s)]
    return " ".join(sentences).strip() or "torch gave no reason"
