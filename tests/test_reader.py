"""Reader-model batches: answers read from real SQuAD v1.1 and CMRC 2018 records map to the right
context tokens of a store, the inside-a-token flag, SQuAD v2.0 unanswerable questions, padded
batches with masks, clear errors for bad answer files, and pooled vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cache_builder import open_cache
from cache_builder.build.engine import PrecomputeSettings, precompute
from cache_builder.build.inputs import InputError
from cache_builder.layers import LayerSpec
from cache_builder.read.pooling import masked_mean
from cache_builder.read.reader import AnswerSummary, ReaderDataset, answer_token_span, read_answers, reader_collate
from tests.cache_models import load, save_tiny_model
from tests.test_inputs import write_lines

# SQuAD v1.1 dev, article "Super_Bowl_50", paragraph 0: the context and six of its questions, verbatim.
SUPER_BOWL = (
    "Super Bowl 50 was an American football game to determine the champion of the National Football League "
    "(NFL) for the 2015 season. The American Football Conference (AFC) champion Denver Broncos defeated the "
    "National Football Conference (NFC) champion Carolina Panthers 24\u201310 to earn their third Super Bowl "
    "title. The game was played on February 7, 2016, at Levi's Stadium in the San Francisco Bay Area at Santa "
    "Clara, California. As this was the 50th Super Bowl, the league emphasized the \"golden anniversary\" with "
    "various gold-themed initiatives, as well as temporarily suspending the tradition of naming each Super Bowl "
    "game with Roman numerals (under which the game would have been known as \"Super Bowl L\"), so that the "
    "logo could prominently feature the Arabic numerals 50.")


def _qa(qid: str, question: str, *answers: tuple[str, int]) -> dict:
    return {"id": qid, "question": question, "answers": [{"text": t, "answer_start": s} for t, s in answers]}


SUPER_BOWL_QAS = [
    _qa("56be4db0acb8001400a502ec", "Which NFL team represented the AFC at Super Bowl 50?",
        *[("Denver Broncos", 177)] * 3),
    _qa("56be4db0acb8001400a502ee", "Where did Super Bowl 50 take place?", ("Santa Clara, California", 403),
        ("Levi's Stadium", 355), ("Levi's Stadium in the San Francisco Bay Area at Santa Clara, California.", 355)),
    _qa("56be4db0acb8001400a502f0", "What color was used to emphasize the 50th anniversary of the Super Bowl?",
        ("gold", 488), ("gold", 488), ("gold", 521)),
    _qa("56be8e613aeaaa14008c90d1", "What was the theme of Super Bowl 50?", ("\"golden anniversary\"", 487),
        ("gold-themed", 521), ("\"golden anniversary", 487)),
    _qa("56bf10f43aeaaa14008c9500", "What was the final score of Super Bowl 50? ", *[("24\u201310", 267)] * 3),
    _qa("56beace93aeaaa14008c91e2", "If Roman numerals were used, what would Super Bowl 50 have been called?",
        ("Super Bowl L", 693), ("L", 704), ("Super Bowl L", 693)),
]
SQUAD_V11 = {"version": "1.1", "data": [{"title": "Super_Bowl_50",
                                         "paragraphs": [{"context": SUPER_BOWL, "qas": SUPER_BOWL_QAS}]}]}
# The first answer of each question → its context tokens (en tokenizer), and the inside-a-token flag:
# "gold" is the start of the token "golden" in the real data.
SUPER_BOWL_EXPECTED = {
    "56be4db0acb8001400a502ec": (["Denver", "Broncos"], False),
    "56be4db0acb8001400a502ee": (["Santa", "Clara", ",", "California"], False),
    "56be4db0acb8001400a502f0": (["golden"], True),
    "56be8e613aeaaa14008c90d1": (["\"", "golden", "anniversary", "\""], False),
    "56bf10f43aeaaa14008c9500": (["24", "\u2013", "10"], False),
    "56beace93aeaaa14008c91e2": (["Super", "Bowl", "L"], False),
}

# CMRC 2018 dev, DEV_0 (SQuAD layout with article and paragraph ids): the context and two questions,
# verbatim, plus one crafted question whose answer starts inside the jieba word 村雨.
CMRC_CONTEXT = (
    "《战国无双3》（）是由光荣和ω-force开发的战国无双系列的正统第三续作。本作以三大故事为主轴，分别是以武田信玄等人为主的"
    "《关东三国志》，织田信长等人为主的《战国三杰》，石田三成等人为主的《关原的年轻武者》，丰富游戏内的剧情。此部份专门介绍"
    "角色，欲知武器情报、奥义字或擅长攻击类型等，请至战国无双系列1.由于乡里大辅先生因故去世，不得不寻找其他声优接手。从猛将"
    "传 and Z开始。2.战国无双 编年史的原创男女主角亦有专属声优。此模式是任天堂游戏谜之村雨城改编的新增模式。本作中共有20张"
    "战场地图（不含村雨城），后来发行的猛将传再新增3张战场地图。但游戏内战役数量繁多，部分地图会有兼用的状况，战役虚实则是以"
    "光荣发行的2本「战国无双3 人物真书」内容为主，以下是相关介绍。（注：前方加☆者为猛将传新增关卡及地图。）合并本篇和猛将传"
    "的内容，村雨城模式剔除，战国史模式可直接游玩。主打两大模式「战史演武」&「争霸演武」。系列作品外传作品")
CMRC = {"version": "v1.0", "data": [{"title": "战国无双3", "id": "DEV_0", "paragraphs": [{
    "id": "DEV_0", "context": CMRC_CONTEXT, "qas": [
        _qa("DEV_0_QUERY_0", "《战国无双3》是由哪两个公司合作开发的？", *[("光荣和ω-force", 11)] * 3),
        _qa("DEV_0_QUERY_1", "男女主角亦有专属声优这一模式是由谁改编的？", ("村雨城", 226), ("村雨城", 226),
            ("任天堂游戏谜之村雨城", 219)),
        _qa("CRAFTED_INSIDE", "哪座城？", ("雨城", 227)),
    ]}]}]}
CMRC_EXPECTED = {"DEV_0_QUERY_0": (["光荣", "和", "ω-force"], False), "DEV_0_QUERY_1": (["村雨", "城"], False),
                 "CRAFTED_INSIDE": (["村雨", "城"], True)}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name → (answers file, float32 store of all layers built from it by precompute)."""
    folder = tmp_path_factory.mktemp("reader")
    bilm_files = save_tiny_model(folder / "model")
    out = {}
    for name, document in [("squad", SQUAD_V11), ("cmrc", CMRC)]:
        source = folder / f"{name}.json"
        source.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
        precompute(str(source), str(folder / f"{name}.zarr"), load(bilm_files),
                   PrecomputeSettings(LayerSpec((0, 1, 2)), dtype="float32"), progress=False)
        out[name] = (source, folder / f"{name}.zarr")
    return out


def _overlapping(spans: np.ndarray, start: int, end: int) -> list[int]:
    """Brute force: every token sharing a character with [start, end)."""
    return [k for k, (a, b) in enumerate(spans.tolist()) if a < end and b > start]


@pytest.mark.parametrize("name,expected", [("squad", SUPER_BOWL_EXPECTED), ("cmrc", CMRC_EXPECTED)])
def test_answer_spans_map_to_context_tokens_on_real_records(stores, name: str, expected: dict):
    source, store = stores[name]
    context = SUPER_BOWL if name == "squad" else CMRC_CONTEXT
    questions = list(read_answers(source))
    assert [q.qid for q in questions] == list(expected)
    with open_cache(str(store)) as cache:
        for q in questions:
            view = cache.tokens(q.qid, "context")
            for answer in q.answers:  # every answer, not only the first
                first, last, inside = answer_token_span(view, q, answer)
                assert list(range(first, last + 1)) == _overlapping(view.spans, answer.start, answer.end)
                covered = context[view.spans[first][0]:view.spans[last][1]]
                if inside:
                    assert answer.text in covered and covered != answer.text
                else:
                    assert covered == answer.text
        dataset = ReaderDataset(cache, questions)
        for i, q in enumerate(questions):
            item = dataset[i]
            tokens = cache.tokens(q.qid, "context").tokens
            assert (tokens[item["answer_start"]:item["answer_end"] + 1], item["inside_token"]) == expected[q.qid]
            assert item["answerable"]
            np.testing.assert_array_equal(item["context"].numpy(), cache.lookup(q.qid, "context"))
            np.testing.assert_array_equal(item["question"].numpy(), cache.lookup(q.qid, "question"))


def test_collate_pads_and_masks_and_v2_unanswerable_questions(stores, tmp_path: Path):
    _, store = stores["squad"]
    v2 = json.loads(json.dumps(SQUAD_V11))
    qas = v2["data"][0]["paragraphs"][0]["qas"]
    qas[1]["is_impossible"] = True  # v2.0 layout: no answers, distractors under plausible_answers
    qas[1]["plausible_answers"], qas[1]["answers"] = qas[1]["answers"], []
    qas[0]["is_impossible"] = False
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(v2), encoding="utf-8")
    with open_cache(str(store)) as cache:
        dataset = ReaderDataset(cache, read_answers(path))
        loader = torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=reader_collate)
        batches = list(loader)
        assert [len(b["ids"]) for b in batches] == [3, 3]
        batch = batches[0]
        n_context = len(cache.tokens(batch["ids"][0], "context").tokens)
        assert batch["context"].shape == (3, 3, n_context, 16)  # (batch, n_layers, time, dim)
        assert batch["context_mask"].all()  # one shared context: no padding
        lengths = [len(cache.tokens(i, "question").tokens) for i in batch["ids"]]
        assert batch["question"].shape == (3, 3, max(lengths), 16)
        assert batch["question_mask"].sum(1).tolist() == lengths
        for b, n in enumerate(lengths):
            assert torch.all(batch["question"][b, :, n:] == 0)
        assert batch["answerable"].tolist() == [True, False, True]
        assert batch["answer_start"][1] == batch["answer_end"][1] == -1
        assert batch["inside_token"].tolist() == [False, False, True]
        assert batch["answer_start"].dtype == torch.int64
        # the unanswerable target is ignored by the loss, the others count
        logits = torch.zeros(3, n_context, requires_grad=True)
        torch.nn.functional.cross_entropy(logits, batch["answer_start"], ignore_index=-1).backward()
        assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0


def test_crafted_english_answer_inside_a_token_is_flagged(tmp_path: Path, stores):
    records = [{"id": "c1", "context": "He works in banking today.", "question": "Where?",
                "answers": [{"text": "bank", "answer_start": 12}]},
               {"id": "c2", "context": "He works in banking today.", "question": "When?",
                "answers": [{"text": "in banking", "answer_start": 9}]},
               {"id": "c3", "context": "He works in banking today.", "question": "What?",
                "answers": [{"text": "ork", "answer_start": 4}]}]
    source = write_lines(tmp_path / "crafted.jsonl", records)
    bilm_files = save_tiny_model(tmp_path / "model")
    precompute(str(source), str(tmp_path / "s.zarr"), load(bilm_files), PrecomputeSettings(LayerSpec((2,))),
               progress=False)
    with open_cache(str(tmp_path / "s.zarr")) as cache:
        dataset = ReaderDataset(cache, read_answers(source))
        tokens = cache.tokens("c1", "context").tokens
        got = [(tokens[it["answer_start"]:it["answer_end"] + 1], it["inside_token"]) for it in dataset]
        assert got == [(["banking"], True), (["in", "banking"], False), (["works"], True)]


def test_bad_answer_files_name_file_line_and_field(tmp_path: Path, stores):
    good = {"id": "q1", "context": "A b c.", "answers": [{"text": "b", "answer_start": 2}]}
    path = write_lines(tmp_path / "answers.jsonl", [
        good, "{not json", {"id": "q2", "context": "A b c.", "answers": []},
        {"id": "q3", "context": "A b c.", "answers": [{"text": "c", "answer_start": 2}]},
        {"id": "q4", "answers": [{"text": "c", "answer_start": "2"}]},
        {"id": "q5", "is_impossible": "false", "answers": []},
        {"id": "q1", "answers": {"text": ["b"], "answer_start": [2]}},  # Hugging Face layout, duplicate id
        {"id": "q6", "answers": {"text": ["b"], "answer_start": [2]}},
        {"id": "q7", "answers": "b"},
    ])
    with pytest.raises(InputError, match=rf"^{path}: line 2: malformed JSON"):
        list(read_answers(path))
    with pytest.raises(IsADirectoryError, match=f"^{tmp_path} is a directory, not an input file$"):
        read_answers(tmp_path)
    rejected: list[InputError] = []
    questions = list(read_answers(path, on_error="skip", rejected=rejected))
    assert [(q.qid, q.line, q.answers[0].text) for q in questions] == [("q1", 1, "b"), ("q3", 4, "c"),
                                                                       ("q6", 8, "b")]
    assert [str(e) for e in rejected] == [
        f"{path}: line 2: malformed JSON: Expecting property name enclosed in double quotes at column 2",
        f"{path}: line 3: field answers: no answers, and the question is not is_impossible",
        f"{path}: line 5: field answers: answer 1: answer_start must be an integer, got '2'",
        f"{path}: line 6: field is_impossible: must be true or false, got 'false'",
        f"{path}: line 7: field id: duplicate question id 'q1'",
        f"{path}: line 9: field answers: must be a list of {{text, answer_start}} objects",
    ]


def test_answers_not_at_their_offset_are_located_by_text_or_dropped_and_counted(tmp_path: Path, caplog):
    context = "A b c b."
    path = write_lines(tmp_path / "answers.jsonl", [
        {"id": "moved", "context": context, "answers": [{"text": "c", "answer_start": 2}]},  # c is at 4
        {"id": "minus", "context": context, "answers": [{"text": "c", "answer_start": -1}]},
        {"id": "kept", "context": context, "answers": [{"text": "b", "answer_start": -1},  # twice: ambiguous
                                                       {"text": "x", "answer_start": 0},  # nowhere
                                                       {"text": "b", "answer_start": 6}]},
        {"id": "lost", "context": context, "answers": [{"text": "z.", "answer_start": -1}]},
        {"id": "nocontext", "answers": [{"text": "c", "answer_start": -1}, {"text": "c", "answer_start": 4}]},
    ])
    summary = AnswerSummary()
    with caplog.at_level("WARNING", logger="elmo_cache"):
        questions = list(read_answers(path, summary=summary))  # the default, on_error="raise": nothing fatal
    assert [(q.qid, [(a.text, a.start) for a in q.answers]) for q in questions] == [
        ("moved", [("c", 4)]), ("minus", [("c", 4)]), ("kept", [("b", 6)]), ("nocontext", [("c", 4)])]
    assert (summary.questions, summary.answers, summary.relocated, summary.dropped_answers,
            summary.dropped_questions, summary.rejected) == (4, 4, 2, 4, 1, 0)
    assert [r.getMessage() for r in caplog.records] == [f"{path}: {summary}"]
    assert "4 dropped" in str(summary) and "1 questions dropped" in str(summary)

    squad = json.loads(json.dumps(SQUAD_V11))
    squad["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = 404
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(squad), encoding="utf-8")
    assert [q.answers[0].start for q in read_answers(moved)][1] == 403  # "Santa Clara, California" is there once


CMRC_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmrc2018_dev.json"


@pytest.mark.skipif(not CMRC_DEV.is_file(), reason=f"the real CMRC 2018 dev file is not at {CMRC_DEV} "
                                                    "(../shared/data beside the checkout)")
def test_the_real_cmrc_2018_dev_file_loads_into_batches_without_errors(tmp_path: Path):
    summary = AnswerSummary()
    questions = list(read_answers(CMRC_DEV, summary=summary))
    # 193 answers with answer_start -1 that are nowhere in their context; 7 a few characters off
    assert (summary.questions, summary.relocated, summary.dropped_answers, summary.rejected) == (3219, 7, 193, 0)
    assert all(q.answers for q in questions)
    # Articles 93 (DEV_101: all three answers of question 3 are off) and 24 (answers with -1), embedded.
    document = json.loads(CMRC_DEV.read_text(encoding="utf-8"))
    subset = tmp_path / "cmrc_subset.json"
    subset.write_text(json.dumps({"data": [document["data"][92], document["data"][23]]}, ensure_ascii=False),
                      encoding="utf-8")
    precompute(str(subset), str(tmp_path / "s.zarr"), load(save_tiny_model(tmp_path / "model")),
               PrecomputeSettings(LayerSpec((2,)), tokenizer="zh"), progress=False)
    with open_cache(str(tmp_path / "s.zarr")) as cache:
        dataset = ReaderDataset(cache, read_answers(subset))
        batches = list(torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=reader_collate))
        assert sum(len(b["ids"]) for b in batches) == len(dataset) > 4
        item = dataset[[q.qid for q in dataset.questions].index("DEV_101_QUERY_3")]
        tokens = cache.tokens("DEV_101_QUERY_3", "context").tokens
        assert "".join(tokens[item["answer_start"]:item["answer_end"] + 1]).endswith("灭司马家族")


def test_answers_that_do_not_belong_to_the_store_are_errors(tmp_path: Path, stores):
    _, store = stores["squad"]
    path = write_lines(tmp_path / "answers.jsonl", [
        {"id": "56be4db0acb8001400a502ec", "answers": [{"text": "Denver Broncos", "answer_start": 249}]},
        {"id": "56be4db0acb8001400a502ed", "answers": [{"text": "Carolina Panthers", "answer_start": 249}]},
    ])
    with open_cache(str(store)) as cache:
        with pytest.raises(InputError, match=rf"^{path}: line 2: field id: question id '56be4db0acb8001400a502ed' is "
                                             "not in the cache"):
            ReaderDataset(cache, read_answers(path))
        dataset = ReaderDataset(cache, [q for q in read_answers(path) if q.qid in cache])
        with pytest.raises(InputError, match=rf"^{path}: line 1: field answers: 'Denver Broncos' at characters "
                                             r"249:263 differs from the stored context, whose token \d+ is 'Carolina'"):
            dataset[0]


def test_pooled_vectors_are_the_mean_over_a_fields_tokens(stores):
    _, store = stores["squad"]
    with open_cache(str(store)) as cache:
        ids = list(cache)[:4]
        for doc_id in ids:
            question = cache.lookup(doc_id, "question")  # (3, n_tokens, 16)
            pooled = cache.pooled(doc_id, "question")
            assert pooled.shape == (3, 16) and pooled.dtype == np.float32
            np.testing.assert_allclose(pooled, question.mean(axis=1), rtol=1e-6, atol=1e-7)
            context = cache.lookup(doc_id, "context")
            np.testing.assert_allclose(cache.pooled(doc_id, "context"), context.mean(axis=1), rtol=1e-6, atol=1e-7)
        batch = reader_collate([ReaderDataset(cache, read_answers(stores["squad"][0]))[i] for i in range(4)])
        means = masked_mean(batch["question"], batch["question_mask"])  # (batch, n_layers, dim)
        assert means.shape == (4, 3, 16)
        for b, doc_id in enumerate(batch["ids"]):
            np.testing.assert_allclose(means[b].numpy(), cache.pooled(doc_id, "question"), rtol=1e-5, atol=1e-6)
        assert torch.all(masked_mean(batch["question"], torch.zeros_like(batch["question_mask"])) == 0)


def test_answers_nested_too_deeply_are_a_bad_record_not_a_crash(tmp_path: Path):
    from cache_builder.read.reader import read_answers

    path = tmp_path / "answers.jsonl"
    path.write_text('{"id": "q1", "answers": ' + "[" * 10_000 + "]" * 10_000 + "}\n"
                    '{"id": "q2", "answers": [{"text": "a", "answer_start": 0}]}\n')
    with pytest.raises(InputError, match=r"answers.jsonl: line 1: .*nested too deeply"):
        list(read_answers(path))
    rejected: list = []
    assert [q.qid for q in read_answers(path, on_error="skip", rejected=rejected)] == ["q2"]
    assert len(rejected) == 1
