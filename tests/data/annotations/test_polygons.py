"""The annotation model: a Polygon refuses what is not an outline."""

from __future__ import annotations

import numpy as np
import pytest

from lymph.data.annotations import Annotations, Polygon, rasterize
from lymph.data.errors import AnnotationError


def test_polygon_validation():
    with pytest.raises(AnnotationError, match="k >= 3"):
        Polygon(np.zeros((2, 2)))
    with pytest.raises(AnnotationError, match="non-finite"):
        Polygon(np.array([[0, 0], [1, np.inf], [2, 2]]))
    with pytest.raises(ValueError, match="downsample > 0"):
        rasterize(Annotations(), x_level0=0, y_level0=0, width=1, height=1, downsample=0)
