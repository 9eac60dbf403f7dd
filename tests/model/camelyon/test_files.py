"""The detection, scores and labels CSVs an evaluation reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lymph.data.errors import ConfigError
from lymph.model.camelyon import read_detections_csv, read_labels_csv, read_scores_csv


def test_csv_readers(tmp_path: Path) -> None:
    det = tmp_path / "t.csv"
    det.write_text("0.9,100,200\n\n0.5,3,4\n")
    np.testing.assert_allclose(read_detections_csv(det), [[0.9, 100, 200], [0.5, 3, 4]])
    scores = tmp_path / "scores.csv"
    scores.write_text("slide,probability\ntumor_001,0.8\nnormal_001.tif,0.1\n")
    assert read_scores_csv(scores) == {"tumor_001": 0.8, "normal_001": 0.1}
    ref = tmp_path / "reference.csv"
    ref.write_text("Test_001,Tumor,Macro,Primary\nTest_002,Normal,,\nTest_003,1\n")
    assert read_labels_csv(ref) == {"Test_001": True, "Test_002": False, "Test_003": True}


def test_bad_csv_lines_are_reported_with_the_line(tmp_path: Path) -> None:
    det = tmp_path / "t.csv"
    det.write_text("confidence,X,Y\n")
    with pytest.raises(ConfigError, match=r"t.csv, line 1: .* not three numbers"):
        read_detections_csv(det)
    det.write_text("0.5,3\n")
    with pytest.raises(ConfigError, match="line 1: expected 'confidence,X,Y'"):
        read_detections_csv(det)
    ref = tmp_path / "ref.csv"
    ref.write_text("a,tumor\nb,maybe\n")
    with pytest.raises(ConfigError, match="line 2: label 'maybe'"):
        read_labels_csv(ref)
    scores = tmp_path / "scores.csv"
    scores.write_text("a,0.5\nb,high\n")
    with pytest.raises(ConfigError, match="line 2: probability 'high'"):
        read_scores_csv(scores)
