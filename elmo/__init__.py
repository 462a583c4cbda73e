"""The biLM: everything about the ELMo model, nothing about caching.

Public entry points:

- :func:`load_bilm` reads a model directory (ours, or an ELMoForManyLangs one such as
  ``zhs.model``) or a published ``options.json`` + ``weights.hdf5`` pair.
- :class:`BiLM` maps tokenized sentences to ``(n_layers, batch, time, dim)`` activations.
- :class:`BiLMOptions` is the validated form of ``options.json``.
"""

from elmo.bilm import BiLM, BiLMOutput
from elmo.models import load_bilm, load_default_bilm
from elmo.options import BiLMOptions, OptionsError

__all__ = ["BiLM", "BiLMOutput", "BiLMOptions", "OptionsError", "load_bilm", "load_default_bilm"]
