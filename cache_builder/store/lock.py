"""``STORE.lock``: the mark of a run writing a store.

A second run on the same output stops instead of interleaving with the first, and a reader of
an unfinished store is told that a run is writing it rather than that its run was interrupted.
The lock names its process and host, when the run started, and when it last renewed the lock
(every :data:`RENEW_SECONDS` while it runs). One left by a killed run on this host (its process
is gone) is taken over. One from another host cannot be checked from here: the message says how
to tell whether that run is alive (its host, process, start and last renewal) and how to remove
the lock if it is not. On object storage, which has no atomic create, the check and the write
are two steps: it guards against mistakes, not against two runs started in the same instant.
"""

from __future__ import annotations

import calendar
import json
import logging
import os
import shlex
import socket
import threading
import time
from typing import Any

import fsspec

from cache_builder.store.base import StoreError

log = logging.getLogger("elmo_cache")

RENEW_SECONDS = 60.0  # how often a running run rewrites its lock's "renewed" time
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # UTC, so that hosts in other time zones read it alike


def fs_of(path: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    fs.invalidate_cache()  # other processes write here: never trust a cached listing
    return fs, root


class RunLock:
    """Holds ``STORE.lock`` beside the output while a run writes it (see the module doc)."""

    def __init__(self, store: str, storage_options: dict[str, Any] | None = None):
        self.path = f"{store.rstrip('/')}.lock"
        self.fs, self.root = fs_of(self.path, storage_options)
        self._holder: dict[str, Any] = {}
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __enter__(self) -> RunLock:
        holder = read_lock(self.fs, self.root)
        if holder is not None and holder.get("host") != socket.gethostname():
            raise StoreError(_foreign_lock_message(self.path, self.fs, self.root, holder))
        if holder is not None and _alive(holder):
            raise StoreError(f"{self.path}: another run ({_describe(holder)}) is writing this store; wait for "
                             f"it to finish, or stop it (kill {holder.get('pid')})")
        started = _now()
        self._holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "renewed": started}
        self._write()
        self._renewer = threading.Thread(target=self._renew, name="elmo-cache-lock", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()  # no renewal may recreate the lock after it is removed
        self.fs.rm_file(self.root)

    def _write(self) -> None:
        """Write the holder whole: a local file is renamed into place, since a reader could see a
        rewrite half done (object stores put whole objects)."""
        data = json.dumps(self._holder).encode()
        if not {"file", "local"} & set(_protocols(self.fs)):
            self.fs.pipe_file(self.root, data)
            return
        partial = f"{self.root}.{os.getpid()}.partial"
        with open(partial, "wb") as f:
            f.write(data)
        os.replace(partial, self.root)

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            self._holder["renewed"] = _now()
            try:
                self._write()
            except Exception as e:  # the run goes on; a reader sees an older renewal time
                log.debug("%s: could not renew the lock: %s", self.path, e)


def read_lock(fs: Any, root: str) -> dict[str, Any] | None:
    try:
        return json.loads(fs.cat_file(root))
    except (FileNotFoundError, ValueError):
        return None


def _protocols(fs: Any) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def _now() -> str:
    return time.strftime(_TIME_FORMAT, time.gmtime())


def _alive(holder: dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another host's process cannot be checked: assume it runs
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError):
        return True
    return True


def _renewed(holder: dict[str, Any]) -> str:
    """When the lock was last renewed, and how long ago by this host's clock."""
    renewed = holder.get("renewed")
    try:
        age = time.time() - calendar.timegm(time.strptime(renewed, _TIME_FORMAT))
    except (TypeError, ValueError):
        return "no renewal time recorded"
    return f"last renewed {renewed}, {_duration(age)} ago by this host's clock"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _describe(holder: dict[str, Any]) -> str:
    return (f"process {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}, "
            f"{_renewed(holder)}")


def _remove_command(path: str, fs: Any, root: str) -> str:
    """A shell command that deletes the lock at ``path``."""
    protocol = _protocols(fs)[0]
    if protocol in ("file", "local"):
        return f"rm {shlex.quote(os.path.abspath(root))}"
    if protocol in ("s3", "s3a"):
        return f"aws s3 rm {shlex.quote(f's3://{root}')}"
    if protocol in ("gs", "gcs"):
        return f"gcloud storage rm {shlex.quote(f'gs://{root}')}"
    return f"delete {path} with your storage's tools"


def _foreign_lock_message(path: str, fs: Any, root: str, holder: dict[str, Any]) -> str:
    host, pid = holder.get("host"), holder.get("pid")
    return (f"{path}: locked by a run on another host ({_describe(holder)}; a running run renews it every "
            f"{RENEW_SECONDS:.0f} s). Check on {host} whether process {pid} is still running (ps -p {pid}); "
            f"if it is not, remove the lock ({_remove_command(path, fs, root)}) and re-run")


def writer_of(store: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """Who is writing ``store`` now, or None: for a reader that finds it unfinished."""
    fs, root = fs_of(f"{store.rstrip('/')}.lock", storage_options)
    holder = read_lock(fs, root)
    return _describe(holder) if holder is not None and _alive(holder) else None
