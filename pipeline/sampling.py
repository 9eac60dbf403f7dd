"""Class-balanced random patch sampling, as in the paper: for each patch draw tumor or
non-tumor with probability 1/2, then a uniformly random centre inside that class.

Candidates come from thumbnail-frame masks (cheap); every drawn centre is then checked exactly
at level 0 by an `accept` function (polygons or the mask TIFF), so a tumor patch's centre pixel
is tumor, and a non-tumor patch's centre pixel is not. Each slide gets its own
`numpy.random.Generator` seeded from (seed, slide id): the draw does not depend on worker count
or order. `TumorMaps` says where tumor may lie on the thumbnail and how to test a point exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

TUMOR_PATCHES_PER_FOOTPRINT = 16
"""At most this many tumor patches per patch-footprint area of tumor: beyond it the patches of a
small lesion are near-duplicates, so the rest of the draw goes to non-tumor (reported)."""

MAX_TRIES_PER_PATCH = 50


def slide_rng(seed: int, slide_id: str) -> np.random.Generator:
    """A Generator seeded from (seed, slide id) through SHA-256: stable across processes,
    platforms and Python hash randomisation."""
    digest = hashlib.sha256(f"{int(seed)}\x00{slide_id}".encode()).digest()
    return np.random.default_rng([int(seed) & 0xFFFFFFFF,
                                  int.from_bytes(digest[:8], "little")])


@dataclass(frozen=True)
class PatchGeometry:
    """A patch of `size` pixels at a level of `downsample`, inside a level-0 slide of `width` x
    `height`. `centre_offset` is the level-0 offset from the top-left corner to the centre of
    the patch's centre pixel (P // 2, P // 2)."""

    size: int
    downsample: float
    width: int
    height: int

    @property
    def footprint(self) -> float:
        return self.size * self.downsample

    @property
    def centre_offset(self) -> float:
        return (self.size // 2 + 0.5) * self.downsample

    def top_left(self, centres_level0: np.ndarray) -> np.ndarray:
        """int64 (n, 2) level-0 top-left corners of patches centred (nearest) on the points."""
        return np.round(np.asarray(centres_level0) - self.centre_offset).astype(np.int64)

    def centres(self, top_left_level0: np.ndarray) -> np.ndarray:
        return np.asarray(top_left_level0, np.float64) + self.centre_offset

    def inside(self, top_left_level0: np.ndarray) -> np.ndarray:
        """Whether each patch lies wholly inside the slide."""
        tl = np.asarray(top_left_level0)
        f = self.footprint
        return ((tl[:, 0] >= 0) & (tl[:, 1] >= 0) & (tl[:, 0] + f <= self.width + 1e-6)
                & (tl[:, 1] + f <= self.height + 1e-6))


def plan_classes(rng: np.random.Generator, n: int, *, tumor_capacity: int,
                 normal_available: bool = True) -> np.ndarray:
    """bool (n,): the drawn class of each patch (True tumor), each with probability 1/2, then
    tumor draws beyond `tumor_capacity` turned to non-tumor (the last ones), or every draw made
    tumor when there is no non-tumor tissue."""
    if n < 0 or tumor_capacity < 0:
        raise ValueError(f"n and tumor_capacity must be >= 0, got {n}, {tumor_capacity}")
    tumor = rng.random(n) < 0.5
    if not normal_available:
        tumor[:] = True
    idx = np.flatnonzero(tumor)
    if len(idx) > tumor_capacity:
        tumor[idx[tumor_capacity:]] = False
    return tumor


def tumor_capacity(tumor_area_level0: float, geometry: PatchGeometry) -> int:
    if tumor_area_level0 <= 0:
        return 0
    return max(1, int(np.ceil(TUMOR_PATCHES_PER_FOOTPRINT * tumor_area_level0
                              / geometry.footprint ** 2)))


def sample_top_left(rng: np.random.Generator, candidates_thumb: np.ndarray, n: int, *,
                    thumb_downsample: float, geometry: PatchGeometry,
                    accept: Callable[[np.ndarray], np.ndarray],
                    max_tries: int = MAX_TRIES_PER_PATCH) -> np.ndarray:
    """Draw up to `n` patch top-left corners (int64 (k, 2), level 0, k <= n).

    Each draw picks a candidate thumbnail pixel uniformly, a uniform point inside it (level 0),
    snaps the patch onto the level-0 grid, and keeps it if the patch lies inside the slide and
    `accept(centres_level0)` is true at its exact centre. Stops after `max_tries * n` draws
    (then k < n: the class has too little usable area).
    """
    if n <= 0:
        return np.zeros((0, 2), np.int64)
    cand = np.flatnonzero(np.asarray(candidates_thumb, bool).ravel())
    if cand.size == 0:
        return np.zeros((0, 2), np.int64)
    w = candidates_thumb.shape[1]
    got: list[np.ndarray] = []
    have = 0
    tries = 0
    budget = max_tries * n
    while have < n and tries < budget:
        batch = min(max(2 * (n - have), 64), budget - tries)
        tries += batch
        pick = cand[rng.integers(0, cand.size, batch)]
        ty, tx = np.divmod(pick, w)
        jitter = rng.random((batch, 2))
        pts = np.stack([(tx + jitter[:, 0]) * thumb_downsample,
                        (ty + jitter[:, 1]) * thumb_downsample], axis=1)
        tl = geometry.top_left(pts)
        ok = geometry.inside(tl)
        if ok.any():
            ok[ok] = accept(geometry.centres(tl[ok]))
        kept = tl[ok][: n - have]
        got.append(kept)
        have += len(kept)
    return np.concatenate(got) if got else np.zeros((0, 2), np.int64)


@dataclass(frozen=True)
class TumorMaps:
    """Where tumor may lie on the thumbnail and how to test a level-0 point exactly.

    `candidates` (bool, thumbnail frame) is where tumor centres are drawn; `core` is what is
    surely tumor (taken out of the non-tumor candidates); `accept(centres_level0)` is the exact
    test at level 0 (polygons or the mask TIFF)."""

    candidates: np.ndarray
    core: np.ndarray
    area_level0: float
    accept: Callable[[np.ndarray], np.ndarray]
    # partial annotations (`lymph.pipeline.partial`): non-tumor only inside the reviewed regions
    normal_region: np.ndarray | None = None
    normal_accept: Callable[[np.ndarray], np.ndarray] | None = None

    @classmethod
    def empty(cls, shape: tuple[int, ...]) -> TumorMaps:
        none = np.zeros(shape, bool)
        return cls(none, none, 0.0, lambda c: np.zeros(len(c), bool))
