"""What the embedding pass's progress bar counts: tokens written, and documents whose every
field's rows are written, over all workers."""

from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm


class DocumentsDone:
    """Counts documents as the token tasks holding their rows finish.

    Args:
        doc_offsets: ``(n_docs + 1,)`` document d owns entries ``[off[d], off[d+1])``.
        entry_segment: ``(n_entries,)`` the segment of each entry.
        segment_offsets: ``(n_segments + 1,)`` the segments' rows.
        step: rows per token task (token task k holds rows ``[k * step, (k + 1) * step)``).
    """

    def __init__(self, doc_offsets: np.ndarray, entry_segment: np.ndarray, segment_offsets: np.ndarray,
                 step: int):
        docs = np.repeat(np.arange(len(doc_offsets) - 1), np.diff(doc_offsets))
        first = segment_offsets[entry_segment] // step
        last = np.maximum(segment_offsets[entry_segment + 1] - 1, segment_offsets[entry_segment]) // step
        spans = last - first + 1  # tasks per entry, almost always 1
        pairs = np.unique(np.stack([np.repeat(docs, spans),
                                    np.repeat(first, spans) + _ranks(spans)], axis=1), axis=0)
        self._pending = np.bincount(pairs[:, 0], minlength=len(doc_offsets) - 1)
        order = np.argsort(pairs[:, 1], kind="stable")
        self._docs_by_task = np.split(pairs[order, 0], np.searchsorted(pairs[order, 1], np.arange(1, last.max(initial=0) + 1)))
        self.total = len(doc_offsets) - 1
        self.done = int((self._pending == 0).sum())

    def task_done(self, task: int) -> None:
        if task >= len(self._docs_by_task):
            return
        docs = self._docs_by_task[task]
        np.subtract.at(self._pending, docs, 1)
        self.done += int((self._pending[np.unique(docs)] == 0).sum())


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., c - 1 for each count c, concatenated."""
    return np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)


class EmbedBar:
    """tqdm over the tokens to write, with documents done and this run's tokens/s."""

    def __init__(self, total: int, initial: int, documents: DocumentsDone, enabled: bool):
        self.bar = tqdm(total=total, initial=initial, unit="tok", unit_scale=True, desc="embed",
                        disable=not enabled, dynamic_ncols=True)
        self.documents, self._started, self._tokens = documents, time.perf_counter(), 0
        self._describe()

    def tokens(self, n: int) -> None:
        self._tokens += n
        self.bar.update(n)
        self._describe()

    def task_done(self, number: int) -> None:
        self.documents.task_done(number)
        self._describe()

    def _describe(self) -> None:
        rate = self._tokens / max(time.perf_counter() - self._started, 1e-9)
        self.bar.set_postfix_str(f"docs {self.documents.done:,}/{self.documents.total:,}, "
                                 f"{rate:,.0f} tok/s", refresh=False)

    def close(self) -> None:
        self.bar.close()
