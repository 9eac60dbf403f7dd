"""Tumor annotations: ASAP XML (CAMELYON16/17), QuPath GeoJSON and mask TIFFs, rasterized per
patch at the patch's own resolution, and the slide-level labels CSV.

Modules, one job each:
- `polygons`: the model (`Polygon`, `Annotations`, `check_points`).
- `geometry`: even-odd geometry of one outline (parity grid, point test, self-intersection).
- `kinds`: which groups/classes are tumor, holes, reviewed regions or suggestions.
- `asap`, `geojson`: the two outline readers; `files`: finding, reading and checking a slide's
  annotation file.
- `raster`: masks and point membership (`rasterize`, `contains`, `coverage_thumb`).
- `masks`: mask TIFFs as slide readers (`open_mask`, `StripTiffMask`).
- `labels`: the labels CSV (`read_labels_csv`, `SlideLabels`).

The names below are the package's API (what other modules use); import them from
`lymph.data.annotations`. Everything else is reached through its module.
"""

from lymph.data.annotations.asap import parse_asap_xml
from lymph.data.annotations.files import check_inside, find_annotations, read_annotations
from lymph.data.annotations.geojson import (
    feature_parts,
    geojson_features,
    load_json,
    parse_geojson,
    ring_points,
)
from lymph.data.annotations.labels import LabelsError, SlideLabels, read_labels_csv
from lymph.data.annotations.masks import open_mask
from lymph.data.annotations.polygons import Annotations, Polygon
from lymph.data.annotations.raster import contains, coverage_thumb, rasterize

__all__ = [
    "Annotations", "LabelsError", "Polygon", "SlideLabels", "check_inside", "contains",
    "coverage_thumb", "feature_parts", "find_annotations", "geojson_features", "load_json",
    "open_mask", "parse_asap_xml", "parse_geojson", "rasterize", "read_annotations",
    "read_labels_csv", "ring_points",
]
