"""Training a biLM: forward and backward language models on character input, as in bilm-tf.

Data layout. Every sentence becomes ``<S> w_1 ... w_n </S>``; an epoch concatenates the
sentences (shuffled by ``(seed, epoch)``) into one stream and cuts it into ``batch_size``
contiguous rows. Step ``k`` of the epoch reads window ``k`` of every row:
``unroll_steps`` input tokens and, one position later, their targets. The backward LM reads
the reversed stream the same way. The LSTM state is carried from window to window, but
gradients are cut at the window boundary (truncated backpropagation through time).

Because the data position is a function of the step (``epoch, window = divmod(step,
n_windows)``) and a checkpoint holds the weights, optimizer, carried states and random
state, a run resumed after a kill continues exactly where the checkpoint left it.

A *save dir* holds ``checkpoint.pt`` (the latest state, for ``--resume``) and, when held-out
data is given, ``best.pt`` (the model with the lowest held-out perplexity); the model of a save
dir is ``best.pt`` when present, else the latest checkpoint. It also keeps ``tokenizer.json``,
how the training text was segmented (from the vocabulary's record, or the fine-tuned model's),
which the exported model directory carries on for ``precompute``.
"""

from __future__ import annotations

import glob
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from elmo.bilm import BiLM
from elmo.chars import BOS_TOKEN, EOS_TOKEN, char_id_matrix
from elmo.lstm import LstmState
from elmo.options import BiLMOptions
from elmo.runtime import resolve_device
from elmo.safe_load import load_tensors_only
from elmo.schemas import load_schema, schema_errors
from elmo.tokenize import RECORD, Tokenizer, load_tokenizer, model_tokenizer, save_tokenizer
from elmo.vocab import UNK_ID, read_training_vocab, tokenizer_record_path, write_vocab
from elmo.weights import load_weights, save_weights

CHECKPOINT, BEST = "checkpoint.pt", "best.pt"
IGNORE = -100  # target of padding positions (F.cross_entropy's ignore_index)
N_CHARACTERS_INFERENCE = 262


class TrainingError(ValueError):
    """Training inputs that cannot be used together: bad config, data, or a mismatched checkpoint."""


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class TrainingOptions:
    """The ``training`` section of a config; defaults live in ``elmo/schemas/train_config.schema.json``."""

    seed: int
    batch_size: int
    unroll_steps: int
    n_epochs: int
    max_steps: int | None
    optimizer: str
    learning_rate: float
    clip_norm: float
    dropout: float
    sampled_softmax_min_vocab: int
    n_negative_samples: int
    checkpoint_every: int
    eval_every: int
    patience: int

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainingOptions:
        props = load_schema("train_config")["properties"]["training"]["properties"]
        return cls(**{key: raw.get(key, spec["default"]) for key, spec in props.items()})


@dataclass(frozen=True)
class TrainConfig:
    model: BiLMOptions | None  # None: taken from the model being fine-tuned
    training: TrainingOptions

    @classmethod
    def from_dict(cls, raw: Any, source: str = "<config>") -> TrainConfig:
        """Validate against ``elmo/schemas/train_config.schema.json`` (and the options schema).

        Raises:
            TrainingError: naming ``source`` and every offending key.
        """
        errors = schema_errors(raw, "train_config")
        if not errors and "model" in raw:
            errors = [f"model.{e}" for e in schema_errors(raw["model"], "bilm_options")]
        if errors:
            raise TrainingError(f"{source}: invalid training config:\n  " + "\n  ".join(errors))
        model = None
        if "model" in raw:
            # Training and inference share one char table (row 0 = mask): always 262 characters.
            options = BiLMOptions.from_dict(raw["model"], source)
            model = replace(options, char_cnn=replace(options.char_cnn, n_characters=N_CHARACTERS_INFERENCE))
        return cls(model, TrainingOptions.from_dict(raw.get("training", {})))

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except json.JSONDecodeError as e:
            raise TrainingError(f"{path}: line {e.lineno}: not valid JSON: {e.msg}") from None
        return cls.from_dict(raw, str(path))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"training": asdict(self.training)}
        if self.model is not None:
            out["model"] = self.model.to_dict()
        return out


def _differences(ours: Any, theirs: Any, prefix: str = "") -> list[str]:
    """Dotted keys where two JSON-like values differ, as ``key: ours vs theirs`` lines."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return [d for k in sorted(set(ours) | set(theirs), key=str)
                for d in _differences(ours.get(k), theirs.get(k), f"{prefix}{k}.")]
    return [] if ours == theirs else [f"{prefix.rstrip('.')}: {ours!r} vs {theirs!r}"]


def _require_same_model(config_model: BiLMOptions, model: BiLMOptions, what: str, source: str) -> None:
    """The architecture sections must agree; training keys kept in options.json do not matter."""
    def arch(options: BiLMOptions) -> dict[str, Any]:
        return {k: v for k, v in options.to_dict().items() if k in ("char_cnn", "lstm")}

    diffs = _differences(arch(config_model), arch(model))
    if diffs:
        raise TrainingError(f"{source}: the config's model does not fit {what} "
                            "(config vs existing):\n  " + "\n  ".join(diffs))


def resolve_files(patterns: Sequence[str]) -> list[str]:
    """Expand glob patterns (sorted, duplicates removed); every pattern must match a file.

    Raises:
        TrainingError: naming a pattern that matches nothing.
    """
    files: list[str] = []
    for pattern in patterns:
        matched = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
        if not matched:
            raise TrainingError(f"no file matches {pattern!r}")
        files.extend(p for p in matched if p not in files)
    return files


# ---------------------------------------------------------------------------------------------
# Data


@dataclass
class Corpus:
    """Segmented text as sentences of type ids, with each type's characters and vocabulary id.

    Types 0 and 1 are ``<S>`` and ``</S>``. Inputs are the characters of the real token, so
    out-of-vocabulary words keep their spelling; only their target is ``<UNK>``.

    Attributes:
        sentences: per sentence, ``(n + 2,)`` int64 type ids with the boundaries.
        type_chars: ``(n_types, max_characters)`` character ids of every type.
        type_targets: ``(n_types,)`` vocabulary id of every type.
    """

    sentences: list[np.ndarray]
    type_chars: Tensor
    type_targets: Tensor

    @classmethod
    def read(cls, files: Sequence[str], vocab: Sequence[str], max_characters: int) -> Corpus:
        """One sentence per line, tokens separated by whitespace; blank lines are skipped.

        Raises:
            TrainingError: when the files hold no sentence (naming them).
        """
        type_ids = {BOS_TOKEN: 0, EOS_TOKEN: 1}
        sentences = []
        for path in files:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    tokens = line.split()
                    if tokens:
                        sentences.append(np.array(
                            [0] + [type_ids.setdefault(t, len(type_ids)) for t in tokens] + [1], dtype=np.int64))
        if not sentences:
            raise TrainingError(f"empty corpus: no sentence in {', '.join(files)}")
        vocab_ids = {t: i for i, t in enumerate(vocab)}
        types = list(type_ids)
        return cls(sentences, torch.from_numpy(char_id_matrix(types, max_characters)).long(),
                   torch.tensor([vocab_ids.get(t, UNK_ID) for t in types], dtype=torch.int64))

    @property
    def n_tokens(self) -> int:
        """Stream positions, boundaries included."""
        return sum(len(s) for s in self.sentences)

    def windows(self, batch_size: int, unroll_steps: int, shuffle_seed: tuple[int, int] | None = None
                ) -> Windows:
        """The epoch's windows; sentences shuffled by ``shuffle_seed`` = (seed, epoch) when given."""
        order = (np.random.default_rng(shuffle_seed).permutation(len(self.sentences))
                 if shuffle_seed is not None else np.arange(len(self.sentences)))
        return Windows(np.concatenate([self.sentences[i] for i in order]), self.type_targets,
                       batch_size, unroll_steps)


class Windows:
    """A token stream cut into ``batch`` rows and read ``unroll_steps`` positions at a time.

    Rows are contiguous slices of the stream (forward) and of the reversed stream (backward),
    padded at their end; padding is input type 0 and target :data:`IGNORE`. The batch shrinks
    for a stream too short to give every row one full window (small held-out sets).
    """

    def __init__(self, stream: np.ndarray, type_targets: Tensor, batch_size: int, unroll_steps: int):
        n = len(stream)
        batch = max(1, min(batch_size, n // (unroll_steps + 1)))
        step = -(-(n - 1) // batch)  # transitions per row
        self.n_windows = max(1, -(-step // unroll_steps))
        rows = np.full((2, batch, self.n_windows * unroll_steps + 1), -1, dtype=np.int64)  # (direction, batch, position)
        for d, s in enumerate((stream, stream[::-1])):
            for b in range(batch):
                # Row b ends on the token row b + 1 starts with: every transition is predicted once.
                piece = s[b * step : (b + 1) * step + 1]
                rows[d, b, : len(piece)] = piece
        self.rows = torch.from_numpy(rows)
        self.type_targets = type_targets
        self.unroll_steps = unroll_steps

    def __len__(self) -> int:
        return self.n_windows

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor]:
        """Window ``k``: input types ``(2, batch, unroll)`` and target vocabulary ids ``(2, batch, unroll)``."""
        t = self.unroll_steps
        piece = self.rows[:, :, k * t : k * t + t + 1]
        inputs, following = piece[..., :-1], piece[..., 1:]
        targets = torch.where(following >= 0, self.type_targets[following.clamp(min=0)], IGNORE)
        return inputs.clamp(min=0), targets


# ---------------------------------------------------------------------------------------------
# Model


class LanguageModel(nn.Module):
    """The training graph: a :class:`BiLM` plus one softmax shared by both directions (as bilm-tf).

    Args:
        options: the biLM architecture.
        vocab_size: softmax size.
        dropout: on every LSTM layer's input and on the top layer's output, in training mode.
    """

    def __init__(self, options: BiLMOptions, vocab_size: int, dropout: float = 0.0):
        super().__init__()
        self.bilm = BiLM(options, dropout=dropout)
        proj = options.lstm.projection_dim
        self.softmax_w = nn.Parameter(torch.randn(vocab_size, proj) * proj**-0.5)  # (vocab, proj)
        self.softmax_b = nn.Parameter(torch.zeros(vocab_size))
        self.dropout = dropout
        log_k = torch.log(torch.arange(1, vocab_size + 2, dtype=torch.float64))
        # Log-uniform (Zipf) sampling distribution: right for a vocabulary sorted by frequency.
        self.register_buffer("sampling_probs", ((log_k[1:] - log_k[:-1]) / log_k[-1]).float(), persistent=False)

    @property
    def vocab_size(self) -> int:
        return self.softmax_w.shape[0]

    def hidden(self, type_chars: Tensor, inputs: Tensor, states: list[LstmState] | None
               ) -> tuple[Tensor, list[LstmState]]:
        """Top LSTM layer for a window of both directions.

        Args:
            type_chars: ``(n_types, max_characters)`` character ids of the corpus types.
            inputs: ``(2, batch, time)`` type ids; direction 1 reads its stream back to front.
            states: carried state per LSTM layer, or None for zeros.

        Returns:
            ``(2, batch, time, projection_dim)`` top-layer states, and the final states
            detached (the gradient stops at the window boundary).
        """
        _, batch, time_steps = inputs.shape
        types, inverse = torch.unique(inputs, return_inverse=True)
        vectors = self.bilm.token_encoder(type_chars[types])  # char CNN once per distinct type
        x = vectors[inverse.transpose(1, 2).reshape(2, time_steps * batch)]  # time-major packing
        outputs, finals = self.bilm.lstm(x, [batch] * time_steps, states)
        top = F.dropout(outputs[-1], self.dropout, self.training) if self.dropout else outputs[-1]
        return top.view(2, time_steps, batch, -1).transpose(1, 2), [s.detach() for s in finals]

    def token_nll(self, hidden: Tensor, targets: Tensor, n_samples: int | None = None) -> Tensor:
        """Negative log-likelihood of every target.

        Args:
            hidden: ``(..., projection_dim)`` top-layer states.
            targets: ``(...)`` vocabulary ids, :data:`IGNORE` at padding.
            n_samples: sampled softmax with this many log-uniform negatives (shared by the
                batch, accidental hits removed, logits corrected by the expected counts);
                None for the full softmax.

        Returns:
            ``(...)`` NLL, 0 at padding.
        """
        h, t = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
        valid = t != IGNORE
        if n_samples is None:
            logits = torch.addmm(self.softmax_b, h, self.softmax_w.t())  # (n, vocab)
            nll = F.cross_entropy(logits, t, ignore_index=IGNORE, reduction="none")
        else:
            t = t.clamp(min=0)
            sampled = torch.multinomial(self.sampling_probs, n_samples, replacement=True)  # (k,)
            log_q = torch.log(n_samples * self.sampling_probs)
            true_logit = (h * self.softmax_w[t]).sum(-1) + self.softmax_b[t] - log_q[t]  # (n,)
            neg_logits = torch.addmm(self.softmax_b[sampled] - log_q[sampled], h, self.softmax_w[sampled].t())
            neg_logits = neg_logits.masked_fill(sampled[None, :] == t[:, None], float("-inf"))  # (n, k)
            nll = torch.logsumexp(torch.cat([true_logit[:, None], neg_logits], dim=1), dim=1) - true_logit
            nll = nll * valid
        return nll.view(targets.shape)


def _softmax_file(model_dir: Path) -> Path:
    return model_dir / "softmax.hdf5"


def save_model(lm: LanguageModel, vocab: Sequence[str], out_dir: str | Path, extra: dict[str, Any],
               tokenizer: Tokenizer | None = None) -> None:
    """Export: ``options.json`` (262 characters), ``weights.hdf5`` in the published layout, and,
    for fine-tuning, ``vocab.txt`` and ``softmax.hdf5`` (``softmax/W`` (vocab, proj), ``softmax/b``);
    ``tokenizer.json`` when the training text's tokenizer is known."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        save_tokenizer(tokenizer, out / RECORD)
    options = lm.bilm.options
    replace(options, extra={**options.extra, **extra}).save(out / "options.json")
    save_weights(lm.bilm, out / "weights.hdf5")
    write_vocab(vocab, out / "vocab.txt")
    with h5py.File(_softmax_file(out), "w") as f:
        f.create_dataset("softmax/W", data=lm.softmax_w.detach().cpu().numpy())
        f.create_dataset("softmax/b", data=lm.softmax_b.detach().cpu().numpy())


def load_model(model_dir: str | Path, dropout: float = 0.0) -> tuple[LanguageModel, list[str]]:
    """An exported model (see :func:`save_model`) as a :class:`LanguageModel` and its vocabulary.

    Without ``softmax.hdf5`` (e.g. a published model) the softmax starts from random weights.

    Raises:
        TrainingError: when ``vocab.txt`` is missing or the softmax does not fit it.
    """
    model_dir = Path(model_dir)
    vocab_file = model_dir / "vocab.txt"
    if not vocab_file.is_file():
        raise TrainingError(f"{model_dir}: no vocab.txt; fine-tuning keeps the model's vocabulary")
    vocab = read_training_vocab(vocab_file)
    lm = LanguageModel(BiLMOptions.from_file(model_dir / "options.json"), len(vocab), dropout)
    load_weights(lm.bilm, model_dir / "weights.hdf5")
    if _softmax_file(model_dir).is_file():
        with h5py.File(_softmax_file(model_dir), "r") as f:
            w, b = f["softmax/W"][...], f["softmax/b"][...]
        if w.shape != tuple(lm.softmax_w.shape):
            raise TrainingError(f"{_softmax_file(model_dir)}: softmax/W has shape {w.shape}, but "
                                f"{vocab_file} and the options need {tuple(lm.softmax_w.shape)}")
        with torch.no_grad():
            lm.softmax_w.copy_(torch.from_numpy(w))
            lm.softmax_b.copy_(torch.from_numpy(b))
    return lm, vocab


# ---------------------------------------------------------------------------------------------
# Perplexity


@dataclass(frozen=True)
class Perplexity:
    forward: float
    backward: float
    mean: float  # exp of the mean NLL over both directions (their geometric mean)
    n_tokens: int  # targets per direction

    def __str__(self) -> str:
        return f"forward {self.forward:.2f} backward {self.backward:.2f} mean {self.mean:.2f}"


@torch.no_grad()
def perplexity(lm: LanguageModel, corpus: Corpus, batch_size: int = 32, unroll_steps: int = 20) -> Perplexity:
    """Forward, backward and mean perplexity of ``corpus`` (full softmax, state carried)."""
    was_training = lm.training
    lm.eval()
    device = lm.softmax_w.device
    type_chars = corpus.type_chars.to(device)
    windows = corpus.windows(batch_size, unroll_steps)
    total = torch.zeros(2, dtype=torch.float64)
    count = torch.zeros(2, dtype=torch.int64)
    states = None
    for k in range(len(windows)):
        inputs, targets = (t.to(device) for t in windows[k])
        hidden, states = lm.hidden(type_chars, inputs, states)
        total += lm.token_nll(hidden, targets).sum(dim=(1, 2)).double().cpu()
        count += (targets != IGNORE).sum(dim=(1, 2)).cpu()
    lm.train(was_training)
    nll = (total / count).tolist()
    return Perplexity(math.exp(nll[0]), math.exp(nll[1]), math.exp(sum(nll) / 2), int(count[0]))


CHECKPOINT_KEYS = ("config", "vocab", "train_files", "n_train_tokens", "model", "optimizer", "step",
                   "states", "best_heldout", "bad_evals", "rng", "cuda_rng")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by :func:`train`: tensors and plain data only.

    It is read with ``weights_only=True`` (:mod:`elmo.safe_load`): a file that would build any
    other object (and so could run code while being read) is refused, never unpickled.

    Raises:
        TrainingError: naming the file, when it holds other objects or lacks checkpoint keys.
    """
    ckpt = load_tensors_only(path, TrainingError, "checkpoint")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt] if isinstance(ckpt, dict) else CHECKPOINT_KEYS
    if missing:
        raise TrainingError(f"{path}: not a checkpoint of this tool (missing {', '.join(missing)})")
    return ckpt


def load_trained(save_dir: str | Path, device: torch.device | str = "cpu") -> tuple[LanguageModel, dict[str, Any]]:
    """The model of a save dir (``best.pt`` if present, else ``checkpoint.pt``) and its checkpoint."""
    save_dir = Path(save_dir)
    path = save_dir / BEST if (save_dir / BEST).exists() else save_dir / CHECKPOINT
    if not path.exists():
        raise TrainingError(f"{save_dir}: no {CHECKPOINT}; train into this directory first")
    ckpt = load_checkpoint(path)
    config = TrainConfig.from_dict(ckpt["config"], str(path))
    lm = LanguageModel(config.model, len(ckpt["vocab"]))
    lm.load_state_dict(ckpt["model"])
    return lm.to(device).eval(), ckpt


def perplexity_of(save_dir: str | Path, data: Sequence[str], device: str | None = None) -> Perplexity:
    """:func:`perplexity` of a save dir's model on the files matching the ``data`` globs."""
    lm, ckpt = load_trained(save_dir, resolve_device(device))
    training = TrainConfig.from_dict(ckpt["config"]).training
    corpus = Corpus.read(resolve_files(data), ckpt["vocab"], lm.bilm.options.char_cnn.max_characters_per_token)
    return perplexity(lm, corpus, training.batch_size, training.unroll_steps)


def export(save_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a save dir's model as a published model directory (see :func:`save_model`)."""
    lm, ckpt = load_trained(save_dir)
    training = TrainConfig.from_dict(ckpt["config"]).training
    save_model(lm, ckpt["vocab"], out_dir, {
        "bidirectional": True, "n_tokens_vocab": lm.vocab_size, "unroll_steps": training.unroll_steps,
        "dropout": training.dropout, "batch_size": training.batch_size, "n_train_tokens": ckpt["n_train_tokens"],
    }, tokenizer=model_tokenizer(save_dir))
    return Path(out_dir)


# ---------------------------------------------------------------------------------------------
# Training


@dataclass
class TrainResult:
    step: int  # steps done in total (a resumed run counts the steps before the kill)
    epoch: int  # data position of the next step: epoch and window within it
    window: int
    train_loss: float  # mean over both directions, last step
    heldout: Perplexity | None  # last held-out evaluation
    stopped_early: bool
    tokens_per_second: float  # stream tokens per second of this run (each read by both LMs)


def _save_atomic(obj: Any, path: Path) -> None:
    """Write then rename, so a kill mid-write leaves the previous checkpoint intact."""
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@dataclass
class _Start:
    """What a run starts from: its config and vocabulary, plus a checkpoint or a base model."""

    config: TrainConfig
    vocab: list[str]
    checkpoint: dict[str, Any] | None = None  # resuming
    base: LanguageModel | None = None  # fine-tuning
    tokenizer: Tokenizer | None = None  # how the training text was segmented, when recorded


def _starting_point(save_dir: Path, files: list[str], config: str | Path | None, vocab: str | Path | None,
                    resume: bool, init_from: str | Path | None) -> _Start:
    """Check that the arguments of :func:`train` fit together and load what the run starts from."""
    ckpt_path = save_dir / CHECKPOINT
    cfg = TrainConfig.from_file(config) if config is not None else None
    if resume:
        if not ckpt_path.exists():
            raise TrainingError(f"{save_dir}: nothing to resume, no {CHECKPOINT}")
        ckpt = load_checkpoint(ckpt_path)
        saved = TrainConfig.from_dict(ckpt["config"], str(ckpt_path))
        if cfg is not None:
            diffs = _differences(cfg.to_dict(), saved.to_dict())
            if cfg.model is None:  # a fine-tuning config names no model
                diffs = [d for d in diffs if not d.startswith("model")]
            if diffs:
                raise TrainingError(f"{config} does not fit the checkpoint {ckpt_path} "
                                    "(config vs checkpoint):\n  " + "\n  ".join(diffs))
        if vocab is not None and read_training_vocab(vocab) != ckpt["vocab"]:
            raise TrainingError(f"{vocab} is not the vocabulary of the checkpoint {ckpt_path}")
        if files != ckpt["train_files"]:
            raise TrainingError(f"the training files {files} are not those of the checkpoint "
                                f"{ckpt_path} ({ckpt['train_files']}): the data position would be wrong")
        return _Start(saved, ckpt["vocab"], checkpoint=ckpt)
    if ckpt_path.exists():
        raise TrainingError(f"{save_dir} already holds a {CHECKPOINT}: pass --resume, or another --save-dir")
    if init_from is not None:
        if vocab is not None:
            raise TrainingError("--init-from keeps the model's vocabulary; do not pass --vocab")
        training = cfg.training if cfg is not None else TrainingOptions.from_dict({})
        base, vocab_tokens = load_model(init_from, training.dropout)
        if cfg is not None and cfg.model is not None:
            _require_same_model(cfg.model, base.bilm.options, f"the model {init_from}", str(config))
        return _Start(TrainConfig(replace(base.bilm.options, extra={}), training), vocab_tokens, base=base,
                      tokenizer=model_tokenizer(init_from))
    if cfg is None or cfg.model is None:
        raise TrainingError("training from scratch needs --config with a 'model' section")
    if vocab is None:
        raise TrainingError("training from scratch needs --vocab")
    record = tokenizer_record_path(vocab)
    return _Start(cfg, read_training_vocab(vocab), tokenizer=load_tokenizer(record) if record.is_file() else None)


def train(train_data: Sequence[str], save_dir: str | Path, *, config: str | Path | None = None,
          vocab: str | Path | None = None, heldout: Sequence[str] = (), resume: bool = False,
          init_from: str | Path | None = None, max_steps: int | None = None, device: str | None = None,
          progress: bool = True) -> TrainResult:
    """Train (or fine-tune, or resume) forward and backward LMs; checkpoints go to ``save_dir``.

    Args:
        train_data: glob patterns of segmented text (one sentence per line, tokens separated
            by spaces), e.g. written by :func:`elmo.vocab.make_vocab`.
        config: training config (``elmo/schemas/train_config.schema.json``); optional when
            resuming (the checkpoint's is used) or fine-tuning (the training defaults).
        vocab: training vocabulary (``<S>``, ``</S>``, ``<UNK>`` first); not with ``init_from``,
            which keeps the model's vocabulary (and tokenizer). The tokenizer recorded beside
            it (``vocab.tokenizer.json``) is kept in ``save_dir`` for the export.
        heldout: glob patterns of held-out text: perplexity every ``eval_every`` steps and at
            the end, ``best.pt`` kept, early stop after ``patience`` evaluations without gain.
        resume: continue from ``save_dir/checkpoint.pt``: same step count, data position,
            optimizer, carried states and random state.
        init_from: an exported model directory to fine-tune.
        max_steps: total step count (overrides the config).
        device: ``cpu``, ``cuda``, ... or None for the GPU when present.

    Raises:
        TrainingError: bad config, empty corpus, or a config/vocabulary/data that does not fit
            the checkpoint or the model being fine-tuned.
    """
    save_dir = Path(save_dir)
    ckpt_path = save_dir / CHECKPOINT
    dev = resolve_device(device)
    files = resolve_files(train_data)
    heldout_files = resolve_files(heldout) if heldout else []
    start = _starting_point(save_dir, files, config, vocab, resume, init_from)
    cfg, vocab_tokens, ckpt = start.config, start.vocab, start.checkpoint
    opts = cfg.training

    torch.manual_seed(opts.seed)
    lm = LanguageModel(cfg.model, len(vocab_tokens), opts.dropout)
    if start.base is not None:
        lm.load_state_dict(start.base.state_dict())
    lm.to(dev).train()
    optimizer = (torch.optim.Adagrad(lm.parameters(), lr=opts.learning_rate, initial_accumulator_value=1.0)
                 if opts.optimizer == "adagrad" else torch.optim.Adam(lm.parameters(), lr=opts.learning_rate))
    max_chars = cfg.model.char_cnn.max_characters_per_token
    corpus = Corpus.read(files, vocab_tokens, max_chars)
    heldout_corpus = Corpus.read(heldout_files, vocab_tokens, max_chars) if heldout_files else None
    type_chars = corpus.type_chars.to(dev)
    n_samples = opts.n_negative_samples if len(vocab_tokens) >= opts.sampled_softmax_min_vocab else None

    step, best, bad_evals, states = 0, math.inf, 0, None
    if ckpt is not None:
        lm.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step, best, bad_evals = ckpt["step"], ckpt["best_heldout"], ckpt["bad_evals"]
        states = [LstmState(h.to(dev), c.to(dev)) for h, c in ckpt["states"]] if ckpt["states"] else None
        torch.set_rng_state(ckpt["rng"])
        if dev.type == "cuda" and ckpt.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(ckpt["cuda_rng"], dev)
    save_dir.mkdir(parents=True, exist_ok=True)
    if start.tokenizer is not None:
        save_tokenizer(start.tokenizer, save_dir / RECORD)

    epoch_windows: dict[int, Windows] = {}

    def windows_of(epoch: int) -> Windows:
        if epoch not in epoch_windows:
            epoch_windows.clear()
            epoch_windows[epoch] = corpus.windows(opts.batch_size, opts.unroll_steps, (opts.seed, epoch))
        return epoch_windows[epoch]

    n_windows = len(windows_of(0))
    total_steps = max_steps or opts.max_steps or opts.n_epochs * n_windows

    def checkpoint(path: Path, step: int) -> None:
        _save_atomic({
            "config": cfg.to_dict(), "vocab": list(vocab_tokens), "train_files": files,
            "n_train_tokens": corpus.n_tokens, "model": lm.state_dict(), "optimizer": optimizer.state_dict(),
            "step": step, "epoch": step // n_windows, "window": step % n_windows,
            "states": [(s.h.cpu(), s.c.cpu()) for s in states] if states else None,
            "best_heldout": best, "bad_evals": bad_evals, "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
        }, path)

    heldout_ppl: Perplexity | None = None
    stopped_early = heldout_corpus is not None and bad_evals >= opts.patience  # resumed after an early stop
    loss_value = math.nan
    tokens_done, started = 0, time.perf_counter()
    bar = tqdm(total=total_steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    while step < total_steps and not stopped_early:
        epoch, window = divmod(step, n_windows)
        if window == 0:
            states = None  # a new epoch is a new (reshuffled) stream
        inputs, targets = (t.to(dev) for t in windows_of(epoch)[window])
        hidden, states = lm.hidden(type_chars, inputs, states)
        nll = lm.token_nll(hidden, targets, n_samples)
        loss = nll.sum() / (targets != IGNORE).sum().clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(lm.parameters(), opts.clip_norm)
        optimizer.step()
        step += 1
        tokens_done += inputs.shape[1] * inputs.shape[2]
        loss_value = loss.item()
        speed = tokens_done / (time.perf_counter() - started)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", ppl=f"{math.exp(min(loss_value, 50)):.1f}",
                        tok_s=f"{speed:.0f}", refresh=False)
        if heldout_corpus is not None and (step % opts.eval_every == 0 or step == total_steps):
            heldout_ppl = perplexity(lm, heldout_corpus, opts.batch_size, opts.unroll_steps)
            bar.write(f"step {step}: held-out perplexity {heldout_ppl}")
            if heldout_ppl.mean < best:
                best, bad_evals = heldout_ppl.mean, 0
                checkpoint(save_dir / BEST, step)
            else:
                bad_evals += 1
                stopped_early = bad_evals >= opts.patience
        if step % opts.checkpoint_every == 0 or step == total_steps or stopped_early:
            checkpoint(ckpt_path, step)
    if stopped_early:
        bar.write(f"stopped early at step {step}: no held-out gain in {opts.patience} evaluations "
                  f"(best mean perplexity {best:.2f})")
    bar.close()
    elapsed = time.perf_counter() - started
    return TrainResult(step, step // n_windows, step % n_windows, loss_value, heldout_ppl, stopped_early,
                       tokens_done / elapsed if tokens_done else 0.0)
