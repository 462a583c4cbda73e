"""``options.json`` of a published biLM, parsed into a typed, validated object."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from elmo.schemas import read_json, schema_errors


class OptionsError(ValueError):
    """An options file that is missing, malformed, or not a valid biLM configuration."""


@dataclass(frozen=True)
class CharCNNOptions:
    embedding_dim: int  # width of one character embedding
    filters: tuple[tuple[int, int], ...]  # (width in characters, number of filters) per convolution
    n_highway: int
    n_characters: int  # 262 at inference (0 = padding), 261 in training options; else the dictionary size
    max_characters_per_token: int
    activation: str  # "relu" | "tanh"
    characters: str = "utf8"  # "utf8": UTF-8 bytes (published); "elmoformanylangs": code points via char.dic
    word_dim: int = 0  # a word embedding concatenated before the projection (elmoformanylangs only)
    n_words: int = 0  # its vocabulary size (word.dic)

    @property
    def n_filters(self) -> int:
        """Width of the concatenated, max-pooled convolution output."""
        return sum(n for _, n in self.filters)

    @property
    def max_filter_width(self) -> int:
        return max(w for w, _ in self.filters)


@dataclass(frozen=True)
class LstmOptions:
    dim: int  # cell size
    projection_dim: int  # hidden state size after projection; also the token layer's width
    n_layers: int
    cell_clip: float | None = None
    proj_clip: float | None = None
    use_skip_connections: bool = False


@dataclass(frozen=True)
class BiLMOptions:
    char_cnn: CharCNNOptions
    lstm: LstmOptions
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # training keys, kept verbatim

    @property
    def output_dim(self) -> int:
        """Width of every output layer: [forward; backward] projected states."""
        return 2 * self.lstm.projection_dim

    @property
    def n_output_layers(self) -> int:
        """The token layer plus one layer per LSTM layer."""
        return 1 + self.lstm.n_layers

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<options>") -> BiLMOptions:
        """Validate ``raw`` against ``elmo/schemas/bilm_options.schema.json`` and build the options.

        Raises:
            OptionsError: naming ``source`` and every offending key.
        """
        errors = schema_errors(raw, "bilm_options")
        if errors:
            raise OptionsError(f"{source}: invalid biLM options:\n  " + "\n  ".join(errors))
        cnn, lstm = raw["char_cnn"], raw["lstm"]
        words = cnn.get("word_embedding", {"dim": 0, "n_words": 0})
        if words["dim"] and cnn.get("characters", "utf8") == "utf8":
            raise OptionsError(f"{source}: char_cnn.word_embedding needs char_cnn.characters "
                               "'elmoformanylangs' (its vocabulary is that convention's word.dic)")
        return cls(
            char_cnn=CharCNNOptions(
                embedding_dim=cnn["embedding"]["dim"],
                filters=tuple((int(w), int(n)) for w, n in cnn["filters"]),
                n_highway=cnn["n_highway"],
                n_characters=cnn["n_characters"],
                max_characters_per_token=cnn["max_characters_per_token"],
                activation=cnn["activation"],
                characters=cnn.get("characters", "utf8"),
                word_dim=words["dim"],
                n_words=words["n_words"],
            ),
            lstm=LstmOptions(
                dim=lstm["dim"],
                projection_dim=lstm["projection_dim"],
                n_layers=lstm["n_layers"],
                cell_clip=lstm.get("cell_clip"),
                proj_clip=lstm.get("proj_clip"),
                use_skip_connections=lstm.get("use_skip_connections", False),
            ),
            extra={k: v for k, v in raw.items() if k not in ("char_cnn", "lstm")},
        )

    @classmethod
    def from_file(cls, path: str | Path) -> BiLMOptions:
        return cls.from_dict(read_json(path, OptionsError, "options file"), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        """The published ``options.json`` layout (inverse of :meth:`from_dict`); the keys of
        another model family appear only when they differ from the published defaults."""
        cnn = asdict(self.char_cnn)
        extension = {"characters": cnn.pop("characters")}
        extension["word_embedding"] = {"dim": cnn.pop("word_dim"), "n_words": cnn.pop("n_words")}
        defaults = {"characters": "utf8", "word_embedding": {"dim": 0, "n_words": 0}}
        return {
            **self.extra,
            "char_cnn": {
                "embedding": {"dim": cnn.pop("embedding_dim")},
                **cnn,
                "filters": [list(f) for f in self.char_cnn.filters],
                **{k: v for k, v in extension.items() if v != defaults[k]},
            },
            "lstm": asdict(self.lstm),
        }

    def save(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")
