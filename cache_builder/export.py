"""Export a store in the layout of AllenNLP's ``elmo`` command, for scripts written for it."""

from __future__ import annotations

import json

import h5py
import numpy as np

from cache_builder.cache import open_cache

MODES = ("all", "top", "average")


def export_allennlp(path: str, out_path: str, mode: str = "all") -> int:
    """Write ``out_path`` (HDF5): one float32 dataset per sentence key plus ``sentence_to_index``.

    Keys are document ids (``"<id>.<field>"`` when the store has several fields). Datasets are
    ``(n_layers, n_tokens, dim)`` with ``mode="all"``, else ``(n_tokens, dim)``: the top layer or
    the average of the layers. ``sentence_to_index`` holds one JSON string mapping each
    sentence (its tokens joined by spaces) to its key, as AllenNLP writes it.

    Returns:
        The number of datasets written.

    Raises:
        ValueError: the store lacks the layers ``mode`` needs.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    with open_cache(path) as cache:
        spec, n_layers = cache.spec, cache.manifest["model"]["n_layers"]
        everything = spec.mix is None and spec.layers == tuple(range(n_layers))
        if mode != "top" and not everything:
            raise ValueError(f"--{mode} needs a store with every layer (0..{n_layers - 1}); this one has "
                             f"{spec.describe()}")
        if mode == "top" and (spec.mix is not None or spec.layers[-1] != n_layers - 1):
            raise ValueError(f"--top needs the top layer {n_layers - 1}; this store has {spec.describe()}")
        sentence_to_index: dict[str, str] = {}
        written = 0
        with h5py.File(out_path, "w") as out:
            for doc_id in cache:
                for field, segment in cache.segments(doc_id).items():
                    key = (doc_id if len(cache.fields) == 1 else f"{doc_id}.{field}").replace("/", "_")
                    layers = cache.segment_vectors(segment).astype(np.float32)  # (n_layers, n_tokens, dim)
                    data = {"all": layers, "top": layers[-1], "average": layers.mean(axis=0)}[mode]
                    out.create_dataset(key, data=data)  # "/" would make HDF5 groups
                    sentence_to_index[" ".join(cache.segment_tokens(segment).tokens)] = key
                    written += 1
            out.create_dataset("sentence_to_index", (1,), dtype=h5py.special_dtype(vlen=str),
                               data=[json.dumps(sentence_to_index)])
    return written
