"""Stores and inputs in object storage, against an S3-compatible server (moto) that the tests start
on 127.0.0.1: a run over two workers writes the store a local run writes, lookups fetch only the
objects they need, a killed run resumes, and no credential is ever recorded."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import s3fs
from moto.server import ThreadedMotoServer

from cache_builder import open_cache
from tests.test_scale_out import SETTINGS, build, corpus, store_arrays

REPO = Path(__file__).resolve().parent.parent
ACCESS_KEY, SECRET_KEY = "AKIAELMOCACHETEST0001", "elmo-cache-secret-that-is-never-recorded"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory):
    """A moto S3 server on loopback, its address and test credentials in the environment (which
    worker processes and subprocesses inherit), and a bucket."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    fs.mkdir("bucket")
    yield fs
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


def test_a_store_in_s3_from_two_workers_reads_back_and_records_no_credential(tmp_path: Path, s3, model_files):
    text = corpus(tmp_path / "in.txt", 400)
    s3.put(str(text), "bucket/in.txt")
    local = build(text, tmp_path / "local.zarr", model_files)
    remote = build("s3://bucket/in.txt", "s3://bucket/two.zarr", model_files, workers=2)
    for manifest in (local, remote):  # model files are recorded relative to a local store only
        manifest["model"].update(options=None, weights=None)
    assert remote == local
    assert store_arrays("s3://bucket/two.zarr") == store_arrays(tmp_path / "local.zarr")
    recorded = json.dumps(remote) + s3.cat("bucket/two.zarr/zarr.json").decode()
    assert ACCESS_KEY not in recorded and SECRET_KEY not in recorded

    requests: list[str] = []

    class Requests(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            requests.append(record.getMessage())

    with open_cache("s3://bucket/two.zarr") as cache, open_cache(str(tmp_path / "local.zarr")) as reference:
        handler = Requests()
        logging.getLogger("werkzeug").addHandler(handler)
        try:
            got = cache.lookup("7")
        finally:
            logging.getLogger("werkzeug").removeHandler(handler)
        assert (got == reference.lookup("7")).all()
    vector_objects = {r.split()[6] for r in requests if "/vectors/" in r and '"GET' in r}
    n_objects = len(s3.find("bucket/two.zarr/vectors"))
    assert 1 <= len(vector_objects) <= 2 < n_objects  # the shard holding "7", not the whole array


def test_a_killed_run_into_s3_resumes(tmp_path: Path, s3, model_files):
    text = corpus(tmp_path / "in.txt", 3000, seed=3)
    build(text, tmp_path / "clean.zarr", model_files)
    options, weights = map(str, model_files)
    args = [sys.executable, str(REPO / "cli.py"), "precompute", str(text), "-o", "s3://bucket/killed.zarr",
            "--tokenizer", SETTINGS["tokenizer"], "--task-tokens", str(SETTINGS["task_tokens"]),
            "--max-tokens", "64", "--options", options, "--weights", weights, "-q"]
    proc = subprocess.Popen(args, cwd=REPO, start_new_session=True)
    deadline = time.time() + 180
    while proc.poll() is None and time.time() < deadline:
        s3.invalidate_cache()
        if len(s3.find("bucket/killed.zarr/task_done")) - 1 >= 5:  # (its zarr.json is one object)
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run was killed, not finished"
    with pytest.raises(Exception, match="incomplete|is writing"):
        open_cache("s3://bucket/killed.zarr")
    subprocess.run(args, cwd=REPO, check=True)
    assert store_arrays("s3://bucket/killed.zarr") == store_arrays(tmp_path / "clean.zarr")
    s3.invalidate_cache()
    assert not s3.exists("bucket/killed.zarr.lock")
