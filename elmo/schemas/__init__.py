"""JSON files: reading them with errors that name the file and line, and the JSON Schemas
shipped as package data (this folder for the biLM's files: options, training config,
tokenizer record, ELMoForManyLangs config; ``cache_builder/schemas`` for the cache's), loaded
with :mod:`importlib.resources` so that they are found in a wheel as in a checkout."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path
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


def read_json(path: str | Path, error: Callable[[str], Exception], what: str) -> Any:
    """The value of the JSON file ``path`` (``what`` it is, for messages).

    Raises:
        ``error(message)``, the message naming the path (and line): the file is missing, not
        UTF-8, or not valid JSON.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise error(f"{path}: line {e.lineno}: not valid JSON: {e.msg}") from None
