"""Method 2 of the original: precomputed context-independent token representations.

The token layer depends only on the token, so for a fixed vocabulary it can be computed once
(:func:`dump_token_embeddings`, writing the published ``embedding`` HDF5 layout) and the biLM
then runs from token ids (:class:`TokenTable`) with the same outputs as from characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import Tensor, nn

from elmo.bilm import BiLM
from elmo.chars import BOS_TOKEN, EOS_TOKEN
from elmo.vocab import VocabularyError, read_vocab

UNK_TOKEN = "<UNK>"


class TokenTable(nn.Module):
    """A token encoder that looks vectors up in a precomputed ``(n_vocab, dim)`` table.

    Tokens outside the vocabulary map to ``<UNK>``; without ``<UNK>`` they are an error.
    """

    boundary_tokens = (BOS_TOKEN, EOS_TOKEN)

    def __init__(self, vocab: Sequence[str], table: Tensor):
        super().__init__()
        if len(vocab) != table.shape[0]:
            raise ValueError(f"vocabulary has {len(vocab)} tokens but the table {table.shape[0]} rows")
        self.token_ids = {tok: i for i, tok in enumerate(vocab)}
        for needed in (BOS_TOKEN, EOS_TOKEN):
            if needed not in self.token_ids:
                raise VocabularyError(f"the vocabulary of a token table must contain {needed}")
        self.unk_id = self.token_ids.get(UNK_TOKEN)
        self.table = nn.Parameter(table, requires_grad=False)

    @property
    def output_dim(self) -> int:
        return self.table.shape[1]

    def type_inputs(self, types: Sequence[str]) -> Tensor:
        """``(n_types,)`` int64 vocabulary ids."""
        ids = []
        for tok in types:
            tid = self.token_ids.get(tok, self.unk_id)
            if tid is None:
                raise KeyError(f"token {tok!r} is not in the vocabulary, which has no {UNK_TOKEN}")
            ids.append(tid)
        return torch.tensor(ids, dtype=torch.int64)

    def forward(self, ids: Tensor) -> Tensor:
        """``(n_types,)`` ids → ``(n_types, dim)``."""
        return self.table[ids]

    @classmethod
    def from_files(cls, vocab_file: str | Path, embedding_file: str | Path) -> TokenTable:
        with h5py.File(embedding_file, "r") as f:
            table = torch.from_numpy(f["embedding"][...].astype(np.float32))
        return cls(read_vocab(vocab_file), table)


@torch.inference_mode()
def dump_token_embeddings(bilm: BiLM, vocab_file: str | Path, out_file: str | Path,
                          batch_size: int = 4096) -> int:
    """Compute the token layer of every vocabulary entry; write dataset ``embedding`` ``(n_vocab, dim)``.

    Returns:
        The number of rows written.
    """
    vocab = read_vocab(vocab_file)
    encoder = bilm.token_encoder
    with h5py.File(out_file, "w") as f:
        out = f.create_dataset("embedding", shape=(len(vocab), encoder.output_dim), dtype="float32")
        for start in range(0, len(vocab), batch_size):
            chunk = vocab[start : start + batch_size]
            out[start : start + len(chunk)] = encoder(encoder.type_inputs(chunk).to(bilm.device)).float().cpu().numpy()
    return len(vocab)
