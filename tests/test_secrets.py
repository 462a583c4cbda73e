"""A secret is never printed: a URL holding credentials is refused for the store as for the input,
and what the command line prints (errors, log lines) masks any URL's credentials; an object store
that goes away mid-run is one line, not a chain of tracebacks. Against a moto S3 server on
127.0.0.1, as tests/test_object_storage.py runs it."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import pytest
import s3fs
from moto.server import ThreadedMotoServer

from cache_builder.build.sources import redact_credentials, refuse_credentials
from tests.test_quiet import cli, one_error_line
from tests.test_scale_out import corpus

KEY, SECRET = "AKIAELMOCACHESECRETS1", "never/printed+secret"


@pytest.fixture()
def s3_server():
    """A moto S3 server on loopback with an empty bucket of the test's own (moto keeps its buckets
    for the whole process): the filesystem, the bucket, the environment that reaches it (for
    subprocesses), and a function that stops it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    fs = s3fs.S3FileSystem(key=KEY, secret=SECRET, client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]},
                           skip_instance_cache=True)
    bucket = f"bucket-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    stopped = []

    def stop() -> None:
        if not stopped:
            server.stop()
            stopped.append(True)

    yield fs, bucket, env, stop
    stop()


@pytest.mark.parametrize("user", [f"{KEY}:{SECRET}", KEY])
def test_an_output_url_with_credentials_is_refused_and_never_printed(tmp_path: Path, model_files, s3_server,
                                                                      user):
    fs, bucket, env, _ = s3_server
    text = corpus(tmp_path / "in.txt", 20)
    run = cli(model_files, "precompute", str(text), "-o", f"s3://{user}@{bucket}/x.zarr", env=env)
    line = one_error_line(run)
    assert "output URL" in line and "credentials" in line
    assert SECRET not in run.stdout + run.stderr and KEY not in run.stdout + run.stderr
    assert fs.ls(bucket) == []  # refused before anything was written


def test_one_function_refuses_input_and_output_urls_even_with_a_slash_in_the_secret():
    for role in ("input", "output"):
        with pytest.raises(ValueError, match=f"the {role} URL s3://\\*\\*\\*@bucket/x holds credentials") as e:
            refuse_credentials(f"s3://{KEY}:{SECRET}@bucket/x", role)
        assert SECRET not in str(e.value)
    refuse_credentials("s3://bucket/a@b/x", "input")  # an "@" in the path is no credential
    assert redact_credentials(f"at tcp://{KEY}:{SECRET}@host:1 and s3://u:p@b/k") == \
        "at tcp://***@host:1 and s3://***@b/k"


def test_a_scheduler_address_with_credentials_is_refused_and_never_printed(tmp_path: Path, model_files):
    """Dask quotes a bad address without its scheme, where no mask would find the secret: refused."""
    text = corpus(tmp_path / "in.txt", 20)
    run = cli(model_files, "precompute", str(text), "-o", str(tmp_path / "s.zarr"),
              "--scheduler", f"tcp://{KEY}:{SECRET}@127.0.0.1:9", "--cluster-timeout", "2")
    line = one_error_line(run)
    assert "scheduler URL tcp://***@127.0.0.1:9 holds credentials" in line
    assert SECRET not in run.stdout + run.stderr and KEY not in run.stdout + run.stderr


def test_an_object_store_gone_mid_run_is_one_line(tmp_path: Path, model_files, s3_server):
    fs, bucket, env, stop = s3_server
    text = corpus(tmp_path / "in.txt", 3000)
    env = {**env, "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"}

    def stop_when_embedding() -> None:
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                if fs.exists(f"{bucket}/x.zarr/task_done"):
                    break
            except Exception:
                break
            time.sleep(0.05)
        stop()

    stopper = threading.Thread(target=stop_when_embedding)
    stopper.start()
    run = cli(model_files, "precompute", str(text), "-o", f"s3://{bucket}/x.zarr", "-q", "--task-tokens", "512",
              "--max-tokens", "64", env=env)
    stopper.join()
    line = one_error_line(run)
    assert SECRET not in line
    assert "re-run" in line or "endpoint" in line or "connect" in line.lower(), line
