"""The biLM: a token encoder under a stacked biLSTM, giving ``(n_layers, batch, time, dim)``.

Data flow for one batch of tokenized sentences::

    sentences ──prepare──► TokenBatch: distinct types (+ boundaries) and a (batch, time) index
              ──token encoder, once per type──► (n_types, proj)
              ──gather + pack (no padding computed)──► (2, n_packed, proj)
              ──BiLstm──► per layer (2, n_packed, proj)
              ──unpack, strip boundaries──► BiLMOutput.layers (n_layers, batch, time, 2 * proj)

The token encoder is the swappable piece (the published char CNN, a precomputed table, or
another model family's character mapping and word embedding): anything with
``boundary_tokens``, ``type_inputs(types)`` and ``forward(inputs) -> (n_types, output_dim)``.
Everything after it is the same for every model family. Where a model comes from (files,
directories, families) is :mod:`elmo.models`' business.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from elmo.char_cnn import CharCNN
from elmo.lstm import BiLstm, BiLstmLayer, LstmState
from elmo.options import BiLMOptions


class TokenEncoder(Protocol):
    """Maps token types to context-independent vectors (the biLM's layer 0 before doubling)."""

    output_dim: int
    boundary_tokens: tuple[str, str]  # the strings the biLM puts around every sentence

    def type_inputs(self, types: Sequence[str]) -> Tensor:
        """Whatever :meth:`forward` consumes for these types, e.g. character ids."""

    def __call__(self, inputs: Tensor) -> Tensor:
        """``type_inputs`` → ``(n_types, output_dim)``."""


@dataclass
class TokenBatch:
    """A batch of sentences as distinct token types plus an index into them.

    Attributes:
        types: the distinct token strings, the two boundary tokens (``<S>``, ``</S>``) first.
        type_inputs: encoder input per distinct type (for the char CNN: ``(n_types, 50)`` ids).
        type_index: ``(batch, time + 2)`` int64 type of each position, the boundaries
            included; positions past a sentence's end boundary are 0 and never read.
        lengths: ``(batch,)`` int64 sentence lengths *with* the two boundary tokens. Always on
            the CPU: the packing is planned there, so a GPU run never waits to read them back.
    """

    types: list[str]
    type_inputs: Tensor
    type_index: Tensor
    lengths: Tensor

    def to(self, device: torch.device | str) -> TokenBatch:
        """The device tensors moved to ``device`` (asynchronously when they are pinned)."""
        return self._map(lambda t: t.to(device, non_blocking=True))

    def pin_memory(self) -> TokenBatch:
        """The device tensors in page-locked memory, for asynchronous copies to a GPU."""
        return self._map(Tensor.pin_memory)

    def _map(self, fn: Callable[[Tensor], Tensor]) -> TokenBatch:
        return TokenBatch(self.types, fn(self.type_inputs), fn(self.type_index), self.lengths)


@dataclass
class BiLMOutput:
    """Activations of a batch, boundaries stripped.

    Attributes:
        layers: ``(n_layers, batch, time, output_dim)``: layer 0 is the token layer doubled to
            the LSTM width, layer k the k-th biLSTM layer as [forward; backward]. Zero at padding.
        mask: ``(batch, time)`` bool, True at real tokens.
        token_layer: ``(n_types, projection_dim)`` the token layer per distinct type of the batch
            (the boundaries are types 0 and 1), for callers that store it once per type.
    """

    layers: Tensor
    mask: Tensor
    token_layer: Tensor


@dataclass
class Packing:
    """Where each packed row comes from. See :mod:`elmo.lstm` for the packed layout.

    Attributes:
        index: ``(2, n_packed)`` flat position ``b * time + t`` in the padded batch, per
            direction (the backward direction reads each sequence back to front).
        batch_sizes: sequences still running at each step.
        order: ``(batch,)`` rows sorted longest first (packed row i of a step is ``order[i]``).
        token_rows: ``(2, n_tokens)`` the packed rows that are real tokens (not boundaries).
        token_positions: ``(2, n_tokens)`` where those rows go in the stripped output: flat
            position ``b * (time - 2) + t - 1``.
    """

    index: Tensor
    batch_sizes: list[int]
    order: Tensor
    token_rows: Tensor
    token_positions: Tensor


def pack(lengths: Tensor, time: int, device: torch.device | str = "cpu") -> Packing:
    """Packing of a padded ``(batch, time)`` batch whose row b has ``lengths[b]`` positions.

    Args:
        lengths: ``(batch,)`` on the CPU.
        device: where the index tensors go (the batch's device).
    """
    lens = lengths.numpy()
    order = np.argsort(-lens, kind="stable")
    sorted_lens = lens[order]
    steps = np.arange(time)[:, None]  # (time, 1)
    running = sorted_lens[None, :] > steps  # (time, batch)
    forward = order[None, :] * time + steps
    backward = order[None, :] * time + (sorted_lens[None, :] - 1 - steps)
    index = np.stack([forward[running], backward[running]])
    row, t = np.divmod(index, time)
    is_token = (t >= 1) & (t <= lens[row] - 2)  # both directions hold the same tokens
    token_rows = np.stack([np.flatnonzero(d) for d in is_token])
    token_positions = np.take_along_axis(row * (time - 2) + t - 1, token_rows, axis=1)
    return Packing(
        index=torch.from_numpy(index).to(device),
        batch_sizes=running.sum(axis=1)[running.any(axis=1)].tolist(),
        order=torch.from_numpy(order).to(device),
        token_rows=torch.from_numpy(token_rows).to(device),
        token_positions=torch.from_numpy(token_positions).to(device),
    )


class TypeMemo:
    """Token-layer vectors of the types seen so far, at most ``capacity`` of them.

    Once full it keeps what it has (in a Zipfian corpus the frequent types come early) rather
    than evicting, so what it holds depends only on the order of the input. The owning
    :class:`BiLM` clears it whenever its weights, device, dtype or mode change.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.rows: dict[str, int] = {}
        self.vectors: Tensor | None = None  # (allocated rows, dim), grown on demand

    def clear(self) -> None:
        self.rows.clear()
        self.vectors = None

    def encode(self, types: list[str], type_inputs: Tensor, encoder: TokenEncoder) -> Tensor:
        """Vectors of ``types``: remembered ones gathered, the others encoded (and remembered).

        Returns:
            ``(n_types, dim)``.
        """
        missing = [i for i, t in enumerate(types) if t not in self.rows]
        if len(missing) == len(types):
            computed = encoder(type_inputs)
            self._remember(types, computed)
            return computed
        device = type_inputs.device
        hits = torch.tensor([i for i, t in enumerate(types) if t in self.rows], device=device)
        hit_rows = torch.tensor([self.rows[t] for t in types if t in self.rows], device=device)
        out = self.vectors.new_empty(len(types), self.vectors.shape[1])
        out[hits] = self.vectors[hit_rows]
        if missing:
            missing_index = torch.tensor(missing, device=device)
            computed = encoder(type_inputs[missing_index])
            out[missing_index] = computed
            self._remember([types[i] for i in missing], computed)
        return out

    def _remember(self, types: list[str], vectors: Tensor) -> None:
        n = min(len(types), self.capacity - len(self.rows))
        if n <= 0:
            return
        start = len(self.rows)
        if self.vectors is None or start + n > self.vectors.shape[0]:
            grown = vectors.new_empty(min(self.capacity, max(2 * (start + n), 1024)), vectors.shape[1])
            if self.vectors is not None:
                grown[:start] = self.vectors[:start]
            self.vectors = grown
        self.vectors[start : start + n] = vectors[:n]
        self.rows.update((t, start + k) for k, t in enumerate(types[:n]))


class BiLM(nn.Module):
    """The ELMo bidirectional language model (inference and training share this module).

    A BiLM is not safe to call from two threads at once: the type memo and the LSTM's gate
    memory are reused from call to call.

    Args:
        options: validated model options.
        token_encoder: layer-0 encoder; the published char CNN when None.
        stateful: carry LSTM state from batch to batch, row by row, as the published
            implementation does (only to reproduce its outputs). Default: every sentence
            starts from zero state, so its vectors never depend on its batch.
        dropout: LSTM input dropout in training mode.
        type_memo_size: token types whose layer-0 vectors are remembered across batches and
            runs in eval mode without autograd (0 disables); the token layer is
            context-independent, so each type's char CNN runs once per model rather than once
            per batch. Training, moving or casting the model forgets them.
    """

    def __init__(self, options: BiLMOptions, token_encoder: TokenEncoder | None = None,
                 stateful: bool = False, dropout: float = 0.0, type_memo_size: int = 100_000):
        super().__init__()
        self.options = options
        self.type_memo = TypeMemo(type_memo_size) if type_memo_size else None
        self.token_encoder = token_encoder or CharCNN(options.char_cnn, options.lstm.projection_dim)
        self.lstm = BiLstm(options.lstm.projection_dim, options.lstm, dropout=dropout)
        self.stateful = stateful
        self._states: list[LstmState] | None = None

    @property
    def device(self) -> torch.device:
        return next(self.lstm.parameters()).device

    def prepare(self, sentences: Sequence[Sequence[str]]) -> TokenBatch:
        """Tokenized sentences → :class:`TokenBatch` (on the CPU), each distinct token once.

        Raises:
            TypeError: ``sentences`` is a string, or holds one (a sentence is a list of tokens;
                a string would be read as one token per character).
        """
        _check_tokenized(sentences)
        bos, eos = self.token_encoder.boundary_tokens
        type_ids: dict[str, int] = {bos: 0, eos: 1}
        time = max((len(s) for s in sentences), default=0) + 2
        index = np.zeros((len(sentences), time), dtype=np.int64)
        for b, sentence in enumerate(sentences):
            row = [type_ids.setdefault(tok, len(type_ids)) for tok in sentence]
            index[b, 1 : 1 + len(row)] = row
            index[b, 1 + len(row)] = 1
        types = list(type_ids)
        return TokenBatch(
            types=types,
            type_inputs=self.token_encoder.type_inputs(types),
            type_index=torch.from_numpy(index),
            lengths=torch.tensor([len(s) + 2 for s in sentences], dtype=torch.int64),
        )

    def encode_types(self, types: Sequence[str]) -> Tensor:
        """The token layer of ``types`` before doubling: ``(n_types, projection_dim)``."""
        return self._type_vectors(list(types), self.token_encoder.type_inputs(types).to(self.device))

    def _type_vectors(self, types: list[str], type_inputs: Tensor) -> Tensor:
        """Through the type memo in inference, so each type is encoded once per model."""
        if self.type_memo is not None and not self.training and not torch.is_grad_enabled():
            return self.type_memo.encode(types, type_inputs, self.token_encoder)
        return self.token_encoder(type_inputs)

    def forward(self, batch: TokenBatch) -> BiLMOutput:
        """Run the biLM on a prepared batch (already on this module's device)."""
        type_vectors = self._type_vectors(batch.types, batch.type_inputs)  # (n_types, proj)
        n_batch, time = batch.type_index.shape
        packing = pack(batch.lengths, time, batch.type_index.device)
        flat_types = batch.type_index.reshape(-1)
        x = type_vectors[flat_types[packing.index]]  # (2, n_packed, proj)
        outputs, finals = self.lstm(x, packing.batch_sizes, self._initial_states(packing), need_final=self.stateful)
        if self.stateful:
            self._keep_states(finals, packing)

        # Every layer is written straight into the output, boundaries stripped: real token j
        # of row b is position j + 1 of the batch, and zeros stay where there is no token.
        proj = type_vectors.shape[1]
        mask = (torch.arange(time - 2) < (batch.lengths - 2)[:, None]).to(packing.index.device)
        layers = type_vectors.new_zeros(1 + len(outputs), n_batch, time - 2, 2 * proj)
        tokens = type_vectors[batch.type_index[:, 1:-1]] * mask[..., None]  # (batch, time - 2, proj)
        layers[0, ..., :proj], layers[0, ..., proj:] = tokens, tokens
        flat = layers.view(1 + len(outputs), n_batch * (time - 2), 2 * proj)
        for k, packed in enumerate(outputs, start=1):  # (2, n_packed, proj), direction d → half d
            for d in (0, 1):
                flat[k, packing.token_positions[d], d * proj : (d + 1) * proj] = packed[d, packing.token_rows[d]]
        return BiLMOutput(layers=layers, mask=mask, token_layer=type_vectors)

    @torch.inference_mode()
    def embed(self, sentences: Sequence[Sequence[str]]) -> BiLMOutput:
        """Prepare, move to the model's device, and run: the one-call inference entry point.

        Args:
            sentences: tokenized sentences, e.g. ``[["The", "cat", "sat", "."], ["Hello"]]``.

        Returns:
            ``layers`` ``(n_layers, batch, time, dim)`` and ``mask`` ``(batch, time)``.
        """
        return self(self.prepare(sentences).to(self.device))

    def train(self, mode: bool = True) -> BiLM:
        if mode:  # training changes the weights; eval() keeps what an earlier run remembered
            self.clear_type_memo()
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        weights = [p.data_ptr() for p in self.parameters()]
        module = super()._apply(fn, *args, **kwargs)
        if [p.data_ptr() for p in self.parameters()] != weights:  # moved or cast: vectors are stale
            self.clear_type_memo()
        return module

    def clear_type_memo(self) -> None:
        """Forget remembered token-layer vectors (call after changing weights in place)."""
        if getattr(self, "type_memo", None) is not None:
            self.type_memo.clear()

    def reset_states(self) -> None:
        """Forget the carried state of a stateful biLM."""
        self._states = None

    def _initial_states(self, packing: Packing) -> list[LstmState] | None:
        if not self.stateful or self._states is None:
            return None
        states = [_carried(layer, kept, len(packing.order)) for layer, kept in zip(self.lstm.layers, self._states)]
        return [LstmState(s.h[:, packing.order], s.c[:, packing.order]) for s in states]

    def _keep_states(self, finals: list[LstmState], packing: Packing) -> None:
        """Store final states by batch row; rows beyond this batch keep what they had."""
        previous = self._states or [None] * len(finals)
        self._states = []
        for layer, kept, final in zip(self.lstm.layers, previous, finals):
            state = _carried(layer, kept, len(packing.order))
            state.h[:, packing.order] = final.h.detach()  # packed row i is batch row order[i]
            state.c[:, packing.order] = final.c.detach()
            self._states.append(state)


def _carried(layer: BiLstmLayer, kept: LstmState | None, rows: int) -> LstmState:
    """A fresh state of at least ``rows`` rows: the ``kept`` rows first, zeros after."""
    n_kept = kept.h.shape[1] if kept is not None else 0
    state = layer.zero_state(max(rows, n_kept))
    if kept is not None:
        state.h[:, :n_kept] = kept.h
        state.c[:, :n_kept] = kept.c
    return state


def _check_tokenized(sentences: Sequence[Sequence[str]]) -> None:
    """Refuse strings where token lists belong, with the fix in the message."""
    if isinstance(sentences, str):
        raise TypeError(f"expected a list of tokenized sentences, got the string {sentences[:40]!r}: "
                        f"use [{sentences[:40]!r}.split()]")
    for i, sentence in enumerate(sentences):
        if isinstance(sentence, str):
            raise TypeError(f"sentence {i} is the string {sentence[:40]!r}, not a list of tokens: "
                            "pass [s.split() for s in sentences] (whitespace-tokenized text), or "
                            "elmo.tokenize.get_tokenizer('auto')(s).tokens for raw text")
