"""`lymph suggest`'s files: the proposed boxes as QuPath GeoJSON and ASAP XML (beside the
slide's existing outlines), a summary CSV and an overview PNG per slide.

Conventions (those of the real exports in the test fixtures, and of `lymph.model.predict.exports`):
- `S_suggestions.geojson`: a FeatureCollection of `objectType` "annotation" Features with
  closed Polygon rings in level-0 px; each box is classified `Suggested`, named
  "Suggested <rank> (<kind> <score>)", with `rank`, `kind` and `score` in its properties and
  `measurements`. The slide's existing outlines (from `--annotations`) come first, classified
  `Tumor`, `Exclusion` or `Reviewed`, so the file is the slide's whole annotation.
- `S_suggestions.xml`: ASAP_Annotations with one Polygon per box in the group `Suggested`,
  named "Suggested <rank>", after the existing outlines in groups `Tumor`, `Exclusion`,
  `Reviewed`; an AnnotationGroups entry per group used.
- The pathologist outlines tumor inside a box (class/group `Tumor`) and then changes the box's
  class (QuPath: Set class) or group (ASAP) to `Reviewed`; boxes left `Suggested` are skipped
  by `lymph extract` (`lymph.data.partial`).
"""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lymph.data.annotations import Annotations, Polygon
from lymph.data.io import atomic_write_bytes, atomic_write_text
from lymph.data.partial import REVIEWED_NAME, SUGGESTED_NAME

SUGGESTED_RGB = (255, 170, 0)
COLORS = {"Tumor": (200, 0, 0), "Exclusion": (0, 0, 200), REVIEWED_NAME: (0, 170, 0),
          SUGGESTED_NAME: SUGGESTED_RGB}
KIND_RGB = {"uncertain": (255, 170, 0), "false_positive": (220, 0, 220), "miss": (0, 200, 255),
            "random": (120, 120, 120)}


class Box(Protocol):
    """A proposed box as these files need it (`lymph.model.suggest.Suggestion`): level-0 px
    [x0, x1) x [y0, y1), its rank, kind and score."""

    @property
    def x0(self) -> int: ...
    @property
    def y0(self) -> int: ...
    @property
    def x1(self) -> int: ...
    @property
    def y1(self) -> int: ...
    @property
    def rank(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def score(self) -> float: ...


CSV_FIELDS = ("rank", "slide", "kind", "score", "x0", "y0", "x1", "y1", "size_px", "size_um",
              "mean_probability", "uncertainty")


def _existing(ann: Annotations | None) -> list[tuple[str, Polygon]]:
    if ann is None:
        return []
    return ([("Tumor", p) for p in ann.tumor] + [("Exclusion", p) for p in ann.holes]
            + [(REVIEWED_NAME, p) for p in ann.reviewed])


def _box(s: Box) -> np.ndarray:
    return np.array([[s.x0, s.y0], [s.x1, s.y0], [s.x1, s.y1], [s.x0, s.y1]], np.float64)


def _name(s: Box) -> str:
    return f"{SUGGESTED_NAME} {s.rank} ({s.kind} {s.score:.2f})"


def _ring(points: np.ndarray) -> list[list[float]]:
    pts = [[round(float(x), 2), round(float(y), 2)] for x, y in points]
    return pts + [pts[0]]


def _feature(fid: str, points: np.ndarray, cls: str, name: str,
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {"objectType": "annotation", "name": name,
                             "classification": {"name": cls, "color": list(COLORS[cls])},
                             "isLocked": False}
    if extra:
        props.update(extra)
        props["measurements"] = {k: v for k, v in extra.items() if isinstance(v, int | float)}
    return {"type": "Feature", "id": fid, "geometry": {"type": "Polygon",
                                                        "coordinates": [_ring(points)]},
            "properties": props}


def suggestions_geojson(suggestions: Sequence[Box], *, existing: Annotations | None = None,
                        slide: str = "") -> dict[str, Any]:
    """The FeatureCollection of `S_suggestions.geojson` (see the module doc)."""
    feats = [_feature(f"lymph-{slide}-existing-{i}", p.points_level0, cls, p.name or cls)
             for i, (cls, p) in enumerate(_existing(existing), 1)]
    for s in sorted(suggestions, key=lambda s: s.rank):
        feats.append(_feature(f"lymph-{slide}-suggested-{s.rank}", _box(s), SUGGESTED_NAME,
                              _name(s), {"rank": int(s.rank), "kind": s.kind,
                                         "score": round(float(s.score), 4)}))
    return {"type": "FeatureCollection", "features": feats}


def suggestions_asap_xml(suggestions: Sequence[Box], *, existing: Annotations | None = None
                         ) -> str:
    """The ASAP XML text of `S_suggestions.xml` (see the module doc)."""
    root = ET.Element("ASAP_Annotations")
    anns = ET.SubElement(root, "Annotations")
    used: list[str] = []
    items = [(cls, p.name or cls, p.points_level0) for cls, p in _existing(existing)]
    items += [(SUGGESTED_NAME, f"{SUGGESTED_NAME} {s.rank}", _box(s))
              for s in sorted(suggestions, key=lambda s: s.rank)]
    for cls, name, pts in items:
        color = "#{:02X}{:02X}{:02X}".format(*COLORS[cls])
        ann = ET.SubElement(anns, "Annotation", Name=name, Type="Polygon", PartOfGroup=cls,
                            Color=color)
        coords = ET.SubElement(ann, "Coordinates")
        for order, (x, y) in enumerate(pts):
            ET.SubElement(coords, "Coordinate", Order=str(order), X=f"{x:.4f}", Y=f"{y:.4f}")
        if cls not in used:
            used.append(cls)
    groups = ET.SubElement(root, "AnnotationGroups")
    for cls in used:
        g = ET.SubElement(groups, "Group", Name=cls, PartOfGroup="None",
                          Color="#{:02X}{:02X}{:02X}".format(*COLORS[cls]))
        ET.SubElement(g, "Attributes")
    ET.indent(root, space="\t")
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_geojson(path: Path, suggestions: Sequence[Box], *, existing: Annotations | None,
                  slide: str) -> Path:
    text = json.dumps(suggestions_geojson(suggestions, existing=existing, slide=slide), indent=1)
    return atomic_write_text(path, text + "\n")


def write_asap_xml(path: Path, suggestions: Sequence[Box], *, existing: Annotations | None
                   ) -> Path:
    return atomic_write_text(path, suggestions_asap_xml(suggestions, existing=existing))


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})
    return atomic_write_text(path, buf.getvalue())


def overview_png(path: Path, thumb: np.ndarray, downsample: float, suggestions: Sequence[Box],
                 *, existing: Annotations | None = None) -> Path:
    """The thumbnail (uint8 RGB, `downsample` level-0 px per pixel) with every box outlined in
    its kind's colour and numbered by rank; existing tumor outlines in dark red, reviewed
    regions in green."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(np.ascontiguousarray(thumb[..., :3]))
    draw = ImageDraw.Draw(img)
    for cls, p in _existing(existing):
        if cls in ("Tumor", REVIEWED_NAME):
            pts = [(float(x) / downsample, float(y) / downsample) for x, y in p.points_level0]
            draw.line(pts + pts[:1], fill=COLORS[cls], width=1 if cls == "Tumor" else 2)
    width = max(2, round(min(img.size) / 300))
    for s in suggestions:
        box = [s.x0 / downsample, s.y0 / downsample, s.x1 / downsample, s.y1 / downsample]
        color = KIND_RGB.get(s.kind, SUGGESTED_RGB)
        draw.rectangle(box, outline=color, width=width)
        label = str(s.rank)
        tx, ty = box[0] + width + 1, box[1] + width + 1
        tw = draw.textlength(label)
        draw.rectangle([tx - 1, ty - 1, tx + tw + 1, ty + 11], fill=(255, 255, 255))
        draw.text((tx, ty), label, fill=(0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())
