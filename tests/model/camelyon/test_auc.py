"""Slide AUC by ranks and the ROC curve."""

from __future__ import annotations

import numpy as np
import pytest

from lymph.data.errors import ConfigError
from lymph.model.camelyon import roc_curve, slide_auc


def test_auc_hand_cases() -> None:
    assert slide_auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert slide_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert slide_auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    assert slide_auc([0.5, 0.5, 0.9], [0, 1, 1]) == 0.75  # one tie: half a pair
    assert slide_auc([0.3, 0.1, 0.4, 0.2], [1, 0, 0, 1]) == 0.5


def test_roc_curve_runs_from_origin_to_one() -> None:
    fpr, tpr, thr = roc_curve([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.isinf(thr[0])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])


def test_auc_needs_both_classes() -> None:
    with pytest.raises(ConfigError, match="tumor and normal"):
        slide_auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="shapes"):
        slide_auc([0.1, 0.2], [1])
