"""Tiny random-weight biLMs for tests that do not need the reference fixture."""

from __future__ import annotations

import torch

from elmo import BiLM, BiLMOptions


def tiny_options(**overrides) -> BiLMOptions:
    """A small random-weight configuration; keyword overrides go into the char_cnn / lstm sections."""
    raw = {
        "char_cnn": {"embedding": {"dim": 4}, "filters": [[1, 4], [2, 8], [3, 8]], "n_highway": 1,
                     "n_characters": 262, "max_characters_per_token": 50, "activation": "relu"},
        "lstm": {"dim": 24, "projection_dim": 8, "n_layers": 2, "cell_clip": 3, "proj_clip": 3,
                 "use_skip_connections": True},
    }
    for key, value in overrides.items():
        section = "char_cnn" if key in raw["char_cnn"] else "lstm"
        raw[section][key] = value
    return BiLMOptions.from_dict(raw)


def tiny_bilm(seed: int = 0, **overrides) -> BiLM:
    torch.manual_seed(seed)
    bilm = BiLM(tiny_options(**overrides)).eval()
    with torch.no_grad():  # non-zero biases so that every weight matters
        for p in bilm.parameters():
            if p.dim() <= 2 and p.abs().sum() == 0:
                p.uniform_(-0.5, 0.5)
    return bilm
