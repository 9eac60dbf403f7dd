"""The write side of the store: `SlideWriter` streams one slide group chunk by chunk and marks it
complete last; `write_slide` writes a small slide at once (tests, benches).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from lymph.data.errors import StoreError
from lymph.data.store.chunks import array_dir, compressors, write_whole_chunk
from lymph.data.store.groups import writing
from lymph.data.store.layout import (
    ARRAY_CONFIG,
    CHUNK_PATCHES,
    SLIDES,
    check_slide_id,
    jsonable,
)
from lymph.data.store.schema import read_meta, slide_digest

if TYPE_CHECKING:
    import zarr
    from zarr.core.array_spec import ArrayConfigParams  # zarr's type: every key required


class SlideWriter:
    """Writes one slide group chunk by chunk, holding at most one chunk of patches in memory.

    The group is created (after deleting any partial one), filled with `append`, and marked
    `complete` by `finish` as the very last write, so a killed run leaves a group that readers
    ignore and a rerun redoes. Image and mask chunks are written whole, straight to their files
    (`chunks.write_whole_chunk`); coords and labels (one chunk each) at `finish`.
    """

    def __init__(self, path: str | Path, slide_id: str, *, capacity: int, patch_size: int,
                 labeled: bool, attrs: Mapping[str, Any]) -> None:
        self.path = Path(path)
        check_slide_id(slide_id)
        self.slide_id = slide_id
        self.patch_size = int(patch_size)
        self.labeled = labeled
        self.capacity = max(int(capacity), 1)
        with writing(self.path):
            self._create(attrs)
        self._buf: dict[str, list[np.ndarray]] = {k: [] for k in self.arrays}
        self._buffered = 0
        self.n = 0
        self._small: dict[str, list[np.ndarray]] = {"coords": [], "labels": []}

    def _create(self, attrs: Mapping[str, Any]) -> None:
        import zarr

        group_dir = self.path / SLIDES / self.slide_id
        if group_dir.exists():
            shutil.rmtree(group_dir)
        root = zarr.open_group(str(self.path), mode="r+", zarr_format=3)
        self.group = cast("zarr.Group", root[SLIDES]).create_group(self.slide_id)
        self.group.attrs.update({**jsonable(dict(attrs)), "complete": False})
        p, c, cap = self.patch_size, CHUNK_PATCHES, self.capacity
        g = self.group

        def array(name: str, shape: tuple[int, ...], chunks: tuple[int, ...],
                  dtype: str) -> zarr.Array:
            return g.create_array(name, shape=shape, chunks=chunks, dtype=dtype,
                                  compressors=compressors(),
                                  config=cast("ArrayConfigParams", ARRAY_CONFIG))

        self.arrays = {"images": array("images", (cap, p, p, 3), (c, p, p, 3), "uint8"),
                       "coords": array("coords", (cap, 2), (cap, 2), "int64")}
        if self.labeled:
            self.arrays["labels"] = array("labels", (cap,), (cap,), "uint8")
            self.arrays["masks"] = array("masks", (cap, p, p), (c, p, p), "uint8")

    def append(self, *, images: np.ndarray, coords: np.ndarray, labels: np.ndarray | None = None,
               masks: np.ndarray | None = None) -> None:
        k = images.shape[0]
        if self.n + self._buffered + k > self.capacity:
            raise StoreError(f"slide {self.slide_id}: more patches than the capacity "
                             f"{self.capacity} it was opened with")
        if self.labeled and (labels is None or masks is None):
            raise StoreError(f"slide {self.slide_id}: labeled slide needs labels and masks")
        self._buf["images"].append(np.asarray(images, dtype=np.uint8))
        self._small["coords"].append(np.asarray(coords, dtype=np.int64).reshape(k, 2))
        if self.labeled:
            self._buf["masks"].append(np.asarray(masks, dtype=np.uint8))
            self._small["labels"].append(np.asarray(labels, dtype=np.uint8).reshape(k))
        self._buffered += k
        with writing(self.path):
            while self._buffered >= CHUNK_PATCHES:
                self._flush(CHUNK_PATCHES)

    def _flush(self, k: int) -> None:
        """Write the next `k` buffered patches as one whole chunk of images (and masks)."""
        for name in ("images", "masks"):
            if name not in self.arrays:
                continue
            stacked = np.concatenate(self._buf[name]) if len(self._buf[name]) > 1 \
                else self._buf[name][0]
            write_whole_chunk(array_dir(self.path, self.slide_id, name), self.arrays[name],
                              self.n // CHUNK_PATCHES, stacked[:k])
            self._buf[name] = [stacked[k:]] if stacked.shape[0] > k else []
        self.n += k
        self._buffered -= k

    def finish(self, **attrs: Any) -> int:
        """Flush, trim to the patches written, write `attrs`, then set `complete` last."""
        with writing(self.path):
            return self._finish(attrs)

    def _finish(self, attrs: Mapping[str, Any]) -> int:
        if self._buffered:
            self._flush(self._buffered)
        n = self.n
        coords = (np.concatenate(self._small["coords"]) if self._small["coords"]
                  else np.zeros((0, 2), np.int64))
        self.arrays["coords"][:n] = coords
        if self.labeled:
            labels = (np.concatenate(self._small["labels"]) if self._small["labels"]
                      else np.zeros((0,), np.uint8))
            self.arrays["labels"][:n] = labels
        if n != self.capacity:
            for arr in self.arrays.values():
                arr.resize((n, *arr.shape[1:]))
        n_tumor = int(np.count_nonzero(labels)) if self.labeled and n else 0
        self.group.attrs.update({**jsonable(dict(attrs)), "n_patches": n, "n_tumor": n_tumor})
        self.group.attrs["digest"] = _digest_now(self.path, self.slide_id)
        self.group.attrs["complete"] = True
        return n


def _digest_now(path: Path, slide_id: str) -> str:
    """The slide's content digest as its files stand (`schema.slide_digest`)."""
    settings = read_meta(path / "zarr.json").get("attributes", {}).get("lymph", {})
    attrs = read_meta(path / SLIDES / slide_id / "zarr.json").get("attributes", {})
    return slide_digest(path, slide_id, settings, attrs)


def write_slide(path: str | Path, slide_id: str, *, images: np.ndarray, coords: np.ndarray,
                labels: np.ndarray | None = None, masks: np.ndarray | None = None,
                attrs: Mapping[str, Any]) -> None:
    """Write a whole slide group at once (small slides, tests); `complete` is set last."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
        raise StoreError(f"images must be (n, P, P, 3) uint8, got {images.shape}")
    labeled = labels is not None
    attrs = dict(attrs)
    attrs.setdefault("status", "tumor" if labeled and np.any(labels) else
                     ("normal" if labeled else "unlabeled"))
    w = SlideWriter(path, slide_id, capacity=images.shape[0], patch_size=images.shape[1],
                    labeled=labeled, attrs=attrs)
    w.append(images=images, coords=coords, labels=labels, masks=masks)
    w.finish()
