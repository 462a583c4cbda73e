"""The published character-id convention."""

from elmo.chars import BOW_CHAR, EOW_CHAR, PAD_CHAR, char_ids, char_id_matrix, sentence_char_ids


def test_ascii_token_is_bow_bytes_eow_padding_shifted_by_one():
    ids = char_ids("cat")
    assert len(ids) == 50
    assert ids[:5].tolist() == [BOW_CHAR + 1, ord("c") + 1, ord("a") + 1, ord("t") + 1, EOW_CHAR + 1]
    assert set(ids[5:].tolist()) == {PAD_CHAR + 1}


def test_sentence_boundaries_are_special_one_character_words():
    assert char_ids("<S>")[:3].tolist() == [259, 257, 260]
    assert char_ids("</S>")[:3].tolist() == [259, 258, 260]


def test_long_token_keeps_48_bytes():
    ids = char_ids("x" * 200)
    assert ids[1:49].tolist() == [ord("x") + 1] * 48
    assert ids[49] == EOW_CHAR + 1


def test_chinese_characters_are_three_utf8_bytes_each():
    word = "苹果" * 8  # 16 characters, 48 bytes: still fits
    ids = char_ids(word)
    assert ids[1:49].tolist() == [b + 1 for b in word.encode("utf-8")]
    assert ids[49] == EOW_CHAR + 1


def test_batch_pads_absent_tokens_with_zero():
    batch = sentence_char_ids([["a", "b"], ["c"]])
    assert batch.shape == (2, 2, 50)
    assert (batch[1, 1] == 0).all() and (batch[1, 0] > 0).all()
    assert (char_id_matrix(["a", "b"]) == batch[0]).all()


def test_char_id_matrix_is_char_ids_row_by_row_placed_at_once(monkeypatch):
    tokens = ["<S>", "cat", "</S>", "", "é", "苹果" * 30, "x" * 49, "<S>x", "\ud800", "</S>"]
    for width in (50, 8, 3):
        expected = [char_ids(t, width).tolist() for t in tokens]
        assert char_id_matrix(tokens, width).tolist() == expected
    assert char_id_matrix([]).shape == (0, 50)

    import elmo.chars

    def one_by_one(token, max_characters=50):
        raise AssertionError("a Python call per token")

    monkeypatch.setattr(elmo.chars, "char_ids", one_by_one)
    assert char_id_matrix(["the", "cat", "sat"] * 1000).shape == (3000, 50)
