"""What decides a store's content: the run's settings, its identity, and the manifest head.

Two runs with equal identities write byte-identical stores, whatever the number of workers,
so a re-run with an equal identity resumes (or keeps) a store and any other one is refused.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import torch

from cache_builder.layers import LayerSpec
from cache_builder.store import hdf5_store, zarr_store
from cache_builder.store.encoding import ENCODINGS
from cache_builder.store.layout import FORMAT_NAME, FORMAT_VERSION
from elmo import BiLM
from elmo.runtime import DTYPES
from elmo.models import BUNDLED, model_record
from elmo.tokenize import Tokenizer, get_tokenizer
from elmo.weights import model_fingerprint

STORE_DTYPES = tuple(ENCODINGS)
CODECS = {"zarr": (zarr_store.CODEC, zarr_store.CHECKSUM), "hdf5": (hdf5_store.CODEC, hdf5_store.CHECKSUM)}


def tool_version() -> str:
    from cache_builder import __version__
    return __version__


@dataclass(frozen=True)
class PrecomputeSettings:
    """Everything that decides a store's content (the model and the input aside).

    Attributes:
        layers: kept layers or the fixed mix; None keeps every layer of the model.
        dtype: the stored vectors' encoding: "float16", "float32" or "int8" (:mod:`.store.encoding`).
        compute_dtype: the model's precision while it runs ("float32", "bfloat16", "float16").
        tokenizer: a tokenizer of :mod:`elmo.tokenize` (e.g. a model's recorded one), or a
            registered name, built with default options.
        max_tokens: longer texts are split on sentence boundaries into pieces of at most this.
        batch_tokens: padded tokens per model batch; None: :func:`default_batch_tokens` for the
            run's device (4096 on a CPU, what half the free memory holds on a GPU), recorded as
            the number chosen.
        task_tokens: stored tokens per embedding task (rounded to whole storage objects): the
            unit of scheduling, writing and resume; None: :meth:`task_rows` decides.
        part_bytes: bytes of a line-based input file per planning task (reading and
            tokenizing run in parallel over these byte ranges).
        input_format, id_field, fields, on_error: passed to the input reader.
    """

    layers: LayerSpec | None = None
    dtype: str = "float16"
    compute_dtype: str = "float32"
    tokenizer: Tokenizer | str = "auto"
    max_tokens: int = 512
    batch_tokens: int | None = None
    task_tokens: int | None = None
    part_bytes: int = 1 << 25
    input_format: str = "auto"
    id_field: str | None = None
    fields: tuple[str, ...] | None = None
    on_error: str = "raise"

    def __post_init__(self) -> None:
        if isinstance(self.tokenizer, str):
            object.__setattr__(self, "tokenizer", get_tokenizer(self.tokenizer))
        if self.dtype not in STORE_DTYPES:
            raise ValueError(f"--dtype {self.dtype}: a store holds one of {STORE_DTYPES}")
        if self.compute_dtype not in DTYPES:
            raise ValueError(f"--compute-dtype {self.compute_dtype}: choose one of {sorted(DTYPES)}")
        sizes = {"--max-tokens": self.max_tokens, "--batch-tokens": 1 if self.batch_tokens is None else self.batch_tokens,
                 "--task-tokens": 1 if self.task_tokens is None else self.task_tokens, "part_bytes": self.part_bytes}
        for flag, value in sizes.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{flag} must be a positive whole number, got {value!r}")

    def for_device(self, bilm: BiLM, device: torch.device, recorded: int | None = None) -> PrecomputeSettings:
        """These settings with ``batch_tokens`` decided for ``bilm`` on ``device`` when it is None:
        ``recorded`` (the size the store being resumed was built with, so that a re-run resumes
        whatever memory is free now), else from the device."""
        if self.batch_tokens is not None:
            return self
        return dataclasses.replace(self, batch_tokens=recorded or default_batch_tokens(bilm, device, self.compute_dtype))

    def task_rows(self, n_tokens: int) -> int:
        """Rows per embedding task for a store of ``n_tokens``: ``task_tokens``, or by default a
        64th of the store (so that many workers share it evenly) between 4,096 and 131,072 rows,
        a power of two. A function of the plan alone, never of the workers."""
        if self.task_tokens is not None:
            return self.task_tokens
        return 1 << min(17, max(12, (max(n_tokens, 1) // 64).bit_length() - 1))

    def layer_spec(self, bilm: BiLM) -> LayerSpec:
        """``layers``, or every layer of ``bilm`` when it is None."""
        return self.layers or LayerSpec(tuple(range(bilm.options.lstm.n_layers + 1)))


CPU_BATCH_TOKENS = 4096  # past this a CPU gains nothing (measured: benchmarks/bilm_throughput.py)
MAX_BATCH_TOKENS = 1 << 17


def default_batch_tokens(bilm: BiLM, device: torch.device, compute_dtype: str) -> int:
    """Padded tokens per batch when none are given: :data:`CPU_BATCH_TOKENS` on a CPU; on a GPU
    the power of two (4096 to :data:`MAX_BATCH_TOKENS`) whose activations fill at most half of
    the memory free now, so that launches are few and large and the rest is left to the
    allocator's fragmentation, the output copies and other processes.

    A padded token's activations, in ``compute_dtype``: per LSTM layer and direction the four
    gates, the cell and the projection; the layers' outputs (twice, before and after the
    layer selection); and, for a token of a type new to the batch, the char CNN's feature maps
    (one row per filter and character position)."""
    if device.type != "cuda":
        return CPU_BATCH_TOKENS
    lstm, cnn = bilm.options.lstm, bilm.options.char_cnn
    elements = (lstm.n_layers * 2 * (5 * lstm.dim + lstm.projection_dim)
                + 2 * (lstm.n_layers + 1) * 2 * lstm.projection_dim
                + cnn.max_characters_per_token * cnn.n_filters)
    free, _ = torch.cuda.mem_get_info(device)
    fits = free // 2 // (elements * DTYPES[compute_dtype].itemsize)
    return max(CPU_BATCH_TOKENS, min(MAX_BATCH_TOKENS, 1 << max(0, int(fits).bit_length() - 1)))


def run_identity(manifest_like: dict[str, Any]) -> dict[str, Any]:
    """The parts of a manifest that decide a store's content: equal identities resume/skip."""
    source = {k: v for k, v in manifest_like["input"].items() if k != "name"}  # renaming is harmless
    return {"model": manifest_like["model"]["fingerprint"], "layers": manifest_like["layers"],
            "dtype": manifest_like["dtype"], "compute_dtype": manifest_like["compute_dtype"],
            "tokenizer": manifest_like["tokenizer"], "input": source,
            "batching": manifest_like["batching"], "backend": manifest_like["backend"]["format"]}


def manifest_head(bilm: BiLM, spec: LayerSpec, settings: PrecomputeSettings, fmt: str, input_name: str,
                  model_files: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest without what reading the input tells (fingerprint, fields, counts).

    Args:
        model_files: where the model came from (see :func:`relative_model_record`)."""
    codec, checksum = CODECS[fmt]
    return {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "tool_version": tool_version(),
        "complete": True,
        "backend": {"format": fmt, "codec": codec, "checksum": checksum},
        "model": {"fingerprint": model_fingerprint(bilm), **model_record(bilm, model_files),
                  "n_layers": bilm.options.lstm.n_layers + 1,
                  "dim": 2 * bilm.options.lstm.projection_dim,
                  "projection_dim": bilm.options.lstm.projection_dim},
        "layers": spec.to_manifest(),
        "dtype": settings.dtype,
        "compute_dtype": settings.compute_dtype,
        "tokenizer": {"name": settings.tokenizer.name, "settings": settings.tokenizer.settings()},
        "input": {"name": input_name, "fingerprint": None, "format": settings.input_format,
                  "id_field": settings.id_field, "fields": list(settings.fields) if settings.fields else None},
        "batching": {"max_tokens": settings.max_tokens, "batch_tokens": settings.batch_tokens,
                     "task_tokens": settings.task_tokens, "part_bytes": settings.part_bytes},
    }


def relative_model_record(model_files: dict[str, Any] | tuple[str, str] | None, store: str) -> dict[str, Any] | None:
    """Where the model came from, as the manifest records it: the record
    ``elmo.models.load_model`` returns (or an ``(options, weights)`` pair), its paths relative
    to the store's folder when both are local, so that a store and its model can move together."""
    if isinstance(model_files, tuple):
        model_files = {"options": model_files[0], "weights": model_files[1]}
    if model_files is None or "://" in store:
        return model_files
    base = os.path.dirname(os.path.abspath(store))
    return {key: os.path.relpath(os.path.abspath(value), base)
            if key in ("dir", "options", "weights") and value and value != BUNDLED and "://" not in value
            else value for key, value in model_files.items()}


def found_model_record(record: dict[str, Any], store: str) -> dict[str, Any] | None:
    """The inverse of :func:`relative_model_record`: the manifest's model record with its paths
    found from the store's folder, or None when a recorded path is missing."""
    base = os.path.dirname(os.path.abspath(store)) if "://" not in store else ""
    found = dict(record)
    for key in ("dir", "options", "weights"):
        where = record.get(key)
        if where and where != BUNDLED:
            found[key] = where if os.path.isabs(where) or "://" in where else os.path.join(base, where)
            if "://" not in found[key] and not os.path.exists(found[key]):
                return None
    return found
