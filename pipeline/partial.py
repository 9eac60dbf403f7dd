"""Sampling on partially annotated slides (see `lymph.data.partial` for the file formats).

On a slide whose annotation file has reviewed regions, `lymph extract` draws tumor centres on
annotated tumor inside a reviewed region and non-tumor centres on tissue inside a reviewed region
outside every tumor outline; unreviewed tissue is never sampled, and mask pixels outside the
reviewed regions are IGNORE. A slide labelled normal (labels CSV, or a `normal_*` name) whose
file has reviewed regions but no tumor outline stays an exhaustive normal slide: all its tissue
is known to be non-tumor, so the regions add nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from lymph.data.annotations import Annotations, contains, coverage_thumb, rasterize
from lymph.data.errors import NoTissueError
from lymph.data.partial import IGNORE, in_reviewed, is_partial, reviewed_areas
from lymph.pipeline.sampling import TumorMaps


def _accept_tumor(ann: Annotations, centres_level0: np.ndarray) -> np.ndarray:
    ok = in_reviewed(ann, centres_level0)
    if ok.any():
        ok[ok] = contains(ann, centres_level0[ok])
    return ok


def _accept_normal(ann: Annotations, centres_level0: np.ndarray) -> np.ndarray:
    ok = in_reviewed(ann, centres_level0)
    if ok.any():
        ok[ok] = ~contains(ann, centres_level0[ok])
    return ok


def resolve(ann: Annotations | None, *, name: str, labels: Mapping[str, bool] | None
            ) -> tuple[Annotations | None, bool]:
    """(annotations to use, whether the slide is extracted partially)."""
    from lymph.pipeline.extract import slide_status

    if not is_partial(ann):
        return ann, False
    assert ann is not None
    if not ann and slide_status(name, has_annotations=False, labels=labels)[0] == "normal":
        return None, False  # a normal slide is non-tumor everywhere: exhaustive
    return ann, True


def tumor_maps(ann: Annotations, *, tissue: np.ndarray, thumb_downsample: float) -> TumorMaps:
    """The `TumorMaps` of a partially annotated slide: tumor candidates inside the
    reviewed regions, non-tumor candidates restricted to them (`normal_region`), exact tests
    at level 0 that require a reviewed region, and the tumor area inside the regions (for the
    tumor patch cap). NoTissueError when the regions hold neither tissue nor tumor."""
    shape, ds = tissue.shape, thumb_downsample
    region = coverage_thumb(Annotations(tumor=ann.reviewed), shape=shape, downsample=ds)
    cand = coverage_thumb(ann, shape=shape, downsample=ds) & region if ann else np.zeros(
        shape, bool)
    core = rasterize(ann, x_level0=0, y_level0=0, width=shape[1], height=shape[0],
                     downsample=ds).astype(bool)
    if not (tissue & region).any() and not cand.any():
        raise NoTissueError(f"{ann.source}: its {len(ann.reviewed)} reviewed region(s) hold no "
                            "tissue or tumor (are they drawn on another slide, or in another "
                            "level's pixels?); the slide was not written")
    _, tumor_area = reviewed_areas(ann)
    return TumorMaps(cand, core, tumor_area, functools.partial(_accept_tumor, ann),
                    normal_region=region, normal_accept=functools.partial(_accept_normal, ann))


def slide_attrs(ann: Annotations) -> dict[str, Any]:
    """What the store records of a partially annotated slide (schema: `lymph.data.store`)."""
    area, tumor = reviewed_areas(ann)
    return {"reviewed": True, "reviewed_regions": len(ann.reviewed),
            "reviewed_area_level0": area, "reviewed_tumor_area_level0": tumor,
            "mask_ignore_value": IGNORE}
