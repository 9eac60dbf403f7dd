"""The read side of the store: `PatchStore` opens a store's complete slides and reads whole
chunks or ranges of patches, every read checked (`chunks.read_chunk_range`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from lymph.data.errors import StoreError
from lymph.data.store.chunks import read_chunk_range
from lymph.data.store.groups import check_header, open_root, slide_entries
from lymph.data.store.layout import CHUNK_PATCHES, LABELED_STATUSES, SLIDES
from lymph.data.store.verify import damaged_message, slide_state

if TYPE_CHECKING:
    import zarr


@dataclass(frozen=True)
class SlideInfo:
    slide_id: str
    status: str
    n_patches: int
    n_tumor: int
    labeled: bool
    attrs: dict[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class ChunkRef:
    slide_id: str
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class PatchBatch:
    images: np.ndarray
    coords: np.ndarray
    labels: np.ndarray | None
    masks: np.ndarray | None

    def __len__(self) -> int:
        return int(self.images.shape[0])


class PatchStore:
    """Read side of the store: complete slides only, whole chunks or ranges of patches. Every
    read checks that its chunks exist and match their checksums (StoreError otherwise)."""

    def __init__(self, path: Path, root: zarr.Group, settings: dict[str, Any],
                 slides: list[SlideInfo]) -> None:
        self.path = path
        self._root = root
        self.settings = settings
        self.patch_size = int(settings["patch_size"])
        self.chunk_patches = CHUNK_PATCHES
        self.slides = slides
        self._by_id = {s.slide_id: s for s in slides}
        self._arrays: dict[tuple[str, str], zarr.Array] = {}

    @classmethod
    def open(cls, path: str | Path, *, allow_empty: bool = False) -> PatchStore:
        """Open a store; StoreError if a slide marked complete lacks an array (its chunk
        files are checked on every read, and all of them by `verify_store`)."""
        path = Path(path)
        if not path.exists():
            raise StoreError(f"{path}: no such store; make one with `lymph extract --out {path}`")
        root = open_root(path, "r")
        settings = check_header(path, root.attrs)
        slides: list[SlideInfo] = []
        for entry in slide_entries(path, settings):
            sid = entry.slide_id
            attrs, complete, damage = slide_state(root, path, entry, chunks=False)
            if damage is not None:
                raise StoreError(damaged_message(path, sid, damage))
            if not complete:
                continue
            status = attrs.get("status", "unlabeled")
            slides.append(SlideInfo(
                slide_id=sid, status=status, n_patches=int(attrs.get("n_patches", 0)),
                n_tumor=int(attrs.get("n_tumor", 0)),
                labeled=status in LABELED_STATUSES, attrs=attrs))
        if not slides and not allow_empty:
            raise StoreError(f"{path}: the store holds no complete slide; run `lymph extract` "
                             "(again) to fill it")
        return cls(path, root, settings, slides)

    def slide(self, slide_id: str) -> SlideInfo:
        try:
            return self._by_id[slide_id]
        except KeyError:
            raise StoreError(f"{self.path}: no complete slide {slide_id!r}; "
                             f"`lymph info {self.path}` lists them") from None

    @property
    def labeled_slides(self) -> list[SlideInfo]:
        return [s for s in self.slides if s.labeled]

    def _array(self, slide_id: str, name: str) -> zarr.Array:
        key = (slide_id, name)
        if key not in self._arrays:
            try:
                self._arrays[key] = cast("zarr.Array",
                                         self._root[f"{SLIDES}/{slide_id}/{name}"])
            except Exception as exc:  # zarr's checks of a document that passed the schema's
                why = str(exc).splitlines()[0][:160] if str(exc) else ""
                raise StoreError(f"{self.path}: slide {slide_id!r}, array {name!r} cannot be "
                                 f"opened ({type(exc).__name__}: {why}); rerun `lymph extract` "
                                 "with the store's settings, or re-extract into a new --out"
                                 ) from None
        return self._arrays[key]

    def _read(self, slide_id: str, name: str, start: int, stop: int) -> np.ndarray:
        return read_chunk_range(self.path, slide_id, name, self._array(slide_id, name), start,
                                stop)

    def read(self, slide_id: str, start: int, stop: int, *, masks: bool = True) -> PatchBatch:
        info = self.slide(slide_id)
        start, stop = max(0, int(start)), min(int(stop), info.n_patches)
        images = self._read(slide_id, "images", start, stop)
        coords = self._read(slide_id, "coords", start, stop)
        labels = m = None
        if info.labeled:
            labels = self._read(slide_id, "labels", start, stop)
            if masks:
                m = self._read(slide_id, "masks", start, stop)
        return PatchBatch(images=images, coords=coords, labels=labels, masks=m)

    def labels(self, slide_id: str) -> np.ndarray:
        """Per-patch labels (uint8) of a labeled slide, without reading its images."""
        info = self.slide(slide_id)
        if not info.labeled:
            raise StoreError(f"{self.path}: slide {slide_id!r} is {info.status}: it has no labels")
        return np.asarray(self._read(slide_id, "labels", 0, info.n_patches), dtype=np.uint8)

    def chunks(self, slide_ids: Iterable[str] | None = None) -> list[ChunkRef]:
        ids = [s.slide_id for s in self.slides] if slide_ids is None else list(slide_ids)
        out: list[ChunkRef] = []
        for sid in ids:
            n = self.slide(sid).n_patches
            out.extend(ChunkRef(sid, a, min(a + CHUNK_PATCHES, n))
                       for a in range(0, n, CHUNK_PATCHES))
        return out

    def __repr__(self) -> str:
        return f"PatchStore({str(self.path)!r}, slides={len(self.slides)})"
