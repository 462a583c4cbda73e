"""The biLSTM of ELMo: LSTM cells with a projected, clipped state, both directions run together.

Sequences are *packed* (the layout of ``torch.nn.utils.rnn.PackedSequence``): rows are ordered
time-major and, within a time step, longest sequence first, so the sequences still running at
step ``t`` are the first ``batch_sizes[t]`` rows of that step's block. No padding is ever
computed, and the input projection of every time step is one matrix product per layer.

The two directions live on a leading axis of size 2: index 0 is the forward LSTM, index 1
the backward LSTM, whose packed rows are each sequence read back to front. Both directions
of a layer share the time loop, so each step is one batched matmul for the pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from elmo.options import LstmOptions
from elmo.runtime import LSTM_ROW_BLOCK, whole_blocks
from elmo.step_graphs import StepGraphs

# Input-projection rows computed at once: bounds memory to ~64 MB (float32) per direction
# while keeping the matmul large enough to run near peak speed.
_GATE_BLOCK_ELEMENTS = 16 * 2**20


class Workspace:
    """One reusable block of memory for the input gates of inference.

    A fresh tensor of tens of MB is handed to and back from the OS on every call, and each
    4 KB page of it faults on first touch: the input-projection matmul then runs at about 60%
    of its speed into reused memory. Views it returns are overwritten by the next call.
    """

    def __init__(self) -> None:
        self._flat: Tensor | None = None

    def take(self, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialized ``shape`` view on ``like``'s device and dtype."""
        n = math.prod(shape)
        flat = self._flat
        if (flat is None or flat.numel() < n or flat.dtype != like.dtype or flat.device != like.device
                or flat.is_inference() and not torch.is_inference_mode_enabled()):  # then read-only
            flat = self._flat = like.new_empty(n)
        return flat[:n].view(shape)


@dataclass
class LstmState:
    """Recurrent state of one layer, for both directions.

    Attributes:
        h: ``(2, batch, projection_dim)`` projected hidden state.
        c: ``(2, batch, cell_dim)`` memory cell.
    """

    h: Tensor
    c: Tensor

    def detach(self) -> LstmState:
        return LstmState(self.h.detach(), self.c.detach())


def _with_rows(state: LstmState, rows: int) -> LstmState:
    """A copy of ``state`` with zero rows appended up to ``rows`` rows."""
    h, c = state.h, state.c
    return LstmState(torch.cat([h, h.new_zeros(2, rows - h.shape[1], h.shape[2])], dim=1),
                     torch.cat([c, c.new_zeros(2, rows - c.shape[1], c.shape[2])], dim=1))


def _take_rows(x: Tensor, start: int, count: int) -> Tensor:
    """``x[:, start : start + count]``, with zero rows where that runs past the end of ``x``."""
    part = x[:, start : start + count]
    missing = count - part.shape[1]
    return torch.cat([part, part.new_zeros(2, missing, part.shape[2])], dim=1) if missing else part


class BiLstmLayer(nn.Module):
    """One layer of the forward and of the backward LSTM with projection (weights stacked on axis 0).

    Weights follow the published TensorFlow layout, so loading is a copy: gate order
    (input, candidate, forget, output), ``x @ W``, and 1.0 added to the forget gate at run time.

    Args:
        input_dim: width of this layer's input.
        options: cell size, projection size and clipping.
    """

    def __init__(self, input_dim: int, options: LstmOptions):
        super().__init__()
        cell, proj = options.dim, options.projection_dim
        self.cell_clip = options.cell_clip
        self.proj_clip = options.proj_clip
        scale = (1.0 / (input_dim + proj)) ** 0.5
        self.w_input = nn.Parameter(torch.empty(2, input_dim, 4 * cell).uniform_(-scale, scale))
        self.w_state = nn.Parameter(torch.empty(2, proj, 4 * cell).uniform_(-scale, scale))
        self.bias = nn.Parameter(torch.zeros(2, 4 * cell))
        self.w_proj = nn.Parameter(torch.empty(2, cell, proj).uniform_(-cell**-0.5, cell**-0.5))
        forget = torch.zeros(4 * cell)
        forget[2 * cell : 3 * cell] = 1.0
        self.register_buffer("forget_bias", forget, persistent=False)

    @property
    def cell_dim(self) -> int:
        return self.w_proj.shape[1]

    @property
    def projection_dim(self) -> int:
        return self.w_proj.shape[2]

    def zero_state(self, batch: int) -> LstmState:
        p = self.w_proj
        return LstmState(p.new_zeros(2, batch, self.projection_dim), p.new_zeros(2, batch, self.cell_dim))

    def forward(self, x: Tensor, batch_sizes: list[int], state: LstmState | None = None,
                workspace: Workspace | None = None, graphs: StepGraphs | None = None
                ) -> tuple[Tensor, LstmState | None]:
        """Run both directions over packed sequences.

        Every matrix product has whole blocks of rows (:data:`~elmo.runtime.LSTM_ROW_BLOCK`): the
        state has padding rows, and a step computes its running rows rounded up, so a sequence's
        outputs are bitwise independent of the other sequences of the batch. What the padding
        rows compute is never read.

        Args:
            x: ``(2, n_packed, input_dim)`` packed inputs, per direction.
            batch_sizes: sequences still running at each step; sums to ``n_packed``.
            state: initial state, rows in the packed (longest-first) order; zeros if None.
            workspace: memory for the input gates, reused from call to call (inference only).
            graphs: recorded time steps (:mod:`elmo.step_graphs`) to run the steps with; only
                without autograd, from zero state, and when no final state is wanted.

        Returns:
            ``(2, n_packed, projection_dim)`` packed outputs, and the state each sequence
            reached at its own last step (None with ``graphs``).
        """
        batch = batch_sizes[0] if batch_sizes else 0
        rows = whole_blocks(batch, LSTM_ROW_BLOCK)
        if graphs is not None:
            h, c = graphs.start(self, rows)
        else:
            state = self.zero_state(rows) if state is None else _with_rows(state, rows)
            h, c = state.h, state.c
        # Without autograd, finished rows are kept by writing the running ones in place
        # (h and c are fresh tensors here, never the caller's).
        in_place = not torch.is_grad_enabled()
        bias = (self.bias + self.forget_bias).unsqueeze(1)  # (2, 1, 4 * cell)
        step_rows = max(1, _GATE_BLOCK_ELEMENTS // max(1, rows * self.w_input.shape[2]))
        outputs: list[Tensor] = []
        row = 0
        for block_start in range(0, len(batch_sizes), step_rows):
            block_sizes = batch_sizes[block_start : block_start + step_rows]
            block_rows = sum(block_sizes)
            # One matmul for the input projection of every step in the block, with room for the
            # last step's rounded-up rows.
            x_block = _take_rows(x, row, whole_blocks(block_rows + LSTM_ROW_BLOCK - 1, LSTM_ROW_BLOCK))
            if in_place and workspace is not None:
                gates_x = workspace.take((2, x_block.shape[1], self.w_input.shape[2]), like=x)
                torch.baddbmm(bias, x_block, self.w_input, out=gates_x)
            else:
                gates_x = torch.baddbmm(bias, x_block, self.w_input)
            offset = 0
            for n in block_sizes:
                m = whole_blocks(n, LSTM_ROW_BLOCK)  # <= rows
                if graphs is not None:  # one replay updates the static h and c
                    graphs.step(self, gates_x[:, offset : offset + m], m)
                    outputs.append(h[:, :n].clone())
                    offset += n
                    continue
                gates = torch.baddbmm(gates_x[:, offset : offset + m], h[:, :m], self.w_state)
                h_t, c_t = self._cell(gates, c[:, :m])
                h_t, c_t = h_t[:, :n], c_t[:, :n]
                outputs.append(h_t)
                # Sequences that ended keep their last state (needed by stateful runs).
                if in_place:  # h_t is also an output: copy it, never alias it
                    h[:, :n], c[:, :n] = h_t, c_t
                else:
                    h, c = torch.cat([h_t, h[:, n:]], dim=1), torch.cat([c_t, c[:, n:]], dim=1)
                offset += n
            row += block_rows
        out = torch.cat(outputs, dim=1) if outputs else x.new_zeros(2, 0, self.projection_dim)
        return out, None if graphs is not None else LstmState(h[:, :batch], c[:, :batch])

    def _cell(self, gates: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor]:
        """One step: ``(2, n, 4 * cell)`` gate pre-activations → projected state, memory cell."""
        cell = self.cell_dim
        # One sigmoid over all four gates (the candidate's share is wasted) beats three calls.
        i, _, f, o = torch.sigmoid(gates).chunk(4, dim=-1)
        c = torch.addcmul(f * c_prev, i, torch.tanh(gates[..., cell : 2 * cell]))
        if self.cell_clip:
            c = c.clamp(-self.cell_clip, self.cell_clip)
        h = torch.bmm(o * torch.tanh(c), self.w_proj)
        if self.proj_clip:
            h = h.clamp(-self.proj_clip, self.proj_clip)
        return h, c


class BiLstm(nn.Module):
    """``n_layers`` stacked :class:`BiLstmLayer`, with optional residual (skip) connections.

    Args:
        input_dim: width of the token layer.
        options: the ``lstm`` section of the options.
        dropout: applied to each layer's input in training mode (0 at inference).

    Attributes:
        step_graphs: run inference time steps as CUDA graphs (:mod:`elmo.step_graphs`). None
            (default): on a GPU; True: also on the CPU, where a recorded step is re-run (for
            tests); False: never.
    """

    step_graphs: bool | None = None

    def __init__(self, input_dim: int, options: LstmOptions, dropout: float = 0.0):
        super().__init__()
        self.use_skip_connections = options.use_skip_connections
        self.dropout = dropout
        self.workspace = Workspace()
        self.layers = nn.ModuleList(
            BiLstmLayer(input_dim if k == 0 else options.projection_dim, options)
            for k in range(options.n_layers)
        )
        self.graphs = [StepGraphs() for _ in self.layers]

    def _apply(self, fn, *args, **kwargs):
        self.graphs = [StepGraphs() for _ in self.layers]  # recorded steps hold the old weights' addresses
        return super()._apply(fn, *args, **kwargs)

    def forward(self, x: Tensor, batch_sizes: list[int], states: list[LstmState] | None = None,
                need_final: bool = True) -> tuple[list[Tensor], list[LstmState | None]]:
        """Run the stack over packed sequences.

        Args:
            x: ``(2, n_packed, input_dim)`` packed token layer, per direction.
            batch_sizes: as in :meth:`BiLstmLayer.forward`.
            states: one initial state per layer, or None for zeros.
            need_final: False when the caller ignores the final states, which lets inference
                run on CUDA graphs (the finals are then None).

        Returns:
            Per layer, the ``(2, n_packed, projection_dim)`` packed outputs; and per layer the
            final state.
        """
        use_graphs = (not need_final and states is None and not torch.is_grad_enabled()
                      and (self.step_graphs if self.step_graphs is not None else x.device.type == "cuda"))
        outputs, finals = [], []
        for k, layer in enumerate(self.layers):
            layer_in = F.dropout(x, self.dropout, self.training) if self.dropout else x
            out, final = layer(layer_in, batch_sizes, states[k] if states else None, self.workspace,
                               self.graphs[k] if use_graphs else None)
            if self.use_skip_connections and k > 0:
                out = out + x
            outputs.append(out)
            finals.append(final)
            x = out
        return outputs, finals
