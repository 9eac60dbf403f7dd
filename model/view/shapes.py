"""Outlines the viewer draws, as level-0 polygons: ground truth (ASAP XML or QuPath GeoJSON
through ``read_annotations``; a mask TIFF through ``model.camelyon.truth_mask``, traced at 1/32)
and ``lymph suggest``'s regions (``S_suggestions.geojson``, QuPath GeoJSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np

from lymph.data.errors import AnnotationError
from lymph.data.partial import SUGGESTED_CLASS

TRUTH_DOWNSAMPLE = 32.0
MAX_SUGGESTIONS = 10_000


def _points(points: np.ndarray) -> list[list[float]]:
    return [[round(float(x), 1), round(float(y), 1)] for x, y in points]


def mask_outlines(mask: np.ndarray, *, downsample: float) -> list[list[list[float]]]:
    """Every boundary ring of a bool mask whose pixel (i, j) covers level-0
    [j * downsample, (j + 1) * downsample), as level-0 polygons (pixel-centre contours)."""
    import contourpy

    if not mask.any():
        return []
    padded = np.pad(mask.astype(np.float64), 1)
    # line_type "Separate": one (n, 2) array per ring (contourpy types every line type's return)
    lines = cast(list[np.ndarray],
                 contourpy.contour_generator(z=padded, line_type="Separate").lines(0.5))
    rings = []
    for ring in lines:
        if len(ring) < 4:
            continue
        x = (ring[:, 0] - 1 + 0.5) * downsample
        y = (ring[:, 1] - 1 + 0.5) * downsample
        rings.append(_points(np.stack([x, y], axis=1)))
    return rings


def truth_outlines(slide: Path, annotation: Path, *, dimensions: tuple[int, int]
                   ) -> dict[str, Any]:
    """{"source", "tumor": [polygons], "holes": [polygons]} of one slide's ground truth."""
    from lymph.data.annotations import read_annotations
    from lymph.model.camelyon import truth_mask

    if annotation.suffix.lower() in (".xml", ".geojson", ".json"):
        ann = read_annotations(annotation)
        return {"source": annotation.name,
                "tumor": [_points(p.points_level0) for p in ann.tumor],
                "holes": [_points(p.points_level0) for p in ann.holes]}
    mask = truth_mask(slide, annotation, dimensions=dimensions, downsample=TRUTH_DOWNSAMPLE)
    return {"source": annotation.name, "tumor": mask_outlines(mask, downsample=TRUTH_DOWNSAMPLE),
            "holes": []}


def _label(props: dict[str, Any]) -> tuple[str, float | None]:
    name = str(props.get("name") or "")[:80]
    score = None
    measurements = props.get("measurements")
    for key in ("score", "priority", "uncertainty", "probability"):
        for src in (props, measurements if isinstance(measurements, dict) else {}):
            value = src.get(key)
            if isinstance(value, int | float) and np.isfinite(value):
                score = float(value)
                break
        if score is not None:
            break
    return name, score


def _suggested(props: dict[str, Any]) -> bool:
    """A region still to annotate: classified `Suggested` (as `lymph suggest` writes it), or
    unclassified (a hand-made file). A box the pathologist set to `Reviewed`, and the slide's
    tumor outlines that `lymph suggest` copies into the file, are not suggestions."""
    cls = props.get("classification")
    name = cls.get("name") if isinstance(cls, dict) else cls
    return not isinstance(name, str) or not name or name.strip().lower() == SUGGESTED_CLASS


def read_suggestions(path: Path) -> list[dict[str, Any]]:
    """The regions of a QuPath GeoJSON file (``lymph suggest``): polygons (outer rings) and
    points, each with its name and score (``score``/``priority``/... property) when given.
    AnnotationError naming the file for anything that is not GeoJSON."""
    from lymph.data.annotations import feature_parts, geojson_features, load_json, ring_points

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read ({exc})") from exc
    out: list[dict[str, Any]] = []
    for i, feat in enumerate(geojson_features(load_json(data, path), path)):
        parts = feature_parts(feat, i, path)
        if parts is None:
            continue
        given = feat.get("properties")
        props = given if isinstance(given, dict) else {}
        if not _suggested(props):
            continue  # the slide's own outlines and reviewed boxes, carried in the same file
        name, score = _label(props)
        geom = feat.get("geometry") or {}
        if parts[2] == "Point":
            xy = geom.get("coordinates")
            if (isinstance(xy, list) and len(xy) >= 2
                    and all(isinstance(v, int | float) for v in xy[:2])):
                out.append({"name": name, "score": score, "x": float(xy[0]), "y": float(xy[1])})
        for poly in parts[3]:
            ring = ring_points(poly[0], name, path) if poly else None
            if ring is not None:
                out.append({"name": name, "score": score, "polygon": _points(ring)})
        if len(out) > MAX_SUGGESTIONS:
            raise AnnotationError(f"{path}: over {MAX_SUGGESTIONS} suggested regions; is it "
                                  "a suggestions file?")
    return out
