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

The names below are the package's API; import them from `lymph.data.annotations`.
"""

from lymph.data.annotations.asap import parse_asap_xml
from lymph.data.annotations.files import check_inside, find_annotations, read_annotations
from lymph.data.annotations.geojson import (
    Feature,
    FeatureParts,
    feature_parts,
    geojson_features,
    load_json,
    parse_geojson,
    ring_points,
)
from lymph.data.annotations.kinds import AREA_TYPES, HOLE_GROUPS, TUMOR_GROUPS
from lymph.data.annotations.labels import (
    NORMAL_LABELS,
    TUMOR_LABELS,
    LabelsError,
    SlideLabels,
    read_labels_csv,
)
from lymph.data.annotations.masks import (
    MAX_STRIP_BYTES,
    StripTiffMask,
    convert_mask_command,
    open_mask,
)
from lymph.data.annotations.polygons import COORD_LIMIT, Annotations, Polygon, check_points
from lymph.data.annotations.raster import contains, coverage_thumb, rasterize

__all__ = [
    "AREA_TYPES", "COORD_LIMIT", "HOLE_GROUPS", "MAX_STRIP_BYTES", "NORMAL_LABELS",
    "TUMOR_GROUPS", "TUMOR_LABELS", "Annotations", "Feature", "FeatureParts", "LabelsError",
    "Polygon", "SlideLabels", "StripTiffMask", "check_inside", "check_points", "contains",
    "convert_mask_command", "coverage_thumb", "feature_parts", "find_annotations",
    "geojson_features", "load_json", "open_mask", "parse_asap_xml", "parse_geojson",
    "rasterize", "read_annotations", "read_labels_csv", "ring_points",
]
