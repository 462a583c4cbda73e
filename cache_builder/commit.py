"""A run's hold on its output: the lock, what is already there, resuming, and the commit.

What a location holds decides what a run may do with it:

- nothing, or an empty folder: a new store;
- an elmo-cache store that is complete (its manifest): kept when it was built with the same
  arguments (an equal identity), otherwise refused unless ``overwrite`` replaces it;
- an elmo-cache store that is unfinished (its ``progress``): resumed with the same arguments
  (its plan redone when the run stopped while planning), otherwise refused unless ``overwrite``;
- anything else (a folder of other files, another program's Zarr group or HDF5 file): always
  refused, ``overwrite`` or not. The tool never destroys what it did not make.

The manifest is written last, after every task's rows; a store without one is never read as
complete (see :mod:`cache_builder.cache`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fsspec
import h5py
import zarr

from cache_builder.settings import run_identity, settings_identity
from cache_builder.store import StoreError, StoreReader, StoreWriter
from cache_builder.store.layout import manifest_kind


@dataclass
class Existing:
    """What is at a location: ``kind`` is "none", "store" (ours) or "foreign" (``why``)."""

    kind: str
    manifest: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    why: str = ""


def _fs(path: str, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    fs, root = fsspec.core.url_to_fs(path, **(storage_options or {}))
    fs.invalidate_cache()  # other processes write here: never trust a cached listing
    return fs, root


def inspect(path: str, fmt: str, storage_options: dict[str, Any] | None = None) -> Existing:
    """Look at ``path`` without changing it."""
    fs, root = _fs(path, storage_options)
    if not fs.exists(root):
        return Existing("none")
    if fmt == "hdf5":
        if fs.isdir(root) or "://" in path or not h5py.is_hdf5(path):
            return Existing("foreign", why="not an HDF5 file")
        with h5py.File(path, "r") as f:
            attrs = {k: json.loads(f.attrs[k]) for k in ("manifest", "progress") if k in f.attrs}
    else:
        if not fs.isdir(root):
            return Existing("foreign", why="a file, not a Zarr folder")
        if not fs.ls(root):
            return Existing("none")
        if not fs.exists(f"{root}/zarr.json"):
            return Existing("foreign", why="a folder of other files")
        try:
            attrs = dict(zarr.open_group(path, mode="r", zarr_format=3,
                                         storage_options=storage_options if "://" in path else None).attrs)
        except Exception as e:  # a zarr.json that is not a Zarr v3 group
            return Existing("foreign", why=f"not a Zarr v3 group ({e})")
    manifest, progress = attrs.get("manifest"), attrs.get("progress")
    if manifest is not None and manifest_kind(manifest) is None:
        return Existing("store", manifest=manifest, progress=progress)
    if isinstance(progress, dict) and "identity" in progress and "stage" in progress:
        return Existing("store", progress=progress)
    return Existing("foreign", why="no elmo-cache manifest")


def check_location(path: str, existing: Existing) -> None:
    """Refuse a location that holds something other than an elmo-cache store."""
    if existing.kind == "foreign":
        raise StoreError(f"{path} exists and is not an elmo-cache store ({existing.why}); choose another "
                         "output: --overwrite only ever replaces an elmo-cache store")


def check_not_input(store: str, input_location: str) -> None:
    """An output may neither be the input nor hold it."""
    if "://" in store or "://" in input_location or input_location.startswith("<"):
        return
    out, source = os.path.abspath(store), os.path.abspath(input_location)
    if out == source or os.path.commonpath([out, source]) == out:
        raise StoreError(f"the output {store} would hold or replace the input {input_location}")


@dataclass
class Claim:
    """A run's decision: ``state`` "complete" (nothing to do: ``manifest``), "resume" (the plan
    is in the store: ``progress``) or "plan" (a new or reset store)."""

    state: str
    manifest: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None


def claim(path: str, existing: Existing, identity: dict[str, Any], fingerprint: Callable[[], str],
          overwrite: bool) -> Claim:
    """Decide what a run with ``identity`` (its input fingerprint still unknown: ``fingerprint()``
    reads the input to get it, only when needed) does with what is at ``path``.

    Raises:
        StoreError: a store of other arguments (without ``overwrite``), or a foreign location.
    """
    check_location(path, existing)
    if existing.kind == "none" or overwrite:
        return Claim("plan")

    def full() -> dict[str, Any]:
        return {**identity, "input": {**identity["input"], "fingerprint": fingerprint()}}

    if existing.manifest is not None:
        if run_identity(existing.manifest) != full():
            raise StoreError(f"{path}: a complete store written with other arguments (or another "
                             "input) is here; pass --overwrite to replace it")
        return Claim("complete", manifest=existing.manifest)
    progress = existing.progress
    if progress["stage"] == "plan":  # stopped while planning: nothing computed yet
        if settings_identity(progress["identity"]) != settings_identity(identity):
            raise StoreError(f"{path}: an unfinished store from other arguments is here; re-run with "
                             "its arguments to resume, or pass --overwrite")
        return Claim("plan")
    if progress["identity"] != full():
        raise StoreError(f"{path}: an unfinished store from other arguments (or another input) is "
                         "here; re-run with its arguments to resume, or pass --overwrite")
    return Claim("resume", progress=progress)


class RunLock:
    """``STORE.lock`` beside the output while a run writes it: a second run on the same output
    stops instead of interleaving with the first. A lock left by a killed run on this host (its
    process is gone) is taken over; one from another host must be removed by hand."""

    def __init__(self, store: str, storage_options: dict[str, Any] | None = None):
        self.path = f"{store.rstrip('/')}.lock"
        self.fs, self.root = _fs(self.path, storage_options)

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
    fs, root = _fs(f"{store.rstrip('/')}.lock", storage_options)
    holder = read_lock(fs, root)
    return _describe(holder) if holder is not None and _alive(holder) else None


def commit(store: StoreWriter, manifest: dict[str, Any], scratch: tuple[str, ...]) -> None:
    """Mark ``store`` complete: the manifest first, then the progress and the run's ``scratch``
    arrays go (a complete store with leftovers of its run is still complete)."""
    store.set_attr("manifest", manifest)
    store.set_attr("progress", None)
    for name in scratch:
        if name in store.names():
            store.delete(name)


def copy_store(source: StoreReader, target: StoreWriter) -> None:
    """Copy every array (same chunking) and then the manifest, last, from ``source`` to ``target``."""
    for name in sorted(source.names()):
        array = source.array(name)
        target.create(name, tuple(array.shape[1:]), str(array.dtype), source.chunk_rows(name))
        step = target.write_unit(name)
        for start in range(0, array.shape[0], step):
            target.write(name, start, source.read(name, start, start + step))
    target.set_attr("manifest", source.get_attr("manifest"))
