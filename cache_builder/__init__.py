"""Building and reading precomputed ELMo embedding caches.

- :func:`cache_builder.engine.precompute` turns a dataset into a store;
- :func:`open_cache` opens a store for lazy, per-document reads.
"""

__version__ = "0.1.0"

from cache_builder.cache import EmbeddingCache, open_cache  # noqa: E402

__all__ = ["EmbeddingCache", "open_cache", "__version__"]
