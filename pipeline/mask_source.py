"""A mask TIFF as the tumor source of a slide (`lymph extract` with `<slide>_mask.tif`): its
thumbnail for drawing tumor centres, the exact test of a level-0 point, and each patch's mask
at the patch's own resolution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lymph.data.annotations import open_mask
from lymph.data.errors import SlideError
from lymph.data.slides import SlideReader


class MaskSource:
    """A mask TIFF (non-zero = tumor) read through OpenSlide at the patch's level."""

    def __init__(self, path: Path, slide: SlideReader) -> None:
        self.path = path
        self.reader = open_mask(path)  # tiled (OpenSlide) or strip TIFF
        if self.reader.dimensions != slide.dimensions:
            self.reader.close()
            raise SlideError(f"{path}: mask is {self.reader.dimensions}, slide "
                             f"{slide.path} is {slide.dimensions}; the mask must match level 0")

    def __enter__(self) -> MaskSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reader.close()

    def thumb(self, shape: tuple[int, ...], thumb_size: int) -> np.ndarray:
        from PIL import Image

        m, _ = self.reader.thumbnail(thumb_size)
        m = m.max(axis=2)
        if m.shape != shape:
            m = np.asarray(Image.fromarray(m).resize((shape[1], shape[0]),
                                                     Image.Resampling.NEAREST))
        return m > 0

    def contains(self, centres_level0: np.ndarray) -> np.ndarray:
        out = np.zeros(len(centres_level0), bool)
        for k, (x, y) in enumerate(np.floor(centres_level0).astype(np.int64)):
            out[k] = self.reader.read_region((int(x), int(y)), 0, (1, 1))[0, 0].max() > 0
        return out

    def patch(self, top_left_level0: np.ndarray, downsample: float, size: int) -> np.ndarray:
        from PIL import Image

        r = self.reader
        lev = min(range(r.level_count), key=lambda i: abs(r.level_downsamples[i] - downsample))
        if abs(r.level_downsamples[lev] - downsample) <= 1e-3 * downsample:
            return (r.read_region(tuple(top_left_level0), lev, (size, size)).max(axis=2) > 0
                    ).astype(np.uint8)
        lev = max(i for i in range(r.level_count) if r.level_downsamples[i] <= downsample)
        n = int(np.ceil(size * downsample / r.level_downsamples[lev]))
        m = r.read_region(tuple(top_left_level0), lev, (n, n)).max(axis=2)
        return (np.asarray(Image.fromarray(m).resize((size, size), Image.Resampling.NEAREST))
                > 0).astype(np.uint8)
