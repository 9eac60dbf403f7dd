from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from lymph.data.annotations import Annotations, Polygon, parse_asap_xml, parse_geojson, rasterize
from lymph.data.partial import (
    IGNORE,
    box_polygon,
    in_reviewed,
    is_partial,
    patch_mask,
    region_role,
    reviewed_areas,
)

TUMOR = Polygon(np.array([[100, 100], [300, 100], [300, 300], [100, 300]], float), name="t")


def _asap(groups: list[tuple[str, list[tuple[float, float]]]]) -> str:
    anns = []
    for i, (group, pts) in enumerate(groups):
        coords = "".join(f'<Coordinate Order="{k}" X="{x}" Y="{y}" />'
                         for k, (x, y) in enumerate(pts))
        anns.append(f'<Annotation Name="A{i}" Type="Polygon" PartOfGroup="{group}" '
                    f'Color="#F4FA58"><Coordinates>{coords}</Coordinates></Annotation>')
    return (f'<?xml version="1.0"?><ASAP_Annotations><Annotations>{"".join(anns)}'
            "</Annotations><AnnotationGroups /></ASAP_Annotations>")


SQUARE = [(0, 0), (400, 0), (400, 400), (0, 400)]
SMALL = [(100, 100), (300, 100), (300, 300), (100, 300)]


@pytest.mark.parametrize("group", ["Reviewed", "reviewed", "ROI", " roi "])
def test_asap_reviewed_groups_case_insensitive(group):
    ann = parse_asap_xml(_asap([("Tumor", SMALL), (group, SQUARE)]))
    assert len(ann.tumor) == 1 and len(ann.reviewed) == 1 and is_partial(ann)
    assert ann.reviewed[0].bbox_level0 == (0, 0, 400, 400)


def test_asap_suggested_boxes_are_skipped_with_a_warning():
    with pytest.warns(UserWarning, match="1 `Suggested` box.*change its class .* `Reviewed`"):
        ann = parse_asap_xml(_asap([("Tumor", SMALL), ("Suggested", SQUARE)]))
    assert len(ann.tumor) == 1 and not ann.reviewed and not is_partial(ann)


def test_asap_without_regions_is_exhaustive():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ann = parse_asap_xml(_asap([("_0", SMALL)]))
    assert ann.reviewed == () and not is_partial(ann)


def _feature(cls: str | None, ring: list[tuple[float, float]], holes=()) -> dict:
    props: dict = {"objectType": "annotation", "name": "x"}
    if cls is not None:
        props["classification"] = {"name": cls, "color": [0, 0, 0]}
    rings = [[list(p) for p in ring + ring[:1]]] + [[list(p) for p in h + h[:1]] for h in holes]
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": rings},
            "properties": props}


@pytest.mark.parametrize("cls", ["Reviewed", "REVIEWED", "ROI"])
def test_geojson_reviewed_classes(cls):
    obj = {"type": "FeatureCollection",
           "features": [_feature("Tumor", SMALL), _feature(cls, SQUARE)]}
    ann = parse_geojson(json.dumps(obj))
    assert len(ann.tumor) == 1 and len(ann.reviewed) == 1


def test_geojson_suggested_skipped_and_other_classes_unchanged():
    obj = [_feature("Suggested", SQUARE), _feature("Stroma", SQUARE), _feature("Tumor", SMALL)]
    with pytest.warns(UserWarning) as rec:
        ann = parse_geojson(json.dumps(obj))
    text = " ".join(str(w.message) for w in rec)
    assert "`Suggested`" in text and "class 'Stroma'" in text
    assert len(ann.tumor) == 1 and not ann.reviewed
    assert region_role("Steroid") is None and region_role("roi") == "reviewed"


def test_patch_mask_marks_unreviewed_pixels_ignore():
    region = box_polygon(0, 0, 200, 400)
    ann = Annotations(tumor=(TUMOR,), reviewed=(region,))
    m = patch_mask(ann, x_level0=0, y_level0=0, width=400, height=400, downsample=1.0)
    full = rasterize(ann, x_level0=0, y_level0=0, width=400, height=400, downsample=1.0)
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 1, IGNORE}
    np.testing.assert_array_equal(m[:, :200], full[:, :200])
    assert (m[:, 200:] == IGNORE).all()
    # at a coarser level the same pixel-centre rule applies
    m4 = patch_mask(ann, x_level0=0, y_level0=0, width=100, height=100, downsample=4.0)
    assert (m4[:, :50] != IGNORE).all() and (m4[:, 50:] == IGNORE).all()


def test_reviewed_areas_are_unions_and_tumor_inside():
    a, b = box_polygon(0, 0, 200, 400), box_polygon(100, 0, 300, 400)  # overlap 100 x 400
    ann = Annotations(tumor=(TUMOR,), reviewed=(a, b))
    area, tumor = reviewed_areas(ann)
    assert area == pytest.approx(300 * 400, rel=2e-3)
    assert tumor == pytest.approx(200 * 200, rel=2e-3)  # the tumor square lies inside
    assert reviewed_areas(Annotations(tumor=(TUMOR,))) == (0.0, 0.0)
    pts = np.array([[50.0, 50.0], [250.0, 50.0], [350.0, 50.0]])
    np.testing.assert_array_equal(in_reviewed(ann, pts), [True, True, False])


def test_fixture_files_have_no_reviewed_regions(fixtures_dir: Path):
    """The real exports stay exhaustive: none of their groups or classes is a region name."""
    from lymph.data.annotations import read_annotations

    root = fixtures_dir / "annotations"
    for path in [root / "camelyon17-asap-xml" / "patient_004_node_4.xml",
                 root / "dlup" / "qupath05.geojson",
                 root / "wsidicom" / "asap" / "asap-polygon.xml"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ann = read_annotations(path)
        assert ann.tumor and ann.reviewed == (), path


def test_oracle_clips_concave_outlines_exactly():
    from lymph.data.partial import clip_to_box, oracle_annotations

    # a U shape (concave) whose two arms cross the box's bottom edge, with a hole
    u = Polygon(np.array([[0, 0], [300, 0], [300, 400], [200, 400], [200, 100], [100, 100],
                          [100, 400], [0, 400]], float), name="u")
    hole = Polygon(np.array([[20, 20], [60, 20], [60, 60], [20, 60]], float), name="h")
    truth = Annotations(tumor=(u,), holes=(hole,))
    boxes = [(50.0, 40.0, 250.0, 250.0), (1000.0, 1000.0, 1100.0, 1100.0)]
    ann = oracle_annotations(truth, boxes)
    assert len(ann.reviewed) == 2 and len(ann.tumor) == 1 and len(ann.holes) == 1
    full = rasterize(truth, x_level0=0, y_level0=0, width=400, height=450, downsample=1.0)
    got = rasterize(ann, x_level0=0, y_level0=0, width=400, height=450, downsample=1.0)
    inside = np.zeros_like(full, bool)
    inside[40:250, 50:250] = True
    np.testing.assert_array_equal(got[inside], full[inside])
    assert not got[~inside].any()
    assert clip_to_box(u.points_level0, (500, 500, 600, 600)) is None
    sq = clip_to_box(np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float), (5, 5, 20, 20))
    assert Polygon(sq).area_level0 == pytest.approx(25.0)
