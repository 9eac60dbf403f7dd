"""Tumor annotations: ASAP XML (CAMELYON16/17), QuPath GeoJSON and mask TIFFs, rasterized per
patch at the patch's own resolution.

Group rules (case-insensitive):
- ASAP XML: groups `_0`, `_1`, `Tumor`, `metastases` are tumor; `_2`, `Exclusion` are holes
  (normal tissue inside a tumor outline). Polygons in any other group (wsidicom's `None`, a
  user's own names) are taken as tumor, with a warning naming the group, since an annotated
  outline on a CAMELYON-style slide is a lesion unless marked otherwise. `Dot`, `PointSet` and
  other non-area types are ignored with a warning. `Rectangle` and `Spline` outlines are polygons
  through their points.
- QuPath GeoJSON (FeatureCollection, bare Feature or list of Features): Polygon and MultiPolygon
  geometries; interior rings are holes. A classification name containing "tumor" (or
  "metasta") is tumor, one containing "exclusion" is a hole; unclassified annotations are tumor
  with a warning (QuPath exports outlines drawn without a class); other classes (cells, nuclei,
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
import io
import json
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lymph.data.errors import AnnotationError, ConfigError, SlideError
from lymph.data.slides import slide_id, strip_slide_suffix

TUMOR_GROUPS = frozenset({"_0", "_1", "tumor", "metastases"})
HOLE_GROUPS = frozenset({"_2", "exclusion"})
AREA_TYPES = frozenset({"polygon", "rectangle", "spline"})


@dataclass(frozen=True, eq=False)
class Polygon:
    points_level0: np.ndarray  # (k, 2) float64 x, y
    name: str = ""
    group: str = ""

    def __post_init__(self) -> None:
        pts = np.asarray(self.points_level0, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 3:
            raise AnnotationError(f"polygon {self.name!r} needs (k >= 3, 2) points, got "
                                  f"shape {pts.shape}")
        if not np.isfinite(pts).all():
            raise AnnotationError(f"polygon {self.name!r} has non-finite coordinates")
        pts.setflags(write=False)
        object.__setattr__(self, "points_level0", pts)

    @property
    def bbox_level0(self) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max)."""
        p = self.points_level0
        return float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(
            p[:, 1].max())

    @property
    def area_level0(self) -> float:
        """Shoelace area in level-0 pixels squared."""
        x, y = self.points_level0[:, 0], self.points_level0[:, 1]
        return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


@dataclass(frozen=True, eq=False)
class Annotations:
    tumor: tuple[Polygon, ...] = ()
    holes: tuple[Polygon, ...] = ()
    source: Path | None = None

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


def parse_asap_xml(data: bytes | str, *, source: Path | None = None) -> Annotations:
    import xml.etree.ElementTree as ET

    raw = data.encode() if isinstance(data, str) else data
    _reject_dtd(raw, source)
    root = ET.fromstring(raw)
    if root.tag != "ASAP_Annotations":
        raise AnnotationError(f"{source}: root element <{root.tag}>, expected "
                              "<ASAP_Annotations>; is it an ASAP/CAMELYON annotation file?")
    tumor: list[Polygon] = []
    holes: list[Polygon] = []
    ignored_types: dict[str, int] = {}
    unknown_groups: set[str] = set()
    for i, ann in enumerate(root.iter("Annotation")):
        kind = (ann.get("Type") or "").strip()
        group = (ann.get("PartOfGroup") or "None").strip()
        name = ann.get("Name") or f"Annotation {i}"
        if kind.lower() not in AREA_TYPES:
            ignored_types[kind or "?"] = ignored_types.get(kind or "?", 0) + 1
            continue
        coords = []
        for c in ann.iter("Coordinate"):
            try:
                coords.append((float(c.get("Order", len(coords))), float(c.get("X", "nan")),
                               float(c.get("Y", "nan"))))
            except ValueError as exc:
                raise AnnotationError(f"{source}: annotation {name!r} has a bad coordinate "
                                      f"({exc})") from exc
        if len(coords) < 3:
            ignored_types[f"{kind} with {len(coords)} points"] = 1 + ignored_types.get(
                f"{kind} with {len(coords)} points", 0)
            continue
        coords.sort(key=lambda t: t[0])
        pts = np.array([(x, y) for _, x, y in coords], dtype=np.float64)
        if not np.isfinite(pts).all():
            raise AnnotationError(f"{source}: annotation {name!r} has a missing X or Y")
        poly = Polygon(pts, name=name, group=group)
        g = group.lower()
        if g in HOLE_GROUPS:
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
                      "(tumor groups: _0, _1, Tumor, metastases; holes: _2, Exclusion)",
                      stacklevel=2)
    return Annotations(tumor=tuple(tumor), holes=tuple(holes), source=source)


def _classification(props: dict) -> str | None:
    cls = props.get("classification")
    if isinstance(cls, dict):
        name = cls.get("name")
        return str(name) if name is not None else None
    if isinstance(cls, str):
        return cls
    return None


def _features(obj: Any, source: Path | None) -> Iterable[dict]:
    if isinstance(obj, list):
        for item in obj:
            yield from _features(item, source)
        return
    if not isinstance(obj, dict):
        raise AnnotationError(f"{source}: expected GeoJSON objects, found {type(obj).__name__}")
    kind = obj.get("type")
    if kind == "FeatureCollection":
        feats = obj.get("features")
        if not isinstance(feats, list):
            raise AnnotationError(f"{source}: FeatureCollection without a 'features' list")
        yield from _features(feats, source)
    elif kind == "Feature":
        yield obj
    elif kind in ("Polygon", "MultiPolygon", "Point", "MultiPoint", "LineString",
                  "MultiLineString", "GeometryCollection"):
        yield {"type": "Feature", "geometry": obj, "properties": {}}
    else:
        raise AnnotationError(f"{source}: not GeoJSON (object type {kind!r}); expected a "
                              "FeatureCollection, a Feature or a list of Features")


def _ring(coords: Any, name: str, source: Path | None) -> np.ndarray:
    try:
        pts = np.asarray(coords, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"{source}: feature {name!r} has malformed coordinates") from exc
    if pts.ndim != 2 or pts.shape[1] < 2:
        raise AnnotationError(f"{source}: feature {name!r}: a ring must be a list of [x, y]")
    pts = pts[:, :2]
    if len(pts) > 1 and np.array_equal(pts[0], pts[-1]):
        pts = pts[:-1]
    return pts


def parse_geojson(data: bytes | str, *, source: Path | None = None) -> Annotations:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AnnotationError(f"{source}: not valid JSON ({exc})") from exc
    if isinstance(obj, dict) and ("positive" in obj or "negative" in obj) and "type" not in obj:
        raise AnnotationError(f"{source}: looks like NCRF's JSON (positive/negative lists), "
                              "not GeoJSON; convert it to ASAP XML or QuPath GeoJSON")
    tumor: list[Polygon] = []
    holes: list[Polygon] = []
    ignored: dict[str, int] = {}
    unclassified = 0
    for i, feat in enumerate(_features(obj, source)):
        geom = feat.get("geometry") or {}
        props = feat.get("properties") or {}
        name = str(props.get("name") or feat.get("id") or f"feature {i}")
        gtype = geom.get("type")
        if gtype == "Polygon":
            polys = [geom.get("coordinates") or []]
        elif gtype == "MultiPolygon":
            polys = geom.get("coordinates") or []
        else:
            ignored[str(gtype)] = ignored.get(str(gtype), 0) + 1
            continue
        cls = _classification(props)
        low = (cls or "").lower()
        if cls is None:
            role = "tumor"
            unclassified += 1
        elif "tumor" in low or "tumour" in low or "metasta" in low:
            role = "tumor"
        elif "exclusion" in low:
            role = "hole"
        else:
            key = f"class {cls!r}"
            ignored[key] = ignored.get(key, 0) + 1
            continue
        for rings in polys:
            if not rings:
                continue
            outer = _ring(rings[0], name, source)
            if len(outer) < 3:
                ignored["degenerate polygon"] = ignored.get("degenerate polygon", 0) + 1
                continue
            poly = Polygon(outer, name=name, group=cls or "")
            (tumor if role == "tumor" else holes).append(poly)
            for inner in rings[1:]:
                pts = _ring(inner, name, source)
                if len(pts) >= 3 and role == "tumor":
                    holes.append(Polygon(pts, name=f"{name} (hole)", group=cls or ""))
    if ignored:
        what = ", ".join(f"{n} {k}" for k, n in sorted(ignored.items()))
        warnings.warn(f"{source}: ignored features: {what}", stacklevel=2)
    if unclassified:
        warnings.warn(f"{source}: {unclassified} unclassified polygon feature(s) taken as tumor",
                      stacklevel=2)
    return Annotations(tumor=tuple(tumor), holes=tuple(holes), source=source)


def find_annotations(slide_path: str | Path, *, annotations_dir: str | Path | None = None
                     ) -> Path | None:
    """The annotation file of slide `S`: `S.xml`, `S.geojson`, `S_mask.tif`, `S_Mask.tif` (in
    that order) in `annotations_dir`, default beside the slide. Names match case-insensitively
    when no exact match exists (CAMELYON16 ships `tumor_001.tif` with `Tumor_001.xml`)."""
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
    return None


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
    head = data[:4096]
    utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff") or (
        len(head) >= 2 and (head[1::2].count(0) > len(head) // 4
                            or head[0::2].count(0) > len(head) // 4))
    if utf16:
        raise LabelsError(f"{path}: the labels CSV is UTF-16 text; {fix}")
    if b"\x00" in data:
        raise LabelsError(f"{path}: the labels CSV holds NUL bytes (a binary file, not text); "
                          f"{fix}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelsError(f"{path}: the labels CSV is not UTF-8 (byte 0x{data[exc.start]:02x} "
                          f"at offset {exc.start}); {fix}") from None


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
