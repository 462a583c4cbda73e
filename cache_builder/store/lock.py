"""``STORE.lock``: the mark of a run writing a store.

A second run on the same output stops instead of interleaving with the first, and a reader of
an unfinished store is told that a run is writing it rather than that its run was interrupted.
The lock names its process and host: one left by a killed run on this host (its process is
gone) is taken over; one from another host must be removed by hand. On object storage, which
has no atomic create, the check and the write are two steps: it guards against mistakes, not
against two runs started in the same instant.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

import fsspec

from cache_builder.store.base import StoreError


def fs_of(path: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    fs.invalidate_cache()  # other processes write here: never trust a cached listing
    return fs, root


class RunLock:
    """Holds ``STORE.lock`` beside the output while a run writes it (see the module doc)."""

    def __init__(self, store: str, storage_options: dict[str, Any] | None = None):
        self.path = f"{store.rstrip('/')}.lock"
        self.fs, self.root = fs_of(self.path, storage_options)

    def __enter__(self) -> RunLock:
        holder = read_lock(self.fs, self.root)
        if holder is not None and _alive(holder):
            raise StoreError(f"{self.path}: another run ({_describe(holder)}) is writing this store; "
                             "wait for it to finish")
        if holder is not None and holder.get("host") != socket.gethostname():
            raise StoreError(f"{self.path}: left by a run on host {holder.get('host')}; if no run is "
                             "writing the store any more, delete this file and re-run")
        self.fs.pipe_file(self.root, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
        return self

    def __exit__(self, *exc: object) -> None:
        self.fs.rm_file(self.root)


def read_lock(fs: Any, root: str) -> dict[str, Any] | None:
    try:
        return json.loads(fs.cat_file(root))
    except (FileNotFoundError, ValueError):
        return None


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


def _describe(holder: dict[str, Any]) -> str:
    return f"process {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"


def writer_of(store: str, storage_options: dict[str, Any] | None = None) -> str | None:
    """Who is writing ``store`` now, or None: for a reader that finds it unfinished."""
    fs, root = fs_of(f"{store.rstrip('/')}.lock", storage_options)
    holder = read_lock(fs, root)
    return _describe(holder) if holder is not None and _alive(holder) else None
