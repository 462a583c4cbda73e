"""The read side: a complete store → vectors for training.

- :mod:`.cache`: :func:`~.cache.open_cache` and lazy per-document lookups;
- :mod:`.source`: the small interface the views below read through (no import of the cache);
- :mod:`.pooling`, :mod:`.mix`, :mod:`.reader`: views for models (pooled vectors, a learnable
  scalar mix, question-answering batches);
- :mod:`.export`, :mod:`.interop`: AllenNLP's ``elmo`` layout, Hugging Face datasets, numpy files;
- :mod:`.verify`: the manifest checked against the arrays, and vectors recomputed by the model.
"""
