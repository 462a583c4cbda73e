"""Batches for reader models (extractive question answering) from a SQuAD-style cache.

A SQuAD-style store (``precompute`` of SQuAD v1.1/v2.0 JSON, CMRC 2018, or JSONL records with
``context`` and ``question``) holds, per question id, both fields' vectors and the context's
token character spans, but no answers: :func:`read_answers` reads them from the user's file.
:class:`ReaderDataset` pairs the two and turns each answer's character span into a token span;
:func:`reader_collate` pads a batch.

Token spans are **inclusive** ``(answer_start, answer_end)``: the answer's first and last
context tokens, the two positions a reader model predicts (as in BiDAF and AllenNLP's
``span_end``); ``tokens[answer_start : answer_end + 1]`` is the answer. An answer whose first
or last character falls strictly inside a token (``"gold"`` of ``"golden"``; a Chinese word
jieba did not cut) covers that whole token and is flagged ``inside_token``. An unanswerable
question (SQuAD v2.0 ``is_impossible``) has ``answer_start = answer_end = -1`` (skip it with
``cross_entropy(..., ignore_index=-1)``) and ``answerable`` False.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cache_builder.build.inputs import (
    ON_ERROR,
    InputError,
    detect_format,
    is_stream,
    json_problem,
    parse_json,
    squad_place,
)
from cache_builder.read.cache import pad_collate
from cache_builder.read.source import TokenView

if TYPE_CHECKING:
    from cache_builder.read.cache import EmbeddingCache

log = logging.getLogger("elmo_cache")


@dataclass(frozen=True)
class Answer:
    """One answer: its text and the character offset where it starts in the context."""

    text: str
    start: int

    @property
    def end(self) -> int:
        """Character offset just after the answer."""
        return self.start + len(self.text)


@dataclass(frozen=True)
class QuestionAnswers:
    """A question's answers as read from the answers file.

    Attributes:
        qid: the question id (the store's document id).
        answers: in file order (SQuAD dev has several per question; training uses the first);
            empty for an unanswerable question.
        source, line: the file, and the 1-based line for JSONL (None for SQuAD JSON).
        where: the question's place in a SQuAD JSON file, e.g. "question 3 of paragraph 2 of article 1".
    """

    qid: str
    answers: tuple[Answer, ...]
    source: str
    line: int | None = None
    where: str = ""

    def error(self, reason: str, field: str | None = "answers") -> InputError:
        """An error naming this question's file and line (or place in the JSON)."""
        return InputError(self.source, self.line, reason + (f" ({self.where})" if self.where else ""), field)


@dataclass
class AnswerSummary:
    """What :func:`read_answers` read, moved and left out; ``str()`` is the one-line summary."""

    questions: int = 0  # questions yielded
    answers: int = 0  # answers yielded
    relocated: int = 0  # answers not at their answer_start, found by their text (once in the context)
    dropped_answers: int = 0  # answers that could not be located
    dropped_questions: int = 0  # answerable questions left with no located answer
    rejected: int = 0  # malformed questions skipped (on_error="skip")

    def __str__(self) -> str:
        return (f"{self.questions} questions with {self.answers} answers read; {self.relocated} answers "
                f"located by their text (not at their answer_start), {self.dropped_answers} dropped (not "
                f"found, or found more than once, in the context), {self.dropped_questions} questions "
                f"dropped (no answer left), {self.rejected} malformed questions skipped")


# ---------------------------------------------------------------------------- reading answers

def _jsonl_questions(path: Path) -> Iterator[tuple[int | None, str, Any, Any]]:
    """``(line, where, record, context)`` per non-blank line, read one line at a time."""
    with open(path, "rb") as f:
        for number, data in enumerate(f, start=1):
            try:
                text = data.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield number, "", InputError(path, number, f"invalid UTF-8 at byte {e.start + 1} of the line"), None
                continue
            if not text.strip():
                continue
            try:
                record = parse_json(text)
            except ValueError as e:
                yield number, "", InputError(path, number, json_problem(e)), None
                continue
            yield number, "", record, record.get("context") if isinstance(record, dict) else None


def _squad_questions(path: Path) -> Iterator[tuple[int | None, str, Any, Any]]:
    """``(None, where, qa, context)`` per question of a SQuAD JSON file, parsed whole (nested JSON
    cannot be streamed with the standard library; SQuAD files are well under 100 MB). An article
    or paragraph without its list comes as an :class:`InputError` in place of the question."""
    try:
        document = parse_json(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise InputError(path, None, f"invalid UTF-8 at byte {e.start + 1} of the file") from None
    except json.JSONDecodeError as e:
        raise InputError(path, e.lineno, f"malformed JSON: {e.msg} at column {e.colno}") from None
    except ValueError as e:
        raise InputError(path, None, str(e)) from None
    articles = document.get("data") if isinstance(document, dict) else None
    if not isinstance(articles, list):
        raise InputError(path, None, "not SQuAD JSON: no top-level 'data' list")
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(_members(path, article, "paragraphs", squad_place(a))):
            if isinstance(paragraph, InputError):
                yield None, "", paragraph, None
                continue
            context = paragraph.get("context") if isinstance(paragraph, dict) else None
            for q, qa in enumerate(_members(path, paragraph, "qas", squad_place(a, p))):
                yield None, squad_place(a, p, q), qa, context


def _members(path: Path, parent: Any, key: str, where: str) -> list[Any]:
    """``parent[key]``, or one :class:`InputError` saying it is not there."""
    if isinstance(parent, dict) and isinstance(parent.get(key), list):
        return parent[key]
    return [InputError(path, None, f"no {key!r} list ({where})")]


_SOURCES = {"jsonl": _jsonl_questions, "squad": _squad_questions}


def _answer_list(value: Any) -> Any:
    """``answers`` as a list of ``{text, answer_start}``; Hugging Face's ``squad`` layout (a dict of
    two lists) is accepted too."""
    texts, starts = (value.get("text"), value.get("answer_start")) if isinstance(value, dict) else (None, None)
    if isinstance(texts, list) and isinstance(starts, list) and len(texts) == len(starts):
        return [{"text": t, "answer_start": s} for t, s in zip(texts, starts)]
    return value


def _locate(text: str, start: int, context: Any) -> int | None:
    """Where ``text`` starts in ``context``: at ``start`` when it is there, else at its only
    occurrence; ``None`` when it is at neither (a missing or wrong ``answer_start``, a text found
    nowhere or more than once). Without a context, a non-negative ``start`` is taken as is (the
    store's tokens check it later)."""
    if not isinstance(context, str):
        return start if start >= 0 else None
    if start >= 0 and context[start:start + len(text)] == text:
        return start
    first = context.find(text)
    return first if first >= 0 and context.find(text, first + 1) < 0 else None


def _question(path: Path, line: int | None, where: str, qa: Any, context: Any,
              summary: AnswerSummary) -> QuestionAnswers | None:
    """Validate one question record; ``None`` when none of its answers can be located (counted
    in ``summary``, like each answer dropped or relocated)."""
    qid = qa.get("id") if isinstance(qa, dict) else None
    if isinstance(qid, int) and not isinstance(qid, bool):
        qid = str(qid)
    found = QuestionAnswers(qid if isinstance(qid, str) else "", (), str(path), line, where)
    if not isinstance(qa, dict):
        raise found.error("record is not a JSON object", None)
    if not found.qid:
        raise found.error("missing or not a string", "id")
    impossible = qa.get("is_impossible", False)
    if not isinstance(impossible, bool):
        raise found.error(f"must be true or false, got {impossible!r}", "is_impossible")
    if impossible:  # SQuAD v2.0 keeps its distractors under plausible_answers
        return found
    answers = _answer_list(qa.get("answers"))
    if not isinstance(answers, list):
        raise found.error("must be a list of {text, answer_start} objects")
    if not answers:
        raise found.error("no answers, and the question is not is_impossible")
    parsed = []
    for i, answer in enumerate(answers):
        text = answer.get("text") if isinstance(answer, dict) else None
        start = answer.get("answer_start") if isinstance(answer, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise found.error(f"answer {i + 1}: text must be a non-empty string")
        if not isinstance(start, int) or isinstance(start, bool):
            raise found.error(f"answer {i + 1}: answer_start must be an integer, got {start!r}")
        located = _locate(text, start, context)
        if located is None:
            summary.dropped_answers += 1
            continue
        summary.relocated += located != start
        parsed.append(Answer(text, located))
    if not parsed:
        summary.dropped_questions += 1
        return None
    summary.answers += len(parsed)
    return QuestionAnswers(found.qid, tuple(parsed), str(path), line, where)


def read_answers(path: str | Path, *, on_error: str = "raise", rejected: list[InputError] | None = None,
                 summary: AnswerSummary | None = None) -> Iterator[QuestionAnswers]:
    """The questions and answers of a SQuAD v1.1/v2.0 (or CMRC 2018) JSON file or a JSONL file of
    records ``{"id", "answers": [{"text", "answer_start"}], "is_impossible"?, "context"?}``, lazily,
    in file order. JSONL is read one line at a time.

    Real answer files hold answers that are not where ``answer_start`` says (CMRC 2018 dev: 193
    with ``answer_start: -1``, 7 off by a few characters). When the record has a context, an
    answer not at its ``answer_start`` is located by its text if that occurs exactly once in the
    context, and dropped otherwise; a question keeps its other answers, and is dropped when none
    is left. Both are counted in ``summary``, and logged (one warning) when the file is read. A
    question with ``is_impossible: true`` is unanswerable (its ``answers`` are ignored); any other
    needs at least one answer in the file.

    Args:
        on_error: ``"raise"``: a malformed question raises :class:`InputError` naming the file and
            line (JSONL) or the question's place in the JSON, and the field. ``"skip"``: malformed
            questions are left out and their errors appended to ``rejected``. A file that is not
            JSON at all raises either way.
        rejected: where ``"skip"`` puts the errors.
        summary: counts of what was read, relocated and dropped, updated while iterating.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    path = Path(path)
    if is_stream(str(path)):  # a missing path or a directory raises here
        raise ValueError(f"{path} is a pipe or device; answers are read from a file (it is read twice)")
    fmt = detect_format(path)
    if fmt not in _SOURCES:
        raise ValueError(f"{path}: answers come from SQuAD JSON or JSONL, not {fmt}")
    return _questions(path, fmt, on_error, rejected, summary if summary is not None else AnswerSummary())


def _questions(path: Path, fmt: str, on_error: str, rejected: list[InputError] | None,
               summary: AnswerSummary) -> Iterator[QuestionAnswers]:
    seen: set[str] = set()
    for line, where, qa, context in _SOURCES[fmt](path):
        try:
            if isinstance(qa, InputError):
                raise qa
            question = _question(path, line, where, qa, context, summary)
            if question is not None and question.qid in seen:
                raise question.error(f"duplicate question id {question.qid!r}", "id")
        except InputError as error:
            if on_error == "raise":
                raise
            summary.rejected += 1
            if rejected is not None:
                rejected.append(error)
            continue
        if question is None:
            continue
        seen.add(question.qid)
        summary.questions += 1
        yield question
    if summary.relocated or summary.dropped_answers or summary.rejected:
        log.warning("%s: %s", path, summary)


# ---------------------------------------------------------------------------- token spans

def answer_token_span(view: TokenView, question: QuestionAnswers, answer: Answer) -> tuple[int, int, bool]:
    """The context tokens an answer covers.

    Args:
        view: the context's tokens and ``(n_tokens, 2)`` character spans (``cache.tokens``).
        question, answer: the answer, and its question (named in errors).

    Returns:
        ``(first, last, inside_token)``: inclusive token indices, and whether the answer starts
        or ends strictly inside a token.

    Raises:
        InputError: the answer covers no token, or its characters differ from the stored
            context's tokens (the answers file does not belong to this store).
    """
    starts, ends = view.spans[:, 0], view.spans[:, 1]
    first = int(np.searchsorted(ends, answer.start, side="right"))  # first token ending after the start
    last = int(np.searchsorted(starts, answer.end, side="left")) - 1  # last token starting before the end
    if first > last:
        raise question.error(f"{answer.text!r} at characters {answer.start}:{answer.end} covers no token "
                             f"of the stored context ({len(view.tokens)} tokens)")
    for k in range(first, last + 1):  # each covered character must be the stored text's
        a, b = max(int(starts[k]), answer.start), min(int(ends[k]), answer.end)
        if view.tokens[k][a - starts[k]:b - starts[k]] != answer.text[a - answer.start:b - answer.start]:
            raise question.error(f"{answer.text!r} at characters {answer.start}:{answer.end} differs from "
                                 f"the stored context, whose token {k} is {view.tokens[k]!r} at "
                                 f"{starts[k]}:{ends[k]}: is this the answers file of this store?")
    return first, last, bool(starts[first] < answer.start or ends[last] > answer.end)


# ---------------------------------------------------------------------------- dataset and batches

class ReaderDataset(torch.utils.data.Dataset):
    """``dataset[i]``: question i with its vectors and first answer's token span.

    Args:
        cache: a store of SQuAD-style records.
        questions: from :func:`read_answers`, e.g. ``read_answers("dev-v2.0.json")``; every
            question id must be in the cache (filter with ``q.qid in cache`` to take a subset).
        context_field, question_field: the store's field names.

    Items are dicts: ``id``; ``context`` ``(n_layers_kept, n_context_tokens, dim)`` and
    ``question`` ``(n_layers_kept, n_question_tokens, dim)`` tensors (no layer axis for a mixed
    store); ``answer_start``, ``answer_end`` (inclusive token indices, -1 when unanswerable),
    ``inside_token``, ``answerable``. Pair it with :func:`reader_collate`.
    """

    def __init__(self, cache: EmbeddingCache, questions: Iterable[QuestionAnswers], *,
                 context_field: str = "context", question_field: str = "question"):
        missing = {context_field, question_field} - set(cache.fields)
        if missing:
            raise ValueError(f"the store has fields {cache.fields}, not {sorted(missing)}")
        self.cache, self.context_field, self.question_field = cache, context_field, question_field
        self.questions = list(questions)
        for q in self.questions:
            if q.qid not in cache:
                raise q.error(f"question id {q.qid!r} is not in the cache (built from "
                              f"{cache.manifest['input']['name']})", "id")

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        q = self.questions[i]
        vectors = self.cache.lookup_record(q.qid)  # field → vectors, the whole record in one call
        start, end, inside = -1, -1, False
        if q.answers:
            start, end, inside = answer_token_span(self.cache.tokens(q.qid, self.context_field), q, q.answers[0])
        return {"id": q.qid, "context": torch.from_numpy(vectors[self.context_field]),
                "question": torch.from_numpy(vectors[self.question_field]),
                "answer_start": start, "answer_end": end, "inside_token": inside, "answerable": bool(q.answers)}


def reader_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`ReaderDataset` items, padding each field's token axis with zeros.

    Returns:
        ``ids``; ``context`` ``(batch, n_layers_kept, context_time, dim)`` and ``context_mask``
        ``(batch, context_time)``; ``question`` and ``question_mask`` likewise (no layer axis for
        a mixed store); ``answer_start``, ``answer_end`` ``(batch,)`` int64 (inclusive, -1 when
        unanswerable); ``inside_token``, ``answerable`` ``(batch,)`` bool.
    """
    context = pad_collate([(item["id"], item["context"]) for item in items])
    question = pad_collate([(item["id"], item["question"]) for item in items])
    batch = {"ids": context["ids"], "context": context["vectors"], "context_mask": context["mask"],
             "question": question["vectors"], "question_mask": question["mask"]}
    for key, dtype in (("answer_start", torch.int64), ("answer_end", torch.int64),
                       ("inside_token", torch.bool), ("answerable", torch.bool)):
        batch[key] = torch.tensor([item[key] for item in items], dtype=dtype)
    return batch
