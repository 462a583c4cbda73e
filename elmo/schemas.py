"""Loading and applying the JSON Schemas kept in the repository's ``schemas/`` folder."""

from __future__ import annotations

import functools
import json
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
    """Every violation of schema ``name`` by ``instance``, as ``"path.to.key: message"`` lines."""
    validator = jsonschema.Draft202012Validator(load_schema(name))
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]
