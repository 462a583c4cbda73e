"""Input readers: formats, validation messages (file, line, field, reason), skip + rejects, streaming."""

from __future__ import annotations

import gzip
import json
import pickle
import random
from pathlib import Path
from typing import Any

import pytest

import cache_builder.build.inputs as inputs_module
from cache_builder.build.inputs import (
    InputError,
    ReadStats,
    Record,
    _surely_valid,
    _validator,
    default_rejects_path,
    detect_format,
    json_problem,
    parse_json,
    read_records,
)
from elmo.tokenize import get_tokenizer

# ---------------------------------------------------------------------------- generators

EN_WORDS = ["the", "river", "flows", "north", "through", "old", "city", "of", "Paris", "in", "1850",
            "engineers", "built", "bridges", "and", "tunnels", "under", "hills"]
ZH_SENTENCES = ["北京是中国的首都", "长城很长", "我们喜欢学习自然语言处理", "今天天气很好",
                "上海有很多高楼", "他在大学读书"]


def _english_context(rng: random.Random) -> tuple[str, list[tuple[int, str]]]:
    """A context and candidate answers ``(char start, text)``: runs of whole words of one sentence."""
    context, answers = "", []
    for _ in range(rng.randint(3, 6)):
        words = [rng.choice(EN_WORDS) for _ in range(rng.randint(4, 12))]
        i = rng.randrange(len(words))
        j = rng.randint(i + 1, len(words))
        prefix = context + ("" if not context else " ") + " ".join(words[:i]) + (" " if i else "")
        answers.append((len(prefix), " ".join(words[i:j])))
        context += ("" if not context else " ") + " ".join(words) + "."
    return context, answers


def _chinese_context(rng: random.Random) -> tuple[str, list[tuple[int, str]]]:
    """A context and candidate answers: whole sentences (jieba never cuts across ``。``)."""
    context, answers = "", []
    for sentence in rng.sample(ZH_SENTENCES, 4):
        answers.append((len(context), sentence))
        context += sentence + "。"
    return context, answers


def make_squad(seed: int = 0, *, version: str = "1.1", language: str = "en", articles: int = 3,
               paragraphs: int = 3, questions: int = 6) -> dict[str, Any]:
    """A SQuAD-format dataset with many questions per context; v2.0 adds unanswerable ones."""
    rng = random.Random(seed)
    make_context = _english_context if language == "en" else _chinese_context
    data = []
    for a in range(articles):
        paras = []
        for p in range(paragraphs):
            context, candidates = make_context(rng)
            qas = []
            for q in range(questions):
                start, text = rng.choice(candidates)
                qa: dict[str, Any] = {"id": f"q{a}-{p}-{q}", "question": f"What about {text}?" if language == "en"
                                      else f"{text}吗？", "answers": [{"text": text, "answer_start": start}]}
                if version == "2.0":
                    qa["is_impossible"] = q % 3 == 2
                    if qa["is_impossible"]:
                        qa["plausible_answers"], qa["answers"] = qa["answers"], []
                qas.append(qa)
            paras.append({"context": context, "qas": qas})
        data.append({"title": f"Article {a}", "paragraphs": paras})
    return {"version": version if version == "1.1" else "v2.0", "data": data}


def write_lines(path: Path, lines: list[bytes | str | dict[str, Any]]) -> Path:
    """A file of the given lines: bytes as is, str encoded, dicts as JSON."""
    with open(path, "wb") as f:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line, ensure_ascii=False)
            f.write((line.encode("utf-8") if isinstance(line, str) else line) + b"\n")
    return path


def read_rejects(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# ---------------------------------------------------------------------------- formats


def test_jsonl_squad_style_records_embed_context_and_question(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "squad.jsonl", [
        {"id": "q1", "title": "T", "context": "A b.", "question": "What?", "answers": []},
        {"id": "q2", "context": "A b.", "question": "Who?"},
    ])
    records = list(read_records(path))
    assert records == [
        Record("q1", {"context": "A b.", "question": "What?"}, 1, str(path)),
        Record("q2", {"context": "A b.", "question": "Who?"}, 2, str(path)),
    ]


def test_jsonl_text_pretokenized_integer_ids_and_blank_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "docs.jsonl", [{"id": 7, "text": "Hello."}, "", "  ", {"id": "x", "text": "Hi"}])
    assert [(r.doc_id, r.line, r.fields) for r in read_records(path)] == [
        ("7", 1, {"text": "Hello."}), ("x", 4, {"text": "Hi"})]
    tokens = write_lines(tmp_path / "tok.jsonl", [{"id": "a", "tokens": ["New York", "is", "big"], "text": "ignored"}])
    assert [r.fields for r in read_records(tokens)] == [{"tokens": ["New York", "is", "big"]}]


def test_fields_are_inferred_from_the_first_parsed_record(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", ["{oops", {"id": "a", "text": "A."}, {"id": "b", "tokens": ["B"]}])
    stats = ReadStats()
    assert [r.doc_id for r in read_records(path, on_error="skip", stats=stats)] == ["a"]
    assert [(r["line"], r["field"]) for r in read_rejects(default_rejects_path(path))] == [(1, None), (3, "text")]


def test_jsonl_explicit_id_field_and_fields(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [{"doc": "d1", "title": "T", "body": "B b", "n": 3}])
    records = list(read_records(path, id_field="doc", fields=["body", "title"]))
    assert records[0].doc_id == "d1" and list(records[0].fields) == ["body", "title"]


def test_jsonl_without_a_default_layout_asks_for_fields(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "d.jsonl", [{"id": "d1", "body": "B"}])
    for on_error in ("raise", "skip"):  # an option problem, not a record problem: never skipped
        with pytest.raises(InputError, match=r"d\.jsonl: line 1: cannot tell which fields.*\['body', 'id'\].*pass fields"):
            list(read_records(path, on_error=on_error))


def test_text_ids_are_allennlp_line_indices(tmp_path: Path) -> None:
    path = tmp_path / "sentences.txt"
    path.write_bytes("\ufeffThe cat sat .\r\n  Indented line\nlast line without newline".encode())
    records = list(read_records(path))
    assert [(r.doc_id, r.line, r.fields["text"]) for r in records] == [
        ("0", 1, "The cat sat ."), ("1", 2, "  Indented line"), ("2", 3, "last line without newline")]


@pytest.mark.parametrize("version", ["1.1", "2.0"])
@pytest.mark.parametrize("language", ["en", "zh"])
def test_squad_nested_json(tmp_path: Path, version: str, language: str) -> None:
    squad = make_squad(version=version, language=language)
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad, ensure_ascii=False, indent=1 if version == "2.0" else None), encoding="utf-8")
    assert detect_format(path) == "squad"
    questions = {qa["id"]: (paragraph["context"], qa) for article in squad["data"]
                 for paragraph in article["paragraphs"] for qa in paragraph["qas"]}
    records = list(read_records(path))
    assert [r.doc_id for r in records] == list(questions)
    assert [r.line for r in records] == list(range(1, len(questions) + 1))
    assert len({r.fields["context"] for r in records}) == 9  # 3 x 3 contexts shared by 6 questions each
    tokenizer = get_tokenizer("en" if language == "en" else "zh")
    for record in records:
        context, qa = questions[record.doc_id]
        assert record.fields == {"context": context, "question": qa["question"]}
        spans = tokenizer(context).spans
        for answer in qa["answers"] + qa.get("plausible_answers", []):  # every answer is a token range
            start, end = answer["answer_start"], answer["answer_start"] + len(answer["text"])
            assert context[start:end] == answer["text"]
            first = next(i for i, (s, _) in enumerate(spans) if s == start)
            last = next(i for i, (_, e) in enumerate(spans) if e == end)
            assert first <= last


def test_detect_format(tmp_path: Path) -> None:
    squad = json.dumps(make_squad(articles=1))
    cases = {
        "a.jsonl": '{"id": 1}\n', "b.ndjson": '{"id": 1}\n', "c.txt": "{not json}\n",
        "d.json": '{"id": 1, "text": "x"}\n{"id": 2, "text": "y"}\n', "e.json": squad, "f.json": squad + "\n",
        "g.json": '{\n  "data": []\n}\n', "h": "plain words\n", "i.dat": '{"id": 1, "text": "x"}',
    }
    expected = {"a.jsonl": "jsonl", "b.ndjson": "jsonl", "c.txt": "text", "d.json": "jsonl", "e.json": "squad",
                "f.json": "squad", "g.json": "squad", "h": "text", "i.dat": "jsonl"}
    for name, content in cases.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
        assert detect_format(tmp_path / name) == expected[name], name


# ---------------------------------------------------------------------------- bad records

GOOD_BEFORE = {"id": "g1", "text": "Good one."}
GOOD_AFTER = {"id": "g2", "text": "Good two."}
LONG_TOKEN = "x" * 200

# name -> (bad line of a JSONL file, field to blame, fragment of the reason)
BAD_JSONL: dict[str, tuple[bytes | str | dict[str, Any], str | None, str]] = {
    "malformed JSON": ('{"id": "b", "text": "unterminated}', None, "malformed JSON"),
    "truncated line": ('{"id": "b", "te', None, "malformed JSON"),
    "not an object": ('["b", "text"]', None, "not a JSON object but array"),
    "missing id": ({"text": "No id."}, "id", "missing id field"),
    "null id": ({"id": None, "text": "x"}, "id", "must be a string, got null"),
    "empty id": ({"id": "", "text": "x"}, "id", "is empty"),
    "duplicate id": ({"id": "g1", "text": "Again."}, "id", "duplicate id 'g1', first seen at line 1"),
    "missing field": ({"id": "b"}, "text", "missing"),
    "empty text": ({"id": "b", "text": ""}, "text", "is empty"),
    "whitespace text": ({"id": "b", "text": " \t\n"}, "text", "is whitespace only"),
    "non-string text": ({"id": "b", "text": 42}, "text", "must be a string or a token list, got number"),
    "object text": ({"id": "b", "text": {"a": 1}}, "text", "must be a string or a token list, got object"),
    "invalid UTF-8": (b'{"id": "b", "text": "caf\xe9"}', None, "invalid UTF-8 at byte 25 of the line"),
    "lone surrogate": ('{"id": "b", "text": "half a pair \\ud83d here"}', "text", "lone surrogate"),
    "nested 10,000 deep": ('{"id": "b", "text": ' + "[" * 10_000 + "]" * 10_000 + "}", None,
                           "JSON nested too deeply to parse"),
    "5,000-digit integer": ('{"id": ' + "9" * 5000 + ', "text": "x"}', None, "unreadable JSON number"),
}


@pytest.mark.parametrize("case", list(BAD_JSONL))
def test_bad_jsonl_record_raises_with_file_line_field(tmp_path: Path, case: str) -> None:
    bad, field, reason = BAD_JSONL[case]
    path = write_lines(tmp_path / "in.jsonl", [GOOD_BEFORE, bad, GOOD_AFTER])
    records = read_records(path)
    assert next(records).doc_id == "g1"  # streaming: the good record comes before the error
    with pytest.raises(InputError) as info:
        next(records)
    error = info.value
    assert (error.path, error.line, error.field) == (str(path), 2, field)
    assert reason in error.reason
    prefix = f"{path}: line 2: " + (f"field {field}: " if field else "")
    assert str(error) == prefix + error.reason


@pytest.mark.parametrize("case", list(BAD_JSONL))
def test_bad_jsonl_record_skipped_into_rejects(tmp_path: Path, case: str) -> None:
    bad, field, reason = BAD_JSONL[case]
    path = write_lines(tmp_path / "in.jsonl", [GOOD_BEFORE, bad, GOOD_AFTER])
    stats = ReadStats()
    assert [r.doc_id for r in read_records(path, on_error="skip", stats=stats)] == ["g1", "g2"]
    assert (stats.records, stats.rejected) == (2, 1)
    [reject] = read_rejects(default_rejects_path(path))
    assert (reject["source"], reject["line"], reject["field"]) == (str(path), 2, field)
    assert reason in reject["reason"]
    assert reject["raw"] == path.read_bytes().split(b"\n")[1].decode("utf-8", errors="replace")


def test_every_bad_record_of_one_file_is_rejected_and_nothing_valid_is_lost(tmp_path: Path) -> None:
    lines: list[Any] = []
    expected_rejects = []
    for k, (bad, field, reason) in enumerate(BAD_JSONL.values()):
        lines.append({"id": f"ok{k}", "text": f"Valid record {k} with a long token {LONG_TOKEN}."})
        lines.append(bad)
        expected_rejects.append((len(lines), field))
    lines[0] = {"id": "g1", "text": "Good."}  # so that "duplicate id" duplicates something
    path = write_lines(tmp_path / "in.jsonl", lines)
    rejects = tmp_path / "bad.jsonl"
    rejects.write_text("stale content from an earlier run\n")
    stats = ReadStats()
    records = list(read_records(path, on_error="skip", rejects_path=rejects, stats=stats))
    assert [r.doc_id for r in records] == ["g1"] + [f"ok{k}" for k in range(1, len(BAD_JSONL))]
    assert all(LONG_TOKEN in r.fields["text"] for r in records[1:])  # a long token is no error
    assert [(r["line"], r["field"]) for r in read_rejects(rejects)] == expected_rejects
    assert (stats.records, stats.rejected) == (len(BAD_JSONL), len(BAD_JSONL))
    assert not default_rejects_path(path).exists()


def test_bad_token_lists(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "tok.jsonl", [
        {"id": "a", "tokens": ["ok", LONG_TOKEN]},
        {"id": "b", "tokens": []},
        {"id": "c", "tokens": ["x", 5]},
        {"id": "d", "tokens": ["x", " "]},
        {"id": "e", "tokens": "a string is text, not tokens"},
        '{"id": "f", "tokens": ["ok", "\\udc80"]}',
    ])
    stats = ReadStats()
    assert [r.fields["tokens"] for r in read_records(path, on_error="skip", stats=stats)] == [
        ["ok", LONG_TOKEN], "a string is text, not tokens"]
    assert [(r["line"], r["field"], r["reason"]) for r in read_rejects(default_rejects_path(path))] == [
        (2, "tokens", "is an empty token list"),
        (3, "tokens", "token 2 must be a string, got number"),
        (4, "tokens", "token 2 is whitespace only"),
        (6, "tokens", "token 2 holds a lone surrogate (a \\ud800-\\udfff escape), which is not valid Unicode"),
    ]


def test_text_file_blank_lines_are_skipped_and_bad_lines_named(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.txt", ["First line .", "", b"caf\xe9 au lait", " \t ", "Fifth line ."])
    with pytest.raises(InputError, match=r"in\.txt: line 3: invalid UTF-8 at byte 4 of the line$"):
        list(read_records(path))
    stats = ReadStats()
    records = list(read_records(path, on_error="skip", stats=stats))
    assert [(r.doc_id, r.line, r.fields["text"]) for r in records] == [("0", 1, "First line ."),
                                                                       ("4", 5, "Fifth line .")]
    assert [(r["line"], r["field"], r["reason"]) for r in read_rejects(default_rejects_path(path))] == [
        (3, None, "invalid UTF-8 at byte 4 of the line")]
    assert stats.rejected == 1


def test_squad_bad_questions_and_paragraphs(tmp_path: Path) -> None:
    squad = make_squad(articles=1, paragraphs=3, questions=2)
    paragraphs = squad["data"][0]["paragraphs"]
    del paragraphs[0]["qas"][1]["id"]
    paragraphs[1]["qas"][0]["question"] = "  "
    paragraphs[1]["qas"][1]["id"] = paragraphs[0]["qas"][0]["id"]
    paragraphs.append({"context": "No questions here."})
    paragraphs[2]["context"] = 3
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad, indent=2))
    with pytest.raises(InputError) as info:
        list(read_records(path))
    assert str(info.value) == f"{path}: question 2: field id: missing id field (question 2 of paragraph 1 of article 1)"
    stats = ReadStats()
    assert [r.doc_id for r in read_records(path, on_error="skip", stats=stats)] == ["q0-0-0"]
    rejects = read_rejects(default_rejects_path(path))
    assert [(r["line"], r["field"], r["reason"]) for r in rejects] == [
        (2, "id", "missing id field (question 2 of paragraph 1 of article 1)"),
        (3, "question", "is whitespace only (question 1 of paragraph 2 of article 1)"),
        (4, "id", "duplicate id 'q0-0-0', first seen at question 1"),
        (5, "context", "must be a string or a token list, got number (question 1 of paragraph 3 of article 1)"),
        (6, "context", "must be a string or a token list, got number (question 2 of paragraph 3 of article 1)"),
        (None, None, "paragraph has no 'qas' list (paragraph 4 of article 1)"),
    ]
    assert json.loads(rejects[0]["raw"])["question"] == paragraphs[0]["qas"][1]["question"]
    assert stats.rejected == 6


def test_squad_questions_that_cannot_be_written_as_they_are_still_go_to_the_rejects(tmp_path: Path) -> None:
    squad = make_squad(articles=1, paragraphs=1, questions=3)
    qas = squad["data"][0]["paragraphs"][0]["qas"]
    qas[0]["question"] = "half a pair \ud83d"  # lone surrogate: not writable as UTF-8
    qas[1]["question"] = json.loads("[" * 900 + "]" * 900)  # parses, but is too deep to write back
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad))
    assert [r.doc_id for r in read_records(path, on_error="skip")] == [qas[2]["id"]]
    rejects = read_rejects(default_rejects_path(path))
    assert [(r["line"], r["field"]) for r in rejects] == [(1, "question"), (2, "question")]
    assert json.loads(rejects[0]["raw"])["question"] == "half a pair \ud83d"


def test_squad_file_that_cannot_be_parsed_always_raises(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "data": [\n    {"paragraphs": ]\n  ]\n}\n')
    for on_error in ("raise", "skip"):
        with pytest.raises(InputError, match=r"broken\.json: line 3: malformed JSON"):
            list(read_records(path, input_format="squad", on_error=on_error))
    path.write_bytes(b'{\n"data": [\n\n"caf\xe9"]}')
    with pytest.raises(InputError, match=r"broken\.json: line 4: invalid UTF-8 at byte 5 of the line"):
        list(read_records(path, input_format="squad"))
    path.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n')
    with pytest.raises(InputError, match=r"broken\.json: line 2: malformed JSON: Extra data.*pass input_format='jsonl'"):
        list(read_records(path, input_format="squad"))
    path.write_text('{"version": "1.1"}')
    with pytest.raises(InputError, match=r"broken\.json: not SQuAD JSON: the top level has no 'data' list"):
        list(read_records(path, input_format="squad"))


def test_streaming_reads_the_first_record_before_a_broken_end(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "big.jsonl", [{"id": str(i), "text": f"Sentence {i}."} for i in range(1000)])
    with open(path, "ab") as f:
        f.write(b'{"id": "last", "text": "cut off\xe2\x80')
    records = read_records(path)
    assert next(records).doc_id == "0"
    with pytest.raises(InputError, match=r"big\.jsonl: line 1001: invalid UTF-8"):
        list(records)


# ---------------------------------------------------------------------------- options, helpers


def test_option_errors_raise_before_iteration(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "in.jsonl", [GOOD_BEFORE])
    with pytest.raises(ValueError, match="unknown input format 'csv'; known: auto, jsonl, squad, text"):
        read_records(path, input_format="csv")
    with pytest.raises(ValueError, match="on_error must be one of raise, skip"):
        read_records(path, on_error="ignore")
    with pytest.raises(ValueError, match="only used with on_error='skip'"):
        read_records(path, rejects_path=tmp_path / "r.jsonl")
    for fields in ("text", [], ["a", "a"], [1]):
        with pytest.raises(ValueError, match="fields must be a non-empty list"):
            read_records(path, fields=fields)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="would overwrite the input"):
        read_records(path, on_error="skip", rejects_path=path)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_records(tmp_path / "missing.jsonl")


def test_input_error_message_and_pickling() -> None:
    error = InputError("data/in.jsonl", 3, "is empty", "text")
    assert str(error) == "data/in.jsonl: line 3: field text: is empty"
    assert str(InputError("in.json", None, "not SQuAD JSON")) == "in.json: not SQuAD JSON"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.line, copy.field, copy.reason, str(copy)) == ("data/in.jsonl", 3, "text", "is empty",
                                                                          str(error))
    assert isinstance(error, ValueError)


# ---------------------------------------------------------------------------- compressed inputs


def test_gzip_inputs_stream_with_their_line_numbers(tmp_path: Path) -> None:
    lines = [GOOD_BEFORE, {"id": "b", "text": ""}, GOOD_AFTER]
    plain = write_lines(tmp_path / "in.jsonl", lines)
    packed = tmp_path / "in.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert detect_format(packed) == "jsonl"
    assert [(r.doc_id, r.line) for r in read_records(packed, on_error="skip")] == [("g1", 1), ("g2", 3)]
    assert [r["line"] for r in read_rejects(default_rejects_path(packed))] == [2]
    with pytest.raises(InputError, match=r"in\.jsonl\.gz: line 2: field text: is empty"):
        list(read_records(packed))
    text = tmp_path / "in.txt.gz"
    text.write_bytes(gzip.compress(b"first line .\n\nthird line .\n"))
    assert [(r.doc_id, r.fields["text"]) for r in read_records(text, on_error="skip")] == [
        ("0", "first line ."), ("2", "third line .")]
    squad = make_squad(articles=1)
    squad_gz = tmp_path / "train-v1.1.json.gz"  # .json: the format comes from the content
    squad_gz.write_bytes(gzip.compress(json.dumps(squad).encode()))
    assert detect_format(squad_gz) == "squad"
    assert len(list(read_records(squad_gz))) == 18
    # Streaming: records come out before a damaged end is reached, which is then a clear error.
    many = gzip.compress(b"".join(b'{"id": "%d", "text": "line %d"}\n' % (i, i) for i in range(20000)))
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(many[: len(many) // 2])
    records = read_records(cut)
    assert next(records).doc_id == "0"
    with pytest.raises(InputError, match=r"cut\.jsonl\.gz: damaged compressed data"):
        list(records)



# ---------------------------------------------------------------------------- fast paths

JSON_EDGES = ['{"id": "a", "text": "x"}', '{"a": NaN, "b": Infinity}', '{"a": 1e400}', '{"a": -0, "b": 1.5e-320}',
              '{"id": 123456789012345678901234567890}', '{"a": "\\ud83d"}', '{"a": "\\ud83d\\ude00"}',
              '{"a": 1, "a": 2}', "[" * 900 + "]" * 900, "[" * 5000 + "]" * 5000, '{"a": "\t"}', "01", "[1,]",
              '{"a": ' + "9" * 5000 + "}", "\ufeff{}", ' {"a": "\\u00e9\\/"} ', '"x" y']


@pytest.mark.parametrize("text", JSON_EDGES, ids=range(len(JSON_EDGES)))
def test_the_fast_json_parser_gives_what_json_gives(text: str) -> None:
    def outcome(parse: Any) -> tuple[str, Any]:
        try:
            return "value", json.dumps(parse(text))
        except json.JSONDecodeError as e:
            return "malformed", json_problem(e)
        except (ValueError, RecursionError):
            return "unreadable", None

    assert outcome(parse_json) == outcome(json.loads)


def test_valid_records_are_parsed_and_checked_without_json_or_jsonschema(tmp_path: Path, monkeypatch) -> None:
    squad = write_lines(tmp_path / "squad.jsonl", [{"id": f"q{i}", "context": "Ünïcode ctx 北京.", "question": "Why?"}
                                                   for i in range(5)])
    tokens = write_lines(tmp_path / "tokens.jsonl", [{"id": 5, "tokens": ["a", "b"]}])

    def refused(*args: Any) -> Any:
        raise AssertionError("the slow path ran for a valid record")

    monkeypatch.setattr(inputs_module.json, "loads", refused)
    monkeypatch.setattr(inputs_module, "_validator", refused)
    assert [r.doc_id for r in read_records(squad)] == ["q0", "q1", "q2", "q3", "q4"]
    assert [r.fields for r in read_records(tokens)] == [{"tokens": ["a", "b"]}]


FIELD_VALUES = ["x", "", " ", " \t\n", "\u3000", "\u3000x", "\x1c", "a\ud800", "\udfff", "é", "é \u2028", 3, None,
                True, [], ["a"], ["a", ""], ["a", "\u00a0"], ["\ud800"], ["a", 1], {"a": "b"}, "x" * 300 + "\n"]


@pytest.mark.parametrize("doc_id", ["d", "", " ", "\ud800", "漢", 7, None])
def test_the_hand_check_accepts_exactly_what_the_schema_accepts(doc_id: Any) -> None:
    for value in FIELD_VALUES:
        for fields in ({"f": value}, {"f": "ok", "g": value}, {}):
            schema_ok = not any(_validator().iter_errors({"id": doc_id, "fields": fields}))
            assert _surely_valid(doc_id, fields) == schema_ok, (doc_id, fields)
