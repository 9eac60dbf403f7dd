"""Lesion detections out to the forms people use: the CAMELYON16 submission CSV, QuPath GeoJSON
and ASAP XML. All coordinates are level-0 pixels of the slide (x to the right, y down).

* ``S.csv``: ``confidence,X,Y`` per detection, no header, integer X and Y: what the CAMELYON16
  FROC script and ``lymph eval`` read.
* ``S.geojson``: a FeatureCollection QuPath (0.4+) imports as annotations: one Polygon per
  lesion outline (a Point when a lesion has no outline), ``objectType`` "annotation",
  classification "Tumor", and ``measurements`` (confidence, area, the X/Y of its maximum).
* ``S.xml``: ASAP annotations, group "Tumor": Polygons for outlines, Dots for points. ASAP and
  the CAMELYON tools read it; so does ``lymph.data.annotations.read_annotations``.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lymph.data.io import atomic_write_text

TUMOR_CLASS = "Tumor"
TUMOR_RGB = (200, 0, 0)


@dataclass(frozen=True, eq=False)
class Detection:
    """One detected lesion.

    ``x_level0``/``y_level0``: where it is scored (the map's maximum inside the region, so it
    always lies inside the region); ``confidence`` in [0, 1]; ``outline_level0``: (k, 2) float
    x, y of the region's outer boundary (open ring) or None; ``area_um2``: area, or None when
    the mpp is unknown; ``extra``: further measurements.
    """

    confidence: float
    x_level0: int
    y_level0: int
    outline_level0: np.ndarray | None = None
    area_um2: float | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.confidence) <= 1.0:
            raise ValueError(f"detection confidence must be in [0, 1], got {self.confidence}")
        if self.outline_level0 is not None:
            pts = np.asarray(self.outline_level0, dtype=np.float64)
            if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 3:
                raise ValueError(f"outline must be (k >= 3, 2) x, y points, got {pts.shape}")

    def measurements(self) -> dict[str, float]:
        out = {"confidence": round(float(self.confidence), 6)}
        if self.area_um2 is not None:
            out["area_um2"] = round(float(self.area_um2), 2)
        out["max_x_level0"] = int(self.x_level0)
        out["max_y_level0"] = int(self.y_level0)
        out.update({k: float(v) for k, v in self.extra.items()})
        return out


def _sorted(detections: Sequence[Detection]) -> list[Detection]:
    return sorted(detections, key=lambda d: (-d.confidence, d.y_level0, d.x_level0))


def write_camelyon_csv(path: str | Path, detections: Sequence[Detection]) -> Path:
    """``confidence,X,Y`` lines (highest confidence first), no header; an empty file when there
    are no detections (a slide without findings, as CAMELYON16 expects)."""
    lines = [
        f"{float(d.confidence):.6f},{int(d.x_level0)},{int(d.y_level0)}"
        for d in _sorted(detections)
    ]
    return atomic_write_text(Path(path), "".join(line + "\n" for line in lines))


def _closed_ring(outline: np.ndarray) -> list[list[float]]:
    pts = [[round(float(x), 2), round(float(y), 2)] for x, y in np.asarray(outline)]
    if pts[0] != pts[-1]:
        pts.append(pts[0])
    return pts


def detections_geojson(detections: Sequence[Detection], *, slide: str = "") -> dict[str, Any]:
    """The QuPath GeoJSON FeatureCollection of ``detections`` (see the module doc)."""
    features = []
    for i, d in enumerate(_sorted(detections), 1):
        if d.outline_level0 is not None:
            geometry: dict[str, Any] = {
                "type": "Polygon",
                "coordinates": [_closed_ring(d.outline_level0)],
            }
        else:
            geometry = {"type": "Point", "coordinates": [int(d.x_level0), int(d.y_level0)]}
        features.append(
            {
                "type": "Feature",
                "id": f"lymph-{slide}-{i}" if slide else f"lymph-{i}",
                "geometry": geometry,
                "properties": {
                    "objectType": "annotation",
                    "name": f"lesion {i} ({d.confidence:.2f})",
                    "classification": {"name": TUMOR_CLASS, "color": list(TUMOR_RGB)},
                    "isLocked": False,
                    "measurements": d.measurements(),
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | Path, detections: Sequence[Detection], *, slide: str = "") -> Path:
    """Write ``detections_geojson`` to ``path`` (QuPath: File > Import objects)."""
    text = json.dumps(detections_geojson(detections, slide=slide), indent=1)
    return atomic_write_text(Path(path), text + "\n")


def detections_asap_xml(detections: Sequence[Detection]) -> str:
    """ASAP XML text of ``detections``: group "Tumor", a Polygon per outline, else a Dot."""
    root = ET.Element("ASAP_Annotations")
    anns = ET.SubElement(root, "Annotations")
    color = "#{:02X}{:02X}{:02X}".format(*TUMOR_RGB)
    for i, d in enumerate(_sorted(detections), 1):
        kind = "Polygon" if d.outline_level0 is not None else "Dot"
        ann = ET.SubElement(
            anns,
            "Annotation",
            Name=f"lesion {i} ({d.confidence:.2f})",
            Type=kind,
            PartOfGroup=TUMOR_CLASS,
            Color=color,
        )
        coords = ET.SubElement(ann, "Coordinates")
        pts = (
            np.asarray(d.outline_level0, np.float64)
            if d.outline_level0 is not None
            else np.array([[d.x_level0, d.y_level0]], np.float64)
        )
        for order, (x, y) in enumerate(pts):
            ET.SubElement(coords, "Coordinate", Order=str(order), X=f"{x:.2f}", Y=f"{y:.2f}")
    groups = ET.SubElement(root, "AnnotationGroups")
    group = ET.SubElement(groups, "Group", Name=TUMOR_CLASS, PartOfGroup="None", Color=color)
    ET.SubElement(group, "Attributes")
    ET.indent(root, space="\t")
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_asap_xml(path: str | Path, detections: Sequence[Detection]) -> Path:
    """Write ``detections_asap_xml`` to ``path``."""
    return atomic_write_text(Path(path), detections_asap_xml(detections))
