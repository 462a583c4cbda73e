"""elmo-cache command line: parses arguments and calls the library, nothing else.

Each subcommand is a pair: ``_add_<name>(subparsers)`` declares its arguments and sets
``run`` to the function that calls the library.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import TextIO


def _read_sentences(stream: TextIO) -> Iterator[list[str]]:
    for line in stream:
        yield line.split()


def _add_model(p: argparse.ArgumentParser, default: str = "the bundled default model",
               allennlp_names: tuple[str, ...] = ()) -> None:
    p.add_argument("--model", metavar="DIR", help="a model folder: one options JSON + one weights HDF5, any names "
                                                  "(ours, bilm-tf's, AllenNLP's downloads), or an ELMoForManyLangs "
                                                  f"directory such as zhs.model (default: {default})")
    options, weights = ("--options", *allennlp_names[:1]), ("--weights", *allennlp_names[1:])
    p.add_argument(*options, dest="options", help="a published options.json, with --weights, instead of --model")
    p.add_argument(*weights, dest="weights", help="the published weights.hdf5 that goes with --options")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")


def _add_cluster(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", nargs="?", const="auto",
                       help="run on a local Dask cluster of N worker processes (alone: one per GPU, "
                            "else one per core)")
    where.add_argument("--scheduler", help="run on the Dask cluster whose scheduler is at ADDRESS")
    p.add_argument("--cluster-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="with --scheduler: how long to wait for it to answer and for a first worker "
                        "(default 60)")


def _add_compute_dtype(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compute-dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="model precision: float32 (default, matches the published outputs); "
                        "bfloat16 on a GPU or a CPU with bf16 instructions; float16 on a GPU")


def _run_embed(args: argparse.Namespace) -> int:
    from elmo.runtime import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    bilm, _ = _load_model(args)
    bilm = bilm.to(device, resolve_dtype(args.compute_dtype, device))
    stream = open(args.input, encoding="utf-8") if args.input != "-" else sys.stdin
    with stream:
        batch: list[list[str]] = []
        line_no = 0

        def flush() -> None:
            out = bilm.embed(batch)
            for b, sentence in enumerate(batch):
                vectors = out.layers[:, b, : len(sentence)]
                norms = ", ".join(f"{v:.3f}" for v in vectors.float().norm(dim=-1).mean(dim=-1).tolist())
                summary = f"mean norm per layer [{norms}]" if sentence else "empty line: no vectors"
                print(f"{line_no - len(batch) + b + 1}\t{len(sentence)} tokens\t"
                      f"shape {tuple(vectors.shape)}\t{summary}")
            batch.clear()

        for sentence in _read_sentences(stream):
            line_no += 1
            batch.append(sentence)
            if len(batch) == args.batch_size:
                flush()
        if batch:
            flush()
    return 0


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("embed", help="embed whitespace-tokenized sentences and print their shapes",
                       description="Smoke tool: one sentence per line (tokens separated by spaces); "
                                   "prints (n_layers, n_tokens, dim) and mean vector norms per layer.")
    p.add_argument("input", nargs="?", default="-", help="text file, or - for standard input (default)")
    _add_model(p)
    p.add_argument("--batch-size", type=int, default=64)
    _add_device(p)
    _add_compute_dtype(p)
    p.set_defaults(run=_run_embed)


def _add_tokenizer(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--tokenizer", default=default,
                   help="en, zh (jieba), whitespace, or auto: jieba for runs of Han characters, en for "
                        "the rest" + (f" (default {default})" if default else
                                      " (default: the one the model records, else auto)"))
    p.add_argument("--user-dict", action="append", default=[],
                   help="jieba user dictionary, 'word [freq] [tag]' per line (repeatable)")


def _run_vocab(args: argparse.Namespace) -> int:
    from elmo.tokenize import choose_tokenizer
    from elmo.vocab import make_vocab

    stats = make_vocab(args.corpus, args.out, choose_tokenizer(args.tokenizer, args.user_dict),
                       segmented_out=args.segmented_out, min_count=args.min_count, max_size=args.max_size)
    print(f"{stats.n_tokens} tokens in {stats.n_sentences} sentences, {stats.n_types} distinct; "
          f"wrote {stats.vocab_size} vocabulary entries to {args.out}")
    return 0


def _add_vocab(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vocab", help="segment raw text and build a training vocabulary",
                       description="Segments raw text (jieba for Chinese), optionally writes it one "
                                   "sentence per line, and writes a vocabulary: <S>, </S>, <UNK>, then "
                                   "tokens by descending count, and the tokenizer beside it "
                                   "(VOCAB.tokenizer.json, which train and export carry to the model). "
                                   "Prints the token count training needs.")
    p.add_argument("corpus", nargs="+", help="raw text files, one sentence (or paragraph) per line")
    p.add_argument("--out", required=True, help="vocabulary file to write")
    _add_tokenizer(p, "auto")
    p.add_argument("--segmented-out", help="folder for the segmented files (same names), the input of train")
    p.add_argument("--min-count", type=int, default=1, help="drop tokens seen fewer times (default 1)")
    p.add_argument("--max-size", type=int, help="keep at most this many entries, special tokens included")
    p.set_defaults(run=_run_vocab)


def _run_train(args: argparse.Namespace) -> int:
    from elmo.train import train

    result = train(args.train, args.save_dir, config=args.config, vocab=args.vocab, heldout=args.heldout,
                   resume=args.resume, init_from=args.init_from, max_steps=args.max_steps,
                   device=args.device, progress=not args.no_progress)
    heldout = f"; held-out perplexity {result.heldout}" if result.heldout else ""
    print(f"step {result.step} (epoch {result.epoch}, window {result.window}): train loss "
          f"{result.train_loss:.4f}, {result.tokens_per_second:.0f} tokens/s{heldout}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train (or fine-tune, or resume) forward and backward LMs",
                       description="Trains a biLM on segmented text (one sentence per line, tokens "
                                   "separated by spaces); checkpoints go to --save-dir.")
    p.add_argument("--train", action="append", required=True, help="glob of training files (repeatable)")
    p.add_argument("--heldout", action="append", default=[],
                   help="glob of held-out files (repeatable): perplexity, best model, early stopping")
    p.add_argument("--vocab", help="training vocabulary (from the vocab command); not with --init-from")
    p.add_argument("--config", help="architecture and training config (elmo/schemas/train_config.schema.json)")
    p.add_argument("--save-dir", required=True, help="folder for checkpoint.pt and best.pt")
    p.add_argument("--resume", action="store_true", help="continue from --save-dir's last checkpoint")
    p.add_argument("--init-from", help="exported model folder to fine-tune (keeps its vocabulary)")
    p.add_argument("--max-steps", type=int, help="total number of steps (overrides the config)")
    _add_device(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_train, resume_hint=": run the same command with --resume to continue from the "
                                                "last checkpoint")


def _run_perplexity(args: argparse.Namespace) -> int:
    from elmo.train import perplexity_of

    ppl = perplexity_of(args.save_dir, args.data, device=args.device)
    print(f"perplexity over {ppl.n_tokens} tokens: {ppl}")
    return 0


def _add_perplexity(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("perplexity", help="forward, backward and mean perplexity of a trained model")
    p.add_argument("--save-dir", required=True, help="training folder (its best.pt, else checkpoint.pt)")
    p.add_argument("--data", action="append", required=True, help="glob of segmented text (repeatable)")
    _add_device(p)
    p.set_defaults(run=_run_perplexity)


def _run_export(args: argparse.Namespace) -> int:
    from elmo.train import export

    out = export(args.save_dir, args.out_dir)
    print(f"wrote {out}/options.json, weights.hdf5 (published layout), vocab.txt, softmax.hdf5")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a trained model as options.json + weights.hdf5")
    p.add_argument("--save-dir", required=True, help="training folder (its best.pt, else checkpoint.pt)")
    p.add_argument("--out-dir", required=True, help="model folder to write")
    p.set_defaults(run=_run_export)


def _load_model(args: argparse.Namespace):
    """--model, or --options/--weights, else the bundled default model; returns (bilm, its record)."""
    from elmo.models import load_model

    return load_model(args.model, options=args.options, weights=args.weights)


def _default_store(input_path: str) -> str:
    from cache_builder.build.inputs import is_stream

    if input_path == "-" or is_stream(input_path):
        raise ValueError(f"reading {'standard input (-)' if input_path == '-' else input_path}, a stream: "
                         "name the store with -o")
    return os.path.splitext(input_path.removesuffix(".gz"))[0] + ".elmo.zarr"


def _run_precompute(args: argparse.Namespace) -> int:
    from cache_builder.build.engine import PrecomputeSettings, dry_run, precompute
    from cache_builder.layers import parse_layer_spec
    from elmo.models import model_folder
    from elmo.tokenize import choose_tokenizer

    bilm, files = _load_model(args)
    spec = parse_layer_spec(bilm.options.lstm.n_layers + 1, layers=args.layers, mix=args.mix,
                            mix_logits=args.mix_logits, gamma=args.gamma)
    tokenizer = choose_tokenizer(args.tokenizer, args.user_dict, model_dir=model_folder(files))
    settings = PrecomputeSettings(
        layers=spec, dtype=args.dtype, compute_dtype=args.compute_dtype, tokenizer=tokenizer,
        max_tokens=args.max_tokens, batch_tokens=args.batch_tokens, task_tokens=args.task_tokens,
        input_format=args.input_format, id_field=args.id_field,
        fields=tuple(args.fields.split(",")) if args.fields else None, on_error=args.on_error)
    if args.dry_run:
        print(dry_run(args.input, bilm, settings).format())
        return 0
    store = args.output or _default_store(args.input)
    manifest = precompute(args.input, store, bilm, settings, device=args.device, format=args.format,
                          overwrite=args.overwrite, model_files=files, rejects_path=args.rejects,
                          progress=not args.quiet, workers=args.workers, scheduler=args.scheduler,
                          cluster_timeout=args.cluster_timeout)
    counts = manifest["counts"]
    print(f"{store}: {counts['documents']} documents, {counts['segments']} segments, "
          f"{counts['tokens']} tokens, {counts['rejected']} rejected records")
    return 0


def _add_precompute(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("precompute", help="embed a dataset into a Zarr or HDF5 store",
                       description="Run the biLM over every record of INPUT and write a store that "
                                   "open_cache(STORE).lookup(doc_id) reads. Re-running an interrupted "
                                   "run with the same arguments resumes it.")
    p.add_argument("input", help="JSONL, SQuAD JSON, or plain text (one document per line); "
                                 "gzip-compressed (.gz) or - for standard input")
    p.add_argument("-o", "--output", help="store path (.zarr directory, or .h5/.hdf5 file); "
                                          "default INPUT without extension + .elmo.zarr")
    p.add_argument("--layers", help="keep these layers, e.g. 0,1 (default: all); with --mix or --mix-logits, "
                                    "the layers to mix")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--mix", help="collapse with normalized weights s0,s1,s2 (ELMo eq. 1), one per layer")
    which.add_argument("--mix-logits", help="collapse with raw scalar-mix weights (softmax-normalized)")
    p.add_argument("--gamma", type=float, default=1.0, help="scale of the mix (default 1)")
    p.add_argument("--dtype", default="float16", choices=("float16", "float32", "int8"),
                   help="stored precision; int8: a float16 scale per token and layer, error at most "
                        "1/254 of that token layer's largest value")
    p.add_argument("--format", choices=("zarr", "hdf5"), help="store backend (default: from the path)")
    _add_tokenizer(p, None)
    p.add_argument("--input-format", default="auto", help="jsonl, squad, text or auto (default)")
    p.add_argument("--id-field", help="JSONL key of the document id (default id)")
    p.add_argument("--fields", help="comma-separated JSONL text fields to embed")
    p.add_argument("--max-tokens", type=int, default=512, help="split longer texts at sentence ends")
    p.add_argument("--batch-tokens", type=int,
                   help="padded tokens per model batch (default: 4,096 on a CPU; on a GPU the power of two "
                        "that half its free memory holds)")
    p.add_argument("--task-tokens", type=int,
                   help="stored tokens per task: the unit of scheduling, writing and resume "
                        "(default: a 64th of the store, 4,096 to 131,072)")
    _add_cluster(p)
    _add_device(p)
    _add_compute_dtype(p)
    p.add_argument("--on-error", default="raise", choices=("raise", "skip"),
                   help="bad records stop the run (default) or go to the rejects file")
    p.add_argument("--rejects", help="rejects file for --on-error skip (default INPUT.rejects.jsonl)")
    p.add_argument("--dry-run", action="store_true", help="count and estimate sizes; run no model")
    p.add_argument("--overwrite", action="store_true", help="replace a store written with other arguments")
    _add_model(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_precompute, resume_hint=": run the same command again to resume from the last "
                                                     "commit")


def _run_info(args: argparse.Namespace) -> int:
    from cache_builder import open_cache

    with open_cache(args.store) as cache:
        print(json.dumps(cache.info(), indent=2))
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print a store's manifest")
    p.add_argument("store")
    p.set_defaults(run=_run_info)


def _run_lookup(args: argparse.Namespace) -> int:
    from cache_builder import open_cache

    with open_cache(args.store) as cache:
        arrays = {args.field: cache.lookup(args.id, args.field)} if args.field else cache.lookup_record(args.id)
        for field, array in arrays.items():
            view = cache.tokens(args.id, field)
            print(f"{args.id}\t{field}\tshape {tuple(array.shape)}\t{array.dtype}\t{' '.join(view.tokens)}")
    return 0


def _add_lookup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lookup", help="print a document's shapes and tokens")
    p.add_argument("store")
    p.add_argument("id")
    p.add_argument("--field", help="one text field (default: all)")
    p.set_defaults(run=_run_lookup)


def _run_verify(args: argparse.Namespace) -> int:
    from cache_builder.read.verify import verify

    bilm = _load_model(args)[0] if args.model or args.options or args.weights else None
    report = verify(args.store, bilm, sample=args.sample)
    print(report.format())
    return 0 if report.ok else 1


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check every chunk, the counts, and a recomputed sample",
                       description="Reads every chunk (checksums), checks counts against the manifest, "
                                   "and recomputes a sample of segments with the model (the files "
                                   "recorded in the manifest, or --model, or --options/--weights).")
    p.add_argument("store")
    p.add_argument("--sample", type=int, default=16, help="segments to recompute (0: none)")
    _add_model(p, default="the model the manifest records")
    p.set_defaults(run=_run_verify)


def _run_export_allennlp(args: argparse.Namespace) -> int:
    from cache_builder.read.export import export_allennlp

    n = export_allennlp(args.store, args.out, args.mode)
    print(f"{args.out}: {n} sentences ({args.mode})")
    return 0


def _add_export_allennlp(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-allennlp", help="write AllenNLP elmo-command HDF5 from a store")
    p.add_argument("store")
    p.add_argument("out", help="output .hdf5")
    mode = p.add_mutually_exclusive_group()
    for name in ("all", "top", "average"):
        mode.add_argument(f"--{name}", dest="mode", action="store_const", const=name,
                          help=f"{name} layers" if name == "all" else f"the {name} layer(s)")
    p.set_defaults(run=_run_export_allennlp, mode="all")


def _run_elmo(args: argparse.Namespace) -> int:
    from cache_builder.build.elmo_command import embed_file

    bilm, files = _load_model(args)
    device = None if args.cuda_device is None else "cpu" if args.cuda_device < 0 else f"cuda:{args.cuda_device}"
    n = embed_file(args.input_file, args.output_file, args.mode, bilm, batch_size=args.batch_size, device=device,
                   forget_sentences=args.forget_sentences, use_sentence_keys=args.use_sentence_keys,
                   compute_dtype=args.compute_dtype, model_files=files, overwrite=args.overwrite,
                   progress=not args.quiet, workers=args.workers, scheduler=args.scheduler,
                   cluster_timeout=args.cluster_timeout)
    print(f"{args.output_file}: {n} sentences ({args.mode})")
    return 0


def _add_elmo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("elmo", help="AllenNLP's `allennlp elmo` command: one sentence per line to one HDF5 file",
                       description="A drop-in for `allennlp elmo`: the same arguments and the same output "
                                   "(a float32 dataset per line, keyed by its 0-based line index, and "
                                   "sentence_to_index), computed by the precompute engine: resumable (run the "
                                   "same command again), each distinct sentence once, on every GPU with --workers.")
    p.add_argument("input_file", help="one whitespace-tokenized sentence per line (a blank line is an error)")
    p.add_argument("output_file", help="the HDF5 file to write")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--all", dest="mode", action="store_const", const="all",
                      help="every layer: (3, n_tokens, dim) per sentence")
    mode.add_argument("--top", dest="mode", action="store_const", const="top", help="the top layer: (n_tokens, dim)")
    mode.add_argument("--average", dest="mode", action="store_const", const="average",
                      help="the mean of the layers: (n_tokens, dim)")
    _add_model(p, allennlp_names=("--options-file", "--weight-file"))
    p.add_argument("--batch-size", type=int, default=64,
                   help="sentences per batch, as AllenNLP counts them: batches of N x 64 padded tokens (default 64); "
                        "the vectors do not depend on it")
    p.add_argument("--cuda-device", type=int, help="GPU number, or -1 for the CPU (default: a GPU when present)")
    p.add_argument("--forget-sentences", action="store_true", help="leave out sentence_to_index")
    p.add_argument("--use-sentence-keys", action="store_true",
                   help="name each dataset by its sentence instead of its line index (sentences must be distinct)")
    _add_cluster(p)
    _add_compute_dtype(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace the unfinished run of other arguments left beside OUTPUT (OUTPUT.elmo.zarr)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_elmo, resume_hint=": run the same command again to resume")


def _run_convert_efml(args: argparse.Namespace) -> int:
    from elmo.efml.loader import convert_efml

    out = convert_efml(args.model_dir, args.out)
    print(f"wrote {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    return 0


def _add_convert_efml(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert-efml", help="convert an ELMoForManyLangs model directory to ours",
                       description="Reads an ELMoForManyLangs (HIT-SCIR) model directory such as zhs.model "
                                   "(tensors only, never running code from its pickles) and writes OUT: "
                                   "options.json, weights.hdf5, char.dic, word.dic. Loading OUT reads no "
                                   "pickle and gives the same vectors bit for bit.")
    p.add_argument("model_dir", metavar="DIR", help="the ELMoForManyLangs model directory")
    p.add_argument("out", metavar="OUT", help="the model directory to write (must not exist, or be empty)")
    p.set_defaults(run=_run_convert_efml)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elmo-cache", description=__doc__.splitlines()[0])
    parser.set_defaults(resume_hint="")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_embed, _add_precompute, _add_elmo, _add_info, _add_lookup, _add_verify, _add_export_allennlp,
                _add_convert_efml, _add_vocab, _add_train, _add_perplexity, _add_export):
        add(sub)
    return parser


def _setup_logging(quiet: bool) -> None:
    """Our own lines (the ``elmo_cache`` logger: INFO, or WARNING with ``-q``) on stderr, above
    any progress bar, with URL credentials masked; Dask's, Tornado's and Bokeh's logs never: what
    matters of them (workers started or lost, a cluster that fails) we report in our own words."""
    handler = _AboveProgressBars()
    handler.addFilter(_OwnLines())
    logging.basicConfig(format="%(message)s", handlers=[handler])
    logging.getLogger("elmo_cache").setLevel(logging.WARNING if quiet else logging.INFO)
    # A worker killed mid-run leaves a semaphore that multiprocessing's tracker process warns
    # about at exit; that process reads its warning filters from the environment.
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, (os.environ.get("PYTHONWARNINGS"),
                                                          "ignore:resource_tracker:UserWarning")))


class _AboveProgressBars(logging.StreamHandler):
    """Writes each line through tqdm, which moves a progress bar below it instead of cutting it."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


class _OwnLines(logging.Filter):
    _FOREIGN = ("distributed", "tornado", "bokeh")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in self._FOREIGN:
            return False
        from cache_builder.build.sources import redact_credentials

        record.msg, record.args = redact_credentials(record.getMessage()), None
        return True


def _failure(e: BaseException) -> str | None:
    """The one line (after "error: ") that tells a user what failed and what to do, for every
    failure they can act on; None for anything else (a bug: its traceback is the report)."""
    from cache_builder.build.distributed import ClusterError

    if isinstance(e, KeyError) and len(e.args) == 1:  # str() of a KeyError is its message in quotes
        return str(e.args[0])
    if isinstance(e, EOFError):  # a compressed file (gzip, bz2, lzma) or a pickle cut short
        return f"a file ends early ({e}): it was cut short (an interrupted download or copy?); fetch it again"
    if isinstance(e, (ValueError, KeyError, OSError, ClusterError)):
        return str(e) or type(e).__name__
    if type(e).__module__.startswith(("botocore", "aiobotocore", "aiohttp")):  # object storage, not the run
        return f"object storage failed: {e}; check the endpoint and the network, then re-run to resume"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "quiet", False))
    try:
        return args.run(args)
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback; 130 = 128 + SIGINT, as shells report it
        _quiet_shutdown()
        print(f"interrupted{args.resume_hint}", file=sys.stderr)
        return 130
    except Exception as e:
        message = _failure(e)
        if message is None:
            raise
        _quiet_shutdown()
        from cache_builder.build.sources import redact_credentials

        print(f"error: {redact_credentials(' '.join(message.split()))}", file=sys.stderr)
        return 2


def _quiet_shutdown() -> None:
    """After a run cut short (reported in its one line): storage writes left unfinished are
    asyncio tasks and coroutines that would each log "Task was destroyed but it is pending!", an
    ignored exception or a never-awaited warning at exit; expected then, and a re-run redoes them."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    sys.unraisablehook = lambda unraisable: None
    warnings.simplefilter("ignore")


if __name__ == "__main__":
    sys.exit(main())
