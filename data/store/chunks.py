"""Chunks, the unit of writing, reading and checking: whole chunks encoded and written straight to
their files, ranges of patches read chunk by chunk (each chunk's file present and its checksum
sound, else a StoreError naming slide, array and chunk), and `chunk_problems`, the one routine
that checks an array's chunks for both `lymph info` (files present) and `--verify` (decoded).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lymph.data.errors import StoreError
from lymph.data.store.layout import BLOSC, SLIDES, chunk_path

if TYPE_CHECKING:
    import zarr
    from zarr.codecs import BloscCodec, Crc32cCodec


def compressors() -> tuple[BloscCodec, Crc32cCodec]:
    """blosc, then the crc32c checksum of the compressed bytes (checked first on reading)."""
    from zarr.codecs import BloscCodec, Crc32cCodec

    return BloscCodec(cname=BLOSC["cname"], clevel=BLOSC["clevel"],
                      shuffle=BLOSC["shuffle"]), Crc32cCodec()


def array_dir(store: Path, slide_id: str, name: str) -> Path:
    """The folder of array `name` of slide `slide_id` in the store at `store`."""
    return store / SLIDES / slide_id / name


def n_chunks(array: zarr.Array) -> int:
    """How many chunks (along the patch axis) an array's shape covers."""
    return math.ceil(array.shape[0] / array.chunks[0]) if array.shape[0] else 0


def encode_chunk(data: np.ndarray, *, chunks: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The bytes zarr's own pipeline ([bytes, blosc, crc32c]) writes for one whole chunk of
    uint8/int64 little-endian data. `data` may be shorter than the chunk along axis 0 (the last
    chunk): it is padded with the fill value (0), exactly as zarr stores edge chunks."""
    import google_crc32c
    import numcodecs.blosc as nb
    from numcodecs import Blosc

    if data.shape[1:] != chunks[1:] or data.shape[0] > chunks[0]:
        raise StoreError(f"chunk data {data.shape} does not fit chunk shape {chunks}")
    if data.shape[0] < chunks[0]:
        padded = np.zeros(chunks, dtype=dtype)
        padded[: data.shape[0]] = data
        data = padded
    data = np.ascontiguousarray(data, dtype=dtype)
    if data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("<"))
    shuffle = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE,
               "bitshuffle": Blosc.BITSHUFFLE}[BLOSC["shuffle"]]
    previous = nb.set_nthreads(1)  # one core per worker: measured rates stay honest
    try:
        encoded = Blosc(cname=BLOSC["cname"], clevel=BLOSC["clevel"], shuffle=shuffle,
                        blocksize=0).encode(data)
    finally:
        nb.set_nthreads(previous)
    return bytes(encoded) + struct.pack("<I", google_crc32c.value(encoded))


def write_whole_chunk(folder: Path, array: zarr.Array, index: int, data: np.ndarray) -> None:
    """Encode chunk `index` of `array` (stored in `folder`) and write its file directly,
    skipping zarr's async codec pipeline, which measured 3-10x slower than the encode plus the
    write here (a test compares the files byte for byte with zarr's and reads them back through
    zarr, checksums verified)."""
    encoded = encode_chunk(data, chunks=tuple(array.chunks), dtype=array.dtype)
    write_chunk_file(chunk_path(folder, index, len(array.shape)), encoded)


def write_chunk_file(target: Path, encoded: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as fh:
        fh.write(encoded)


def read_chunk_range(path: Path, slide_id: str, name: str, array: zarr.Array, start: int,
                     stop: int) -> np.ndarray:
    """array[start:stop], chunk by chunk: StoreError naming slide, array and chunk when a chunk
    file is missing or fails its checksum (zarr alone reads a missing chunk as fill value)."""
    if stop <= start:
        return np.asarray(array[start:stop])
    c = array.chunks[0]
    folder = array_dir(path, slide_id, name)
    parts = []
    for i in range(start // c, (stop - 1) // c + 1):
        where = f"{path}: slide {slide_id!r}, array {name!r}, chunk {i}"
        fix = (f"delete {path / SLIDES / slide_id} and rerun `lymph extract` with the store's "
               "settings to redo the slide")
        if not chunk_path(folder, i, len(array.shape)).is_file():
            raise StoreError(f"{where}: the chunk file is missing; {fix}")
        try:
            parts.append(np.asarray(array[max(start, i * c):min(stop, (i + 1) * c)]))
        except Exception as exc:  # zarr: ValueError on a checksum mismatch, others on garbage
            why = ("checksum mismatch (the file was changed or damaged)" if "checksum" in
                   str(exc) else f"cannot be decoded ({type(exc).__name__}: {exc})")
            raise StoreError(f"{where}: {why}; {fix}") from exc
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def chunk_problems(path: Path, slide_id: str, name: str, array: zarr.Array, *,
                   decode: bool) -> Iterator[tuple[int, str]]:
    """(chunk index, why) of every bad chunk of one array, in order: its file missing, or
    with `decode` also failing its checksum or decoding (`read_chunk_range`'s message)."""
    c, folder = array.chunks[0], array_dir(path, slide_id, name)
    for i in range(n_chunks(array)):
        if decode:
            try:
                read_chunk_range(path, slide_id, name, array, i * c,
                                 min((i + 1) * c, array.shape[0]))
            except StoreError as exc:
                yield i, str(exc)
        elif not chunk_path(folder, i, len(array.shape)).is_file():
            yield i, "missing"
