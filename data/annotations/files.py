"""Annotation files: which file belongs to a slide (`find_annotations`), reading one by its
suffix (`read_annotations`), and checking its outlines against the slide (`check_inside`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lymph.data.annotations.asap import parse_asap_xml
from lymph.data.annotations.geojson import parse_geojson
from lymph.data.annotations.polygons import Annotations, Polygon
from lymph.data.errors import AnnotationError
from lymph.data.slides import strip_slide_suffix


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
    from lymph.data.partial import suggestions_file  # partial imports this package

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
