"""Small random ELMoForManyLangs (HIT-SCIR) model directories, and an independent reference.

:func:`write_efml_model` writes a directory the way the original's training writes one
(``config.json`` with a stale absolute ``config_path``, the architecture JSON, ``char.dic``
with the corpus characters in order of first occurrence and the six specials at the end,
``word.dic`` starting ``<oov> <bos> <eos> <pad>``, and the two state dicts, by default in torch
0.4's legacy format with storages tagged ``torch.cuda.FloatStorage`` on ``cuda:0``, as the
published models were saved from a GPU). The state dicts come from modules named like the
original's, so their keys, order and ``_metadata`` are the real ones.

:func:`reference_layers` computes the original's outputs from those tensors, written from the
fact sheet alone (one sentence at a time, the LSTM step by step, the highway and gate order
of the original), sharing no code with ``elmo``.
"""

from __future__ import annotations

import json
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

CHAR_SPECIALS = ["<bos>", "<eos>", "<oov>", "<pad>", "<bow>", "<eow>"]
WORD_SPECIALS = ["<oov>", "<bos>", "<eos>", "<pad>"]
SAMPLE_NAME = "cnn_50_100_512_4096_sample.json"

# Characters and words of the tiny "training corpus": Chinese, Latin, an emoji, and U+3000.
CORPUS_CHARS = list("我买了六斤苹果一个今天天气真好阿潮水退就知道谁没穿裤子abcdefghijklmnopqrstuvwxyzABC.,。！🍎") + ["\u3000"]
CORPUS_WORDS = ["我", "买了", "六斤", "苹果", "。", "今天", "天气", "真", "好", "the", "cat", "\u3000"]


def tiny_architecture(**overrides) -> dict:
    """The sample architecture's structure at toy sizes; overrides go into either section."""
    arch = {
        "encoder": {"name": "elmo", "projection_dim": 8, "cell_clip": 3, "proj_clip": 3, "dim": 16, "n_layers": 2},
        "token_embedder": {"name": "cnn", "activation": "relu", "filters": [[1, 4], [2, 6], [3, 8]],
                           "n_highway": 2, "word_dim": 5, "char_dim": 6, "max_characters_per_token": 12},
        "classifier": {"name": "sampled_softmax", "n_samples": 8192},
        "dropout": 0.1,
    }
    for key, value in overrides.items():
        section = "encoder" if key in arch["encoder"] else "token_embedder"
        arch[section][key] = value
    return arch


class _Embedding(nn.Module):
    def __init__(self, n: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n, dim)


class _Highway(nn.Module):
    def __init__(self, dim: int, n_layers: int):
        super().__init__()
        self._layers = nn.ModuleList(nn.Linear(dim, 2 * dim) for _ in range(n_layers))


class TokenEmbedder(nn.Module):
    """The parameter names and order of the original's ``ConvTokenEmbedder``."""

    def __init__(self, arch: dict, n_chars: int, n_words: int):
        super().__init__()
        te, p = arch["token_embedder"], arch["encoder"]["projection_dim"]
        if te["word_dim"]:
            self.word_emb_layer = _Embedding(n_words, te["word_dim"])
        self.char_emb_layer = _Embedding(n_chars, te["char_dim"])
        self.convolutions = nn.ModuleList(nn.Conv1d(te["char_dim"], n, w) for w, n in te["filters"])
        n_filters = sum(n for _, n in te["filters"])
        self.highways = _Highway(n_filters, te["n_highway"])
        self.projection = nn.Linear(te["word_dim"] + n_filters, p)


class _Cell(nn.Module):
    def __init__(self, p: int, c: int):
        super().__init__()
        self.input_linearity = nn.Linear(p, 4 * c, bias=False)
        self.state_linearity = nn.Linear(p, 4 * c)
        self.state_projection = nn.Linear(c, p, bias=False)


class Encoder(nn.Module):
    """The parameter names and order of the original's ``ElmobiLm``."""

    def __init__(self, arch: dict):
        super().__init__()
        enc = arch["encoder"]
        for k in range(enc["n_layers"]):
            self.add_module(f"forward_layer_{k}", _Cell(enc["projection_dim"], enc["dim"]))
            self.add_module(f"backward_layer_{k}", _Cell(enc["projection_dim"], enc["dim"]))


@dataclass
class EfmlModel:
    """What :func:`write_efml_model` wrote, for tests and the reference."""

    folder: Path
    arch: dict
    chars: dict[str, int]
    words: dict[str, int]
    token_embedder: dict[str, Tensor] = field(repr=False)
    encoder: dict[str, Tensor] = field(repr=False)


def _random_state(module: nn.Module, generator: torch.Generator) -> OrderedDict:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.rand(p.shape, generator=generator) * 1.2 - 0.6)  # biases and pad rows non-zero
    return module.state_dict()


def save_legacy_gpu(state: OrderedDict, path: Path) -> None:
    """``torch.save`` as torch 0.4 wrote a GPU model's state dict: the legacy (non-zip) format,
    protocol 2, every storage a ``torch.cuda.FloatStorage`` on ``cuda:0``."""

    class StorageRef:
        def __init__(self, key: str, numel: int):
            self.key, self.numel = key, numel

    class TensorRef:
        def __init__(self, storage: StorageRef, tensor: Tensor):
            self.args = (storage, 0, tuple(tensor.shape), tuple(tensor.stride()), False, OrderedDict())

        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, self.args

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, StorageRef):
                return ("storage", torch.cuda.FloatStorage, obj.key, "cuda:0", obj.numel, None)
            return None

    keys = [str(94_000_000 + 64 * i) for i in range(len(state))]
    proxy = OrderedDict((name, TensorRef(StorageRef(key, t.numel()), t)) for key, (name, t) in zip(keys, state.items()))
    proxy._metadata = state._metadata
    with open(path, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)  # torch's magic number
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 8}}, f, protocol=2)
        Pickler(f, protocol=2).dump(proxy)
        pickle.dump(sorted(keys), f, protocol=2)
        tensors = dict(zip(keys, state.values()))
        for key in sorted(keys):
            data = tensors[key].contiguous().numpy().astype("<f4")
            f.write(struct.pack("<q", data.size) + data.tobytes())


SAVERS = {
    "legacy-gpu": save_legacy_gpu,
    "legacy": lambda state, path: torch.save(state, path, _use_new_zipfile_serialization=False),
    "zip": torch.save,
}


def write_dic_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_efml_model(folder: Path, seed: int = 0, arch: dict | None = None, *, fmt: str = "legacy-gpu",
                     config_path: str = "stale", extra_words: tuple[str, ...] = (),
                     specials_first: bool = False) -> EfmlModel:
    """Write a random model directory in the original's format.

    Args:
        arch: the architecture (default :func:`tiny_architecture`).
        fmt: how the state dicts are saved: "legacy-gpu", "legacy" or "zip" (see :data:`SAVERS`).
        config_path: "stale" (an absolute path from another machine, the architecture JSON
            beside config.json under that name), "relative" (its file name), or "sample"
            (a stale path to the built-in sample, which the directory does not hold).
        extra_words: more words for ``word.dic``.
        specials_first: put the char specials first (their ids are looked up by name).
    """
    arch = arch or tiny_architecture()
    folder.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    # Training adds the characters of <bos> (the first token it reads) before the corpus's.
    corpus = list(dict.fromkeys(list("<bos>") + CORPUS_CHARS + list("<eos>")))
    char_keys = CHAR_SPECIALS + corpus if specials_first else corpus + CHAR_SPECIALS
    chars = {c: i for i, c in enumerate(char_keys)}
    words = {w: i for i, w in enumerate(WORD_SPECIALS + CORPUS_WORDS + list(extra_words))}
    write_dic_lines(folder / "char.dic", [f"{c}\t{i}" for c, i in chars.items()])
    write_dic_lines(folder / "word.dic", [f"{w}\t{i}" for w, i in words.items()])

    name = SAMPLE_NAME if config_path == "sample" else "tiny_arch.json"
    where = {"stale": f"/users4/conll18st/elmo/src/configs/{name}", "relative": name,
             "sample": f"/users4/conll18st/elmo/src/configs/{name}"}[config_path]
    if config_path != "sample":
        (folder / name).write_text(json.dumps(arch, indent=1))
    config = {"seed": 1, "gpu": 0, "train_path": "/data/train.txt", "valid_path": None, "test_path": None,
              "config_path": where, "word_embedding": None, "optimizer": "adam", "lr": 0.001,
              "lr_decay": 0.8, "model": "/users4/conll18st/elmo/model", "batch_size": 32, "max_epoch": 10,
              "clip_grad": 5, "max_sent_len": 20, "min_count": 3, "max_vocab_size": 150000,
              "save_classify_layer": False, "valid_size": 0, "eval_steps": 10000}
    (folder / "config.json").write_text(json.dumps(config))

    token_embedder = _random_state(TokenEmbedder(arch, len(chars), len(words)), generator)
    encoder = _random_state(Encoder(arch), generator)
    SAVERS[fmt](token_embedder, folder / "token_embedder.pkl")
    SAVERS[fmt](encoder, folder / "encoder.pkl")
    return EfmlModel(folder, arch, chars, words, dict(token_embedder), dict(encoder))


# ---------------------------------------------------------------------------------------
# The reference: the original's computation, one sentence at a time.


def reference_inputs(model: EfmlModel, sentence: list[str], swapped: bool = True) -> tuple[list[int], np.ndarray]:
    """Word ids ``(T + 2,)`` and char ids ``(T + 2, max_chars)`` of ``<bos> sentence <eos>``,
    as the original's ``read_list`` + ``create_one_batch`` make them (``swapped=False``: the
    textbook marker order, which the models were not trained with)."""
    max_chars = model.arch["token_embedder"]["max_characters_per_token"]
    tokens = ["<bos>"] + [t[: max_chars - 2] if len(t) + 2 > max_chars else t for t in sentence] + ["<eos>"]
    c = model.chars
    first, last = (c["<eow>"], c["<bow>"]) if swapped else (c["<bow>"], c["<eow>"])
    rows = np.full((len(tokens), max_chars), c["<pad>"], dtype=np.int64)
    for j, token in enumerate(tokens):
        body = [c[token]] if token in ("<bos>", "<eos>") else [c.get(ch, c["<oov>"]) for ch in token]
        rows[j, 0], rows[j, 1 : 1 + len(body)], rows[j, 1 + len(body)] = first, body, last
    word_ids = [model.words.get(t, model.words["<oov>"]) for t in tokens]
    return word_ids, rows


def reference_token_layer(model: EfmlModel, word_ids: list[int], char_ids: np.ndarray) -> Tensor:
    """``(T + 2, P)``: char embedding → convolutions → max → activation → highway, [word ‖ that] → projection."""
    te, sd = model.arch["token_embedder"], model.token_embedder
    act = torch.relu if te["activation"] == "relu" else torch.tanh
    x = F.embedding(torch.from_numpy(char_ids), sd["char_emb_layer.embedding.weight"]).transpose(1, 2)
    h = torch.cat([act(F.conv1d(x, sd[f"convolutions.{i}.weight"], sd[f"convolutions.{i}.bias"]).max(dim=-1).values)
                   for i in range(len(te["filters"]))], dim=-1)
    n = h.shape[1]
    for k in range(te["n_highway"]):
        z = F.linear(h, sd[f"highways._layers.{k}.weight"], sd[f"highways._layers.{k}.bias"])
        g = torch.sigmoid(z[:, n:])
        h = g * h + (1 - g) * torch.relu(z[:, :n])
    if te["word_dim"]:
        h = torch.cat([sd["word_emb_layer.embedding.weight"][torch.tensor(word_ids)], h], dim=-1)
    return F.linear(h, sd["projection.weight"], sd["projection.bias"])


def _run_cell(model: EfmlModel, name: str, x: Tensor, backward: bool) -> Tensor:
    enc, sd = model.arch["encoder"], model.encoder
    c_dim = enc["dim"]
    h = x.new_zeros(enc["projection_dim"])
    c = x.new_zeros(c_dim)
    out = torch.zeros(x.shape[0], enc["projection_dim"])
    for t in (reversed(range(x.shape[0])) if backward else range(x.shape[0])):
        z = F.linear(x[t], sd[f"{name}.input_linearity.weight"]) + F.linear(
            h, sd[f"{name}.state_linearity.weight"], sd[f"{name}.state_linearity.bias"])
        i, f, g, o = (z[k * c_dim : (k + 1) * c_dim] for k in range(4))
        c = torch.sigmoid(i) * torch.tanh(g) + torch.sigmoid(f) * c
        if enc["cell_clip"]:
            c = c.clamp(-enc["cell_clip"], enc["cell_clip"])
        h = F.linear(torch.sigmoid(o) * torch.tanh(c), sd[f"{name}.state_projection.weight"])
        if enc["proj_clip"]:
            h = h.clamp(-enc["proj_clip"], enc["proj_clip"])
        out[t] = h
    return out


@torch.no_grad()
def reference_layers(model: EfmlModel, sentence: list[str], swapped: bool = True) -> np.ndarray:
    """``(n_layers + 1, T, 2P)`` float32: what the original's fresh ``Embedder`` returns with
    ``output_layer=-2`` (layer 0 doubled, residual sums, ``<bos>``/``<eos>`` dropped)."""
    token = reference_token_layer(model, *reference_inputs(model, sentence, swapped))
    layers = [torch.cat([token, token], dim=-1)]
    forward = backward = token
    for k in range(model.arch["encoder"]["n_layers"]):
        fw = _run_cell(model, f"forward_layer_{k}", forward, backward=False)
        bw = _run_cell(model, f"backward_layer_{k}", backward, backward=True)
        if k:
            fw, bw = fw + forward, bw + backward
        layers.append(torch.cat([fw, bw], dim=-1))
        forward, backward = fw, bw
    return torch.stack(layers)[:, 1:-1].numpy()
