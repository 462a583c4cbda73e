"""Stores: one logical layout (:mod:`.layout`) over Zarr v3 or HDF5 (:mod:`.base` interface)."""

from __future__ import annotations

import os

import h5py

from cache_builder.store.base import Appender, CorruptStoreError, StoreError, StoreReader, StoreWriter
from cache_builder.store.hdf5_store import Hdf5Store
from cache_builder.store.zarr_store import ZarrStore

BACKENDS = {"zarr": ZarrStore, "hdf5": Hdf5Store}


def store_format(path: str, format: str | None = None) -> str:
    """``format`` when given, else "hdf5" for a ``.h5``/``.hdf5`` path, else "zarr"."""
    if format is not None:
        if format not in BACKENDS:
            raise ValueError(f"unknown store format {format!r}; choose one of {sorted(BACKENDS)}")
        return format
    return "hdf5" if str(path).lower().endswith((".h5", ".hdf5")) else "zarr"


def store_exists(path: str) -> bool:
    """Whether something (a store or not) is at a local ``path``; URLs count as present."""
    return "://" in str(path) or os.path.exists(path)


def open_reader(path: str) -> StoreReader:
    """Open a store for reading, detecting its backend from what is on disk.

    Raises:
        StoreError: nothing at ``path``, or something that is neither HDF5 nor a Zarr v3 group.
    """
    path = str(path)
    if not store_exists(path):
        raise StoreError(f"{path}: no such store")
    if os.path.isfile(path):
        if not h5py.is_hdf5(path):
            raise StoreError(f"{path}: not an elmo-cache store (neither HDF5 nor a Zarr directory)")
        return Hdf5Store(path, "r")
    if "://" not in path and not os.path.exists(os.path.join(path, "zarr.json")):
        raise StoreError(f"{path}: not an elmo-cache store (no zarr.json: not a Zarr v3 group)")
    return ZarrStore(path, "r")


__all__ = ["Appender", "CorruptStoreError", "Hdf5Store", "StoreError", "StoreReader", "StoreWriter", "ZarrStore",
           "open_reader", "store_exists", "store_format"]
