"""JSON files: reading them with errors that name the file and line, and applying the JSON
Schemas kept in the repository's ``schemas/`` folder."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
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
