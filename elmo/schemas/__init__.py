"""JSON Schemas shipped as package data (this folder for the biLM's files: options, training
config, tokenizer record; ``cache_builder/schemas`` for the cache's), loaded with
:mod:`importlib.resources` so that they are found in a wheel as in a checkout."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from importlib.resources import files
from typing import Any

import jsonschema


@functools.cache
def load_schema(name: str, package: str = __name__) -> dict[str, Any]:
    """Return the parsed schema ``<name>.schema.json`` of ``package`` (default: this one)."""
    return json.loads(files(package).joinpath(f"{name}.schema.json").read_text(encoding="utf-8"))


def schema_errors(instance: Any, name: str, package: str = __name__) -> list[str]:
    """Every violation of schema ``name`` by ``instance``, as ``"path.to.key: message"`` lines.

    A NaN or an infinity (Python's ``json`` reads ``NaN``, ``Infinity`` and ``1e999``) is a
    violation wherever it stands: JSON Schema's ``number`` admits it, and every bound
    compared with NaN holds.
    """
    validator = jsonschema.Draft202012Validator(load_schema(name, package))
    errors = [(list(e.absolute_path), e.message) for e in validator.iter_errors(instance)]
    errors += [(path, f"{value} is not a finite number") for path, value in _non_finite(instance, [])]
    return [f"{'.'.join(str(p) for p in path) or '<root>'}: {message}"
            for path, message in sorted(errors, key=lambda e: list(map(str, e[0])))]


def _non_finite(value: Any, path: list[str | int]) -> Iterator[tuple[list[str | int], float]]:
    """(path, value) of every NaN or infinite float inside a JSON-like value."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, [*path, key])
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _non_finite(item, [*path, i])
