"""The labels CSV: every spelling, the CAMELYON16 layout, and the errors that name the line."""

from __future__ import annotations

import pytest

from lymph.data.annotations import read_labels_csv
from lymph.data.errors import AnnotationError


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
