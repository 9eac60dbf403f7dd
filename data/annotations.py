"""Tumor annotations: ASAP XML (CAMELYON16/17), QuPath GeoJSON and mask TIFFs, rasterized per
patch at the patch's own resolution.

Group rules (case-insensitive):
- ASAP XML: groups `_0`, `_1`, `Tumor`, `metastases` are tumor; `_2`, `Exclusion` are holes
  (normal tissue inside a tumor outline). Polygons in any other group (wsidicom's `None`, a
  user's own names) are taken as tumor, with a warning naming the group, since an annotated
  outline on a CAMELYON-style slide is a lesion unless marked otherwise; `Reviewed`/`ROI` are
  reviewed regions and `Suggested` boxes are skipped (`lymph.data.partial`). `Dot`, `PointSet` and
  other non-area types are ignored with a warning. `Rectangle` and `Spline` outlines are polygons
  through their points.
- QuPath GeoJSON (FeatureCollection, bare Feature or list of Features): Polygon and MultiPolygon
  geometries; interior rings are holes. A classification name containing "tumor" (or
  "metasta") is tumor, one containing "exclusion" is a hole; unclassified annotations are tumor
  with a warning (QuPath exports outlines drawn without a class); `Reviewed`/`ROI` are reviewed
  regions, `Suggested` boxes are skipped (`lymph.data.partial`); other classes (cells, nuclei,
  "Stroma", ...) are ignored with a warning. Points and lines are ignored with a warning.
- XML with a DOCTYPE or ENTITY declaration is refused (AnnotationError): annotation files never
  need them, and they are the vector of external-entity and entity-expansion attacks.

Rasterization samples pixel centres: level pixel (i, j) of a region with top-left
(x_level0, y_level0) at `downsample` is tumor iff the level-0 point
(x_level0 + (j + 0.5) * downsample, y_level0 + (i + 0.5) * downsample) is inside a tumor
polygon (even-odd rule per polygon, union over polygons) and inside no hole.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lymph.data.errors import AnnotationError, ConfigError, SlideError
from lymph.data.io import decode_text
from lymph.data.slides import slide_id, strip_slide_suffix

TUMOR_GROUPS = frozenset({"_0", "_1", "tumor", "metastases"})
HOLE_GROUPS = frozenset({"_2", "exclusion"})
AREA_TYPES = frozenset({"polygon", "rectangle", "spline"})


COORD_LIMIT = float(2 ** 31)
"""Level-0 coordinates beyond +-2^31 px are refused: no slide is that large (CAMELYON16 slides
are under 2^18 px), and such values (1e300) overflow the integer pixel arithmetic."""


def check_points(pts: Any, *, name: str, source: Path | str | None = None) -> np.ndarray:
    """(k >= 3, 2) float64 finite points inside +-COORD_LIMIT, else AnnotationError naming the
    file, the annotation and the bad value."""
    where = f"{source}: " if source is not None else ""
    try:
        arr = np.asarray(pts, dtype=np.float64)
    except OverflowError:
        raise AnnotationError(f"{where}polygon {name!r} has a coordinate too large for a "
                              f"number of pixels (beyond +-{COORD_LIMIT:.0f} px of any slide); "
                              "are the coordinates in level-0 pixels?") from None
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"{where}annotation {name!r}: coordinates are not numbers "
                              f"({type(exc).__name__}: {str(exc)[:80]}); export it again") from None
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] < 3:
        raise AnnotationError(f"{where}polygon {name!r} needs (k >= 3, 2) points, got shape "
                              f"{arr.shape}")
    if -COORD_LIMIT <= arr.min() and arr.max() <= COORD_LIMIT:  # finite and in range (NaN fails)
        return arr
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise AnnotationError(f"{where}polygon {name!r} has a non-finite coordinate "
                              f"{tuple(arr[np.flatnonzero(bad)[0]])} (NaN or infinity); "
                              "export it again")
    big = (np.abs(arr) > COORD_LIMIT).any(axis=1)
    if big.any():
        raise AnnotationError(f"{where}polygon {name!r} has coordinate "
                              f"{tuple(float(v) for v in arr[np.flatnonzero(big)[0]])}, beyond "
                              f"+-{COORD_LIMIT:.0f} px of any slide; are the coordinates in "
                              "level-0 pixels?")
    return arr


@dataclass(frozen=True, eq=False)
class Polygon:
    """A closed outline in level-0 pixels. Inside means inside by the even-odd rule, for
    `contains` (patch centres), `rasterize` (masks) and `area_level0` alike, so a
    self-intersecting outline (a bow-tie) is the union of its lobes everywhere."""

    points_level0: np.ndarray  # (k, 2) float64 x, y
    name: str = ""
    group: str = ""

    def __post_init__(self) -> None:
        pts = check_points(self.points_level0, name=self.name)
        pts.setflags(write=False)
        object.__setattr__(self, "points_level0", pts)

    @functools.cached_property  # asked for every polygon by check_inside and the index
    def bbox_level0(self) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max)."""
        p = self.points_level0
        return float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(
            p[:, 1].max())

    @functools.cached_property
    def area_level0(self) -> float:
        """Even-odd area in level-0 pixels squared: the shoelace value for a simple polygon;
        for a self-intersecting one (whose lobes cancel in the shoelace sum: 0 for a symmetric
        bow-tie) the area of its even-odd region, measured on a 1024 x 1024 grid over its box."""
        x, y = self.points_level0[:, 0], self.points_level0[:, 1]
        shoelace = float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)
        coarse = _grid_area(self.points_level0, cells=256)
        if abs(coarse - shoelace) <= 0.02 * max(coarse, shoelace) or not _self_intersects(
                self.points_level0):
            return shoelace
        return _grid_area(self.points_level0, cells=1024)


def _grid_area(points: np.ndarray, *, cells: int) -> float:
    """Even-odd area of one polygon counted at the centres of a cells x cells grid on its box."""
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    step = max(float(x1 - x0), float(y1 - y0), 1e-9) / cells
    w, h = max(1, int(np.ceil((x1 - x0) / step))), max(1, int(np.ceil((y1 - y0) / step)))
    grid = _parity_grid(points, x0=float(x0), y0=float(y0), width=w, height=h, step=step)
    return float(grid.sum()) * step * step


def _self_intersects(points: np.ndarray, *, block: int = 256) -> bool:
    """Whether two non-adjacent edges of the closed polygon cross (exact segment tests)."""
    a, b = points, np.roll(points, -1, axis=0)
    n = len(a)
    for s0 in range(0, n, block):
        pa, pb = a[s0:s0 + block, None, :], b[s0:s0 + block, None, :]
        qa, qb = a[None, :, :], b[None, :, :]
        d1 = _cross(qa, qb, pa)
        d2 = _cross(qa, qb, pb)
        d3 = _cross(pa, pb, qa)
        d4 = _cross(pa, pb, qb)
        hit = (d1 * d2 < 0) & (d3 * d4 < 0)
        i = np.arange(s0, min(n, s0 + block))[:, None]
        j = np.arange(n)[None, :]
        gap = np.abs(i - j)
        hit &= (gap > 1) & (gap < n - 1)
        if hit.any():
            return True
    return False


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a[..., 0] - o[..., 0]) * (b[..., 1] - o[..., 1]) - (a[..., 1] - o[..., 1]) * (
        b[..., 0] - o[..., 0])


@dataclass(frozen=True, eq=False)
class Annotations:
    tumor: tuple[Polygon, ...] = ()
    holes: tuple[Polygon, ...] = ()
    source: Path | None = None
    reviewed: tuple[Polygon, ...] = ()  # reviewed regions (partial annotations), else ()

    def __bool__(self) -> bool:
        return bool(self.tumor)

    @property
    def bbox_level0(self) -> tuple[float, float, float, float] | None:
        if not self.tumor:
            return None
        boxes = np.array([p.bbox_level0 for p in self.tumor])
        return (float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()),
                float(boxes[:, 3].max()))


# --- reading --------------------------------------------------------------------------------


def read_annotations(path: str | Path) -> Annotations:
    """Read ASAP XML (.xml) or QuPath GeoJSON (.geojson, .json). AnnotationError on anything
    malformed, unsafe or of another kind; the message names the file."""
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: no such annotation file; check --annotations")
    suffix = path.suffix.lower()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read ({exc})") from exc
    if suffix == ".xml":
        return parse_asap_xml(data, source=path)
    if suffix in (".geojson", ".json"):
        return parse_geojson(data, source=path)
    raise AnnotationError(f"{path}: unknown annotation kind {suffix!r}; use ASAP .xml, QuPath "
                          ".geojson, or a S_mask.tif mask TIFF")


def _reject_dtd(data: bytes, source: Path | None) -> None:
    """Scan with expat and refuse any DOCTYPE or ENTITY declaration before building a tree."""
    import xml.parsers.expat

    def refuse(*_: Any) -> None:
        raise AnnotationError(f"{source}: XML with a DOCTYPE/ENTITY declaration is refused "
                              "(external entities and entity expansion are attack vectors); "
                              "export the annotations again from ASAP")

    parser = xml.parsers.expat.ParserCreate()
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise AnnotationError(f"{source}: malformed XML ({exc}); is it an ASAP export?") from exc


def _asap_number(c: Any, attr: str, name: str, k: int, source: Path | None) -> float:
    raw = c.get(attr)
    if raw is None:
        raise AnnotationError(f"{source}: annotation {name!r}, coordinate {k}: no {attr} "
                              "attribute (every <Coordinate> needs Order, X and Y); export it "
                              "again from ASAP")
    try:
        value = float(raw)
    except ValueError:
        raise AnnotationError(f"{source}: annotation {name!r}, coordinate {k}: {attr}="
                              f"{raw[:40]!r} is not a number; export it again from ASAP") from None
    if attr == "Order" and not np.isfinite(value):
        raise AnnotationError(f"{source}: annotation {name!r}, coordinate {k}: Order={raw!r} "
                              "is not a finite number")
    return value


def _asap_points_fast(ann: Any) -> np.ndarray | None:
    """(k, 2) points sorted by Order when every coordinate parses as numbers with a finite
    Order; None otherwise (the checked path then names the bad value)."""
    import math

    try:
        rows = [(float(c.get("Order", k)), float(c.get("X")), float(c.get("Y")))
                for k, c in enumerate(ann.iter("Coordinate"))]
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(r[0]) for r in rows):
        return None
    if any(a[0] > b[0] for a, b in zip(rows, rows[1:], strict=False)):
        rows.sort(key=lambda r: r[0])  # stable, as the checked path's sort
    return np.array([r[1:] for r in rows], dtype=np.float64).reshape(-1, 2)


def _asap_points(ann: Any, name: str, source: Path | None) -> np.ndarray | None:
    """The (k, 2) points of one ASAP annotation in Order order; None under 3 points."""
    fast = _asap_points_fast(ann)  # well-formed coordinates: one pass, no per-value checks
    if fast is not None:
        return None if len(fast) < 3 else check_points(fast, name=name, source=source)
    coords = []
    for k, c in enumerate(ann.iter("Coordinate")):
        order = _asap_number(c, "Order", name, k, source) if c.get("Order") is not None else k
        coords.append((order, _asap_number(c, "X", name, k, source),
                       _asap_number(c, "Y", name, k, source)))
    if len(coords) < 3:
        return None
    coords.sort(key=lambda t: t[0])
    return check_points([(x, y) for _, x, y in coords], name=name, source=source)


def parse_asap_xml(data: bytes | str, *, source: Path | None = None) -> Annotations:
    import xml.etree.ElementTree as ET

    raw = data.encode() if isinstance(data, str) else data
    _reject_dtd(raw, source)
    try:
        root = ET.fromstring(raw)
    except (ET.ParseError, ValueError) as exc:
        raise AnnotationError(f"{source}: malformed XML ({exc}); is it an ASAP export?") from None
    if root.tag != "ASAP_Annotations":
        raise AnnotationError(f"{source}: root element <{root.tag}>, expected "
                              "<ASAP_Annotations>; is it an ASAP/CAMELYON annotation file?")
    tumor: list[Polygon] = []
    holes: list[Polygon] = []
    reviewed: list[Polygon] = []
    suggested = 0
    ignored_types: dict[str, int] = {}
    unknown_groups: set[str] = set()
    from lymph.data.partial import region_role  # partial builds on this module

    for i, ann in enumerate(root.iter("Annotation")):
        kind = (ann.get("Type") or "").strip()
        group = (ann.get("PartOfGroup") or "None").strip()
        name = ann.get("Name") or f"Annotation {i}"
        if kind.lower() not in AREA_TYPES:
            ignored_types[kind or "?"] = ignored_types.get(kind or "?", 0) + 1
            continue
        pts = _asap_points(ann, name, source)
        if pts is None:
            key = f"{kind} with under 3 points"
            ignored_types[key] = ignored_types.get(key, 0) + 1
            continue
        poly = Polygon(pts, name=name, group=group)
        g = group.lower()
        role = region_role(group)
        if role is not None:
            suggested += role == "suggested"
            if role == "reviewed":
                reviewed.append(poly)
        elif g in HOLE_GROUPS:
            holes.append(poly)
        else:
            if g not in TUMOR_GROUPS:
                unknown_groups.add(group)
            tumor.append(poly)
    if ignored_types:
        what = ", ".join(f"{n} {k}" for k, n in sorted(ignored_types.items()))
        warnings.warn(f"{source}: ignored annotations that are not areas: {what}", stacklevel=2)
    if unknown_groups:
        warnings.warn(f"{source}: polygons in groups {sorted(unknown_groups)} taken as tumor "
                      "(tumor groups: _0, _1, Tumor, metastases; holes: _2, Exclusion; "
                      "reviewed regions: Reviewed, ROI)", stacklevel=2)
    _warn_suggested(suggested, source)
    return Annotations(tumor=tuple(tumor), holes=tuple(holes), source=source,
                       reviewed=tuple(reviewed))


def _warn_suggested(n: int, source: Path | None) -> None:
    if n:
        warnings.warn(f"{source}: {n} `Suggested` box(es) skipped (not yet reviewed); once a box "
                      "is annotated, change its class (QuPath) or group (ASAP) to `Reviewed`",
                      stacklevel=3)


def _classification(props: dict) -> str | None:
    cls = props.get("classification")
    if isinstance(cls, dict):
        name = cls.get("name")
        return str(name) if name is not None else None
    if isinstance(cls, str):
        return cls
    return None


_GEOMETRY_TYPES = frozenset({"Polygon", "MultiPolygon", "Point", "MultiPoint", "LineString",
                             "MultiLineString", "GeometryCollection"})


def _features(obj: Any, source: Path | None) -> Iterator[dict]:
    """The Features of a FeatureCollection, a Feature, a bare geometry or (nested) lists of
    them, walked with an explicit stack (no recursion, so no RecursionError on deep input)."""
    stack: list[Any] = [obj]
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


def _ring(coords: Any, name: str, source: Path | None) -> np.ndarray | None:
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


def _feature_parts(feat: dict, i: int, source: Path | None
                   ) -> tuple[str, str | None, str, list] | None:
    """(name, class, geometry type, polygons as lists of rings) of one Feature, or None for a
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
        return name, _classification(props), str(gtype)[:40], []
    if not isinstance(polys, list) or not all(isinstance(r, list) for r in polys):
        raise AnnotationError(f"{source}: feature {name!r}: {gtype} coordinates must be "
                              f"nested lists of [x, y] pairs, got {str(coords)[:40]!r}")
    return name, _classification(props), str(gtype), polys


def _role(cls: str | None) -> str | None:
    """'tumor', 'hole', 'reviewed', 'suggested' or None (ignored) for a QuPath class name."""
    from lymph.data.partial import region_role  # partial builds on this module

    low = (cls or "").lower()
    region = region_role(cls)
    if region is not None:
        return region
    if cls is None or "tumor" in low or "tumour" in low or "metasta" in low:
        return "tumor"
    return "hole" if "exclusion" in low else None


def _load_json(data: bytes | str, source: Path | None) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        raise AnnotationError(f"{source}: JSON nested too deeply to be GeoJSON; is it a QuPath "
                              "export?") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{source}: not valid JSON ({str(exc)[:100]})") from None


def parse_geojson(data: bytes | str, *, source: Path | None = None) -> Annotations:
    obj = _load_json(data, source)
    if isinstance(obj, dict) and ("positive" in obj or "negative" in obj) and "type" not in obj:
        raise AnnotationError(f"{source}: looks like NCRF's JSON (positive/negative lists), "
                              "not GeoJSON; convert it to ASAP XML or QuPath GeoJSON")
    tumor: list[Polygon] = []
    holes: list[Polygon] = []
    reviewed: list[Polygon] = []
    suggested = 0
    ignored: dict[str, int] = {}
    unclassified = 0
    for i, feat in enumerate(_features(obj, source)):
        parts = _feature_parts(feat, i, source)
        if parts is None:
            ignored["None"] = ignored.get("None", 0) + 1
            continue
        name, cls, gtype, polys = parts
        role = _role(cls)
        if role == "suggested":
            suggested += 1
            continue
        if gtype not in ("Polygon", "MultiPolygon") or role is None:
            key = gtype if gtype not in ("Polygon", "MultiPolygon") else f"class {cls!r}"
            ignored[key] = ignored.get(key, 0) + 1
            continue
        unclassified += cls is None
        for rings in polys:
            if not rings:
                continue
            outer = _ring(rings[0], name, source)
            if outer is None:
                ignored["degenerate polygon"] = ignored.get("degenerate polygon", 0) + 1
                continue
            target = {"tumor": tumor, "hole": holes, "reviewed": reviewed}[role]
            target.append(Polygon(outer, name=name, group=cls or ""))
            for inner in rings[1:]:
                pts = _ring(inner, name, source)
                if pts is not None and role == "tumor":
                    holes.append(Polygon(pts, name=f"{name} (hole)", group=cls or ""))
    if ignored:
        what = ", ".join(f"{n} {k}" for k, n in sorted(ignored.items()))
        warnings.warn(f"{source}: ignored features: {what}", stacklevel=2)
    if unclassified:
        warnings.warn(f"{source}: {unclassified} unclassified polygon feature(s) taken as tumor",
                      stacklevel=2)
    _warn_suggested(suggested, source)
    return Annotations(tumor=tuple(tumor), holes=tuple(holes), source=source,
                       reviewed=tuple(reviewed))


def find_annotations(slide_path: str | Path, *, annotations_dir: str | Path | None = None
                     ) -> Path | None:
    """The annotation file of slide `S`: `S.xml`, `S.geojson`, `S_mask.tif`, `S_Mask.tif` (in
    that order) in `annotations_dir`, default beside the slide; failing those, the newer of
    `S_suggestions.geojson` and `S_suggestions.xml` (`lymph suggest`'s files, reviewed in place:
    the one the pathologist saved last). Names match case-insensitively when no exact match
    exists (CAMELYON16 ships `tumor_001.tif` with `Tumor_001.xml`)."""
    slide_path = Path(slide_path)
    folder = Path(annotations_dir) if annotations_dir is not None else slide_path.parent
    stem = strip_slide_suffix(slide_path.name)  # `x.ome.tif` -> `x`
    if slide_path.is_dir() or (stem == slide_path.name and "." in stem):
        stem = slide_path.name if slide_path.is_dir() else slide_path.stem
    names = [f"{stem}.xml", f"{stem}.geojson", f"{stem}_mask.tif", f"{stem}_Mask.tif",
             f"{stem}_mask.tiff"]
    lower: dict[str, Path] | None = None
    for n in names:
        if (folder / n).is_file():
            return folder / n
        if lower is None:
            lower = ({p.name.lower(): p for p in sorted(folder.iterdir()) if p.is_file()}
                     if folder.is_dir() else {})
        if n.lower() in lower:
            return lower[n.lower()]
    from lymph.data.partial import suggestions_file  # partial builds on this module

    return suggestions_file(stem, lower or {})


def check_inside(ann: Annotations, *, width: int, height: int,
                 path: str | Path | None = None) -> list[str]:
    """Check the tumor polygons against a `width` x `height` (level 0) slide. AnnotationError
    when every one lies wholly outside it (0 tumor patches would follow: most often annotations
    of another slide, or drawn at another level); otherwise one warning message per polygon
    wholly outside (the rest are used). Messages give the polygon's bounds and the slide size."""
    where = path if path is not None else ann.source
    outside = []
    for poly in ann.tumor:
        x0, y0, x1, y1 = poly.bbox_level0
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            outside.append(poly)
    if not outside:
        return []

    def bounds(polys: Iterable[Polygon]) -> str:
        b = np.array([p.bbox_level0 for p in polys])
        return (f"x {b[:, 0].min():.0f}..{b[:, 2].max():.0f}, "
                f"y {b[:, 1].min():.0f}..{b[:, 3].max():.0f}")

    if len(outside) == len(ann.tumor):
        raise AnnotationError(f"{where}: every tumor polygon lies outside the slide (they span "
                              f"{bounds(outside)}; the slide is {width}x{height} px at level 0); "
                              "are these the annotations of another slide, or in the pixels of "
                              "another level?")
    return [f"{where}: tumor polygon {p.name!r} lies outside the slide ({bounds([p])}; the "
            f"slide is {width}x{height} px at level 0); it is ignored" for p in outside]


# --- mask TIFFs -----------------------------------------------------------------------------

MAX_STRIP_BYTES = 256 << 20
"""A compressed strip is decoded whole; one larger than this is refused (with the command that
rewrites the mask tiled) instead of filling memory."""


class StripTiffMask:
    """A mask TIFF that is not tiled (strips, as many tools write masks), which OpenSlide
    refuses: read with tifffile a few strips at a time, so memory stays bounded by the strips a
    region touches (uncompressed strips are read row by row). A `SlideReader` of one level;
    pixels outside the image read 0 (not tumor); the first sample (or the max over colour
    samples) is the mask value, returned in all three channels."""

    vendor: str | None = "strip-tiff"
    mpp: float | None = None

    def __init__(self, path: str | Path, *, cache_strips: int = 8) -> None:
        import tifffile

        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(str(self.path))
            page = self._tif.pages[0]
        except Exception as exc:  # tifffile raises many kinds on damaged files
            raise AnnotationError(f"mask {self.path}: not a readable TIFF ({type(exc).__name__}: "
                                  f"{str(exc)[:80]}); write the mask again") from None
        w, h, spp = int(page.imagewidth), int(page.imagelength), int(page.samplesperpixel)
        if page.is_tiled or (spp > 1 and int(page.planarconfig) != 1) or page.imagedepth != 1:
            self._tif.close()
            raise AnnotationError(f"mask {self.path}: a TIFF layout lymph cannot read by strips "
                                  f"(tiled={page.is_tiled}, planar={int(page.planarconfig)}); "
                                  f"{convert_mask_command(self.path)}")
        self._page, self._spp = page, spp
        self._rps = max(1, min(int(page.rowsperstrip or h), h))
        strips = -(-h // self._rps)
        if not len(page.dataoffsets) == len(page.databytecounts) == strips or w < 1:
            self._tif.close()
            raise AnnotationError(f"mask {self.path}: damaged TIFF ({len(page.dataoffsets)} "
                                  f"strip offsets for {strips} strips of a {w}x{h} image); "
                                  "write the mask again")
        self._raw = (int(page.compression) == 1 and page.bitspersample == 8
                     and np.dtype(page.dtype).itemsize == 1)
        if not self._raw and self._rps * w * spp * np.dtype(page.dtype).itemsize > MAX_STRIP_BYTES:
            self._tif.close()
            raise AnnotationError(f"mask {self.path}: one compressed strip of {self._rps} rows "
                                  f"is over {MAX_STRIP_BYTES / 2 ** 20:g} MiB decoded; "
                                  f"{convert_mask_command(self.path)}")
        self.dimensions = (w, h)
        self.level_count = 1
        self.level_dimensions = ((w, h),)
        self.level_downsamples = (1.0,)
        self.properties: dict[str, str] = {}
        self.warnings: list[str] = []
        self._fd = os.open(str(self.path), os.O_RDONLY)
        self._cache: dict[int, np.ndarray] = {}
        self._cache_strips = max(1, cache_strips)

    def _strip(self, index: int) -> np.ndarray:
        """uint8 (rows, width) of strip `index`."""
        strip = self._cache.get(index)
        if strip is not None:
            return strip
        page = self._page
        data = os.pread(self._fd, int(page.databytecounts[index]), int(page.dataoffsets[index]))
        try:
            seg = np.asarray(page.decode(data, index, jpegtables=page.jpegtables)[0])
        except Exception as exc:  # decoder errors of a damaged strip
            raise AnnotationError(f"mask {self.path}: strip {index} cannot be decoded "
                                  f"({type(exc).__name__}: {str(exc)[:80]}); write the mask "
                                  "again") from None
        rows = min(self._rps, self.dimensions[1] - index * self._rps)
        strip = _mask_values(seg.reshape(-1, self.dimensions[0], self._spp)[:rows])
        while len(self._cache) >= self._cache_strips:
            self._cache.pop(next(iter(self._cache)))
        self._cache[index] = strip
        return strip

    def _rows(self, y0: int, y1: int) -> np.ndarray:
        """uint8 (y1 - y0, width) mask rows, 0 <= y0 < y1 <= height."""
        w, spp = self.dimensions[0], self._spp
        if self._raw:  # uncompressed: read just these rows, however large the strips
            out = np.empty((y1 - y0, w), np.uint8)
            y = y0
            while y < y1:
                s, r = divmod(y, self._rps)
                n = min(y1 - y, self._rps - r)
                off = int(self._page.dataoffsets[s]) + r * w * spp
                buf = os.pread(self._fd, n * w * spp, off)
                if len(buf) != n * w * spp:
                    raise AnnotationError(f"mask {self.path}: the file ends inside row "
                                          f"{y + len(buf) // (w * spp)} of {self.dimensions[1]} "
                                          "(truncated copy?); copy or write the mask again")
                out[y - y0:y - y0 + n] = _mask_values(
                    np.frombuffer(buf, np.uint8).reshape(n, w, spp))
                y += n
            return out
        parts = [self._strip(s)[max(y0 - s * self._rps, 0):y1 - s * self._rps]
                 for s in range(y0 // self._rps, (y1 - 1) // self._rps + 1)]
        return np.concatenate(parts)

    def read_region(self, location_level0: tuple[int, int], level: int,
                    size: tuple[int, int], *, out: np.ndarray | None = None) -> np.ndarray:
        if level != 0:
            raise AnnotationError(f"mask {self.path}: level {level} out of range 0..0")
        x, y = int(location_level0[0]), int(location_level0[1])
        w, h = int(size[0]), int(size[1])
        if out is None:
            out = np.empty((h, w, 3), np.uint8)
        out[...] = 0
        iw, ih = self.dimensions
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, iw), min(y + h, ih)
        if x1 > x0 and y1 > y0:
            out[y0 - y:y1 - y, x0 - x:x1 - x] = self._rows(y0, y1)[:, x0:x1, None]
        return out

    def thumbnail(self, max_size: int) -> tuple[np.ndarray, float]:
        from lymph.data.slides import _thumbnail_from_levels

        return _thumbnail_from_levels(self, max_size)

    def close(self) -> None:
        os.close(self._fd)
        self._tif.close()
        self._cache.clear()

    def __enter__(self) -> StripTiffMask:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _mask_values(seg: np.ndarray) -> np.ndarray:
    """uint8 (rows, width) mask values from (rows, width, samples): the first sample of a grey
    mask, the max over the colour samples of an RGB(A) one (alpha ignored)."""
    if seg.shape[-1] >= 3:
        seg = seg[..., :3].max(axis=-1)
    else:
        seg = seg[..., 0]
    if seg.dtype != np.uint8:
        seg = (seg != 0).astype(np.uint8) if seg.dtype == bool else np.minimum(seg, 255).astype(
            np.uint8)
    return seg


def convert_mask_command(path: str | Path) -> str:
    """The exact command that rewrites a mask TIFF tiled (what OpenSlide reads), for messages."""
    p = Path(path)
    tiled = p.with_name(f"{p.stem}.tiled{p.suffix}")
    return (f"rewrite it tiled with `vips tiffsave '{p}' '{tiled}' --tile --tile-width 512 "
            f"--tile-height 512 --compression deflate --bigtiff && mv '{tiled}' '{p}'`")


def open_mask(path: str | Path) -> Any:
    """A `SlideReader` over a mask TIFF: OpenSlide for tiled TIFFs, `StripTiffMask` for strip
    TIFFs OpenSlide refuses. SlideError (OpenSlide's) for anything else."""
    from lymph.data.slides import open_slide

    try:
        with warnings.catch_warnings():  # a mask's microns per pixel are never used
            warnings.filterwarnings("ignore", message=".*microns-per-pixel")
            reader = open_slide(path)
        reader.warnings = [w for w in reader.warnings if "microns-per-pixel" not in w]
        return reader
    except SlideError as exc:
        if not _is_strip_tiff(Path(path)):  # a mask, not a slide: say so (not "move it out")
            cause = str(exc.__cause__ or exc).splitlines()[0][:160]
            raise SlideError(f"{path}: cannot read this tumor mask ({cause}); a mask beside a "
                             "slide (S_mask.tif) must be a TIFF that OpenSlide or tifffile "
                             "reads: convert it to TIFF, or rename it if it is not a mask") \
                from None
    return StripTiffMask(path)


def _is_strip_tiff(path: Path) -> bool:
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tif:
            return not tif.pages[0].is_tiled
    except Exception:  # not a TIFF at all
        return False


# --- geometry -------------------------------------------------------------------------------


def _parity_grid(points: np.ndarray, *, x0: float, y0: float, width: int, height: int,
                 step: float) -> np.ndarray:
    """Even-odd inside test of one polygon at the pixel centres of a grid: pixel (i, j) is the
    point (x0 + (j + 0.5) * step, y0 + (i + 0.5) * step). Returns bool (height, width)."""
    # work in grid units: pixel centre j sits at u = j + 0.5
    u = (points[:, 0] - x0) / step
    v = (points[:, 1] - y0) / step
    u2, v2 = np.roll(u, -1), np.roll(v, -1)
    vmin, vmax = np.minimum(v, v2), np.maximum(v, v2)
    # rows whose centre v_c = i + 0.5 satisfies vmin <= v_c < vmax (half-open: vertices count once)
    i_lo = np.maximum(np.ceil(vmin - 0.5), 0).astype(np.int64)
    i_hi = np.minimum(np.ceil(vmax - 0.5), height).astype(np.int64)  # exclusive
    keep = i_hi > i_lo
    if not keep.any():
        return np.zeros((height, width), bool)
    u, v, u2, v2, i_lo, i_hi = u[keep], v[keep], u2[keep], v2[keep], i_lo[keep], i_hi[keep]
    counts = i_hi - i_lo
    edge = np.repeat(np.arange(len(u)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    rows = i_lo[edge] + offsets
    vc = rows + 0.5
    t = (vc - v[edge]) / (v2[edge] - v[edge])
    uc = u[edge] + t * (u2[edge] - u[edge])
    # pixel centre j + 0.5 is right of the crossing iff j >= uc - 0.5, first j = ceil(uc - 0.5)
    first = np.clip(np.ceil(uc - 0.5), 0, width).astype(np.int64)
    # only rows some edge crosses, and columns between the first and last toggle, can be inside
    r0, r1 = int(rows.min()), int(rows.max()) + 1
    c0, c1 = int(first.min()), min(int(first.max()), width)
    out = np.zeros((height, width), bool)
    if c1 <= c0:
        return out
    nr = r1 - r0
    # toggles laid out column-major (column, row) so the running XOR runs over whole rows of
    # memory at once: 2x faster than accumulating along the last axis
    flat = (np.minimum(first, c1) - c0) * nr + (rows - r0)
    toggles = (np.bincount(flat, minlength=(c1 - c0 + 1) * nr) & 1).astype(np.uint8)
    acc = np.bitwise_xor.accumulate(toggles.reshape(c1 - c0 + 1, nr)[: c1 - c0], axis=0)
    out[r0:r1, c0:c1] = acc.T.view(bool)
    return out


def _overlaps(poly: Polygon, box: tuple[float, float, float, float]) -> bool:
    x_min, y_min, x_max, y_max = poly.bbox_level0
    return not (x_max < box[0] or x_min > box[2] or y_max < box[1] or y_min > box[3])


def rasterize(ann: Annotations, *, x_level0: float, y_level0: float, width: int, height: int,
              downsample: float) -> np.ndarray:
    """uint8 0/1 (height, width): tumor minus holes, sampled at pixel centres of a region whose
    top-left is (x_level0, y_level0) at `downsample` level-0 pixels per pixel."""
    if width < 0 or height < 0 or not downsample > 0:
        raise ValueError(f"rasterize needs width, height >= 0 and downsample > 0, got "
                         f"{width}x{height} at {downsample}")
    out = np.zeros((height, width), bool)
    box = (x_level0, y_level0, x_level0 + width * downsample, y_level0 + height * downsample)
    for poly in ann.tumor:
        if _overlaps(poly, box):
            out |= _parity_grid(poly.points_level0, x0=x_level0, y0=y_level0, width=width,
                                height=height, step=downsample)
    if out.any():
        for poly in ann.holes:
            if _overlaps(poly, box):
                out &= ~_parity_grid(poly.points_level0, x0=x_level0, y0=y_level0, width=width,
                                     height=height, step=downsample)
    return out.astype(np.uint8)


def _inside_points(points: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Even-odd test of (n, 2) level-0 points `pts` against one polygon; same half-open rule as
    `_parity_grid`, so a point and the pixel centred on it always agree."""
    x, y = pts[:, 0][:, None], pts[:, 1][:, None]
    px, py = points[:, 0][None, :], points[:, 1][None, :]
    qx, qy = np.roll(points[:, 0], -1)[None, :], np.roll(points[:, 1], -1)[None, :]
    crosses = (np.minimum(py, qy) <= y) & (y < np.maximum(py, qy))
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = px + (y - py) * (qx - px) / (qy - py)
    right = crosses & (x >= xc)
    return (np.count_nonzero(right, axis=1) & 1).astype(bool)


def contains(ann: Annotations, points_level0: np.ndarray) -> np.ndarray:
    """bool (n,): which level-0 points lie in tumor and outside every hole."""
    pts = np.asarray(points_level0, dtype=np.float64).reshape(-1, 2)
    out = np.zeros(len(pts), bool)
    for start in range(0, len(pts), 512):  # bounded (points x vertices) temporaries
        sl = slice(start, start + 512)
        out[sl] = _contains_block(ann, pts[sl])
    return out


def _contains_block(ann: Annotations, pts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(pts), bool)
    for poly in ann.tumor:
        x_min, y_min, x_max, y_max = poly.bbox_level0
        sel = (pts[:, 0] >= x_min) & (pts[:, 0] <= x_max) & (pts[:, 1] >= y_min) & (
            pts[:, 1] <= y_max) & ~out
        if sel.any():
            out[sel] = _inside_points(poly.points_level0, pts[sel])
    for poly in ann.holes:
        x_min, y_min, x_max, y_max = poly.bbox_level0
        sel = (pts[:, 0] >= x_min) & (pts[:, 0] <= x_max) & (pts[:, 1] >= y_min) & (
            pts[:, 1] <= y_max) & out
        if sel.any():
            out[sel] &= ~_inside_points(poly.points_level0, pts[sel])
    return out


def coverage_thumb(ann: Annotations, *, shape: tuple[int, int], downsample: float) -> np.ndarray:
    """bool thumbnail-frame mask of the pixels that may hold tumor: the centre-sampled raster,
    plus every pixel holding a tumor vertex, dilated by one pixel, so that lesions smaller than a
    thumbnail pixel are still found. Candidates only: exact membership is `contains`."""
    from lymph.data.tissue import dilate

    h, w = shape
    mask = rasterize(ann, x_level0=0, y_level0=0, width=w, height=h,
                     downsample=downsample).astype(bool)
    for poly in ann.tumor:
        ij = np.floor(poly.points_level0[:, ::-1] / downsample).astype(np.int64)
        ok = (ij[:, 0] >= 0) & (ij[:, 0] < h) & (ij[:, 1] >= 0) & (ij[:, 1] < w)
        mask[ij[ok, 0], ij[ok, 1]] = True
    return dilate(mask, 1) if mask.any() else mask


# --- the labels CSV -------------------------------------------------------------------------

TUMOR_LABELS = frozenset({"tumor", "tumour", "1", "true", "positive", "metastasis"})
NORMAL_LABELS = frozenset({"normal", "0", "false", "negative"})
MAX_LABELS_BYTES = 64 << 20


class LabelsError(AnnotationError, ConfigError):
    """A labels CSV is unreadable or says something impossible (an AnnotationError, and a
    ConfigError since it is given as a setting)."""


class SlideLabels(Mapping[str, bool]):
    """{slide id: is tumor} from a labels CSV. Keys are `slide_id`s as the CSV spells them;
    lookups go through `slide_id` and ignore case, so `labels["tumor_001.tif"]`,
    `labels["Tumor_001"]` and `labels["tumor_001"]` are the same entry (CAMELYON16 ships
    `Test_001` in reference.csv beside `test_001.tif`)."""

    def __init__(self, items: Mapping[str, bool], *, source: Path | None = None) -> None:
        self.source = source
        self._ids = {slide_id(k).casefold(): slide_id(k) for k in items}
        self._flags = {slide_id(k).casefold(): bool(v) for k, v in items.items()}

    def __getitem__(self, name: str) -> bool:
        try:
            return self._flags[slide_id(name).casefold()]
        except SlideError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids.values())

    def __len__(self) -> int:
        return len(self._flags)

    def __repr__(self) -> str:
        return f"SlideLabels({dict(self.items())!r})"


def _labels_text(path: Path) -> str:
    """The CSV's text; LabelsError naming the file and the fix when it is not UTF-8 text."""
    fix = "save it as a UTF-8 (or ASCII) CSV of `slide,label` rows"
    try:
        size = path.stat().st_size
        if size > MAX_LABELS_BYTES:
            raise LabelsError(f"{path}: {size} bytes is not a labels CSV (over "
                              f"{MAX_LABELS_BYTES >> 20} MiB); {fix}")
        data = path.read_bytes()
    except OSError as exc:
        raise LabelsError(f"{path}: cannot read the labels CSV ({exc.strerror or exc}); "
                          "check the path and its permissions") from exc
    return decode_text(data, path, what="labels CSV", fix=fix, error=LabelsError)


def _label_flag(value: str) -> bool | None:
    low = value.strip().lower()
    return True if low in TUMOR_LABELS else False if low in NORMAL_LABELS else None


def _check_name_agrees(path: Path, line: int, name: str, flag: bool) -> None:
    """`normal_*` labelled tumor, or `tumor_*` labelled normal: one of the two is wrong."""
    low = slide_id(name).lower()
    named = "normal" if low.startswith("normal") else "tumor" if low.startswith("tumor") else None
    said = "tumor" if flag else "normal"
    if named is not None and named != said:
        raise LabelsError(f"{path}, line {line}: slide {name!r} is labelled {said} but its name "
                          f"says {named}; fix the label (1/tumor/true means tumor) or rename "
                          "the slide")


def read_labels_csv(path: str | Path) -> SlideLabels:
    """The one labels CSV reader (extract, eval): {slide id: is tumor} as a `SlideLabels`.

    Rows are `slide,label[,more columns...]`: the CAMELYON16 `reference.csv` layout
    (`Test_001,Tumor,Macro,...`) or a plain `slide,label`. Labels, case-insensitively: tumor /
    tumour / 1 / true / positive / metastasis, and normal / 0 / false / negative. Slide names may
    carry their suffix (`tumor_001.tif`) and match through `slide_id`, ignoring case. The first
    row is skipped as a header when its label is none of these; blank rows are skipped.

    The rule for names: a slide called `normal_*` labelled tumor (or `tumor_*` labelled normal)
    is an error, since lymph also reads status from those names when no CSV is given; so is one
    slide listed twice with different labels. LabelsError (an AnnotationError and a ConfigError)
    names the file, the line and the fix, also for a missing, binary, UTF-16 or non-UTF-8 file.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"{path}: no such labels CSV; pass a reference.csv with --labels")
    rows = _labels_rows(path, _labels_text(path))
    if not rows:
        raise LabelsError(f"{path}: no `slide,label` rows in the labels CSV; write one row per "
                          "slide, e.g. `tumor_001,Tumor`")
    out: dict[str, bool] = {}
    seen: dict[str, tuple[int, str, bool]] = {}
    for line, name, flag in rows:
        key = slide_id(name).casefold()
        if key in seen and seen[key][2] != flag:
            first = seen[key]
            raise LabelsError(f"{path}, lines {first[0]} and {line}: slide {first[1]!r} is "
                              f"labelled both {'tumor' if first[2] else 'normal'} and "
                              f"{'tumor' if flag else 'normal'}; keep one row per slide")
        seen.setdefault(key, (line, name, flag))
        out[name] = flag
    return SlideLabels(out, source=path)


def _labels_rows(path: Path, text: str) -> list[tuple[int, str, bool]]:
    """(line, slide name, is tumor) of every label row of the CSV `text`."""
    rows: list[tuple[int, str, bool]] = []
    header_allowed = True
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            line = reader.line_num
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise LabelsError(f"{path}, line {line}: expected `slide,label`, got "
                                  f"{','.join(row)[:60]!r}")
            name, flag = row[0].strip(), _label_flag(row[1])
            if flag is None and header_allowed:
                header_allowed = False
                continue  # a header row
            header_allowed = False
            if flag is None:
                raise LabelsError(f"{path}, line {line}: label {row[1].strip()[:40]!r} is not "
                                  "tumor/normal, 1/0 or true/false")
            if not name:
                raise LabelsError(f"{path}, line {line}: empty slide name; give each row the "
                                  "slide's name, e.g. `tumor_001,Tumor`")
            try:
                slide_id(name)
            except SlideError as exc:
                raise LabelsError(f"{path}, line {line}: {exc}") from None
            _check_name_agrees(path, line, name, flag)
            rows.append((line, name, flag))
    except csv.Error as exc:
        raise LabelsError(f"{path}, line {reader.line_num}: not a readable CSV ({exc}); save it "
                          "as a plain UTF-8 CSV of `slide,label` rows") from None
    return rows
