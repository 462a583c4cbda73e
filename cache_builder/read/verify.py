"""``verify``: check the manifest against the arrays (at open: dtype, fields, the vectors'
rows), read every chunk of every array (each object must exist and pass its checksum), check
counts, recompute a sample of segments with the model."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from cache_builder.build.settings import found_model_record
from cache_builder.build.tokenize import split_long
from cache_builder.read.cache import EmbeddingCache, open_cache
from cache_builder.store import CorruptStoreError
from cache_builder.store.encoding import get_encoding
from elmo import BiLM
from elmo.models import load_recorded_model
from elmo.tokenize import Tokenized
from elmo.weights import model_fingerprint

# A recomputed (float32, CPU) segment may differ from the stored one by an absolute error for
# the stored dtype, plus a share of its largest value for each reduced precision involved: the
# store's encoding (int8: twice its stated bound, 1/254 of a token layer's largest value), and
# the run's bfloat16 or float16 compute.
ABSOLUTE_TOLERANCE = {"float32": 1e-5, "float16": 2e-3, "int8": 2e-3}
RELATIVE_TOLERANCE = {"float32": 0.0, "float16": 1e-2, "int8": 2 * get_encoding("int8").relative_error,
                      "bfloat16": 5e-2}


@dataclass
class VerifyReport:
    """``problems`` is empty for a sound store; ``max_error`` is the worst recomputed difference."""

    chunks_read: int = 0
    segments_recomputed: int = 0
    max_error: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        lines = [f"chunks read {self.chunks_read}, segments recomputed {self.segments_recomputed}, "
                 f"max abs difference {self.max_error:.3g}"]
        lines += [f"PROBLEM: {p}" for p in self.problems] or ["OK"]
        return "\n".join(lines)


def verify(path: str, bilm: BiLM | None = None, sample: int = 16) -> VerifyReport:
    """Check a store.

    Args:
        path: the store.
        bilm: the model it was built with; default: the model its manifest records.
        sample: segments to recompute (spread evenly over the store); 0 skips recomputing.
    """
    report = VerifyReport()
    try:
        cache = open_cache(path)
    except CorruptStoreError as e:  # an array missing or damaged, or a manifest its arrays contradict
        report.problems.append(str(e))
        return report
    with cache:
        _read_all(cache, report)
        _check_counts(cache, report)
        if sample and not report.problems:
            _recompute(cache, bilm, sample, report)
    return report


def _read_all(cache: EmbeddingCache, report: VerifyReport) -> None:
    store = cache.store
    for name in sorted(cache.arrays):  # the layout's arrays: open_cache checked that each exists
        step, length = store.chunk_rows(name), store.length(name)
        for start in range(0, length, step):
            try:
                rows = store.read(name, start, min(start + step, length))
            except CorruptStoreError as e:
                report.problems.append(str(e))
            else:
                report.problems += _non_finite(name, start, rows)
            report.chunks_read += 1


def _non_finite(name: str, start: int, rows: np.ndarray) -> list[str]:
    """A problem for a chunk of float rows holding NaN or infinity (a float16 store overflows to
    infinity beyond 65504); rows hold no other floats, and every comparison with NaN is false."""
    if rows.dtype.kind != "f":
        return []
    bad = ~np.isfinite(rows).reshape(len(rows), -1).all(axis=1)
    if not bad.any():
        return []
    first = start + int(np.argmax(bad))
    return [f"{name}: {int(bad.sum())} rows from row {first} hold NaN or infinite values"]


def _check_counts(cache: EmbeddingCache, report: VerifyReport) -> None:
    store, counts = cache.store, cache.manifest["counts"]
    n_types = store.length("type_offsets") - 1
    expected = {"vectors": counts["tokens"], "token_row": counts["tokens"], "token_spans": counts["tokens"],
                "segment_offsets": counts["segments"] + 1, "segment_hash": counts["segments"],
                "doc_offsets": counts["documents"] + 1, "doc_id_offsets": counts["documents"] + 1,
                "entry_field": counts["entries"], "entry_segment": counts["entries"],
                "type_offsets": counts["distinct_tokens"] + 1}
    if cache.spec.keeps_token_layer:
        expected["token_layer"] = n_types
    per_token = cache.encoding.arrays(cache.spec.n_vector_layers, cache.manifest["model"]["dim"])
    expected.update({name: counts["tokens"] for name in per_token})  # vectors (and int8's scales)
    for name, n in expected.items():
        if store.length(name) != n:
            report.problems.append(f"{name} has {store.length(name)} rows, the manifest says {n}")
    if not report.problems and int(store.read("segment_offsets", counts["segments"])[0]) != counts["tokens"]:
        report.problems.append("segment_offsets do not end at the token count")


def _recompute(cache: EmbeddingCache, bilm: BiLM | None, sample: int, report: VerifyReport) -> None:
    model = cache.manifest["model"]
    if bilm is None:
        record = found_model_record(cache.manifest["model"], cache.store.path)
        bilm = load_recorded_model(record) if record is not None else None
    if bilm is None:
        report.problems.append("cannot recompute: the manifest records no model, or it is not where the "
                               "manifest says; pass --model, or --options and --weights")
        return
    if model_fingerprint(bilm) != model["fingerprint"]:
        report.problems.append("the model given is not the one the store was built with (fingerprint differs)")
        return
    spec, dtype = cache.spec, cache.encoding.name  # the arrays' own, which open_cache checked the manifest against
    relative = RELATIVE_TOLERANCE[dtype] + RELATIVE_TOLERANCE[cache.manifest.get("compute_dtype", "float32")]
    max_tokens = cache.manifest["batching"]["max_tokens"]
    n = cache.n_segments
    for s in sorted({int(i) for i in np.linspace(0, n - 1, min(sample, n))}) if n else []:
        view = cache.segment_tokens(s)
        pieces = split_long(Tokenized(view.tokens, [tuple(x) for x in view.spans.tolist()]), max_tokens)
        parts = []
        with torch.inference_mode():
            for piece in pieces:
                out = bilm.embed([piece.tokens])
                if spec.mix is not None:
                    parts.append(spec.apply(out.layers)[0, :, 0])  # (n_tokens, dim)
                else:
                    parts.append(out.layers[list(spec.layers), 0])  # (n_layers_kept, n_tokens, dim)
        carrier = getattr(torch, get_encoding(dtype).carrier)  # int8: compared to float32, within its bound
        expected = torch.cat(parts, dim=-2).to(carrier).float().numpy()
        stored = cache.segment_vectors(s).astype(np.float32)
        error = float(np.abs(stored - expected).max()) if stored.size else 0.0
        report.max_error = max(report.max_error, error)
        report.segments_recomputed += 1
        limit = ABSOLUTE_TOLERANCE[dtype] + (relative * np.abs(expected).max() if stored.size else 0)
        if error > limit:
            report.problems.append(f"segment {s}: recomputed vectors differ by {error:.3g} (limit {limit:.3g})")
