"""Tokens → character ids and word ids, the ELMoForManyLangs way.

Characters are Python ``str`` code points (no byte encoding, no normalisation, no lowercasing)
looked up in the model's ``char.dic``; a character it lacks gets the id of ``<oov>``. A token
becomes one row of ``max_characters`` ids::

    [id(<eow>), id(c_1), ..., id(c_k), id(<bow>), id(<pad>), ...]

The begin- and end-of-word ids really are swapped: the original fills its ``bow_id`` from
``<eow>`` and its ``eow_id`` from ``<bow>``, and the models were trained that way. The sentence
boundaries are the tokens ``<bos>`` and ``<eos>`` (a user token spelled so is one too), whose
rows are ``[id(<eow>), id(<bos>) | id(<eos>), id(<bow>), pad...]``. A token of more than
``max_characters - 2`` code points is cut to its first ``max_characters - 2``, for its word id
as well. Special ids are not fixed: they are looked up by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from elmo.char_cnn import CharCNN
from elmo.efml.dic import DictionaryError, read_dic
from elmo.options import CharCNNOptions

BOS, EOS, OOV, PAD, BOW, EOW = "<bos>", "<eos>", "<oov>", "<pad>", "<bow>", "<eow>"
CHAR_SPECIALS = (BOS, EOS, OOV, PAD, BOW, EOW)
WORD_SPECIALS = (OOV, PAD)
CHAR_DIC, WORD_DIC = "char.dic", "word.dic"


def _require(table: dict[str, int], names: Sequence[str], source: str | Path) -> None:
    missing = [name for name in names if name not in table]
    if missing:
        raise DictionaryError(f"{source}: lacks the special entries {missing} (every one of "
                              f"{list(names)} must be there)")


def _truncated(token: str, max_characters: int) -> str:
    """The code points of ``token`` the model reads (the boundary tokens are never cut)."""
    return token if token in (BOS, EOS) else token[: max_characters - 2]


class EfmlChars:
    """A :class:`~elmo.chars.CharMapping`: code points through the model's ``char.dic``.

    Args:
        table: ``char.dic`` as read by :func:`~elmo.efml.dic.read_dic`.
        max_characters: ``max_characters_per_token`` of the architecture.
        source: the file, for error messages.
    """

    boundary_tokens = (BOS, EOS)
    mask_row = False  # every row of the table is a trained vector, <pad>'s included

    def __init__(self, table: dict[str, int], max_characters: int, source: str | Path = CHAR_DIC):
        _require(table, CHAR_SPECIALS, source)
        self.table = table
        self.max_characters = max_characters
        self.n_ids = len(table)
        self.pad_id = table[PAD]
        self.oov_id = table[OOV]

    def ids(self, tokens: Sequence[str]) -> np.ndarray:
        """``(n_tokens, max_characters)`` int32."""
        table, oov = self.table, self.oov_id
        out = np.full((len(tokens), self.max_characters), self.pad_id, dtype=np.int32)
        out[:, 0] = table[EOW]  # the original's swapped markers
        for i, token in enumerate(tokens):
            if token in self.boundary_tokens:
                body = [table[token]]
            else:
                body = [table.get(c, oov) for c in _truncated(token, self.max_characters)]
            out[i, 1 : 1 + len(body)] = body
            out[i, 1 + len(body)] = table[BOW]
        return out

    def vocabularies(self) -> dict[str, dict[str, int]]:
        return {CHAR_DIC: self.table}


class EfmlWords:
    """Word ids: an exact, case-sensitive lookup in ``word.dic`` of the (cut) token, else ``<oov>``.

    Args:
        table: ``word.dic`` as read by :func:`~elmo.efml.dic.read_dic`.
        max_characters: ``max_characters_per_token``: longer tokens are cut before the lookup.
        source: the file, for error messages.
    """

    def __init__(self, table: dict[str, int], max_characters: int, source: str | Path = WORD_DIC):
        _require(table, WORD_SPECIALS, source)
        self.table = table
        self.max_characters = max_characters
        self.n_ids = len(table)
        self.oov_id = table[OOV]

    def ids(self, tokens: Sequence[str]) -> np.ndarray:
        """``(n_tokens,)`` int32."""
        cut = (_truncated(t, self.max_characters) for t in tokens)
        return np.fromiter((self.table.get(t, self.oov_id) for t in cut), dtype=np.int32, count=len(tokens))

    def vocabularies(self) -> dict[str, dict[str, int]]:
        return {WORD_DIC: self.table}


def read_vocabularies(folder: str | Path, max_characters: int,
                      word_dim: int) -> tuple[EfmlChars, EfmlWords | None]:
    """``char.dic`` and, for a model with a word embedding, ``word.dic`` of a model directory.

    Raises:
        DictionaryError: a file is missing, malformed, or lacks a special entry.
    """
    chars_file, words_file = Path(folder, CHAR_DIC), Path(folder, WORD_DIC)
    chars = EfmlChars(read_dic(chars_file), max_characters, chars_file)
    words = EfmlWords(read_dic(words_file), max_characters, words_file) if word_dim else None
    return chars, words


def read_token_encoder(folder: str | Path, options: CharCNNOptions, output_dim: int) -> CharCNN:
    """The token encoder of a model directory of ours with these conventions (its weights not
    yet loaded); the dictionaries must have the sizes its options record.

    Raises:
        DictionaryError: a dictionary is missing, malformed, or of another size.
    """
    chars, words = read_vocabularies(folder, options.max_characters_per_token, options.word_dim)
    for name, found, expected in ((CHAR_DIC, chars.n_ids, options.n_characters),
                                  (WORD_DIC, words.n_ids if words else 0, options.n_words)):
        if found != expected:
            raise DictionaryError(f"{Path(folder, name)}: has {found} entries, but the options.json "
                                  f"beside it was written for {expected}")
    return CharCNN(options, output_dim, chars, words)
