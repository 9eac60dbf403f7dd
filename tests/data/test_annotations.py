from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from lymph.data.annotations import (
    Annotations,
    Polygon,
    contains,
    coverage_thumb,
    find_annotations,
    parse_asap_xml,
    parse_geojson,
    rasterize,
    read_annotations,
    read_labels_csv,
)
from lymph.data.errors import AnnotationError


@pytest.fixture(scope="module")
def ann_dir(fixtures_dir):
    return fixtures_dir / "annotations"


def asap_xml(polys: list[tuple[str, list]]) -> str:
    """ASAP XML text from (group, [[x, y], ...]) pairs."""
    out = ['<?xml version="1.0"?>', "<ASAP_Annotations>", "<Annotations>"]
    for i, (group, pts) in enumerate(polys):
        out.append(f'<Annotation Name="A{i}" Type="Polygon" PartOfGroup="{group}">')
        out.append("<Coordinates>")
        # reversed Order attributes: the parser must sort by Order, not document order
        for k in reversed(range(len(pts))):
            out.append(f'<Coordinate Order="{k}" X="{pts[k][0]}" Y="{pts[k][1]}" />')
        out.append("</Coordinates></Annotation>")
    out.append("</Annotations><AnnotationGroups /></ASAP_Annotations>")
    return "\n".join(out)


def reference_mask(ann: Annotations, x0: float, y0: float, w: int, h: int, ds: float):
    yy, xx = np.mgrid[:h, :w]
    pts = np.c_[x0 + (xx.ravel() + 0.5) * ds, y0 + (yy.ravel() + 0.5) * ds]
    inside = np.zeros(len(pts), bool)
    for p in ann.tumor:
        inside |= MplPath(p.points_level0).contains_points(pts)
    for p in ann.holes:
        inside &= ~MplPath(p.points_level0).contains_points(pts)
    return inside.reshape(h, w)


def test_real_camelyon17_xml(ann_dir):
    ann = read_annotations(ann_dir / "camelyon17-asap-xml" / "patient_004_node_4.xml")
    assert len(ann.tumor) == 3 and not ann.holes
    assert all(p.group == "Tumor" for p in ann.tumor)
    first = ann.tumor[0].points_level0
    assert first.shape == (8, 2)
    np.testing.assert_allclose(first[0], [12711.2998, 88778.1016])


def test_camelyon16_lesions_with_holes_rasterize_exactly(ann_dir):
    """NCRF's real CAMELYON16 geometry (2 lesions, 3 `_2` exclusions) as ASAP XML."""
    src = json.loads((ann_dir / "ncrf-camelyon16" / "Tumor_083.json").read_text())
    polys = [("_0", p["vertices"]) for p in src["positive"]]
    polys += [("_2", p["vertices"]) for p in src["negative"]]
    ann = parse_asap_xml(asap_xml(polys))
    assert len(ann.tumor) == 2 and len(ann.holes) == 3
    # Windows on each hole at two scales. The origin is offset by 0.1234 px: NCRF's integer
    # vertices put many 45-degree edges exactly through half-integer pixel centres, where inside
    # or outside is a convention (ours: half-open, like `contains`), not a fact to compare.
    for hole in ann.holes:
        x0, y0, x1, y1 = hole.bbox_level0
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        for ds, size in ((1.0, 300), (4.0, min(int(max(x1 - x0, y1 - y0) / 4) + 40, 300))):
            ox, oy = cx - size * ds / 2 + 0.1234, cy - size * ds / 2 + 0.1234
            got = rasterize(ann, x_level0=ox, y_level0=oy, width=size, height=size,
                            downsample=ds)
            ref = reference_mask(ann, ox, oy, size, size, ds)
            assert got.dtype == np.uint8 and set(np.unique(got)) <= {0, 1}
            assert (got.astype(bool) != ref).sum() == 0
            assert ref.any() and not ref.all()  # the window sees tumor and the hole


def test_rasterize_agrees_with_contains_at_pixel_centres(ann_dir):
    ann = read_annotations(ann_dir / "camelyon17-asap-xml" / "patient_004_node_4.xml")
    x0, y0, x1, y1 = ann.bbox_level0
    m = rasterize(ann, x_level0=x0, y_level0=y0, width=200, height=300, downsample=7.5)
    yy, xx = np.mgrid[:300, :200]
    pts = np.c_[x0 + (xx.ravel() + 0.5) * 7.5, y0 + (yy.ravel() + 0.5) * 7.5]
    np.testing.assert_array_equal(contains(ann, pts), m.ravel().astype(bool))
    assert m.any()


def test_square_edges_are_half_open():
    ann = Annotations(tumor=(Polygon(np.array([[2.0, 2.0], [6.0, 2.0], [6.0, 6.0],
                                               [2.0, 6.0]])),))
    m = rasterize(ann, x_level0=0, y_level0=0, width=8, height=8, downsample=1.0)
    expected = np.zeros((8, 8), np.uint8)
    expected[2:6, 2:6] = 1
    np.testing.assert_array_equal(m, expected)
    # a region wholly outside the polygon's bounding box
    assert not rasterize(ann, x_level0=100, y_level0=100, width=4, height=4, downsample=1).any()


def test_coverage_finds_lesions_smaller_than_a_thumbnail_pixel():
    tiny = Polygon(np.array([[101.0, 101.0], [104.0, 101.0], [104.0, 104.0]]))
    ann = Annotations(tumor=(tiny,))
    assert not rasterize(ann, x_level0=0, y_level0=0, width=16, height=16, downsample=32).any()
    cov = coverage_thumb(ann, shape=(16, 16), downsample=32)
    assert cov[3, 3]


def test_asap_dot_and_pointset_ignored_with_warning(ann_dir):
    for name, kind in (("asap-dot.xml", "Dot"), ("asap-pointset.xml", "PointSet")):
        with pytest.warns(UserWarning, match=f"not areas: 1 {kind}"):
            ann = read_annotations(ann_dir / "wsidicom" / "asap" / name)
        assert not ann and not ann.tumor


def test_asap_unknown_group_is_tumor_with_warning(ann_dir):
    with pytest.warns(UserWarning, match=r"groups \['None'\] taken as tumor"):
        ann = read_annotations(ann_dir / "wsidicom" / "asap" / "asap-polygon.xml")
    assert len(ann.tumor) == 1 and ann.tumor[0].points_level0.shape == (6, 2)


def test_asap_group_names_are_case_insensitive():
    sq = [[0, 0], [10, 0], [10, 10], [0, 10]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ann = parse_asap_xml(asap_xml([("_1", sq), ("METASTASES", sq), ("tumor", sq),
                                       ("exclusion", sq), ("_2", sq)]))
    assert len(ann.tumor) == 3 and len(ann.holes) == 2


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<ASAP_Annotations><Annotations><Annotation Name="&xxe;" Type="Polygon" PartOfGroup="_0">
</Annotation></Annotations></ASAP_Annotations>"""

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<ASAP_Annotations><Annotations>&lol3;</Annotations></ASAP_Annotations>"""


@pytest.mark.parametrize("data", [XXE, BOMB], ids=["external-entity", "entity-bomb"])
def test_xml_with_entities_is_refused(tmp_path, data):
    path = tmp_path / "evil.xml"
    path.write_bytes(data)
    with pytest.raises(AnnotationError, match="evil.xml: XML with a DOCTYPE/ENTITY"):
        read_annotations(path)


def test_malformed_and_foreign_xml(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<ASAP_Annotations><Annotations>")
    with pytest.raises(AnnotationError, match="bad.xml: malformed XML"):
        read_annotations(bad)
    other = tmp_path / "other.xml"
    other.write_text("<svg></svg>")
    with pytest.raises(AnnotationError, match="root element <svg>"):
        read_annotations(other)
    nan = tmp_path / "nan.xml"
    nan.write_text(asap_xml([("_0", [[0, 0], [1, "x"], [2, 2]])]))
    with pytest.raises(AnnotationError, match="bad coordinate"):
        read_annotations(nan)


def test_qupath_bare_feature_and_feature_collection(ann_dir):
    with pytest.warns(UserWarning, match="1 unclassified polygon"):
        ann = read_annotations(ann_dir / "wsidicom" / "qupath_geojson" / "qupath-rectangle.json")
    assert len(ann.tumor) == 1
    # the closing point is dropped: a rectangle has 4 corners
    assert ann.tumor[0].points_level0.shape == (4, 2)
    assert ann.tumor[0].area_level0 == pytest.approx(210 * 176)
    with pytest.warns(UserWarning, match="3 unclassified"):
        ann = read_annotations(ann_dir / "dlup" / "qupath05.geojson")
    assert [p.name for p in ann.tumor] == ["UT", "I", "I"]


def test_qupath_lines_points_and_cells_ignored(ann_dir):
    qp = ann_dir / "wsidicom" / "qupath_geojson"
    for name, what in (("qupath-line.json", "LineString"), ("qupath-point.json", "Point"),
                       ("qupath-multipoint.json", "MultiPoint"),
                       ("qupath-polygon-cell-classified.json", "class 'Cell'")):
        with pytest.warns(UserWarning, match=f"ignored features: .*{what}"):
            assert not read_annotations(qp / name)


def test_geojson_multipolygon_holes_and_classes():
    ring = [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]
    hole = [[40, 40], [60, 40], [60, 60], [40, 60], [40, 40]]
    far = [[[[200, 200], [210, 200], [210, 210], [200, 200]]]]
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
         "geometry": {"type": "MultiPolygon", "coordinates": [[ring, hole]] + far}},
        {"type": "Feature", "properties": {"classification": {"name": "Stroma"}},
         "geometry": {"type": "Polygon", "coordinates": [ring]}},
        {"type": "Feature", "properties": {"classification": "Exclusion"},
         "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [5, 0], [5, 5], [0, 0]]]}},
    ]}
    with pytest.warns(UserWarning, match="class 'Stroma'"):
        ann = parse_geojson(json.dumps(doc))
    assert len(ann.tumor) == 2 and len(ann.holes) == 2
    m = rasterize(ann, x_level0=0, y_level0=0, width=100, height=100, downsample=1)
    assert m[50, 50] == 0 and m[20, 20] == 1 and m[1, 3] == 0


@pytest.mark.parametrize(("text", "match"), [
    ("{not json", "not valid JSON"),
    ('{"positive": [], "negative": []}', "NCRF"),
    ('{"type": "Topology"}', "not GeoJSON"),
    ('{"type": "FeatureCollection"}', "without a 'features' list"),
    ('[3]', "expected GeoJSON objects"),
    ('{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[1, 2, 3]]}}',
     "ring must be a list"),
])
def test_bad_geojson(text, match):
    with pytest.raises(AnnotationError, match=match):
        parse_geojson(text)


def test_read_annotations_rejects_unknown_and_missing(tmp_path):
    with pytest.raises(AnnotationError, match="no such annotation file"):
        read_annotations(tmp_path / "none.xml")
    odd = tmp_path / "a.txt"
    odd.write_text("x")
    with pytest.raises(AnnotationError, match="unknown annotation kind '.txt'"):
        read_annotations(odd)


def test_polygon_validation():
    with pytest.raises(AnnotationError, match="k >= 3"):
        Polygon(np.zeros((2, 2)))
    with pytest.raises(AnnotationError, match="non-finite"):
        Polygon(np.array([[0, 0], [1, np.inf], [2, 2]]))
    with pytest.raises(ValueError, match="downsample > 0"):
        rasterize(Annotations(), x_level0=0, y_level0=0, width=1, height=1, downsample=0)


def test_find_annotations_order_and_case(tmp_path):
    slide = tmp_path / "tumor_001.tif"
    slide.write_bytes(b"")
    assert find_annotations(slide) is None
    (tmp_path / "tumor_001_mask.tif").write_bytes(b"")
    assert find_annotations(slide).name == "tumor_001_mask.tif"
    (tmp_path / "Tumor_001.xml").write_text("")
    assert find_annotations(slide).name == "Tumor_001.xml"  # xml first, case-insensitive
    other = tmp_path / "ann"
    other.mkdir()
    (other / "tumor_001.geojson").write_text("")
    assert find_annotations(slide, annotations_dir=other) == other / "tumor_001.geojson"


# --- the labels CSV -------------------------------------------------------------------------


def _csv(tmp_path, text: str | bytes, name: str = "labels.csv"):
    path = tmp_path / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def test_labels_csv_accepts_every_spelling_and_the_camelyon16_layout(tmp_path):
    path = _csv(tmp_path, "slide,label\nTest_001,Tumor,Macro,Primary\nTest_002,NORMAL,,\n"
                          "b.tif,1\nc,0\nd.ome.tif,TRUE\ne,false\n\n")
    labels = read_labels_csv(path)
    assert labels == {"Test_001": True, "Test_002": False, "b": True, "c": False, "d": True,
                      "e": False}
    # keys match through slide_id, ignoring case: the file test_001.tif is Test_001
    assert labels["test_001.tif"] is True and labels.get("TEST_002") is False
    assert labels.get("zzz") is None and "d.ome.tiff" in labels


def test_extract_and_eval_read_the_labels_csv_the_same_way(tmp_path):
    from lymph.model import camelyon
    from lymph.pipeline import extract

    path = _csv(tmp_path, "tumor_9,1\nother,0\n")
    assert extract.read_labels_csv is camelyon.read_labels_csv is read_labels_csv
    labels = read_labels_csv(path)
    assert extract.slide_status("sub/other.svs", has_annotations=False, labels=labels) == (
        "normal", "normal")
    assert extract.slide_status("TUMOR_9.tif", has_annotations=True, labels=labels) == (
        "tumor", "tumor")


def test_labels_csv_name_contradicting_the_label_is_an_error(tmp_path):
    with pytest.raises(AnnotationError, match=r"line 2: slide 'normal_002' is labelled tumor "
                                              r"but its name says normal"):
        read_labels_csv(_csv(tmp_path, "normal_001,0\nnormal_002,1\n"))


def test_labels_csv_one_slide_two_labels_is_an_error(tmp_path):
    with pytest.raises(AnnotationError, match=r"lines 1 and 3: slide 'x' is labelled both "
                                              r"tumor and normal"):
        read_labels_csv(_csv(tmp_path, "x,tumor\ny,normal\nX.svs,normal\n"))


def test_labels_csv_bad_label_names_the_line(tmp_path):
    with pytest.raises(AnnotationError, match=r"labels.csv, line 3: label 'maybe' is not "):
        read_labels_csv(_csv(tmp_path, "name,label\na,tumor\nb,maybe\n"))


def test_labels_csv_utf16_is_refused_in_one_line(tmp_path):
    path = _csv(tmp_path, "slide,label\ntumor_001,Tumor\n".encode("utf-16"))
    with pytest.raises(AnnotationError, match=r"labels.csv: the labels CSV is UTF-16 text; "
                                              r"save it as a UTF-8"):
        read_labels_csv(path)
    path = _csv(tmp_path, "slide,label\ntumor_001,Tumor\n".encode("utf-16-le"))
    with pytest.raises(AnnotationError, match="UTF-16"):
        read_labels_csv(path)


def test_labels_csv_binary_is_refused_in_one_line(tmp_path):
    path = _csv(tmp_path, bytes(range(256)) * 4)
    with pytest.raises(AnnotationError, match=r"labels.csv: the labels CSV holds NUL bytes "
                                              r"\(a binary file, not text\); save it"):
        read_labels_csv(path)


def test_labels_csv_latin1_empty_missing_and_short_rows(tmp_path):
    with pytest.raises(AnnotationError, match=r"not UTF-8 \(byte 0xe9 at offset 1\)"):
        read_labels_csv(_csv(tmp_path, "r\xe9f,Tumor\n".encode("latin-1")))
    with pytest.raises(AnnotationError, match="no `slide,label` rows"):
        read_labels_csv(_csv(tmp_path, "slide,label\n\n"))
    with pytest.raises(AnnotationError, match="no such labels CSV"):
        read_labels_csv(tmp_path / "nope.csv")
    with pytest.raises(AnnotationError, match="line 2: expected `slide,label`"):
        read_labels_csv(_csv(tmp_path, "a,1\nb\n"))
    with pytest.raises(AnnotationError, match="line 1: empty slide name"):
        read_labels_csv(_csv(tmp_path, " ,1\n"))
    assert read_labels_csv(_csv(tmp_path, "\ufeffa,1\n".encode())) == {"a": True}  # UTF-8 BOM
