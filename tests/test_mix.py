"""The learnable scalar mix: what it computes, layer dropout, and the round trip of its learned
weights through ``precompute --mix-logits`` to a collapsed store that reads the same vectors."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from cache_builder import open_cache
from cache_builder.build.engine import PrecomputeSettings, precompute
from cache_builder.layers import LayerSpec, parse_layer_spec
from cache_builder.read.cache import pad_collate
from cache_builder.read.mix import ScalarMix
from elmo_cache.cli import build_parser, main
from tests.cache_models import load, save_tiny_model
from tests.test_inputs import write_lines

LINES = ["the cat sat on the mat .", "a dog barked twice at the postman", "birds fly south in winter .",
         "He went to the bank to deposit some money .", "我 买了 六斤 苹果 。"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(model folder, input file, float32 store that kept every layer)."""
    folder = tmp_path_factory.mktemp("mix")
    save_tiny_model(folder / "model")
    text = write_lines(folder / "in.txt", LINES)
    store = folder / "all.zarr"
    precompute(str(text), str(store), _model(folder), PrecomputeSettings(LayerSpec((0, 1, 2)), dtype="float32",
                                                                          tokenizer="whitespace"), progress=False)
    return folder, text, store


def _model(folder: Path):
    return load((folder / "model" / "options.json", folder / "model" / "weights.hdf5"))


def _trained_mix(cache, steps: int = 20) -> ScalarMix:
    """A mix trained a few steps towards layer 2 with layer dropout, so its weights are nothing special."""
    torch.manual_seed(0)
    initial_logits = [0.4, -1.3, 0.2][: len(cache.spec.layers)]
    mix = ScalarMix.for_cache(cache, layer_dropout=0.3, initial_logits=initial_logits, gamma=0.7)
    optimizer = torch.optim.SGD(mix.parameters(), lr=0.5)
    batch = pad_collate([cache.dataset()[i] for i in range(len(cache))])
    target = 1.5 * batch["vectors"][:, -1]
    for _ in range(steps):
        optimizer.zero_grad()
        ((mix(batch["vectors"]) - target) ** 2).mean().backward()
        optimizer.step()
    return mix.eval()


def test_learned_mix_equals_the_collapsed_store_built_from_its_weights(built):
    folder, text, store = built
    with open_cache(str(store)) as cache:
        mix = _trained_mix(cache)
        assert not torch.allclose(mix.logits.detach(), torch.tensor([0.4, -1.3, 0.2]))  # it learned
        spec = parse_layer_spec(3, **mix.precompute_args())
        collapsed = folder / "collapsed.zarr"
        precompute(str(text), str(collapsed), _model(folder), PrecomputeSettings(spec, dtype="float32",
                                                                                 tokenizer="whitespace"),
                   progress=False)
        with open_cache(str(collapsed)) as mixed_cache, torch.no_grad():
            batch = pad_collate([cache.dataset()[i] for i in range(len(cache))])
            out = mix(batch["vectors"])  # (batch, time, dim)
            assert out.shape == (len(LINES), batch["mask"].shape[1], 16) and out.dtype == torch.float32
            for b, doc_id in enumerate(batch["ids"]):
                expected = mixed_cache.lookup(doc_id)  # (n_tokens, dim)
                n = expected.shape[0]
                np.testing.assert_allclose(out[b, :n].numpy(), expected, rtol=0, atol=1e-6)
                assert torch.all(out[b, n:] == 0)  # padding stays zero
                np.testing.assert_allclose(mix(torch.from_numpy(cache.lookup(doc_id))).numpy(), expected,
                                           rtol=0, atol=1e-6)  # one lookup: (n_layers, time, dim)


@pytest.mark.parametrize("layers", ["0,1,2", "0,1", "1,2"])
def test_the_printed_command_builds_the_learned_mix_on_any_store_it_trains_on(built, tmp_path: Path, layers: str):
    """``cli_args()`` on a store of 3 or 2 kept layers, pasted after ``precompute``, builds the store
    whose lookups are what the trained mix computes."""
    folder, text, _ = built
    common = [str(text), "--model", str(folder / "model"), "--tokenizer", "whitespace", "--dtype", "float32", "-q"]
    assert main(["precompute", *common, "-o", str(tmp_path / "kept.zarr"), "--layers", layers]) == 0
    with open_cache(str(tmp_path / "kept.zarr")) as cache:
        mix = _trained_mix(cache)
        assert mix.layers == tuple(map(int, layers.split(",")))
        printed = f"precompute {shlex.join(common)} -o {tmp_path / 'mixed.zarr'} {mix.cli_args()}"
        assert main(shlex.split(printed)) == 0
        with open_cache(str(tmp_path / "mixed.zarr")) as mixed, torch.no_grad():
            assert mixed.spec.layers == mix.layers
            for doc_id in cache:
                np.testing.assert_allclose(mix(torch.from_numpy(cache.lookup(doc_id))).numpy(),
                                           mixed.lookup(doc_id), rtol=0, atol=1e-6)


def test_cli_args_parse_to_the_same_mix():
    mix = ScalarMix(3, initial_logits=[-0.123456789, 2.5, -7.0], gamma=-0.25)
    expected = parse_layer_spec(3, **mix.precompute_args())
    args = build_parser().parse_args(["precompute", "in.jsonl", *shlex.split(mix.cli_args())])
    got = parse_layer_spec(3, layers=args.layers, mix=args.mix, mix_logits=args.mix_logits, gamma=args.gamma)
    assert got == expected
    assert expected.logits == tuple(mix.logits.tolist())  # exact: the float32 values survive the text
    assert expected.gamma == mix.gamma.item()
    np.testing.assert_allclose(expected.mix, mix.weights().detach().numpy(), rtol=0, atol=1e-15)


def test_the_mix_is_gamma_times_the_softmax_weighted_sum():
    layers = torch.randn(2, 3, 5, 4)  # (batch, n_layers, time, dim)
    mix = ScalarMix(3, initial_logits=[1.0, 0.0, -1.0], gamma=2.0).eval()
    s = torch.softmax(torch.tensor([1.0, 0.0, -1.0]), 0)
    expected = 2.0 * (s[0] * layers[:, 0] + s[1] * layers[:, 1] + s[2] * layers[:, 2])
    torch.testing.assert_close(mix(layers), expected)
    assert mix(layers.half()).dtype == torch.float32  # float16 stores are widened
    with pytest.raises(ValueError, match="expected 3 layers"):
        mix(torch.randn(2, 2, 5, 4))


def test_layer_dropout_drops_whole_layers_in_training_only():
    torch.manual_seed(1)
    layers = torch.randn(1, 3, 4, 2)
    mix = ScalarMix(3, layer_dropout=0.5, initial_logits=[0.5, -0.2, 0.1])
    subsets = {}  # which layers were kept → output of the mix renormalized over them
    for kept in [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]:
        s = torch.softmax(mix.logits.detach()[list(kept)], 0)
        subsets[kept] = sum(w * layers[:, k] for w, k in zip(s, kept))
    seen = set()
    for _ in range(60):
        mix.zero_grad()
        out = mix(layers)
        matches = [kept for kept, value in subsets.items() if torch.allclose(out, value, atol=1e-6)]
        assert len(matches) == 1, "each draw is the mix over a non-empty subset of whole layers"
        out.sum().backward()
        dropped = set(range(3)) - set(matches[0])
        assert all(mix.logits.grad[k] == 0 for k in dropped)  # a dropped layer learns nothing this step
        seen.add(matches[0])
    assert len(seen) >= 5 and (0, 1, 2) in seen
    mix.eval()
    torch.testing.assert_close(mix(layers), subsets[(0, 1, 2)])


def test_for_cache_needs_a_store_that_kept_layers(built, tmp_path: Path):
    folder, text, store = built
    with open_cache(str(store)) as cache:
        assert len(ScalarMix.for_cache(cache).logits) == 3
    mixed = tmp_path / "mixed.zarr"
    precompute(str(text), str(mixed), _model(folder),
               PrecomputeSettings(parse_layer_spec(3, mix="0.2,0.3,0.5"), tokenizer="whitespace"), progress=False)
    with open_cache(str(mixed)) as cache, pytest.raises(ValueError, match="already mixed"):
        ScalarMix.for_cache(cache)


def test_consecutive_kept_layers_are_selected_without_a_copy():
    layers = torch.randn(4, 2, 5, 8)  # (n_layers, batch, time, dim)
    for kept, shares in (((0, 1), True), ((1, 2), True), ((0, 1, 2), True), ((0, 2), True), ((1, 3), False)):
        out = LayerSpec(kept).apply(layers)
        vector_layers = [k for k in kept if k != 0]
        assert torch.equal(out, layers[vector_layers].permute(1, 2, 0, 3))
        assert (out.untyped_storage().data_ptr() == layers.untyped_storage().data_ptr()) == shares, kept
