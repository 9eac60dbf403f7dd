"""Detection exports parse back: CAMELYON16 CSV, QuPath GeoJSON and ASAP XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from lymph.data.annotations import read_annotations
from lymph.model.camelyon import read_detections_csv
from lymph.model.predict.exports import (
    Detection,
    write_asap_xml,
    write_camelyon_csv,
    write_geojson,
)

SQUARE = np.array([[100.0, 200.0], [400.0, 200.0], [400.0, 500.0], [100.0, 500.0]])
TRIANGLE = np.array([[1000.5, 1000.0], [1300.0, 1000.0], [1150.0, 1250.25]])


def detections() -> list[Detection]:
    return [
        Detection(0.42, 1150, 1100, TRIANGLE, area_um2=1234.5),
        Detection(0.9, 250, 350, SQUARE, area_um2=5000.0, extra={"area_map_px": 20.0}),
        Detection(0.7, 5000, 6000),  # no outline: a point
    ]


def test_camelyon_csv_is_confidence_x_y_without_header(tmp_path: Path) -> None:
    path = write_camelyon_csv(tmp_path / "S.csv", detections())
    lines = path.read_text().splitlines()
    assert lines == ["0.900000,250,350", "0.700000,5000,6000", "0.420000,1150,1100"]
    np.testing.assert_allclose(
        read_detections_csv(path)[:, 1:], [[250, 350], [5000, 6000], [1150, 1100]]
    )
    assert write_camelyon_csv(tmp_path / "empty.csv", []).read_text() == ""


def test_geojson_parses_back_through_the_annotation_reader(tmp_path: Path) -> None:
    path = write_geojson(tmp_path / "S.geojson", detections(), slide="S")
    obj = json.loads(path.read_text())
    assert obj["type"] == "FeatureCollection" and len(obj["features"]) == 3
    first = obj["features"][0]
    assert first["properties"]["classification"]["name"] == "Tumor"
    assert first["properties"]["objectType"] == "annotation"
    assert first["properties"]["measurements"]["confidence"] == 0.9
    assert first["properties"]["measurements"]["area_um2"] == 5000.0
    ring = first["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 5  # closed
    point = obj["features"][1]["geometry"]
    assert point == {"type": "Point", "coordinates": [5000, 6000]}
    with pytest.warns(UserWarning, match="Point"):
        ann = read_annotations(path)
    assert len(ann.tumor) == 2 and not ann.holes
    np.testing.assert_allclose(ann.tumor[0].points_level0, SQUARE)
    np.testing.assert_allclose(ann.tumor[1].points_level0, TRIANGLE)


def test_asap_xml_parses_back_through_the_annotation_reader(tmp_path: Path) -> None:
    path = write_asap_xml(tmp_path / "S.xml", detections())
    root = ET.parse(path).getroot()
    kinds = [a.get("Type") for a in root.iter("Annotation")]
    assert kinds == ["Polygon", "Dot", "Polygon"]
    assert {a.get("PartOfGroup") for a in root.iter("Annotation")} == {"Tumor"}
    assert [g.get("Name") for g in root.iter("Group")] == ["Tumor"]
    with pytest.warns(UserWarning, match="Dot"):
        ann = read_annotations(path)
    assert len(ann.tumor) == 2
    np.testing.assert_allclose(ann.tumor[0].points_level0, SQUARE)
    np.testing.assert_allclose(ann.tumor[1].points_level0, TRIANGLE, atol=0.005)
    dot = [a for a in root.iter("Annotation") if a.get("Type") == "Dot"][0]
    assert [(c.get("X"), c.get("Y")) for c in dot.iter("Coordinate")] == [("5000.00", "6000.00")]


def test_no_detections_write_valid_empty_files(tmp_path: Path) -> None:
    geo = json.loads(write_geojson(tmp_path / "e.geojson", []).read_text())
    assert geo == {"type": "FeatureCollection", "features": []}
    root = ET.parse(write_asap_xml(tmp_path / "e.xml", [])).getroot()
    assert root.tag == "ASAP_Annotations" and not list(root.iter("Annotation"))


def test_bad_detections_are_refused() -> None:
    with pytest.raises(ValueError, match=r"confidence must be in \[0, 1\]"):
        Detection(1.5, 0, 0)
    with pytest.raises(ValueError, match="outline must be"):
        Detection(0.5, 0, 0, np.zeros((2, 2)))
