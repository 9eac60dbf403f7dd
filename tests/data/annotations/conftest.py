"""Shared helpers of the annotation tests, as fixtures (test modules do not import each other):
the CAMELYON fixture folder, an ASAP XML writer and a test mask image."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


@pytest.fixture(scope="module")
def ann_dir(fixtures_dir):
    return fixtures_dir / "annotations"


def _asap_xml(polys: list[tuple[str, list]]) -> str:
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


def _mask_image(size=(1024, 768)):
    """A 1024 x 768 uint8 0/255 mask: a block, a speck, and a patch in the bottom-right corner."""
    w, h = size
    m = np.zeros((h, w), np.uint8)
    m[200:500, 300:700] = 255
    m[600:610, 50:60] = 255
    m[h - 8:, w - 24:] = 255  # touches the bottom-right corner
    return m


@pytest.fixture(scope="session")
def asap_xml() -> Callable[[list[tuple[str, list]]], str]:
    """`asap_xml([(group, [[x, y], ...]), ...])`: ASAP XML text with reversed Order attributes."""
    return _asap_xml


@pytest.fixture(scope="session")
def mask_image() -> Callable[..., np.ndarray]:
    """`mask_image()`: the uint8 0/255 test mask (1024 x 768)."""
    return _mask_image
