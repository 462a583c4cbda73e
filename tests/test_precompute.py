"""precompute end to end: exact vectors, SQuAD (en, zh), dedup, long documents, both backends,
layer choices, determinism, dry run, bad inputs through the whole pipeline."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cache_builder import open_cache
from cache_builder.build.engine import PrecomputeSettings, dry_run, precompute
from cache_builder.build.inputs import InputError, default_rejects_path
from cache_builder.layers import LayerSpec, parse_layer_spec
from cache_builder.store import StoreError
from cli import main
from elmo import load_bilm
from tests.cache_models import load
from tests.test_inputs import BAD_JSONL, GOOD_AFTER, GOOD_BEFORE, make_squad, write_lines

REPO = Path(__file__).resolve().parent.parent


LONG_LINES = [" ".join(f"t{(i * 7 + j) % 50}" for j in range(5 + i % 40)) + " ." for i in range(60)]


def run(input_path: Path, store: Path, files: tuple[Path, Path], **settings) -> dict:
    fmt, device = settings.pop("format", None), settings.pop("device", None)
    spec = settings.pop("layers", LayerSpec((0, 1, 2)))
    return precompute(str(input_path), str(store), load(files), PrecomputeSettings(spec, **settings),
                      format=fmt, device=device, model_files=tuple(map(str, files)), progress=False)


def test_fixture_sentences_give_the_stateless_biLM_output(elmo_fixture: Path, fixture_sentences, tmp_path: Path):
    sentences = [s for group in fixture_sentences for s in group]
    text = tmp_path / "sentences.txt"
    text.write_text("".join(" ".join(s) + "\n" for s in sentences), encoding="utf-8")
    files = (elmo_fixture / "options.json", elmo_fixture / "lm_weights.hdf5")
    run(text, tmp_path / "s.zarr", files, layers=parse_layer_spec(3, layers="0,1,2"), dtype="float32",
        tokenizer="whitespace")
    bilm = load_bilm(*files)
    with open_cache(str(tmp_path / "s.zarr")) as cache:
        assert len(cache) == len(sentences)
        for i, sentence in enumerate(sentences):
            expected = bilm.embed([sentence]).layers[:, 0].numpy()  # (3, n_tokens, 32)
            got = cache.lookup(str(i))
            assert got.shape == expected.shape and got.dtype == np.float32
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
            assert cache.tokens(str(i)).tokens == sentence


def _answer_tokens(spans: np.ndarray, start: int, end: int) -> list[int]:
    return [i for i, (a, b) in enumerate(spans.tolist()) if a < end and b > start]


@pytest.mark.parametrize("language,tokenizer", [("en", "en"), ("zh", "zh")])
def test_squad_every_id_found_contexts_stored_once_answers_map_to_tokens(
        tmp_path: Path, model_files, language: str, tokenizer: str):
    squad = make_squad(3, language=language, articles=2, paragraphs=3, questions=8)
    path = tmp_path / "train.json"
    path.write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    manifest = run(path, tmp_path / "s.zarr", model_files, tokenizer=tokenizer)
    cache = open_cache(str(tmp_path / "s.zarr"))
    paragraphs = [p for article in squad["data"] for p in article["paragraphs"]]
    questions = [(p, qa) for p in paragraphs for qa in p["qas"]]
    assert len(cache) == len(questions) == manifest["counts"]["documents"]
    distinct_questions = {qa["question"] for _, qa in questions}
    assert manifest["counts"]["segments"] == len(paragraphs) + len(distinct_questions)
    context_segments: dict[str, set[int]] = {}
    for paragraph, qa in questions:
        assert qa["id"] in cache
        segments = cache.segments(qa["id"])
        context_segments.setdefault(paragraph["context"], set()).add(segments["context"])
        vectors = cache.lookup_record(qa["id"])
        assert set(vectors) == {"context", "question"}
        view = cache.tokens(qa["id"], "context")
        assert vectors["context"].shape == (3, len(view.tokens), 16)
        answer = qa["answers"][0]
        start, end = answer["answer_start"], answer["answer_start"] + len(answer["text"])
        covered = _answer_tokens(view.spans, start, end)
        assert covered, "the answer maps to tokens"
        a, b = view.spans[covered[0]][0], view.spans[covered[-1]][1]
        assert paragraph["context"][a:b] == answer["text"]
        assert "".join(view.tokens[covered[0]: covered[-1] + 1]) == answer["text"].replace(" ", "")
    assert all(len(s) == 1 for s in context_segments.values()), "each context is stored once"


def test_zarr_and_hdf5_stores_give_identical_lookups(tmp_path: Path, model_files):
    squad = tmp_path / "train.json"
    squad.write_text(json.dumps(make_squad(1, questions=4)), encoding="utf-8")
    run(squad, tmp_path / "s.zarr", model_files)
    run(squad, tmp_path / "s.h5", model_files)
    with open_cache(str(tmp_path / "s.zarr")) as z, open_cache(str(tmp_path / "s.h5")) as h:
        assert z.info()["backend"]["format"] == "zarr" and h.info()["backend"]["format"] == "hdf5"
        assert list(z) == list(h)
        for doc_id in z:
            for field, array in z.lookup_record(doc_id).items():
                assert array.dtype == np.float16
                np.testing.assert_array_equal(array, h.lookup(doc_id, field))
                assert z.tokens(doc_id, field) .tokens == h.tokens(doc_id, field).tokens


def test_same_input_gives_byte_identical_vectors(tmp_path: Path, model_files):
    text = write_lines(tmp_path / "in.txt", ["a b c d .", "e f g .", "a b c d ."] * 20)
    for name in ("one.zarr", "two.zarr"):
        run(text, tmp_path / name, model_files, tokenizer="whitespace", task_tokens=40, batch_tokens=64)
    one, two = open_cache(str(tmp_path / "one.zarr")), open_cache(str(tmp_path / "two.zarr"))
    for name in one.store.names():
        assert one.store.read(name).tobytes() == two.store.read(name).tobytes(), name
    assert one.info()["counts"]["segments"] == 2  # identical lines share one segment


def test_long_document_is_split_and_stored_contiguously(tmp_path: Path, model_files):
    sentences = [" ".join(f"w{i}_{j}" for j in range(7)) + " ." for i in range(40)]  # 320 tokens
    text = write_lines(tmp_path / "in.txt", [" ".join(sentences), "short one ."])
    run(text, tmp_path / "s.zarr", model_files, tokenizer="whitespace", max_tokens=50)
    cache = open_cache(str(tmp_path / "s.zarr"))
    vectors = cache.lookup("0")
    assert vectors.shape == (3, 320, 16)
    assert cache.tokens("0").tokens == " ".join(sentences).split()
    # Each 48-token piece ran on its own: the first piece's vectors are that piece's alone.
    bilm = load(model_files)
    first = bilm.embed([cache.tokens("0").tokens[:48]]).layers[:, 0].numpy()
    np.testing.assert_allclose(vectors[:, :48], first, atol=2e-3, rtol=1e-2)


def test_10000_token_document_and_200_character_token_lose_nothing(tmp_path: Path, model_files):
    """A huge document runs in default-size pieces (no memory blow-up, no truncation); a
    200-character token is stored whole (the model reads its first 48 bytes)."""
    giant = "x" * 200
    sentences = [" ".join(f"t{i}_{j}" for j in range(19)) + " ." for i in range(500)]  # 10,000 tokens
    jsonl = write_lines(tmp_path / "in.jsonl", [{"id": "huge", "text": " ".join(sentences)},
                                                {"id": "long-token", "text": f"a {giant} b ."}])
    run(jsonl, tmp_path / "s.zarr", model_files, tokenizer="whitespace")
    cache = open_cache(str(tmp_path / "s.zarr"))
    assert cache.lookup("huge").shape == (3, 10_000, 16)
    assert cache.tokens("huge").tokens == " ".join(sentences).split()
    view = cache.tokens("long-token")
    assert view.tokens == ["a", giant, "b", "."] and tuple(view.spans[1]) == (2, 202)
    expected = load(model_files).embed([["a", giant, "b", "."]]).layers[:, 0].numpy()
    np.testing.assert_allclose(cache.lookup("long-token"), expected, atol=2e-3, rtol=1e-2)


def test_layer_subset_and_mix_stores(tmp_path: Path, model_files):
    text = write_lines(tmp_path / "in.txt", ["the cat sat .", "a dog ran away ."])
    full = run(text, tmp_path / "full.zarr", model_files, tokenizer="whitespace", dtype="float32")
    run(text, tmp_path / "sub.zarr", model_files, tokenizer="whitespace", dtype="float32",
        layers=parse_layer_spec(3, layers="0,2"))
    run(text, tmp_path / "mix.zarr", model_files, tokenizer="whitespace", dtype="float32",
        layers=parse_layer_spec(3, mix_logits="0.5,-1,2", gamma=0.7))
    assert full["layers"] == {"layers": [0, 1, 2]}
    whole, sub, mix = (open_cache(str(tmp_path / n)) for n in ("full.zarr", "sub.zarr", "mix.zarr"))
    s = torch.softmax(torch.tensor([0.5, -1, 2.0]), 0).numpy()
    assert mix.info()["layers"]["mix"]["weights"] == pytest.approx(s.tolist())
    for doc_id in whole:
        layers = whole.lookup(doc_id)
        np.testing.assert_array_equal(sub.lookup(doc_id), layers[[0, 2]])
        np.testing.assert_allclose(mix.lookup(doc_id), 0.7 * np.einsum("l,ltd->td", s, layers), atol=1e-6)
        assert mix.lookup(doc_id).ndim == 2
    # layer 0 is stored once per distinct token, at projection width
    assert whole.store.length("token_layer") == whole.info()["counts"]["distinct_tokens"] == 8
    assert whole.store.read("token_layer").shape[1] == 8
    assert "token_layer" not in mix.store.names()


def test_mix_of_selected_layers(tmp_path: Path, model_files):
    text = write_lines(tmp_path / "in.txt", ["the cat sat .", "a dog ran away ."])
    full = tmp_path / "full.zarr"
    run(text, full, model_files, tokenizer="whitespace", dtype="float32")
    spec = parse_layer_spec(3, layers="2,1", mix="0.25,0.75", gamma=2.0)
    assert spec.layers == (1, 2) and spec.mix == (0.25, 0.75)
    manifest = run(text, tmp_path / "mix12.zarr", model_files, tokenizer="whitespace", dtype="float32", layers=spec)
    assert manifest["layers"] == {"mix": {"weights": [0.25, 0.75], "gamma": 2.0, "layers": [1, 2]}}
    with open_cache(str(full)) as whole, open_cache(str(tmp_path / "mix12.zarr")) as mix:
        assert mix.spec == spec
        for doc_id in whole:
            layers = whole.lookup(doc_id)
            np.testing.assert_allclose(mix.lookup(doc_id), 2.0 * (0.25 * layers[1] + 0.75 * layers[2]), atol=1e-6)
    assert parse_layer_spec(3, layers="0,1", mix="0.5,0.5").to_manifest() == {"mix": {"weights": [0.5, 0.5],
                                                                                      "gamma": 1.0}}


def test_parse_layer_spec_errors():
    assert parse_layer_spec(3, mix="0.2,0.3,0.5").mix == (0.2, 0.3, 0.5)
    for kwargs, message in [({"layers": "0,3"}, "layers 0..2"), ({"mix": "0.5,0.6,0.1"}, "sum to 1"),
                            ({"mix_logits": "1,2"}, "needs 3 weights"), ({"layers": "x"}, "layer numbers"),
                            ({"mix": "1,0,0", "mix_logits": "1,0,0"}, "one of"),
                            ({"layers": "0", "mix": "0.5,0.5"}, r"needs 1 weights \(one per layer of --layers 0\)"),
                            ({"mix": "0.5,0.5"}, "to mix fewer, name them with --layers"),
                            ({"layers": "1,1"}, "named twice")]:
        with pytest.raises(ValueError, match=message):
            parse_layer_spec(3, **kwargs)


def test_rerun_with_other_arguments_refuses_unless_overwrite(tmp_path: Path, model_files):
    text = write_lines(tmp_path / "in.txt", ["the cat sat ."])
    first = run(text, tmp_path / "s.zarr", model_files, tokenizer="whitespace")
    assert run(text, tmp_path / "s.zarr", model_files, tokenizer="whitespace") == first  # complete: kept
    with pytest.raises(StoreError, match="other arguments.*--overwrite"):
        run(text, tmp_path / "s.zarr", model_files, tokenizer="whitespace", dtype="float32")
    spec = PrecomputeSettings(LayerSpec((0, 1, 2)), tokenizer="whitespace", dtype="float32")
    manifest = precompute(str(text), str(tmp_path / "s.zarr"), load(model_files), spec, overwrite=True,
                          progress=False)
    assert manifest["dtype"] == "float32"


def test_bfloat16_compute_is_recorded_close_to_float32_and_never_mixed(tmp_path: Path, model_files):
    text = write_lines(tmp_path / "in.txt", LONG_LINES)
    exact = run(text, tmp_path / "f32.zarr", model_files, tokenizer="whitespace", dtype="float32")
    fast = run(text, tmp_path / "bf16.zarr", model_files, tokenizer="whitespace", dtype="float32",
               compute_dtype="bfloat16")
    assert (exact["compute_dtype"], fast["compute_dtype"]) == ("float32", "bfloat16")
    assert fast["model"]["fingerprint"] == exact["model"]["fingerprint"]  # the weights, as loaded
    worst = 0.0
    with open_cache(str(tmp_path / "f32.zarr")) as f32, open_cache(str(tmp_path / "bf16.zarr")) as bf16:
        for doc_id in f32:
            reference = f32.lookup(doc_id)
            worst = max(worst, float(np.abs(bf16.lookup(doc_id) - reference).max() / np.abs(reference).max()))
    assert 0 < worst < 0.05  # bfloat16 really ran, and stays within a few of its 2^-8 roundings
    with pytest.raises(StoreError, match="other arguments"):  # a store never mixes precisions
        run(text, tmp_path / "f32.zarr", model_files, tokenizer="whitespace", dtype="float32",
            compute_dtype="bfloat16")


def test_float16_compute_needs_a_gpu(tmp_path: Path, model_files):
    text = write_lines(tmp_path / "in.txt", ["the cat sat ."])
    with pytest.raises(ValueError, match="float16 needs a GPU"):
        run(text, tmp_path / "s.zarr", model_files, tokenizer="whitespace", compute_dtype="float16",
            device="cpu")
    assert not (tmp_path / "s.zarr").exists()


def test_dry_run_counts_and_estimates(tmp_path: Path, model_files):
    squad = tmp_path / "train.json"
    data = make_squad(2, articles=1, paragraphs=2, questions=5)
    squad.write_text(json.dumps(data), encoding="utf-8")
    report = dry_run(str(squad), load(model_files), PrecomputeSettings(LayerSpec((0, 1, 2))))
    assert report.documents == 10
    assert report.segments == 2 + len({qa["question"] for p in data["data"][0]["paragraphs"] for qa in p["qas"]})
    assert report.tokens < report.tokens_in_documents
    est = report.estimates
    assert est["all"]["float32"] > est["all"]["float16"] > est["0,1"]["float16"] > est["mix"]["float16"]
    assert "segments after dedup" in report.format()
    assert not list(tmp_path.glob("*.zarr"))


@pytest.mark.parametrize("case", list(BAD_JSONL))
def test_bad_input_stops_precompute_with_file_line_reason(tmp_path: Path, model_files, case: str):
    bad, field, reason = BAD_JSONL[case]
    path = write_lines(tmp_path / "in.jsonl", [GOOD_BEFORE, bad, GOOD_AFTER])
    with pytest.raises(InputError) as info:
        run(path, tmp_path / "s.zarr", model_files)
    assert str(info.value).startswith(f"{path}: line 2: ") and reason in str(info.value)
    assert not (tmp_path / "s.zarr").exists()  # it failed before any vector: nothing left to block the fix


@pytest.mark.parametrize("case", list(BAD_JSONL))
def test_bad_input_skipped_keeps_every_valid_record(tmp_path: Path, model_files, case: str):
    bad, field, reason = BAD_JSONL[case]
    path = write_lines(tmp_path / "in.jsonl", [GOOD_BEFORE, bad, GOOD_AFTER])
    manifest = run(path, tmp_path / "s.zarr", model_files, on_error="skip")
    assert manifest["counts"]["rejected"] == 1
    cache = open_cache(str(tmp_path / "s.zarr"))
    assert sorted(cache) == ["g1", "g2"]
    assert cache.tokens("g2").tokens == ["Good", "two", "."]
    [reject] = [json.loads(line) for line in default_rejects_path(path).read_text(encoding="utf-8").splitlines()]
    assert reject["line"] == 2 and reason in reject["reason"]


def test_zarr_store_at_an_fsspec_url(tmp_path: Path, model_files):
    text = write_lines(tmp_path / "in.txt", ["a b c .", "d e ."])
    url = f"memory://{tmp_path.name}/s.zarr"
    run(text, url, model_files, tokenizer="whitespace")
    with open_cache(url) as cache:
        assert len(cache) == 2 and cache.lookup("1").shape == (3, 3, 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_run_matches_the_cpu_store(tmp_path: Path, model_files):
    text = write_lines(tmp_path / "in.txt", LONG_LINES)
    settings = PrecomputeSettings(LayerSpec((0, 1, 2)), tokenizer="whitespace", dtype="float32", batch_tokens=64)
    for device, name in (("cpu", "cpu.zarr"), ("cuda", "gpu.zarr")):
        precompute(str(text), str(tmp_path / name), load(model_files), settings, device=device, progress=False)
    cpu, gpu = open_cache(str(tmp_path / "cpu.zarr")), open_cache(str(tmp_path / "gpu.zarr"))
    for doc_id in cpu:
        np.testing.assert_allclose(gpu.lookup(doc_id), cpu.lookup(doc_id), atol=1e-4)


def test_bad_lines_of_a_text_file_skipped_keep_the_other_ids(tmp_path: Path, model_files):
    path = write_lines(tmp_path / "in.txt", ["first line .", b"caf\xe9 au lait", "", "last line ."])
    with pytest.raises(InputError, match=rf"{path}: line 2: .*UTF-8"):
        run(path, tmp_path / "raise.zarr", model_files, tokenizer="whitespace")
    manifest = run(path, tmp_path / "s.zarr", model_files, tokenizer="whitespace", on_error="skip")
    assert manifest["counts"]["rejected"] == 1  # the invalid line; the blank one is skipped
    cache = open_cache(str(tmp_path / "s.zarr"))
    assert sorted(cache) == ["0", "3"]  # ids stay the line indices of AllenNLP's elmo command
    assert cache.tokens("3").tokens == ["last", "line", "."]


def test_gzip_and_standard_input_through_the_command_line(tmp_path: Path, model_files, monkeypatch):
    lines = [{"id": f"d{i}", "text": line} for i, line in enumerate(LONG_LINES[:12])]
    plain = write_lines(tmp_path / "in.jsonl", lines)
    (tmp_path / "in.jsonl.gz").write_bytes(gzip.compress(plain.read_bytes()))
    model = ["--options", str(model_files[0]), "--weights", str(model_files[1]), "--tokenizer", "whitespace", "-q"]
    cli = [sys.executable, str(REPO / "cli.py"), "precompute"]
    monkeypatch.chdir(tmp_path)
    assert main(["precompute", "in.jsonl", *model]) == 0
    assert main(["precompute", "in.jsonl.gz", "-o", "gz.zarr", *model]) == 0
    with open(plain, "rb") as stdin:  # a real pipe, in a process of its own
        subprocess.run([*cli, "-", "-o", "stdin.zarr", *model], cwd=tmp_path, check=True, stdin=stdin)
    want = open_cache(str(tmp_path / "in.elmo.zarr"))
    for name in ("gz.zarr", "stdin.zarr"):
        got = open_cache(str(tmp_path / name))
        assert list(got) == list(want) and got.info()["counts"] == want.info()["counts"]
        for doc_id in want:
            np.testing.assert_array_equal(got.lookup(doc_id), want.lookup(doc_id))
    assert open_cache(str(tmp_path / "stdin.zarr")).info()["input"]["fingerprint"] == want.info()["input"]["fingerprint"]
    bad = subprocess.run([*cli, "-", "-o", "bad.zarr", *model], cwd=tmp_path, capture_output=True, text=True,
                         input='{"id": "a", "text": "fine ."}\n{"id": "b", "text": 3}\n')
    assert bad.returncode == 2 and bad.stderr.startswith("error: <stdin>: line 2: field text: must be a string")
