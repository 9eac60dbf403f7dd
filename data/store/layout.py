"""The store's on-disk layout as constants and pure functions (no zarr): schema version, chunk
size, codecs, which arrays a slide holds, the path of a chunk file, and which slide ids are safe
as group names. Every other store module (and the schema check of raw metadata) takes these from
here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np

from lymph.data.errors import SlideError, StoreError
from lymph.data.slides import safe_id

SCHEMA_VERSION = 2
"""2: crc32c checksums on every chunk, every chunk written. Version 1 stores are refused."""
CHUNK_PATCHES = 64
SLIDES = "slides"
STATUSES = ("tumor", "normal", "unlabeled")
LABELED_STATUSES = ("tumor", "normal")

# Settings that describe the run rather than the data: they may differ between runs on one store.
RUNTIME_SETTINGS = frozenset({"workers", "scheduler", "lymph_version", "progress",
                              "direct_tiles"})

class BloscSettings(TypedDict):
    cname: Literal["lz4"]
    clevel: int
    shuffle: Literal["noshuffle"]


BLOSC: BloscSettings = {"cname": "lz4", "clevel": 5, "shuffle": "noshuffle"}
"""Patch arrays are compressed with blosc-lz4, no shuffle (uint8: shuffling is a no-op, and
bitshuffle measured 2x slower here for the same ratio): real H&E patches 1.7x at ~600 MB/s on
one core, 0/1 masks ~100x."""

ARRAY_CONFIG = {"write_empty_chunks": True}
"""Every chunk gets a file, so a missing file is always damage, never "all zero"."""


def array_names(status: str) -> tuple[str, ...]:
    """The arrays a slide of `status` holds: images and coords, plus labels and masks when it
    is labeled."""
    return ("images", "coords") + (("labels", "masks") if status in LABELED_STATUSES else ())


def chunk_path(array_dir: Path, index: int, ndim: int) -> Path:
    """The file of chunk `index` (along the patch axis) of an array of `ndim` dimensions stored
    in `array_dir`: zarr v3's default chunk key encoding with separator "/" (`c/<i>/0/...`, one
    0 per further dimension, whose chunks span the whole axis). The schema check refuses any
    other encoding; a test compares this with zarr's own `encode_chunk_key`."""
    return array_dir.joinpath("c", str(index), *(["0"] * (ndim - 1)))


def check_slide_id(slide_id: str) -> None:
    """Refuse an id that is unsafe as one zarr group and folder name: one that
    ``lymph.data.slides.safe_id`` (the one rule, which slide discovery makes ids with) would
    change or reject. Unicode letters are fine (`腫瘍_001`)."""
    try:
        ok = isinstance(slide_id, str) and safe_id(slide_id) == slide_id
    except SlideError:
        ok = False
    if not ok:
        raise StoreError(f"slide id {slide_id!r} is not safe as a store group name; make ids "
                         "with the slide discovery (lymph.data.slides.safe_id: no '/', '..', "
                         "whitespace, control characters, leading '.' or '__')")


def jsonable(value: Any) -> Any:
    """`value` as JSON attributes hold it: paths as strings, tuples as lists, numpy scalars as
    Python numbers, mapping keys as strings."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    return value
