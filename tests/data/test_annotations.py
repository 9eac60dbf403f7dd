from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from lymph.data.annotations import (
    MAX_STRIP_BYTES,
    Annotations,
    Polygon,
    StripTiffMask,
    check_inside,
    contains,
    coverage_thumb,
    find_annotations,
    open_mask,
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
    with pytest.raises(AnnotationError, match=r"nan.xml: annotation 'A0', coordinate 1: Y='x' is "
                                              "not a number"):
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
                                              r"\(at offset 0: a binary file, not text\); save"):
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


# --- issue 11: bad annotation input, each case its own one-line error -------------------------

SQUARE = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]


def _feature(geometry, properties=None) -> str:
    return json.dumps({"type": "Feature", "geometry": geometry,
                       "properties": {} if properties is None else properties})


def test_geojson_string_geometry_is_refused(tmp_path):
    path = tmp_path / "s.geojson"
    path.write_text(_feature("Polygon"))
    with pytest.raises(AnnotationError, match=r"s.geojson: feature 'feature 0': 'geometry' must "
                                              r"be an object .* got str 'Polygon'"):
        read_annotations(path)


def test_geojson_integer_coordinates_are_numbers():
    with pytest.warns(UserWarning, match="unclassified"):
        ann = parse_geojson(_feature({"type": "Polygon", "coordinates": [SQUARE]}))
    assert ann.tumor[0].points_level0.dtype == np.float64
    assert ann.tumor[0].area_level0 == 100.0
    m = rasterize(ann, x_level0=0, y_level0=0, width=12, height=12, downsample=1)
    assert m.sum() == 100 and m[:10, :10].all()


def test_geojson_a_bare_integer_as_coordinates_is_refused():
    with pytest.raises(AnnotationError, match="Polygon coordinates must be nested lists of"):
        parse_geojson(_feature({"type": "Polygon", "coordinates": 5}))
    with pytest.raises(AnnotationError, match="MultiPolygon coordinates must be nested lists"):
        parse_geojson(_feature({"type": "MultiPolygon", "coordinates": [5]}))


def test_geojson_integer_too_large_for_a_float_is_refused():
    ring = [[10 ** 310, 0], [1, 0], [1, 1], [0, 1]]
    with pytest.raises(AnnotationError, match="coordinate too large for a number of pixels"):
        parse_geojson(_feature({"type": "Polygon", "coordinates": [ring]}))


def test_geojson_list_of_properties_is_refused():
    with pytest.raises(AnnotationError, match=r"feature 0: 'properties' must be an object, got "
                                              r"list"):
        parse_geojson(_feature({"type": "Polygon", "coordinates": [SQUARE]}, [1, 2]))


def test_geojson_100k_deep_nesting_is_refused_without_recursion_error():
    with pytest.raises(AnnotationError, match="JSON nested too deeply to be GeoJSON"):
        parse_geojson("[" * 100_000 + "]" * 100_000)
    with pytest.raises(AnnotationError, match="nested too deeply"):
        parse_geojson('{"a":' * 100_000 + "1" + "}" * 100_000)


def test_geojson_nesting_json_accepts_is_walked_without_recursion():
    assert not parse_geojson("[" * 900 + "]" * 900)  # lists of nothing: no features


@pytest.mark.parametrize("value", ["1e300", "-1e300"])
def test_geojson_coordinates_of_1e300_are_refused(value):
    text = '{"type": "Polygon", "coordinates": [[[' + value + ', 0], [1, 0], [1, 1]]]}'
    with pytest.raises(AnnotationError, match=r"beyond \+-2147483648 px of any slide; are the "
                                              r"coordinates in level-0 pixels"):
        parse_geojson(text)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_geojson_nan_and_infinite_coordinates_are_refused(value):
    text = '{"type": "Polygon", "coordinates": [[[' + value + ', 0], [1, 0], [1, 1]]]}'
    with pytest.raises(AnnotationError, match=r"has a non-finite coordinate .* \(NaN or "
                                              r"infinity\)"):
        parse_geojson(text)


def _asap_one(coords: str) -> str:
    return ('<ASAP_Annotations><Annotations><Annotation Name="L1" Type="Polygon" '
            f'PartOfGroup="_0"><Coordinates>{coords}</Coordinates></Annotation></Annotations>'
            '</ASAP_Annotations>')


def test_asap_non_numeric_coordinate_is_refused():
    xml = _asap_one('<Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="ten" Y="0"/>'
                    '<Coordinate Order="2" X="1" Y="1"/>')
    with pytest.raises(AnnotationError, match=r"annotation 'L1', coordinate 1: X='ten' is not "
                                              r"a number"):
        parse_asap_xml(xml)


@pytest.mark.parametrize("attr", ["X", "Y"])
def test_asap_missing_coordinate_attribute_is_refused(attr):
    one = {"X": 'X="1"', "Y": 'Y="1"'}
    del one[attr]
    xml = _asap_one(f'<Coordinate Order="0" {" ".join(one.values())}/>' +
                    '<Coordinate Order="1" X="5" Y="0"/><Coordinate Order="2" X="5" Y="5"/>')
    with pytest.raises(AnnotationError, match=f"coordinate 0: no {attr} attribute"):
        parse_asap_xml(xml)


def test_asap_coordinates_of_1e300_inf_and_bad_order_are_refused():
    rest = '<Coordinate Order="1" X="5" Y="0"/><Coordinate Order="2" X="5" Y="5"/>'
    with pytest.raises(AnnotationError, match="beyond"):
        parse_asap_xml(_asap_one('<Coordinate Order="0" X="-1e300" Y="0"/>' + rest))
    with pytest.raises(AnnotationError, match="non-finite coordinate"):
        parse_asap_xml(_asap_one('<Coordinate Order="0" X="inf" Y="0"/>' + rest))
    with pytest.raises(AnnotationError, match="Order='nan' is not a finite number"):
        parse_asap_xml(_asap_one('<Coordinate Order="nan" X="0" Y="0"/>' + rest))


def test_check_inside_all_polygons_outside_the_slide_is_an_error(tmp_path):
    ann = Annotations(tumor=(Polygon([[5000, 4000], [5100, 4000], [5100, 4100]], name="L"),))
    with pytest.raises(AnnotationError, match=r"a.xml: every tumor polygon lies outside the slide "
                                              r"\(they span x 5000..5100, y 4000..4100; the slide "
                                              r"is 1000x800 px at level 0\)"):
        check_inside(ann, width=1000, height=800, path=tmp_path / "a.xml")


def test_check_inside_some_polygons_outside_are_reported_and_inside_ones_pass():
    inside = Polygon([[10, 10], [50, 10], [50, 50]], name="in")
    across = Polygon([[990, 10], [1100, 10], [1100, 50]], name="edge")
    out = Polygon([[-300, -300], [-200, -300], [-200, -200]], name="out")
    assert check_inside(Annotations(tumor=(inside, across)), width=1000, height=800) == []
    msgs = check_inside(Annotations(tumor=(inside, out)), width=1000, height=800, path="s.xml")
    assert msgs == ["s.xml: tumor polygon 'out' lies outside the slide (x -300..-200, "
                    "y -300..-200; the slide is 1000x800 px at level 0); it is ignored"]


BOWTIE = [[200, 150], [800, 600], [800, 150], [200, 600]]


def test_bowtie_area_is_the_even_odd_area_not_the_shoelace_zero():
    bow = Polygon(BOWTIE)
    assert bow.area_level0 == pytest.approx(2 * 300 * 225 / 2 * 2, rel=0.01)  # two triangles
    m = rasterize(Annotations(tumor=(bow,)), x_level0=0, y_level0=0, width=1000, height=800,
                  downsample=1)
    assert bow.area_level0 == pytest.approx(m.sum(), rel=0.01)
    square = Polygon([[0, 0], [10, 0], [10, 10], [0, 10]])
    assert square.area_level0 == 100.0  # simple polygons keep the exact shoelace value


def test_bowtie_centre_test_and_rasterizer_agree_everywhere():
    ann = Annotations(tumor=(Polygon(BOWTIE),))
    for ds, (x0, y0) in ((1.0, (190, 140)), (2.0, (0, 0)), (3.7, (101.3, 55.1))):
        w = h = 160
        m = rasterize(ann, x_level0=x0, y_level0=y0, width=w, height=h, downsample=ds)
        jj, ii = np.meshgrid(np.arange(w), np.arange(h))
        pts = np.stack([x0 + (jj.ravel() + 0.5) * ds, y0 + (ii.ravel() + 0.5) * ds], axis=1)
        np.testing.assert_array_equal(contains(ann, pts).reshape(h, w), m.astype(bool))
        assert m.any()


def _tissue_slide(path, size=(1024, 768), seed=0):
    import tifffile

    rng = np.random.default_rng(seed)
    w, h = size
    rgb = np.full((h, w, 3), 242, np.uint8)
    rgb[32:h - 32, 32:w - 32] = rng.integers(40, 200, (h - 64, w - 64, 3), dtype=np.uint8)
    tifffile.imwrite(path, rgb, tile=(256, 256), photometric="rgb")
    return path


def _write_xml(path, polys):
    path.write_text(asap_xml([("_0", p) for p in polys]))


def _extract_one(tmp_path, src, **kw):
    from lymph.pipeline.extract import ExtractConfig, run

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run(ExtractConfig(slides=src, out=tmp_path / "s.zarr", patch_size=64,
                                     patches_per_slide=kw.get("n", 40), seed=0, progress=False))


def _centres_agree_with_masks(store, sid):
    import zarr

    g = zarr.open_group(str(store / "slides" / sid), mode="r")
    labels, masks = np.asarray(g["labels"][:]), np.asarray(g["masks"][:])
    np.testing.assert_array_equal(labels, masks[:, 32, 32])  # the centre pixel (P // 2)
    return labels, masks


def test_bowtie_gives_tumor_patches_whose_centres_are_tumor_in_their_masks(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _tissue_slide(src / "tumor_bow.tif")
    _write_xml(src / "tumor_bow.xml", [BOWTIE])
    s = _extract_one(tmp_path, src)
    assert not s.failed, s.failed
    labels, masks = _centres_agree_with_masks(tmp_path / "s.zarr", "tumor_bow")
    assert s.done[0].n_tumor == int(labels.sum()) > 5  # was 0 (shoelace area 0)


def test_extract_of_annotations_wholly_outside_the_slide_fails_that_slide(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _tissue_slide(src / "tumor_far.tif")
    _write_xml(src / "tumor_far.xml", [[[5000, 5000], [5200, 5000], [5200, 5200]]])
    _tissue_slide(src / "normal_ok.tif", seed=1)
    s = _extract_one(tmp_path, src, n=8)
    assert [r.slide_id for r in s.done] == ["normal_ok"]  # the batch goes on
    (source, error), = s.failed
    assert source.endswith("tumor_far.tif")
    assert "every tumor polygon lies outside the slide" in error and "1024x768" in error


def _mask(size=(1024, 768)):
    w, h = size
    m = np.zeros((h, w), np.uint8)
    m[200:500, 300:700] = 255
    m[600:610, 50:60] = 255
    m[h - 8:, w - 24:] = 255  # touches the bottom-right corner
    return m


@pytest.mark.parametrize("kwargs", [
    {},  # uncompressed, one strip of the whole image (tifffile's default)
    {"compression": "zlib", "rowsperstrip": 37},
    {"compression": "lzw", "rowsperstrip": 64},
])
def test_strip_mask_tiff_reads_like_the_tiled_one(tmp_path, kwargs):
    import tifffile

    m = _mask()
    tifffile.imwrite(tmp_path / "tiled.tif", m, tile=(256, 256))
    tifffile.imwrite(tmp_path / "strip.tif", m, **kwargs)
    tiled, strip = open_mask(tmp_path / "tiled.tif"), open_mask(tmp_path / "strip.tif")
    assert isinstance(strip, StripTiffMask) and strip.dimensions == tiled.dimensions
    rng = np.random.default_rng(0)
    for _ in range(30):
        x, y = int(rng.integers(0, 900)), int(rng.integers(0, 700))
        np.testing.assert_array_equal(strip.read_region((x, y), 0, (100, 60)),
                                      tiled.read_region((x, y), 0, (100, 60)))
    np.testing.assert_array_equal(strip.thumbnail(256)[0], tiled.thumbnail(256)[0])
    out = strip.read_region((1000, 760), 0, (50, 20))  # outside the image: not tumor
    assert out[:8, :24].max() == 255 and out[8:].max() == 0 and out[:, 24:].max() == 0
    strip.close()


def test_extract_with_a_strip_mask_tiff(tmp_path):
    import tifffile

    src = tmp_path / "src"
    src.mkdir()
    _tissue_slide(src / "tumor_m.tif")
    tifffile.imwrite(src / "tumor_m_mask.tif", _mask(), compression="zlib", rowsperstrip=16)
    s = _extract_one(tmp_path, src)
    assert not s.failed, s.failed
    labels, masks = _centres_agree_with_masks(tmp_path / "s.zarr", "tumor_m")
    assert s.done[0].status == "tumor" and labels.sum() > 5


def test_strip_mask_with_a_strip_too_large_gives_the_convert_command(tmp_path, monkeypatch):
    import tifffile

    from lymph.data import annotations as ann_mod

    tifffile.imwrite(tmp_path / "big_mask.tif", _mask(), compression="zlib")  # one strip
    monkeypatch.setattr(ann_mod, "MAX_STRIP_BYTES", 1 << 16)
    assert MAX_STRIP_BYTES > 1 << 16
    with pytest.raises(AnnotationError, match=r"big_mask.tif: one compressed strip of 256 rows "
                                              r"is over 0.0625 MiB decoded; rewrite it tiled with "
                                              r"`vips tiffsave '.*big_mask.tif' "
                                              r"'.*big_mask.tiled.tif' --tile"):
        open_mask(tmp_path / "big_mask.tif")


def test_eval_reads_a_strip_mask_like_the_tiled_one(tmp_path):
    import tifffile

    from lymph.model.camelyon import truth_mask

    m = _mask()
    tifffile.imwrite(tmp_path / "t_mask.tif", m, tile=(256, 256))
    tifffile.imwrite(tmp_path / "s_mask.tif", m, compression="zlib", rowsperstrip=50)
    kw = {"dimensions": (1024, 768), "downsample": 16.0}
    tiled = truth_mask(tmp_path / "t.tif", tmp_path / "t_mask.tif", **kw)
    strip = truth_mask(tmp_path / "s.tif", tmp_path / "s_mask.tif", **kw)
    assert tiled.shape == (48, 64) and tiled.sum() > 100
    np.testing.assert_array_equal(strip, tiled)


def test_strip_mask_bilevel_rgb_and_truncated(tmp_path):
    import tifffile

    m = _mask()
    tifffile.imwrite(tmp_path / "bool_mask.tif", m > 0, rowsperstrip=32)  # 1 bit per pixel
    rgb = np.zeros((*m.shape, 3), np.uint8)
    rgb[..., 0] = m
    tifffile.imwrite(tmp_path / "rgb_mask.tif", rgb, photometric="rgb")
    for name in ("bool_mask.tif", "rgb_mask.tif"):
        with open_mask(tmp_path / name) as r:
            got = r.read_region((0, 0), 0, (1024, 768))[..., 0] > 0
        np.testing.assert_array_equal(got, m > 0)
    tifffile.imwrite(tmp_path / "t_mask.tif", m)
    data = (tmp_path / "t_mask.tif").read_bytes()
    (tmp_path / "t_mask.tif").write_bytes(data[: len(data) // 2])
    match = r"t_mask.tif: the file ends inside row 38[0-9] of 768 \(truncated"
    with open_mask(tmp_path / "t_mask.tif") as r, pytest.raises(AnnotationError, match=match):
        r.read_region((0, 0), 0, (1024, 768))
