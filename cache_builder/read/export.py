"""Export a store in the layout of AllenNLP's ``elmo`` command, for scripts written for it.

AllenNLP writes one float32 dataset per sentence, named by its key, plus ``sentence_to_index``:
one JSON string mapping each sentence (its input line, stripped) to its key. Its ``--all``
datasets are ``(n_layers, n_tokens, dim)``, ``--top`` and ``--average`` ones ``(n_tokens, dim)``.
:func:`export_allennlp` writes that layout from any store; :mod:`cache_builder.build.elmo_command`
is the drop-in for the command itself.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from cache_builder.layers import LayerSpec
from cache_builder.read.cache import EmbeddingCache, open_cache

MODES = ("all", "top", "average")
INDEX = "sentence_to_index"  # AllenNLP's dataset name; no sentence key may take it


def export_allennlp(path: str, out_path: str, mode: str = "all") -> int:
    """Write ``out_path`` (HDF5): one float32 dataset per sentence key plus ``sentence_to_index``.

    Keys are document ids (``"<id>.<field>"`` when the store has several fields), with ``/``
    written as ``_`` (HDF5 would read it as a group). A store of a plain-text input has the
    0-based line indices as ids, so its keys are AllenNLP's. ``sentence_to_index`` maps each
    segment's tokens, joined by spaces, to its key.

    Args:
        mode: ``"all"``: every layer the store holds, ``(n_layers_kept, n_tokens, dim)``, or
            ``(n_tokens, dim)`` for a mixed store (its one layer); ``"top"``: the biLM's top
            layer, ``(n_tokens, dim)``; ``"average"``: the mean of every biLM layer,
            ``(n_tokens, dim)``, from a store of every layer or one mixed with equal weights.

    Returns:
        The number of datasets written.

    Raises:
        ValueError: the store lacks the layers ``mode`` needs; two ids that give one key, an
            id that gives ``sentence_to_index`` or a name HDF5 cannot hold (checked before
            anything is written); ``out_path`` is the store, or an existing file that is not
            an AllenNLP export. The file appears whole or not at all: it is written beside
            ``out_path`` under a temporary name and renamed at the end.
    """
    check_target(out_path, path)
    with open_cache(path) as cache:
        entries = [(key, cache.segments(doc_id)[field]) for key, (doc_id, field) in dataset_keys(cache).items()]
        sentences = {" ".join(cache.segment_tokens(segment).tokens): key for key, segment in entries}
        write_allennlp(cache, out_path, mode, entries, sentences)
    return len(entries)


def write_allennlp(cache: EmbeddingCache, out_path: str, mode: str, entries: Sequence[tuple[str, int]],
                   sentence_to_index: dict[str, str] | None) -> None:
    """Write AllenNLP's layout from ``cache``: a float32 dataset per ``(key, segment)`` of
    ``entries``, in order, and ``sentence_to_index`` (one JSON string) unless it is None.

    Keys are HDF5 paths, as AllenNLP's are (a ``/`` makes a group). The file is written beside
    ``out_path`` under a temporary name and renamed at the end, so it is whole or absent.

    Raises:
        ValueError: ``mode`` needs layers the store lacks; a key HDF5 cannot hold (naming it).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    layers = _layer_view(mode, cache.spec, cache.manifest["model"]["n_layers"])
    out = Path(out_path)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            for key, segment in entries:
                data = layers(cache.segment_vectors(segment).astype(np.float32))
                try:
                    f.create_dataset(key, data=data)
                except (ValueError, TypeError) as e:  # h5py: the name exists as a dataset or group, or is "."
                    raise ValueError(f"{key!r} cannot be a dataset of {out}: {e}") from None
            if sentence_to_index is not None:
                f.create_dataset(INDEX, (1,), dtype=h5py.special_dtype(vlen=str),
                                 data=[json.dumps(sentence_to_index)])
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise


def dataset_keys(cache: EmbeddingCache) -> dict[str, tuple[str, str]]:
    """Dataset name → (document id, field), in store order.

    Raises:
        ValueError: naming the ids whose names collide, or that cannot be a dataset name.
    """
    keys: dict[str, tuple[str, str]] = {}
    several = len(cache.fields) > 1
    for doc_id in cache:
        for field in cache.segments(doc_id):
            key = (f"{doc_id}.{field}" if several else doc_id).replace("/", "_")
            if key == INDEX:
                raise ValueError(f"id {doc_id!r} would be the dataset {INDEX!r}, AllenNLP's sentence index")
            if key == "." or "\x00" in key:
                raise ValueError(f"id {doc_id!r} cannot be an HDF5 dataset name ({key!r})")
            if key in keys:
                raise ValueError(f"ids {keys[key][0]!r} and {doc_id!r} both become the dataset {key!r} "
                                 "('/' is written as '_'); rename one of them")
            keys[key] = (doc_id, field)
    return keys


def average_spec(n_layers: int) -> LayerSpec:
    """The fixed mix that is AllenNLP's ``--average``: every layer, equal weights, gamma 1."""
    return LayerSpec(tuple(range(n_layers)), mix=(1 / n_layers,) * n_layers)


def _layer_view(mode: str, spec: LayerSpec, n_layers: int) -> Callable[[np.ndarray], np.ndarray]:
    """What ``mode`` makes of a segment's stored vectors (``EmbeddingCache.segment_vectors``).

    Raises:
        ValueError: the store does not hold the layers ``mode`` needs, saying what it holds.
    """
    top = n_layers - 1
    if mode == "all" or (mode == "average" and replace(spec, logits=None) == average_spec(n_layers)):
        return lambda stored: stored
    if mode == "top" and spec.mix is None and top in spec.layers:
        return lambda stored: stored[spec.layers.index(top)]
    if mode == "average" and spec.mix is None and spec.layers == tuple(range(n_layers)):
        return lambda stored: stored.mean(axis=0)
    needs = f"the top layer {top}" if mode == "top" else f"every layer (0..{top})"
    raise ValueError(f"--{mode} needs {needs}; this store holds {spec.describe()}: export it with --all")


def check_target(out_path: str, store_path: str) -> None:
    """Refuse to replace the store itself, or a file that is not an earlier export.

    Raises:
        ValueError: naming ``out_path``.
    """
    out, store = Path(out_path), Path(store_path)
    if out.exists() and out.resolve() == store.resolve():
        raise ValueError(f"{out} is the store being exported; choose another output path")
    if out.is_dir() or (out.is_file() and not _is_export(out)):
        raise ValueError(f"{out} exists and is not an AllenNLP export; remove it or choose another path")


def _is_export(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return INDEX in f
    except OSError:
        return False
