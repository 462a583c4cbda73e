"""Tokenizers keep exact character offsets; split_long cuts at sentence boundaries, losslessly."""

from __future__ import annotations

import json
import pickle
import random

import pytest

from cache_builder.build.tokenize import pretokenized, split_long, tokenize_field
from elmo.tokenize import TOKENIZERS, Tokenized, get_tokenizer


def assert_offsets(text: str, doc: Tokenized) -> None:
    """Every token is its span of the text, spans increase, and no visible character is lost."""
    assert len(doc.tokens) == len(doc.spans)
    previous_end = 0
    for token, (start, end) in zip(doc.tokens, doc.spans):
        assert text[start:end] == token
        assert token and not token.isspace()
        assert start >= previous_end
        assert text[previous_end:start].isspace() or start == previous_end
        previous_end = end
    assert text[previous_end:].isspace() or previous_end == len(text)


ENGLISH = [
    ("Don't stop: it's \"great\" (really)!",
     ["Do", "n't", "stop", ":", "it", "'s", '"', "great", '"', "(", "really", ")", "!"]),
    ("I can't, you won't; we'll see. They're O'Neil's dogs' bones.",
     ["I", "ca", "n't", ",", "you", "wo", "n't", ";", "we", "'ll", "see", ".", "They", "'re",
      "O'Neil", "'s", "dogs", "'", "bones", "."]),
    ("“Hello,” she said — ‘yes’…", ["“", "Hello", ",", "”", "she", "said", "—", "‘", "yes", "’", "…"]),
    ("See https://example.com/a?b=c&d=1. Or www.example.org, or mail john.smith@mail.example.com!",
     ["See", "https://example.com/a?b=c&d=1", ".", "Or", "www.example.org", ",", "or", "mail",
      "john.smith@mail.example.com", "!"]),
    ("(http://x.io/path) costs $3.14, 1,000 or 50% -- state-of-the-art...",
     ["(", "http://x.io/path", ")", "costs", "$", "3.14", ",", "1,000", "or", "50", "%", "--",
      "state-of-the-art", "..."]),
    ("Mr. Smith moved to the U.S. in 1999.", ["Mr.", "Smith", "moved", "to", "the", "U.S.", "in", "1999", "."]),
    ("  leading\tand\ntrailing   space  ", ["leading", "and", "trailing", "space"]),
]


@pytest.mark.parametrize(("text", "expected"), ENGLISH)
def test_english_tokens_and_offsets(text: str, expected: list[str]) -> None:
    doc = get_tokenizer("en")(text)
    assert doc.tokens == expected
    assert_offsets(text, doc)


def test_chinese_jieba_offsets_and_whitespace_dropped() -> None:
    text = "我爱北京天安门。 今天 天气很好！"
    doc = get_tokenizer("zh")(text)
    assert doc.tokens[:4] == ["我", "爱", "北京", "天安门"]
    assert "。" in doc.tokens and "！" in doc.tokens
    assert_offsets(text, doc)


def test_auto_routes_han_runs_to_jieba_and_the_rest_to_english() -> None:
    auto, en = get_tokenizer("auto"), get_tokenizer("en")
    text = "我在Google工作了3.5年, it's great. 北京大学的学生。"
    doc = auto(text)
    assert doc.tokens == ["我", "在", "Google", "工作", "了", "3.5", "年", ",", "it", "'s", "great", ".",
                          "北京大学", "的", "学生", "。"]
    assert_offsets(text, doc)
    english = ENGLISH[1][0]
    assert auto(english) == en(english)


def test_whitespace_tokenizer() -> None:
    text = " The  cat\tsat\n. "
    doc = get_tokenizer("whitespace")(text)
    assert doc.tokens == ["The", "cat", "sat", "."]
    assert_offsets(text, doc)


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_random_text_round_trips(name: str) -> None:
    """Fuzz: letters, digits, punctuation, quotes, Han characters and odd spaces never lose a character."""
    rng = random.Random(0)
    alphabet = list("abcXYZ019.,;:!?'\"’“”-_/@#()[]…。！？，北京大学天气很好") + [" ", " ", "\t", "\n", "\u3000"]
    tokenizer = get_tokenizer(name)
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        assert_offsets(text, tokenizer(text))


def test_long_token_is_kept_whole() -> None:
    token = "x" * 200
    text = f"a {token} b."
    for name in TOKENIZERS:
        assert token in get_tokenizer(name)(text).tokens


def test_registry_settings_and_pickling() -> None:
    for name in TOKENIZERS:
        tokenizer = get_tokenizer(name)
        assert tokenizer.name == name
        settings = tokenizer.settings()
        assert settings["name"] == name
        assert json.loads(json.dumps(settings)) == settings
        copy = pickle.loads(pickle.dumps(tokenizer))
        assert copy("北京 is big.") == tokenizer("北京 is big.")
    assert get_tokenizer("zh", hmm=False).settings()["hmm"] is False


def test_unknown_tokenizer_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError, match="unknown tokenizer 'spacy'.*auto, en, whitespace, zh"):
        get_tokenizer("spacy")


def test_pretokenized_spans_and_tokenize_field() -> None:
    tokens = ["New York", "is", "big", "."]
    doc = pretokenized(tokens)
    assert_offsets(" ".join(tokens), doc)
    assert doc.tokens == tokens and doc.tokens is not tokens
    en = get_tokenizer("en")
    assert tokenize_field(tokens, en) == doc
    assert tokenize_field("New York is big.", en).tokens == ["New", "York", "is", "big", "."]


def _concatenated(pieces: list[Tokenized]) -> Tokenized:
    return Tokenized([t for p in pieces for t in p.tokens], [s for p in pieces for s in p.spans])


def test_split_long_10000_token_document() -> None:
    rng = random.Random(1)
    words = ["alpha", "beta", "gamma", "delta", "it's", "U.S.", "(x)"]
    sentences = []
    for _ in range(1500):
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(1, 30)))
        sentences.append(sentence + rng.choice([".", "!", "?", '."', "?!"]))
    sentences.append(" ".join(["run-on"] * 700))  # one sentence longer than a piece, no terminator
    text = " ".join(sentences)
    doc = get_tokenizer("en")(text)
    assert len(doc) > 10_000
    pieces = split_long(doc, 512)
    assert _concatenated(pieces) == doc
    assert all(1 <= len(p) <= 512 for p in pieces)
    for piece in pieces[:-2]:  # all but the run-on sentence end at a sentence boundary
        assert piece.tokens[-1] in {".", "!", "?", '"'}, piece.tokens[-3:]
    for piece in pieces[:-3]:  # greedy packing: the next sentence (at most ~92 tokens) did not fit
        assert len(piece) > 512 - 92
    assert pieces[-2].tokens == ["run-on"] * 512 and pieces[-1].tokens == ["run-on"] * 188
    for piece in pieces:  # spans are offsets into the whole document's text
        assert all(text[s:e] == t for t, (s, e) in zip(piece.tokens, piece.spans))


def test_split_long_small_cases() -> None:
    doc = get_tokenizer("en")('One two. "Three four?" Five six seven eight nine.')
    assert split_long(doc, 100) == [doc]
    assert [p.tokens for p in split_long(doc, 6)] == [
        ["One", "two", "."], ['"', "Three", "four", "?", '"'], ["Five", "six", "seven", "eight", "nine", "."]]
    assert [len(p) for p in split_long(doc, 4)] == [3, 4, 1, 4, 2]
    assert [len(p) for p in split_long(doc, 1)] == [1] * len(doc)
    with pytest.raises(ValueError, match="at least 1"):
        split_long(doc, 0)


def test_split_long_chinese_sentences() -> None:
    text = "今天天气很好。我们去公园吧！你觉得呢？" * 20
    doc = get_tokenizer("zh")(text)
    pieces = split_long(doc, 15)
    assert _concatenated(pieces) == doc
    assert all(len(p) <= 15 and p.tokens[-1] in "。！？" for p in pieces)
