"""A run's hold on its output: the lock, what is already there, resuming, and the commit.

What a location holds decides what a run may do with it:

- nothing, or an empty folder: a new store;
- an elmo-cache store that is complete (its manifest): kept when it was built with the same
  arguments (an equal identity), otherwise refused unless ``overwrite`` replaces it;
- an elmo-cache store that is unfinished (its ``progress``): resumed with the same arguments,
  otherwise refused unless ``overwrite``; one that holds nothing computed (its run stopped
  while planning, or failed on bad input) is planned again by any run;
- anything else (a folder of other files, another program's Zarr group or HDF5 file): always
  refused, ``overwrite`` or not. The tool never destroys what it did not make.

A run that fails before any vector is computed leaves nothing that blocks its fix
(:func:`abandon`): what it created is removed, and a store of ours it had reset records why it
failed.

The manifest is written last, after every task's rows; a store without one is never read as
complete (see :mod:`cache_builder.read.cache`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import multiprocessing
import multiprocessing.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h5py
import zarr

from cache_builder.build.inputs import InputError
from cache_builder.build.settings import run_identity
from cache_builder.store import StoreError, StoreReader, StoreWriter, ZarrStore
from cache_builder.store.layout import FAILED, FORMAT_NAME, manifest_kind
from cache_builder.store.lock import fs_of


@dataclass
class Existing:
    """What is at a location: ``kind`` is "none" (``folder``: an empty folder), "store" (ours) or
    "foreign" (``why``)."""

    kind: str
    manifest: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    why: str = ""
    folder: bool = False


def inspect(path: str, fmt: str, storage_options: dict[str, Any] | None = None) -> Existing:
    """Look at ``path`` without changing it."""
    fs, root = fs_of(path, storage_options)
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
            return Existing("none", folder=True)
        if not fs.exists(f"{root}/zarr.json"):
            return Existing("foreign", why="a folder of other files")
        try:
            attrs = dict(zarr.open_group(path, mode="r", zarr_format=3,
                                         storage_options=storage_options if "://" in path else None).attrs)
        except Exception as e:  # a zarr.json that is not a Zarr v3 group
            return Existing("foreign", why=f"not a Zarr v3 group ({e})")
    manifest, progress = attrs.get("manifest"), attrs.get("progress")
    if isinstance(manifest, dict) and manifest.get("format") == FORMAT_NAME:  # of any format version
        return Existing("store", manifest=manifest, progress=progress)
    if isinstance(progress, dict) and "identity" in progress:
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
        older = manifest_kind(existing.manifest)
        if older is not None:
            raise StoreError(f"{path}: an elmo-cache store of {older} is here; pass --overwrite to "
                             "replace it")
        if run_identity(existing.manifest) != full():
            raise StoreError(f"{path}: a complete store written with other arguments (or another "
                             "input) is here; pass --overwrite to replace it")
        return Claim("complete", manifest=existing.manifest)
    progress = existing.progress
    if progress.get("stage") not in ("plan", "embed", FAILED):
        raise StoreError(f"{path}: an unfinished store of another version of this tool is here; "
                         "pass --overwrite to replace it")
    if progress["stage"] in ("plan", FAILED):  # nothing computed yet: no run's work is lost
        return Claim("plan")
    if progress["identity"] != full():
        raise StoreError(f"{path}: an unfinished store from other arguments (or another input) is "
                         "here; re-run with its arguments to resume, or pass --overwrite")
    return Claim("resume", progress=progress)



def abandon(path: str, existing: Existing, identity: dict[str, Any], error: BaseException,
            storage_options: dict[str, Any] | None = None) -> None:
    """Clean up after a run that failed before computing any vector (while planning), so that
    the corrected command runs without ``--overwrite``.

    Args:
        existing: what was at ``path`` before the run. Nothing (or an empty folder): the store the
            run created is removed (the empty folder is kept). Our store, which the run reset:
            bad input (``error`` an :class:`InputError`) is recorded as the store's state, which
            readers report; any other failure leaves the state "plan". Either way, any re-run
            plans it again (:func:`claim`).
        identity: the run's identity, kept in the state (the store stays recognisably ours).
    """
    # Best effort: the run's own error is what the user must see, not one from cleaning up.
    with contextlib.suppress(Exception):
        if existing.kind == "none":
            fs, root = fs_of(path, storage_options)
            fs.rm(root, recursive=True)
            if existing.folder:
                fs.makedirs(root, exist_ok=True)
        elif isinstance(error, InputError):
            ZarrStore(path, "a", storage_options).set_attr(
                "progress", {"identity": identity, "stage": FAILED, "error": failure(error)})


def failure(error: InputError) -> str:
    """How a store's state names the bad input its run failed on."""
    what = (f"field {error.field}: " if error.field is not None else "") + error.reason
    if error.line is None:
        return f"bad input {error.path} ({what})"
    return f"bad record at {error.unit} {error.line} of {error.path} ({what})"


def commit(store: StoreWriter, manifest: dict[str, Any], scratch: tuple[str, ...]) -> None:
    """Mark ``store`` complete: the manifest first, then the progress and the run's ``scratch``
    arrays go (a complete store with leftovers of its run is still complete)."""
    store.set_attr("manifest", manifest)
    store.set_attr("progress", None)
    for name in scratch:
        if name in store.names():
            store.delete(name)


def convert_to_hdf5(staging: str, path: str) -> None:
    """Copy the complete Zarr store ``staging`` into the HDF5 file ``path``, all or nothing.

    The copy goes to ``PATH.converting`` and is renamed to ``path`` when whole. It runs in a child
    process: a write that fails in the HDF5 library (a full disk) leaves it unable to close the
    file, and a crash there must cost the copy, not the run. The staging store stays until the
    copy is in place, so a re-run converts again.

    Raises:
        OSError: naming ``path`` and the cause (a full disk, a crash of the HDF5 writer).
    """
    partial = f"{path}.converting"
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_convert, args=(staging, partial, send), daemon=True)
    child.start()
    send.close()
    try:
        error = receive.recv()
    except EOFError:  # it died before it could say why
        error = (errno.EIO, f"writing {path} failed")
    child.join()
    if child.exitcode != 0 or error is not None:
        with contextlib.suppress(OSError):
            os.remove(partial)
        errno_, message = error or (errno.EIO, f"the HDF5 writer stopped with status {child.exitcode}")
        raise OSError(errno_, f"{message}; {path} was not written, the complete staging store {staging} "
                              "is kept: re-run the same command once the cause is fixed")
    os.replace(partial, path)


def _convert(staging: str, partial: str, report: Any) -> None:
    """The child of :func:`convert_to_hdf5`: reports ``None`` or ``(errno, message)``."""
    from cache_builder.store import Hdf5Store, ZarrStore

    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # h5py repeats a failed write as it frees each object
    try:
        target = Hdf5Store(partial, "w")
        copy_store(ZarrStore(staging, "r"), target)
        target.close()
    except Exception as e:  # the HDF5 library reports a failed write as OSError or RuntimeError
        found = re.search(r"errno = (\d+)", str(e))
        code = int(found[1]) if found else getattr(e, "errno", None) or errno.EIO
        report.send((code, f"writing {partial} failed: {os.strerror(code) if found else e}"))
        # The HDF5 library cannot close a file whose write failed (it crashes while the interpreter
        # shuts down): end as a child process ends, without that shutdown.
        multiprocessing.util._exit_function()
        os._exit(1)
    report.send(None)


def copy_store(source: StoreReader, target: StoreWriter) -> None:
    """Copy every array (same chunking) and then the manifest, last, from ``source`` to ``target``."""
    for name in sorted(source.names()):
        array = source.array(name)
        target.create(name, tuple(array.shape[1:]), str(array.dtype), source.chunk_rows(name))
        step = target.write_unit(name)
        for start in range(0, array.shape[0], step):
            target.write(name, start, source.read(name, start, start + step))
    target.set_attr("manifest", source.get_attr("manifest"))
