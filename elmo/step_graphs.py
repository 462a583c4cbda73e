"""CUDA graphs for the LSTM's time step: one replay where eager mode launches about a dozen kernels.

At inference on a GPU the biLSTM's time loop is launch-bound: a profile of one bfloat16 batch of
4096 sentences (full-size model, H200) spent 252 ms of host time launching 92 ms of kernels. A
step's work depends only on its row count ``m`` (the running sequences rounded up to whole
blocks), so each ``m`` that comes back is recorded once as a graph over static buffers and
replayed from then on: the step's input gates are copied into the static input, one replay runs
the recurrent product, the cell, the projection and the state update, and the caller copies the
running rows' outputs out. The kernels are those of the eager step on the same shapes, so the
vectors do not change.

The static state's rows past the running ones (sequences that already ended) keep being updated.
Their outputs are never read and no row of a product depends on another, so this is harmless,
but it makes their final state meaningless: graphs serve only runs that want no final state
(stateless inference). On the CPU there is nothing to record: a "replay" runs the step again,
which lets the tests check every buffer and index of this path against the plain one.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from elmo.lstm import BiLstmLayer

log = logging.getLogger(__name__)

MAX_GRAPHS = 1024  # per layer: bounds capture time and graph memory (one per row count seen twice)


class StepGraphs:
    """Static state and recorded steps of one :class:`~elmo.lstm.BiLstmLayer`.

    Use: :meth:`start` before a sequence batch (zeroes the static state and returns it), then
    :meth:`step` once per time step. Buffers grow to the largest batch seen; growing, moving or
    casting the layer drops the recorded steps (they hold the old addresses).
    """

    def __init__(self) -> None:
        self._reset(None)
        self.failed = False  # a capture failed here: this layer runs eagerly from then on

    def _reset(self, key: tuple | None) -> None:
        self.key = key
        self.gates = self.h = self.c = None  # (2, capacity, 4 * cell), (2, capacity, proj), (2, capacity, cell)
        self.replays: dict[int, Callable[[], None]] = {}
        self.seen: Counter[int] = Counter()
        self.pool = self.stream = None

    def __getstate__(self) -> dict:  # graphs and buffers are this process's, never pickled
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def start(self, layer: BiLstmLayer, rows: int) -> tuple[Tensor, Tensor]:
        """Zeroed static state for ``rows`` rows: ``h`` ``(2, capacity, proj)`` and ``c``."""
        w = layer.w_state
        capacity = self.gates.shape[1] if self.gates is not None else 0
        key = (w.device, w.dtype, w.data_ptr(), layer.w_proj.data_ptr())
        if key != self.key or rows > capacity:
            self._reset(key)
            capacity = max(rows, capacity + capacity // 2)  # fewer re-recordings as batches grow
            self.gates = w.new_empty(2, capacity, w.shape[2])
            self.h, self.c = w.new_empty(2, capacity, layer.projection_dim), w.new_empty(2, capacity, layer.cell_dim)
        self.h[:, :rows].zero_()
        self.c[:, :rows].zero_()
        return self.h, self.c

    def step(self, layer: BiLstmLayer, gates_x: Tensor, m: int) -> None:
        """One time step of the first ``m`` rows, in place on the static state.

        Args:
            layer: the layer whose weights the step uses (those of :meth:`start`).
            gates_x: ``(2, m, 4 * cell)`` input gates of this step's rows (bias included).
            m: rows computed, a whole number of blocks.
        """
        self.gates[:, :m].copy_(gates_x)
        replay = self.replays.get(m)
        if replay is not None:
            replay()
            return
        self.seen[m] += 1
        run = self._step_function(layer, m)
        if self.seen[m] < 2 or self.failed or len(self.replays) >= MAX_GRAPHS:
            run()  # a row count seen once may never come back: not worth a recording
            return
        replay = self._record(run)
        if replay is None:
            run()
        else:
            self.replays[m] = replay
            replay()

    def _step_function(self, layer: BiLstmLayer, m: int) -> Callable[[], None]:
        gates, h, c = self.gates[:, :m], self.h[:, :m], self.c[:, :m]

        def run() -> None:
            h_t, c_t = layer._cell(torch.baddbmm(gates, h, layer.w_state), c)
            h.copy_(h_t)
            c.copy_(c_t)

        return run

    def _record(self, run: Callable[[], None]) -> Callable[[], None] | None:
        """``run`` as a CUDA graph's replay (``run`` itself on the CPU); None if capture failed."""
        if self.h.device.type != "cuda":
            return run
        try:
            if self.stream is None:
                self.stream = torch.cuda.Stream(self.h.device)
                self.pool = torch.cuda.graph_pool_handle()
                with torch.cuda.stream(self.stream):  # the stream's cuBLAS set-up, before any capture
                    torch.bmm(self.h[:, :1, :1], self.h[:, :1, :1].transpose(1, 2))
            graph = torch.cuda.CUDAGraph()
            self.stream.wait_stream(torch.cuda.current_stream())
            # Not torch.cuda.graph(): it empties the allocator's caches before every capture.
            # "thread_local": the engine's other threads (pinning, copies) go on during a capture.
            try:
                with torch.cuda.stream(self.stream):
                    graph.capture_begin(self.pool, capture_error_mode="thread_local")
                    try:
                        run()
                    finally:
                        graph.capture_end()
            finally:
                torch.cuda.current_stream().wait_stream(self.stream)
            return graph.replay
        except RuntimeError as e:  # a driver or allocator that refuses: the eager step is as right
            self.failed = True
            log.warning("CUDA graph capture failed (%s); this LSTM layer runs without graphs", e)
            return None
