"""Building and reading precomputed ELMo embedding caches.

- :mod:`cache_builder.build`: a dataset → a store (:func:`cache_builder.build.engine.precompute`);
- :mod:`cache_builder.read`: a store → vectors (:func:`open_cache`, pooling, export, verify);
- :mod:`cache_builder.store`, :mod:`cache_builder.layers`: the store's layout and backends, and
  which layers a store keeps, which both sides share.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.1.0"

_BUILD = ("batching", "commit", "core_share", "distributed", "elmo_command", "engine", "inputs", "plan",
          "progress", "settings", "sources", "tasks", "tokenize")
_READ = ("cache", "export", "interop", "mix", "pooling", "reader", "verify")
# The flat names of releases before the build/read split → where each module lives now.
MOVED = {f"{__name__}.{m}": f"{__name__}.build.{m}" for m in _BUILD} | {
    f"{__name__}.{m}": f"{__name__}.read.{m}" for m in _READ}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports of a flat name (``cache_builder.engine``) give the moved module itself, so code
    written against the flat layout keeps working, with a ``DeprecationWarning`` naming the new
    place; the module object is shared, so ``monkeypatch`` and ``isinstance`` see one module."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        warnings.warn(f"{spec.name} is now {MOVED[spec.name]}", DeprecationWarning, stacklevel=2)
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        pass  # the moved module has run already


sys.meta_path.insert(0, _MovedModules())

from cache_builder.read.cache import EmbeddingCache, open_cache  # noqa: E402

__all__ = ["EmbeddingCache", "open_cache", "__version__"]
