"""`S_overlay.png`: the tumor map over the slide's thumbnail, for a pathologist to trust.

The slide's name and score in the title, a colour bar of the probability, the ground truth
outlined where an annotation is found beside the slide (`S.xml`, `S.geojson`, `S_mask.tif`:
`lymph.data.annotations.find_annotations`), and a colour scale (yellow -> orange -> red, with
opacity rising with the probability) that no H&E stain takes: hematoxylin is blue-purple, eosin
pink, so the old 'inferno' scale (purple in its middle) hid among nuclei.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

MAP_CMAP = "YlOrRd"  # no blue or purple: cannot be taken for hematoxylin
TRUTH_COLOR = "#00e5ff"  # cyan outline: no H&E colour, distinct from the map's scale
MAX_ALPHA = 0.75


def truth_on_thumb(slide_path: str | Path | None, *, shape: tuple[int, int],
                   thumb_downsample: float) -> np.ndarray | None:
    """The tumor annotation of the slide rasterized on its thumbnail grid (bool), or None when
    no annotation lies beside it or it cannot be read (a warning then: the overlay goes on)."""
    from lymph.data.annotations import find_annotations, rasterize, read_annotations

    if slide_path is None:
        return None
    try:
        ann_path = find_annotations(Path(slide_path))
        if ann_path is None:
            return None
        if ann_path.suffix.lower() in (".tif", ".tiff"):
            return _mask_on_thumb(ann_path, shape)
        ann = read_annotations(ann_path)
        if not ann:
            return None
        return rasterize(ann, x_level0=0, y_level0=0, width=shape[1], height=shape[0],
                         downsample=thumb_downsample).astype(bool)
    except Exception as exc:  # an unreadable annotation never costs the overlay
        warnings.warn(f"{slide_path}: ground truth not drawn on the overlay ({exc})",
                      stacklevel=2)
        return None


def _mask_on_thumb(path: Path, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    from lymph.data.annotations import open_mask

    reader = open_mask(path)
    try:
        thumb, _ = reader.thumbnail(max(shape))
    finally:
        reader.close()
    grey = np.asarray(thumb)[..., 0] if np.asarray(thumb).ndim == 3 else np.asarray(thumb)
    img = Image.fromarray((grey > 0).astype(np.uint8) * 255)
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.NEAREST)) > 0


def draw_overlay(thumb: np.ndarray, prob_map: np.ndarray, path: str | Path, *, title: str,
                 truth: np.ndarray | None = None) -> Path:
    """The map (``MAP_CMAP``, opacity rising with probability to ``MAX_ALPHA``) over the
    thumbnail, a probability colour bar, ``truth`` outlined; PNG written atomically."""
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D
    from PIL import Image

    from lymph.model.figures import _figure, _save

    h, w = thumb.shape[:2]
    small = np.asarray(Image.fromarray(prob_map).resize((w, h), Image.Resampling.BILINEAR))
    levels = np.arange(256, dtype=np.float32) / 255.0
    cmap = matplotlib.colormaps[MAP_CMAP]
    color_lut = cmap(levels)[:, :3].astype(np.float32) * 255.0
    alpha = np.clip(levels * 1.5, 0.0, MAX_ALPHA)[small][..., None]
    blended = thumb.astype(np.float32) * (1 - alpha) + color_lut[small] * alpha
    scale = 9.0 / max(w, h)
    fig = _figure(max(3.5, w * scale) + 1.4, max(3.0, h * scale) + 0.6)
    ax = fig.add_subplot()
    ax.imshow(np.clip(blended + 0.5, 0, 255).astype(np.uint8))
    handles = []
    if truth is not None and truth.any() and not truth.all():
        ax.contour(truth.astype(np.float32), levels=[0.5], colors=[TRUTH_COLOR], linewidths=1.2)
        handles.append(Line2D([], [], color=TRUTH_COLOR, lw=1.5, label="ground truth"))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=7)
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=ax, shrink=0.8)
    bar.set_label("tumor probability (opacity rises with it, to 0.75)")
    return _save(fig, path)


def overlay_title(name: str, maps: Any, threshold: float) -> str:
    """`S: p=0.962, 27 detections at >= 0.5`."""
    n = len(maps.detections)
    return (f"{name}: slide score p={maps.probability:.3f}, {n} detection"
            f"{'' if n == 1 else 's'} (map >= {threshold:g})")
