"""Loading and applying the JSON Schemas kept in the repository's ``schemas/`` folder."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """Return the parsed schema ``schemas/<name>.schema.json``."""
    with open(SCHEMA_DIR / f"{name}.schema.json", encoding="utf-8") as f:
        return json.load(f)


def schema_errors(instance: Any, name: str) -> list[str]:
    """Every violation of schema ``name`` by ``instance``, as ``"path.to.key: message"`` lines.

    A NaN or an infinity (Python's ``json`` reads ``NaN``, ``Infinity`` and ``1e999``) is a
    violation wherever it stands: JSON Schema's ``number`` admits it, and every bound
    compared with NaN holds.
    """
    validator = jsonschema.Draft202012Validator(load_schema(name))
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
