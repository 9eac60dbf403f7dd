"""ASAP XML: groups, non-area types, refused DTDs, malformed and out-of-range coordinates."""

from __future__ import annotations

import warnings

import pytest

from lymph.data.annotations import parse_asap_xml, read_annotations
from lymph.data.errors import AnnotationError


def test_asap_dot_and_pointset_ignored_with_warning(ann_dir):
    for name, kind in (("asap-dot.xml", "Dot"), ("asap-pointset.xml", "PointSet")):
        with pytest.warns(UserWarning, match=f"not areas: 1 {kind}"):
            ann = read_annotations(ann_dir / "wsidicom" / "asap" / name)
        assert not ann and not ann.tumor


def test_asap_unknown_group_is_tumor_with_warning(ann_dir):
    with pytest.warns(UserWarning, match=r"groups \['None'\] taken as tumor"):
        ann = read_annotations(ann_dir / "wsidicom" / "asap" / "asap-polygon.xml")
    assert len(ann.tumor) == 1 and ann.tumor[0].points_level0.shape == (6, 2)


def test_asap_group_names_are_case_insensitive(asap_xml):
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


def test_malformed_and_foreign_xml(tmp_path, asap_xml):
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
