"""Vocabulary building: file format and order, segmentation, and errors on bad input."""

from __future__ import annotations

import pytest

import cli
from elmo.tokenize import UserDictionary, get_tokenizer, load_tokenizer
from elmo.vocab import (SPECIAL_TOKENS, VocabularyError, build_vocab, make_vocab, read_training_vocab,
                        tokenizer_record_path)


def test_order_specials_then_count_then_first_seen(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("b a The the\nthe a c\n\nthe c x\n", encoding="utf-8")
    stats = make_vocab([corpus], tmp_path / "v.txt", get_tokenizer("en"))
    lines = (tmp_path / "v.txt").read_text(encoding="utf-8").splitlines()
    # the:3; a, c: 2 (a seen first); b, The, x: 1 (first-seen order). Case-sensitive.
    assert lines == ["<S>", "</S>", "<UNK>", "the", "a", "c", "b", "The", "x"]
    assert (stats.n_tokens, stats.n_sentences, stats.n_types, stats.vocab_size) == (10, 3, 6, 9)
    assert read_training_vocab(tmp_path / "v.txt") == lines


def test_min_count_and_max_size():
    sentences = [["x", "y", "y", "z", "z", "z", "<UNK>"]]
    assert build_vocab(sentences, min_count=2)[0] == [*SPECIAL_TOKENS, "z", "y"]
    assert build_vocab(sentences, max_size=4)[0] == [*SPECIAL_TOKENS, "z"]
    with pytest.raises(ValueError, match="max_size"):
        build_vocab(sentences, max_size=3)


def test_chinese_segmentation_with_user_dict_and_segmented_out(tmp_path):
    raw = tmp_path / "zh.txt"
    raw.write_text("我买了六斤苹果。\nI bought an iPhone 7. Don't go!\n", encoding="utf-8")
    user_dict = tmp_path / "dict.txt"
    user_dict.write_text("买了 100000\n", encoding="utf-8")
    assert get_tokenizer("zh")("我买了六斤苹果。").tokens == ["我", "买", "了", "六斤", "苹果", "。"]
    tokenizer = get_tokenizer("auto", user_dicts=[UserDictionary.read(user_dict)])
    make_vocab([raw], tmp_path / "v.txt", tokenizer, segmented_out=tmp_path / "seg")
    assert (tmp_path / "seg" / "zh.txt").read_text(encoding="utf-8").splitlines() == [
        "我 买了 六斤 苹果 。", "I bought an iPhone 7 . Do n't go !"]
    recorded = load_tokenizer(tokenizer_record_path(tmp_path / "v.txt"))  # v.tokenizer.json
    assert recorded.settings() == tokenizer.settings() and recorded.user_dicts[0].text == "买了 100000\n"


def test_cli_prints_token_count(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("a b c\nd e\n", encoding="utf-8")
    assert cli.main(["vocab", str(corpus), "--out", str(tmp_path / "v.txt"), "--tokenizer", "en"]) == 0
    assert capsys.readouterr().out.startswith("5 tokens in 2 sentences")


def test_empty_corpus_is_an_error_naming_the_file(tmp_path, capsys):
    corpus = tmp_path / "empty.txt"
    corpus.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(VocabularyError, match="empty corpus.*empty.txt"):
        make_vocab([corpus], tmp_path / "v.txt")
    assert cli.main(["vocab", str(corpus), "--out", str(tmp_path / "v.txt")]) == 2
    assert "empty corpus" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ("the\n<S>\n</S>\n<UNK>\n", r"v.txt: line 1: expected '<S>', found 'the'"),
    ("<S>\n</S>\n", r"v.txt: line 3: expected '<UNK>', found None"),
    ("<S>\n</S>\n<UNK>\na\nb\na\n", r"v.txt: line 6: duplicate token 'a' \(first on line 4\)"),
])
def test_bad_training_vocabularies(tmp_path, content, message):
    (tmp_path / "v.txt").write_text(content, encoding="utf-8")
    with pytest.raises(VocabularyError, match=message):
        read_training_vocab(tmp_path / "v.txt")


def test_segmented_out_never_overwrites_inputs(tmp_path):
    (tmp_path / "a").mkdir()
    for d in ("a", "."):
        (tmp_path / d / "c.txt").write_text("x y\n", encoding="utf-8")
    with pytest.raises(ValueError, match="two inputs are named 'c.txt'"):
        make_vocab([tmp_path / "c.txt", tmp_path / "a" / "c.txt"], tmp_path / "v.txt", segmented_out=tmp_path / "s")
    with pytest.raises(ValueError, match="would overwrite the input"):
        make_vocab([tmp_path / "c.txt"], tmp_path / "v.txt", segmented_out=tmp_path)
    assert (tmp_path / "c.txt").read_text(encoding="utf-8") == "x y\n"
