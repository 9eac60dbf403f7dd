"""QuPath GeoJSON reader (FeatureCollection, bare Feature or list of Features).

Polygon and MultiPolygon geometries; interior rings are holes. A classification name containing
"tumor" (or "metasta") is tumor, one containing "exclusion" is a hole; unclassified annotations
are tumor with a warning (QuPath exports outlines drawn without a class); `Reviewed`/`ROI` are
reviewed regions, `Suggested` boxes are skipped (`lymph.data.partial`); other classes (cells,
nuclei, "Stroma", ...) are ignored with a warning. Points and lines are ignored with a warning.

The walkers are public (`geojson_features`, `feature_parts`, `ring_points`, `load_json`): the
viewer reads `lymph suggest`'s files with them.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from lymph.data.annotations.kinds import Sorted, class_role
from lymph.data.annotations.polygons import Annotations, Polygon, check_points
from lymph.data.errors import AnnotationError

Feature = dict[str, Any]
"""A GeoJSON Feature as parsed JSON: `type`, `geometry`, `properties` (values not yet checked)."""


class FeatureParts(NamedTuple):
    """What one Feature holds: its name, its class (None: unclassified), its geometry type and,
    for a Polygon or MultiPolygon, its polygons as lists of rings (the outer ring first)."""

    name: str
    cls: str | None
    geometry: str
    polygons: list[Any]


def _classification(props: Feature) -> str | None:
    cls = props.get("classification")
    if isinstance(cls, dict):
        name = cls.get("name")
        return str(name) if name is not None else None
    if isinstance(cls, str):
        return cls
    return None


_GEOMETRY_TYPES = frozenset({"Polygon", "MultiPolygon", "Point", "MultiPoint", "LineString",
                             "MultiLineString", "GeometryCollection"})


def geojson_features(obj: object, source: Path | None) -> Iterator[Feature]:
    """The Features of a FeatureCollection, a Feature, a bare geometry or (nested) lists of
    them, walked with an explicit stack (no recursion, so no RecursionError on deep input)."""
    stack: list[object] = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
            continue
        if not isinstance(item, dict):
            raise AnnotationError(f"{source}: expected GeoJSON objects, found "
                                  f"{type(item).__name__} {str(item)[:40]!r}; is it a QuPath "
                                  "GeoJSON export?")
        kind = item.get("type")
        if kind == "FeatureCollection":
            feats = item.get("features")
            if not isinstance(feats, list):
                raise AnnotationError(f"{source}: FeatureCollection without a 'features' list")
            stack.extend(reversed(feats))
        elif kind == "Feature":
            yield item
        elif isinstance(kind, str) and kind in _GEOMETRY_TYPES:
            yield {"type": "Feature", "geometry": item, "properties": {}}
        else:
            raise AnnotationError(f"{source}: not GeoJSON (object type {str(kind)[:40]!r}); "
                                  "expected a FeatureCollection, a Feature or a list of "
                                  "Features")


def ring_points(coords: object, name: str, source: Path | None) -> np.ndarray | None:
    """The points of one ring (closing point dropped); None when it has under 3 points."""
    if not isinstance(coords, list) or not all(isinstance(c, list) for c in coords):
        raise AnnotationError(f"{source}: feature {name!r}: a ring must be a list of [x, y] "
                              f"pairs, got {str(coords)[:40]!r}")
    if any(len(c) < 2 for c in coords):
        raise AnnotationError(f"{source}: feature {name!r}: a ring must be a list of [x, y] "
                              "pairs (a point has fewer than 2 numbers)")
    pts = [c[:2] for c in coords]
    if len(pts) > 1 and pts[0] == pts[-1]:
        pts = pts[:-1]
    if len(pts) < 3:
        return None
    return check_points(pts, name=name, source=source)


def feature_parts(feat: Feature, i: int, source: Path | None) -> FeatureParts | None:
    """The name, class, geometry type and polygons (lists of rings) of one Feature, or None for a
    feature without a geometry. AnnotationError when its members have the wrong types."""
    geom = feat.get("geometry")
    props = feat.get("properties")
    if props is None:
        props = {}
    if not isinstance(props, dict):
        raise AnnotationError(f"{source}: feature {i}: 'properties' must be an object, got "
                              f"{type(props).__name__}; is it a QuPath GeoJSON export?")
    name = str(props.get("name") or feat.get("id") or f"feature {i}")[:80]
    if geom is None:
        return None
    if not isinstance(geom, dict):
        raise AnnotationError(f"{source}: feature {name!r}: 'geometry' must be an object "
                              f"with 'type' and 'coordinates', got {type(geom).__name__} "
                              f"{str(geom)[:40]!r}")
    gtype = geom.get("type")
    coords = geom.get("coordinates")
    if gtype == "Polygon":
        polys = [coords if coords is not None else []]
    elif gtype == "MultiPolygon":
        polys = coords if coords is not None else []
    else:
        return FeatureParts(name, _classification(props), str(gtype)[:40], [])
    if not isinstance(polys, list) or not all(isinstance(r, list) for r in polys):
        raise AnnotationError(f"{source}: feature {name!r}: {gtype} coordinates must be "
                              f"nested lists of [x, y] pairs, got {str(coords)[:40]!r}")
    return FeatureParts(name, _classification(props), str(gtype), polys)


def load_json(data: bytes | str, source: Path | None) -> object:
    """Parsed JSON, or AnnotationError naming `source` (also for nesting too deep to parse)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise AnnotationError(f"{source}: JSON nested too deeply to be GeoJSON; is it a QuPath "
                              "export?") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{source}: not valid JSON ({str(exc)[:100]})") from None


def parse_geojson(data: bytes | str, *, source: Path | None = None) -> Annotations:
    """The Annotations of QuPath GeoJSON text (`source`, the file, names it in errors and
    warnings); NCRF's positive/negative JSON is refused with the fix."""
    obj = load_json(data, source)
    if isinstance(obj, dict) and ("positive" in obj or "negative" in obj) and "type" not in obj:
        raise AnnotationError(f"{source}: looks like NCRF's JSON (positive/negative lists), "
                              "not GeoJSON; convert it to ASAP XML or QuPath GeoJSON")
    found = Sorted(source)
    unclassified = 0
    for i, feat in enumerate(geojson_features(obj, source)):
        parts = feature_parts(feat, i, source)
        if parts is None:
            found.ignore("None")
            continue
        name, cls, gtype, polys = parts
        role = class_role(cls)
        if role == "suggested":
            found.suggested += 1
            continue
        if gtype not in ("Polygon", "MultiPolygon") or role is None:
            found.ignore(gtype if gtype not in ("Polygon", "MultiPolygon") else f"class {cls!r}")
            continue
        unclassified += cls is None
        for rings in polys:
            if not rings:
                continue
            outer = ring_points(rings[0], name, source)
            if outer is None:
                found.ignore("degenerate polygon")
                continue
            found.add(role, Polygon(outer, name=name, group=cls or ""))
            for inner in rings[1:]:
                pts = ring_points(inner, name, source)
                if pts is not None and role == "tumor":
                    found.holes.append(Polygon(pts, name=f"{name} (hole)", group=cls or ""))
    if found.ignored:
        warnings.warn(f"{source}: ignored features: {found.ignored_text()}", stacklevel=2)
    if unclassified:
        warnings.warn(f"{source}: {unclassified} unclassified polygon feature(s) taken as tumor",
                      stacklevel=2)
    return found.annotations()
