"""Stateless determinism, and the structural facts the speed rests on."""

from __future__ import annotations

import random

import pytest
import torch
from torch.overrides import TorchFunctionMode

from elmo.runtime import LSTM_ROW_BLOCK
from tests.tiny import tiny_bilm

WORDS = "the a cat dog sat on mat . , and of to in 苹果 买了 ELMo biLM x" .split()


def random_sentences(n: int, seed: int, max_len: int = 30) -> list[list[str]]:
    rng = random.Random(seed)
    return [[rng.choice(WORDS) + rng.choice(["", "s", "ed"]) for _ in range(rng.randint(1, max_len))]
            for _ in range(n)]


def test_vectors_do_not_depend_on_batch_companions_padding_or_size():
    bilm = tiny_bilm()
    target = ["the", "cat", "sat", "on", "the", "mat", "."]
    alone = bilm.embed([target]).layers[:, 0]
    for seed, size in [(1, 1), (2, 7), (3, 33)]:
        others = random_sentences(size, seed, max_len=60)  # longer companions: more padding
        for position in (0, size // 2, size):
            batch = others[:position] + [target] + others[position:]
            got = bilm.embed(batch).layers[:, position, : len(target)]
            torch.testing.assert_close(got, alone, rtol=0, atol=1e-6)


def test_padding_positions_are_zero_and_masked():
    out = tiny_bilm().embed([["a", "b", "c"], ["a"]])
    assert out.mask.tolist() == [[True, True, True], [True, False, False]]
    assert (out.layers[:, 1, 1:] == 0).all()


def test_empty_sentence_gives_zero_tokens():
    out = tiny_bilm().embed([[], ["a"]])
    assert out.layers.shape[2] == 1 and not out.mask[0].any()


def test_token_layer_is_context_independent_and_doubled():
    out = tiny_bilm().embed([["a", "cat"], ["cat", "sat", "down"]])
    layer0 = out.layers[0]
    torch.testing.assert_close(layer0[0, 1], layer0[1, 0], rtol=0, atol=0)
    half = layer0.shape[-1] // 2
    torch.testing.assert_close(layer0[..., :half], layer0[..., half:], rtol=0, atol=0)
    assert not torch.allclose(out.layers[1, 0, 1], out.layers[1, 1, 0])  # contextual layers differ


def test_stateful_mode_carries_state_row_by_row():
    stateless, stateful = tiny_bilm(), tiny_bilm()
    stateful.stateful = True
    first, second = random_sentences(3, 10), random_sentences(3, 11)
    torch.testing.assert_close(stateful.embed(first).layers, stateless.embed(first).layers)
    assert not torch.allclose(stateful.embed(second).layers, stateless.embed(second).layers)
    stateful.reset_states()
    torch.testing.assert_close(stateful.embed(second).layers, stateless.embed(second).layers)


def test_trimmed_char_cnn_is_exact():
    """The CNN cuts each type to the columns it needs (in steps of 8); no output may change."""
    cnn = tiny_bilm(filters=[[1, 4], [3, 8], [7, 8]], activation="tanh").token_encoder
    types = ["a", "supercalifragilistic", "苹果"]  # 3, 22 and 8 character ids, + 7 padding each
    ids = cnn.type_inputs(types)
    groups = [(columns, rows.tolist()) for columns, rows in cnn._column_groups(ids)]
    assert groups == [(16, [0, 2]), (32, [1])]
    with torch.no_grad():
        trimmed = cnn(ids)
        cnn._column_groups = lambda char_ids: [(50, torch.arange(len(char_ids)))]  # all 50 columns
        full = cnn(ids)
    torch.testing.assert_close(trimmed, full, rtol=0, atol=1e-6)


class CallCounter(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, tuple]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls.append((getattr(func, "__name__", str(func)), args))
        return func(*args, **(kwargs or {}))


def test_char_cnn_runs_once_on_distinct_tokens():
    bilm = tiny_bilm()
    seen: list[int] = []
    bilm.token_encoder.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    batch = [["the", "cat", "the", "cat"], ["the", "dog"], ["cat"]]
    bilm.embed(batch)
    assert seen == [2 + 3]  # <S>, </S>, the, cat, dog


def test_lstm_input_projection_is_one_matmul_per_layer():
    bilm = tiny_bilm(n_layers=2)
    batch = random_sentences(8, 5, max_len=25)
    with torch.inference_mode(), CallCounter() as counter:
        bilm(bilm.prepare(batch))
    input_weights = {id(layer.w_input) for layer in bilm.lstm.layers}
    input_projections = [args for name, args in counter.calls
                         if name == "baddbmm" and any(id(a) in input_weights for a in args)]
    assert len(input_projections) == 2  # one per layer, covering every time step
    n_tokens = sum(len(s) + 2 for s in batch)
    # Packed: no padding per sentence, only the whole row blocks that keep rounding batch-independent.
    assert all(n_tokens <= args[1].shape[1] < n_tokens + 2 * LSTM_ROW_BLOCK for args in input_projections)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_half_precision_is_close_to_float32(dtype):
    bilm = tiny_bilm()
    batch = random_sentences(16, 7)
    reference = bilm.embed(batch).layers
    half = bilm.to("cuda", dtype).embed(batch).layers.float().cpu()
    assert (half - reference).abs().max() < 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pinned_batch_on_gpu_gives_the_cpu_outputs():
    bilm = tiny_bilm()
    batch = random_sentences(8, 3)
    reference = bilm.embed(batch)
    bilm.to("cuda")
    with torch.inference_mode():
        out = bilm(bilm.prepare(batch).pin_memory().to("cuda"))
    torch.testing.assert_close(out.layers.cpu(), reference.layers, rtol=0, atol=1e-5)
    assert torch.equal(out.mask.cpu(), reference.mask)


def test_type_memo_gives_the_unmemoized_vectors_and_forgets_on_weight_change():
    memo, plain = tiny_bilm(), tiny_bilm()
    plain.type_memo = None
    first, second = random_sentences(6, 20), random_sentences(6, 21)  # overlapping types
    for batch in (first, second):
        torch.testing.assert_close(memo.embed(batch).layers, plain.embed(batch).layers, rtol=0, atol=1e-6)
    assert len(memo.type_memo.rows) > 0
    with torch.no_grad():
        for bilm in (memo, plain):
            bilm.token_encoder.projection.bias.add_(1.0)
    memo.clear_type_memo()  # in-place edits must clear it; load_weights, .to() and .train() do so
    torch.testing.assert_close(memo.embed(first).layers, plain.embed(first).layers, rtol=0, atol=1e-6)
    remembered = len(memo.type_memo.rows)
    memo.to("cpu", torch.float32).eval()  # what precompute does to a model already there: kept
    assert len(memo.type_memo.rows) == remembered
    memo.to(torch.float64)
    assert not memo.type_memo.rows
    memo.to(torch.float32).embed(first)
    memo.train()
    assert not memo.type_memo.rows
    with torch.no_grad():  # e.g. a validation pass in training mode: weights will change again
        memo(memo.prepare(second))
    assert not memo.type_memo.rows


def test_type_memo_is_bounded():
    bilm = tiny_bilm()
    bilm.type_memo.capacity = 5
    out = bilm.embed(random_sentences(4, 30))
    assert len(bilm.type_memo.rows) == 5
    plain = tiny_bilm()
    plain.type_memo = None
    torch.testing.assert_close(out.layers, plain.embed(random_sentences(4, 30)).layers, rtol=0, atol=1e-6)


def test_token_vectors_are_bitwise_independent_of_the_other_types_in_the_call():
    cnn = tiny_bilm().token_encoder
    types = [f"{w}{k}" for k in range(7) for w in WORDS]
    with torch.no_grad():
        together = cnn(cnn.type_inputs(types))
        for size in (1, 3, 9, 17, 40):
            for start in range(0, 60, size):
                alone = cnn(cnn.type_inputs(types[start : start + size]))
                assert torch.equal(alone, together[start : start + size])


def test_stateful_rows_beyond_a_smaller_batch_keep_their_state():
    first, small, third = random_sentences(3, 40), random_sentences(1, 41), random_sentences(3, 42)
    with_small, without = tiny_bilm(), tiny_bilm()
    with_small.stateful = without.stateful = True
    for batch in (first, small):
        with_small.embed(batch)
    without.embed(first)
    a, b = with_small.embed(third).layers, without.embed(third).layers
    torch.testing.assert_close(a[:, 1:], b[:, 1:], rtol=0, atol=1e-6)  # rows 1, 2 skipped the small batch
    assert not torch.allclose(a[:, 0], b[:, 0])  # row 0 continued from it


def test_reused_gate_memory_never_changes_earlier_outputs_or_later_results():
    reused, fresh = tiny_bilm(), tiny_bilm()
    long, short = random_sentences(8, 50, max_len=60), random_sentences(2, 51, max_len=5)
    first = reused.embed(long).layers
    kept = first.clone()
    for batch in (short, long):  # the memory shrinks its view, then grows back
        torch.testing.assert_close(reused.embed(batch).layers, fresh.embed(batch).layers, rtol=0, atol=0)
    assert torch.equal(first, kept)  # outputs handed out earlier are not views of it
    with torch.no_grad():  # memory taken in inference mode is read-only outside it
        torch.testing.assert_close(reused(reused.prepare(long)).layers, first, rtol=0, atol=0)


def test_forward_touches_no_process_wide_precision_flag(monkeypatch):
    """The char CNN keeps float32 IEEE without flipping torch's global TF32 switch, which other
    threads (a second model, a training script) read at the same moment."""
    flags = type(torch.backends.cudnn).__dict__["allow_tf32"]
    writes = []
    monkeypatch.setattr(type(torch.backends.cudnn), "allow_tf32",
                        property(lambda module: flags.__get__(module), lambda module, value: writes.append(value)))
    bilm = tiny_bilm()
    bilm.embed(random_sentences(8, 5))
    with torch.inference_mode():
        bilm(bilm.prepare(random_sentences(8, 6)))
    assert writes == []
