"""A drop-in for AllenNLP's ``allennlp elmo`` command, run by the cache engine.

``allennlp elmo INPUT OUTPUT --all|--top|--average`` reads one whitespace-tokenized sentence
per line (blank lines are an error, here too) and writes one HDF5 file: a float32 dataset per
line, named by its 0-based line index as a string (``--use-sentence-keys``: by the sentence
itself), of shape ``(3, n_tokens, dim)`` with ``--all`` and ``(n_tokens, dim)`` with ``--top`` (the top layer)
and ``--average`` (the mean of the layers), plus ``sentence_to_index``: one JSON string mapping
each sentence (its line, stripped) to its key, left out with ``--forget-sentences`` or
``--use-sentence-keys``. :func:`embed_file` writes the same file.

It runs :func:`cache_builder.build.engine.precompute` into a Zarr store beside the output
(``OUTPUT.elmo.zarr``: resumable, each distinct sentence embedded once, on every GPU or a Dask
cluster), then the AllenNLP export of :mod:`cache_builder.read.export`; the store is removed once the
file is whole. Unlike AllenNLP's, the vectors do not depend on the batch (no LSTM state is
carried from batch to batch).
"""

from __future__ import annotations

import shutil
from typing import Any

from cache_builder.build.distributed import CLUSTER_TIMEOUT
from cache_builder.build.engine import PrecomputeSettings, precompute
from cache_builder.build.inputs import InputError, blank_lines, is_stream, read_records
from cache_builder.layers import LayerSpec
from cache_builder.read.cache import EmbeddingCache, open_cache
from cache_builder.read.export import MODES, average_spec, check_target, write_allennlp
from elmo import BiLM, load_default_bilm

# Each line is one sentence, run whole, as AllenNLP runs it (precompute splits longer texts).
WHOLE_LINES = 1 << 31
# --batch-size counts sentences; the engine counts padded tokens: N sentences of 64 tokens.
TOKENS_PER_SENTENCE = 64

# The layers each mode stores: --top only the top layer, --average one equally weighted mix.
MODE_LAYERS = {
    "all": lambda n: LayerSpec(tuple(range(n))),
    "top": lambda n: LayerSpec((n - 1,)),
    "average": average_spec,
}


def staging_store(output: str) -> str:
    """The Zarr store a run builds (and resumes) beside ``output``."""
    return f"{output}.elmo.zarr"


def embed_file(input_file: str, output_file: str, mode: str = "all", bilm: BiLM | None = None, *,
               batch_size: int = 64, device: str | None = None, forget_sentences: bool = False,
               use_sentence_keys: bool = False, compute_dtype: str = "float32",
               model_files: dict[str, Any] | tuple[str, str] | None = None, overwrite: bool = False,
               progress: bool = True, workers: int | str | None = None, scheduler: str | None = None,
               client: Any = None, cluster_timeout: float = CLUSTER_TIMEOUT) -> int:
    """Write AllenNLP's ``elmo`` output for ``input_file``.

    Args:
        input_file: one whitespace-tokenized sentence per line (a path or fsspec URL; it is read
            twice: to embed, then for the keys).
        output_file: the HDF5 file to write (replaces an earlier export, never another file).
        mode: ``"all"`` ``(n_layers, n_tokens, dim)``, ``"top"`` or ``"average"`` ``(n_tokens, dim)``.
        bilm: the model (default: the bundled one).
        batch_size: sentences per batch as AllenNLP counts them; batches hold ``batch_size * 64``
            padded tokens. Batches change speed and memory, never the vectors.
        device: "cpu", "cuda", "cuda:N"; default a GPU when present.
        forget_sentences: leave out ``sentence_to_index``.
        use_sentence_keys: name each dataset by its sentence (then no ``sentence_to_index``).
        compute_dtype, model_files, progress, workers, scheduler, client, cluster_timeout: as for
            ``precompute``.
        overwrite: replace a staging store left by a run with other arguments.

    Returns:
        The number of datasets (lines) written.

    Raises:
        InputError: blank lines (naming them), or a line that is not UTF-8.
        ValueError: an unknown mode; a repeated sentence with ``use_sentence_keys``; the input
            is standard input (it is read twice); ``output_file`` is not an earlier export.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if input_file == "-" or is_stream(input_file):
        raise ValueError(f"elmo reads its input twice (to embed, then for the keys): save "
                         f"{'standard input' if input_file == '-' else input_file} to a file first")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be a positive whole number, got {batch_size}")
    store = staging_store(output_file)
    check_target(output_file, store)
    blank = blank_lines(input_file)
    if blank:  # AllenNLP's elmo refuses them too: a dataset per line index has nothing to hold
        shown = ", ".join(map(str, blank[:10])) + (f" and {len(blank) - 10} more" if len(blank) > 10 else "")
        raise InputError(input_file, None, f"blank line{'s' if len(blank) > 1 else ''} {shown}: elmo writes "
                         "one dataset per line and refuses blank lines, as AllenNLP's does; remove them")
    bilm = bilm if bilm is not None else load_default_bilm()
    settings = PrecomputeSettings(
        layers=MODE_LAYERS[mode](bilm.options.lstm.n_layers + 1), dtype="float32", compute_dtype=compute_dtype,
        tokenizer="whitespace", max_tokens=WHOLE_LINES, batch_tokens=batch_size * TOKENS_PER_SENTENCE,
        input_format="text")
    precompute(input_file, store, bilm, settings, device=device, overwrite=overwrite, model_files=model_files,
               progress=progress, client=client, workers=workers, scheduler=scheduler,
               cluster_timeout=cluster_timeout)
    with open_cache(store) as cache:
        entries, sentence_to_index = _keys(input_file, cache, use_sentence_keys)
        write_allennlp(cache, output_file, mode, entries,
                       None if forget_sentences or use_sentence_keys else sentence_to_index)
    shutil.rmtree(store)
    return len(entries)


def _keys(input_file: str, cache: EmbeddingCache,
          use_sentence_keys: bool) -> tuple[list[tuple[str, int]], dict[str, str]]:
    """(dataset name, segment) per line, in line order, and sentence → line index.

    Raises:
        ValueError: a repeated sentence under ``use_sentence_keys``; a line whose tokens are not
            the stored ones (the input changed after it was embedded).
    """
    entries: list[tuple[str, int]] = []
    sentence_to_index: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for record in read_records(input_file, input_format="text"):
        sentence = record.fields["text"].strip()
        segment = cache.segments(record.doc_id)["text"] if record.doc_id in cache else None
        if segment is None or cache.segment_tokens(segment).tokens != sentence.split():
            raise ValueError(f"{input_file}: line {record.line}: the input changed while it was embedded; run again")
        if use_sentence_keys and sentence in first_line:
            raise ValueError(f"{input_file}: line {record.line}: the sentence of line {first_line[sentence]} again: "
                             "--use-sentence-keys needs distinct sentences (leave it out to key by line)")
        first_line.setdefault(sentence, record.line)
        entries.append((sentence if use_sentence_keys else record.doc_id, segment))
        sentence_to_index[sentence] = record.doc_id  # a repeated sentence maps to its last line, as in AllenNLP
    if len(entries) != len(cache):
        raise ValueError(f"{input_file}: the input changed while it was embedded; run again")
    return entries, sentence_to_index
