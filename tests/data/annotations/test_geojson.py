"""QuPath GeoJSON: features, classes, holes, and every malformed input refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lymph.data.annotations import parse_geojson, rasterize, read_annotations
from lymph.data.errors import AnnotationError


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
