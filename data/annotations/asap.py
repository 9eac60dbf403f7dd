"""ASAP XML (CAMELYON16/17) reader.

Groups (case-insensitive): `_0`, `_1`, `Tumor`, `metastases` are tumor; `_2`, `Exclusion` are
holes (normal tissue inside a tumor outline). Polygons in any other group (wsidicom's `None`, a
user's own names) are taken as tumor, with a warning naming the group, since an annotated
outline on a CAMELYON-style slide is a lesion unless marked otherwise; `Reviewed`/`ROI` are
reviewed regions and `Suggested` boxes are skipped (`lymph.data.partial`). `Dot`, `PointSet` and
other non-area types are ignored with a warning. `Rectangle` and `Spline` outlines are polygons
through their points.

XML with a DOCTYPE or ENTITY declaration is refused (AnnotationError): annotation files never
need them, and they are the vector of external-entity and entity-expansion attacks.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NoReturn
from xml.etree.ElementTree import Element

import numpy as np

from lymph.data.annotations.kinds import AREA_TYPES, HOLE_GROUPS, TUMOR_GROUPS, Sorted
from lymph.data.annotations.polygons import Annotations, Polygon, check_points
from lymph.data.errors import AnnotationError


def _reject_dtd(data: bytes, source: Path | None) -> None:
    """Scan with expat and refuse any DOCTYPE or ENTITY declaration before building a tree."""
    import xml.parsers.expat

    def refuse(*_: object) -> NoReturn:
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


def _asap_number(c: Element, attr: str, name: str, k: int, source: Path | None) -> float:
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


def _asap_points_fast(ann: Element) -> np.ndarray | None:
    """(k, 2) points sorted by Order when every coordinate parses as numbers with a finite
    Order; None otherwise (the checked path then names the bad value)."""
    import math

    try:
        rows = [(float(c.get("Order", k)), float(c.attrib["X"]), float(c.attrib["Y"]))
                for k, c in enumerate(ann.iter("Coordinate"))]
    except (KeyError, ValueError):
        return None
    if not all(math.isfinite(r[0]) for r in rows):
        return None
    if any(a[0] > b[0] for a, b in zip(rows, rows[1:], strict=False)):
        rows.sort(key=lambda r: r[0])  # stable, as the checked path's sort
    return np.array([r[1:] for r in rows], dtype=np.float64).reshape(-1, 2)


def _asap_points(ann: Element, name: str, source: Path | None) -> np.ndarray | None:
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
    """The Annotations of ASAP XML text (`source`, the file, names it in errors and warnings)."""
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
    found = Sorted(source)
    unknown_groups: set[str] = set()
    from lymph.data.partial import region_role  # partial imports this package

    for i, ann in enumerate(root.iter("Annotation")):
        kind = (ann.get("Type") or "").strip()
        group = (ann.get("PartOfGroup") or "None").strip()
        name = ann.get("Name") or f"Annotation {i}"
        if kind.lower() not in AREA_TYPES:
            found.ignore(kind or "?")
            continue
        pts = _asap_points(ann, name, source)
        if pts is None:
            found.ignore(f"{kind} with under 3 points")
            continue
        poly = Polygon(pts, name=name, group=group)
        g = group.lower()
        role = region_role(group)
        if role is not None:
            found.suggested += role == "suggested"
            if role == "reviewed":
                found.reviewed.append(poly)
        elif g in HOLE_GROUPS:
            found.holes.append(poly)
        else:
            if g not in TUMOR_GROUPS:
                unknown_groups.add(group)
            found.tumor.append(poly)
    if found.ignored:
        warnings.warn(f"{source}: ignored annotations that are not areas: "
                      f"{found.ignored_text()}", stacklevel=2)
    if unknown_groups:
        warnings.warn(f"{source}: polygons in groups {sorted(unknown_groups)} taken as tumor "
                      "(tumor groups: _0, _1, Tumor, metastases; holes: _2, Exclusion; "
                      "reviewed regions: Reviewed, ROI)", stacklevel=2)
    return found.annotations()
