"""CAMELYON16 rules on hand-built evaluation masks: merging, ITCs, hits, FPs, FROC and AUC."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lymph.data.errors import ConfigError, SlideError
from lymph.model.camelyon import (
    EVAL_DOWNSAMPLE,
    SlideEvalConfig,
    evaluate_predictions,
    evaluation_mask,
    froc,
    froc_curve,
    itc_labels,
    major_axis_lengths,
    read_detections_csv,
    read_labels_csv,
    read_scores_csv,
    roc_curve,
    run,
    score_slide,
    sensitivity_at,
    slide_auc,
)

UM = 0.243 * EVAL_DOWNSAMPLE  # um per evaluation pixel of a CAMELYON16 slide: 7.776
DS = EVAL_DOWNSAMPLE


def square(mask: np.ndarray, row: int, col: int, size: int) -> None:
    mask[row : row + size, col : col + size] = True


def at(row: float, col: float) -> tuple[float, float]:
    """Level-0 (X, Y) of the centre of evaluation pixel (row, col)."""
    return (col + 0.5) * DS, (row + 0.5) * DS


# --- evaluation mask -----------------------------------------------------------------------------


def test_lesions_closer_than_75um_merge_and_farther_ones_do_not() -> None:
    near = np.zeros((60, 80), bool)
    square(near, 20, 10, 10)
    square(near, 20, 25, 10)  # 5 px = 39 um apart
    assert evaluation_mask(near, um_per_px=UM).max() == 1
    far = np.zeros((60, 80), bool)
    square(far, 20, 10, 10)
    square(far, 20, 32, 10)  # 12 px = 93 um apart
    labels = evaluation_mask(far, um_per_px=UM)
    assert labels.max() == 2
    # the same gap at a 4x finer pixel size is 23 um: they merge
    assert evaluation_mask(far, um_per_px=UM / 4).max() == 1


def test_growth_is_37_5um_and_holes_are_filled() -> None:
    ring = np.zeros((80, 80), bool)
    square(ring, 10, 10, 60)
    ring[20:60, 20:60] = False  # a 40 px hole: too big to close by growth
    labels = evaluation_mask(ring, um_per_px=UM)
    assert labels.max() == 1
    assert labels[40, 40] == 1  # filled
    one = np.zeros((41, 41), bool)
    one[20, 20] = True
    grown = evaluation_mask(one, um_per_px=UM) > 0
    radius_px = 37.5 / UM  # 4.82
    assert grown[20, 20 + 4] and not grown[20, 20 + 5]
    assert grown.sum() == pytest.approx(np.pi * radius_px**2, rel=0.15)


def test_diagonal_neighbours_are_one_lesion() -> None:
    mask = np.zeros((5, 5), bool)
    mask[1, 1] = mask[2, 2] = True
    labels = evaluation_mask(mask, um_per_px=1000.0)  # growth < 1 px: 8-connectivity decides
    assert labels.max() == 1


def test_major_axis_matches_regionprops_definition() -> None:
    labels = np.zeros((20, 40), np.int32)
    labels[5, 3:16] = 1  # a 13 px line: var = (13^2 - 1) / 12 = 14
    labels[10:15, 20:25] = 2  # a 5 x 5 square: var 2 per axis
    lengths = major_axis_lengths(labels)
    assert lengths[0] == pytest.approx(4 * np.sqrt(14.0))
    assert lengths[1] == pytest.approx(4 * np.sqrt(2.0))
    assert major_axis_lengths(np.zeros((3, 3), np.int32)).size == 0


def test_itc_is_a_region_under_275um() -> None:
    mask = np.zeros((120, 120), bool)
    square(mask, 10, 10, 2)  # 16 um of tumor: grown, about 90 um across
    square(mask, 50, 50, 40)  # 311 um of tumor
    labels = evaluation_mask(mask, um_per_px=UM)
    assert labels.max() == 2
    itc = itc_labels(labels, um_per_px=UM)
    assert itc == {int(labels[11, 11])}
    assert int(labels[70, 70]) not in itc


# --- per-slide scoring ---------------------------------------------------------------------------


def two_lesions_and_an_itc() -> tuple[np.ndarray, frozenset[int]]:
    mask = np.zeros((120, 160), bool)
    square(mask, 10, 10, 30)  # lesion A
    square(mask, 10, 100, 30)  # lesion B
    square(mask, 90, 60, 2)  # ITC
    labels = evaluation_mask(mask, um_per_px=UM)
    itc = itc_labels(labels, um_per_px=UM)
    assert labels.max() == 3 and len(itc) == 1
    return labels, itc


def test_two_detections_in_one_lesion_count_once() -> None:
    labels, itc = two_lesions_and_an_itc()
    det = np.array([[0.9, *at(20, 20)], [0.7, *at(25, 25)]])
    s = score_slide(det, labels=labels, itc=itc)
    assert s.n_lesions == 2
    assert sorted(s.lesion_probs.tolist()) == [0.0, pytest.approx(0.9)]
    assert s.fp_probs.size == 0
    assert s.n_ignored == 1


def test_an_itc_hit_neither_helps_nor_hurts() -> None:
    labels, itc = two_lesions_and_an_itc()
    hit_a = [0.9, *at(20, 20)]
    on_itc = [0.8, *at(91, 61)]
    without = score_slide(np.array([hit_a]), labels=labels, itc=itc)
    with_itc = score_slide(np.array([hit_a, on_itc]), labels=labels, itc=itc)
    assert with_itc.n_lesions == without.n_lesions == 2
    np.testing.assert_array_equal(with_itc.lesion_probs, without.lesion_probs)
    assert with_itc.fp_probs.size == without.fp_probs.size == 0
    assert with_itc.n_ignored == 1
    a = froc([without]).interpolated
    b = froc([with_itc]).interpolated
    assert a == b == pytest.approx(0.5)


def test_detections_outside_lesions_and_outside_the_frame_are_false_positives() -> None:
    labels, itc = two_lesions_and_an_itc()
    det = np.array([[0.6, *at(100, 150)], [0.5, 1e7, 1e7], [0.4, -5.0, 3.0]])
    s = score_slide(det, labels=labels, itc=itc)
    assert sorted(s.fp_probs.tolist()) == [0.4, 0.5, 0.6]
    assert (s.lesion_probs == 0).all()


def test_every_detection_on_a_normal_slide_is_a_false_positive() -> None:
    det = np.array([[0.9, 100.0, 100.0], [0.2, 5000.0, 7000.0]])
    s = score_slide(det, labels=None)
    assert not s.is_tumor and s.n_lesions == 0
    assert s.fp_probs.tolist() == [0.9, 0.2]
    assert score_slide(np.zeros((0, 3)), labels=None).fp_probs.size == 0


def test_bad_detection_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        score_slide(np.zeros((2, 2)), labels=None)
    with pytest.raises(ValueError, match="NaN"):
        score_slide(np.array([[np.nan, 1.0, 1.0]]), labels=None)
    with pytest.raises(ValueError, match="2-D"):
        evaluation_mask(np.zeros((2, 2, 2)), um_per_px=UM)
    with pytest.raises(ConfigError, match="um_per_px"):
        evaluation_mask(np.zeros((2, 2)), um_per_px=0.0)


# --- FROC ----------------------------------------------------------------------------------------


def test_froc_hand_case_interpolated_and_stepwise() -> None:
    labels, itc = two_lesions_and_an_itc()
    # lesion A at 0.9; lesion B and a false positive both at 0.6 (one threshold, two events)
    det = np.array([[0.9, *at(20, 20)], [0.6, *at(20, 110)], [0.6, *at(100, 150)]])
    curve = froc([score_slide(det, labels=labels, itc=itc)])
    np.testing.assert_allclose(curve.fps_per_slide, [0, 0, 1])
    np.testing.assert_allclose(curve.sensitivity, [0, 0.5, 1])
    # stepwise: 0.5 below 1 FP, then 1.0; interpolated: on the segment (0, .5)-(1, 1)
    assert curve.sensitivity_stepwise == {0.25: 0.5, 0.5: 0.5, 1.0: 1, 2.0: 1, 4.0: 1, 8.0: 1}
    assert curve.sensitivity_interpolated[0.25] == pytest.approx(0.625)
    assert curve.sensitivity_interpolated[0.5] == pytest.approx(0.75)
    assert curve.stepwise == pytest.approx(5 / 6)
    assert curve.interpolated == pytest.approx((0.625 + 0.75 + 4) / 6)


def test_froc_counts_false_positives_per_slide_over_all_slides() -> None:
    labels, itc = two_lesions_and_an_itc()
    tumor = score_slide(np.array([[0.9, *at(20, 20)], [0.5, *at(20, 110)]]), labels=labels, itc=itc)
    normal = score_slide(np.array([[0.8, 1.0, 1.0], [0.7, 2.0, 2.0]]), labels=None)
    thresholds, fps, sens = froc_curve([tumor, normal])
    np.testing.assert_allclose(thresholds[1:], [0.9, 0.8, 0.7, 0.5])
    np.testing.assert_allclose(fps, [0, 0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(sens, [0, 0.5, 0.5, 0.5, 1.0])
    assert sensitivity_at(fps, sens, 0.25, rule="stepwise") == 0.5
    assert sensitivity_at(fps, sens, 8, rule="interpolated") == 1.0


def test_froc_without_detections_is_zero_and_without_lesions_undefined() -> None:
    labels, itc = two_lesions_and_an_itc()
    missed = froc([score_slide(np.zeros((0, 3)), labels=labels, itc=itc)])
    assert missed.interpolated == 0.0 and missed.stepwise == 0.0
    only_normal = froc([score_slide(np.array([[0.5, 1.0, 1.0]]), labels=None)])
    assert only_normal.interpolated is None and only_normal.n_lesions == 0
    with pytest.raises(ConfigError, match="at least one slide"):
        froc([])
    with pytest.raises(ConfigError, match="rule"):
        sensitivity_at(np.zeros(1), np.zeros(1), 1.0, rule="nearest")


# --- AUC -----------------------------------------------------------------------------------------


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


# --- files ---------------------------------------------------------------------------------------


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


# --- evaluate_predictions on real files -------------------------------------------------------


def write_tiff(path: Path, image: np.ndarray, *, mpp: float = 0.243) -> None:
    """A tiled, 2-level TIFF OpenSlide opens as generic-tiff, with its mpp."""
    import tifffile

    with tifffile.TiffWriter(path) as tif:
        opts = {
            "tile": (256, 256),
            "compression": "deflate",
            "photometric": "rgb" if image.ndim == 3 else "minisblack",
        }
        tif.write(image, resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER", **opts)
        tif.write(image[::4, ::4], subfiletype=1, **opts)


@pytest.fixture(scope="module")
def camelyon_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tumor slides with mask TIFFs (two lesions; one lesion and an ITC) and a normal one,
    3,200 x 2,400 px at 0.243 um/px (100 x 75 evaluation pixels of 7.8 um)."""
    root = tmp_path_factory.mktemp("camelyon")
    slides, ann, pred = root / "slides", root / "ann", root / "pred"
    for d in (slides, ann, pred):
        d.mkdir()
    h, w = 2400, 3200
    rgb = np.full((h, w, 3), 230, np.uint8)
    for name in ("tumor_a", "tumor_b", "normal_a"):
        write_tiff(slides / f"{name}.tif", rgb)
    mask_a = np.zeros((h, w), np.uint8)
    mask_a[320:1280, 320:1280] = 255  # eval px 10..39: lesion 1 (233 um)
    mask_a[320:1280, 1920:2880] = 255  # eval px 60..89: lesion 2, 155 um away
    write_tiff(ann / "tumor_a_mask.tif", mask_a)
    mask_b = np.zeros((h, w), np.uint8)
    mask_b[320:1280, 320:1280] = 255  # one lesion
    mask_b[1920:1952, 2560:2592] = 255  # one eval px (row 60, col 80): an ITC
    write_tiff(ann / "tumor_b_mask.tif", mask_b)
    (pred / "tumor_a.csv").write_text("0.9,800,800\n0.4,2400,800\n0.7,3100,2300\n")
    (pred / "tumor_b.csv").write_text("0.8,800,800\n0.95,2576,1936\n")
    (pred / "normal_a.csv").write_text("0.5,100,100\n")
    (pred / "scores.csv").write_text("slide,probability\ntumor_a,0.9\ntumor_b,0.8\nnormal_a,0.5\n")
    return root


def test_evaluate_predictions_end_to_end(camelyon_world: Path, tmp_path: Path) -> None:
    root = camelyon_world
    out = tmp_path / "eval"
    result = evaluate_predictions(
        slides_dir=root / "slides",
        annotations_dir=root / "ann",
        predictions_dir=root / "pred",
        out_dir=out,
    )
    assert result["n_slides"] == 3 and result["n_tumor_slides"] == 2
    assert result["n_lesions"] == 3
    slides = result["slides"]
    assert slides["tumor_a"]["lesions_hit"] == 2 and slides["tumor_a"]["false_positives"] == 1
    assert slides["tumor_b"]["itc_regions"] == 1 and slides["tumor_b"]["ignored_detections"] == 1
    assert slides["normal_a"]["status"] == "normal"
    # thresholds .9 (hit) .8 (hit) .7 (FP) .5 (FP) .4 (hit): 3 slides
    curve = result["lymph"]["curve"]
    np.testing.assert_allclose(curve["fps_per_slide"], [0, 0, 0, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(curve["sensitivity"], [0, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 1])
    assert result["froc_stepwise"] == pytest.approx((2 / 3 + 2 / 3 + 1 + 1 + 1 + 1) / 6)
    assert result["rules"] == "lymph" and result["froc"] == result["froc_interpolated"]
    # the official rules cannot read these 2-level masks (no level 5): a note, not an error
    assert result["froc_official"] is None and "official rules" in " ".join(result["notes"])
    assert result["sensitivity_at"]["0.25"]["stepwise"] == pytest.approx(2 / 3)
    assert result["auc"] == 1.0
    assert (out / "froc.png").stat().st_size > 1000 and (out / "roc.png").stat().st_size > 1000
    assert json.loads((out / "metrics.json").read_text())["froc"] == result["froc"]


def test_evaluate_predictions_labels_csv_and_bad_folders(
    camelyon_world: Path, tmp_path: Path
) -> None:
    root = camelyon_world
    labels = tmp_path / "ref.csv"
    labels.write_text("tumor_a,Normal\n")
    with pytest.raises(ConfigError, match="tumor_a. is labelled normal but its name says tumor"):
        evaluate_predictions(
            slides_dir=root / "slides",
            annotations_dir=root / "ann",
            predictions_dir=root / "pred",
            labels_csv=labels,
        )
    one = evaluate_predictions(
        slides_dir=root / "slides" / "tumor_b.tif",
        annotations_dir=root / "ann",
        predictions_dir=root / "pred",
    )
    assert list(one["slides"]) == ["tumor_b"] and one["n_lesions"] == 1 and one["auc"] is None
    assert one["froc"] == 1.0  # its one lesion is hit and it has no false positive
    with pytest.raises(ConfigError, match="slides .* do not exist"):
        evaluate_predictions(
            slides_dir=tmp_path / "none", annotations_dir=None, predictions_dir=root / "pred"
        )
    with pytest.raises(ConfigError, match="predictions folder .* does not exist"):
        evaluate_predictions(
            slides_dir=root / "slides",
            annotations_dir=root / "ann",
            predictions_dir=tmp_path / "nope",
        )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no detection files"):
        evaluate_predictions(
            slides_dir=root / "slides", annotations_dir=None, predictions_dir=empty
        )
    (empty / "ghost.csv").write_text("0.5,1,1\n")
    with pytest.raises(SlideError, match="no slide in .* for the detection files"):
        evaluate_predictions(
            slides_dir=root / "slides", annotations_dir=None, predictions_dir=empty
        )


# --- issue 11: nothing dropped, one-line errors ------------------------------------------------


def copy_world(root: Path, tmp_path: Path) -> Path:
    import shutil

    dst = tmp_path / "w"
    shutil.copytree(root, dst)
    return dst


def test_a_tumor_slide_without_predictions_is_an_error_by_default(
    camelyon_world: Path, tmp_path: Path
) -> None:
    root = copy_world(camelyon_world, tmp_path)
    (root / "pred" / "tumor_b.csv").unlink()
    (root / "pred" / "scores.csv").write_text("tumor_a,0.9\nnormal_a,0.5\n")
    with pytest.raises(ConfigError, match=r"1 slide\(s\) .* no detection file .*'tumor_b'.*"
                       "--score-missing"):  # fmt: skip
        run(SlideEvalConfig(slides=root / "slides", predictions=root / "pred",
                            annotations=root / "ann"))  # fmt: skip


def test_score_missing_scores_it_as_all_missed_with_a_warning(
    camelyon_world: Path, tmp_path: Path
) -> None:
    root = copy_world(camelyon_world, tmp_path)
    (root / "pred" / "tumor_b.csv").unlink()
    (root / "pred" / "scores.csv").write_text("tumor_a,0.9\nnormal_a,0.95\n")
    with pytest.warns(UserWarning, match="all-missed"):
        result = run(SlideEvalConfig(slides=root / "slides", predictions=root / "pred",
                                     annotations=root / "ann", missing="missed", rules="lymph"))
    # 3 slides, not 2: tumor_a 0.9 and tumor_b 0 against normal_a 0.95 -> AUC 0 (dropping
    # tumor_b would give 0 too, so check the count and tumor_b's entry)
    assert result["n_slides"] == 3 and result["n_tumor_slides"] == 2
    assert result["slides"]["tumor_b"]["probability"] == 0.0
    assert result["slides"]["tumor_b"]["lesions_hit"] == 0 and result["n_lesions"] == 3


def test_dropping_a_slide_no_longer_turns_auc_05_into_1(
    camelyon_world: Path, tmp_path: Path
) -> None:
    root = copy_world(camelyon_world, tmp_path)
    (root / "pred" / "tumor_b.csv").unlink()
    (root / "pred" / "scores.csv").write_text("tumor_a,0.9\nnormal_a,0.5\n")
    with pytest.warns(UserWarning):
        result = run(SlideEvalConfig(slides=root / "slides", predictions=root / "pred",
                                     annotations=root / "ann", missing="missed", rules="lymph"))
    assert result["auc"] == 0.5  # tumor_a 0.9 > 0.5, tumor_b 0 < 0.5: 1 of 2 pairs


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("scores.csv", b"tumor_a,nan\n", r"scores.csv, line 1: probability 'nan' .* not finite"),
        ("scores.csv", b"tumor_a,inf\n", r"scores.csv, line 1: probability 'inf'"),
        ("tumor_a.csv", b"0.9,800,800\nnan,1,1\n", r"tumor_a.csv, line 2: 'nan,1,1' .* NaN"),
        ("tumor_a.csv", b"0.9,inf,800\n", r"tumor_a.csv, line 1: .* NaN or infinity"),
        ("tumor_a.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00", r"tumor_a.csv: the detection .* NUL"),
        ("scores.csv", "tumor_a,0.9\n".encode("utf-16"), r"scores.csv: the scores file is UTF-16"),
        ("tumor_a.csv", b"0.9,\xff\xfe1,2\n", r"tumor_a.csv: the detection file is not UTF-8"),
    ],
)
def test_bad_prediction_files_are_one_line_errors(
    camelyon_world: Path, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    root = copy_world(camelyon_world, tmp_path)
    (root / "pred" / name).write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        run(SlideEvalConfig(slides=root / "slides", predictions=root / "pred",
                            annotations=root / "ann"))  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"tumor_a,Tumor\x00\x01\x02", r"ref.csv: the labels CSV holds NUL bytes"),
     ("tumor_a,Tumor\n".encode("utf-16"), r"ref.csv: the labels CSV is UTF-16")],
)  # fmt: skip
def test_bad_labels_csv_is_a_one_line_error(
    camelyon_world: Path, tmp_path: Path, content: bytes, message: str
) -> None:
    labels = tmp_path / "ref.csv"
    labels.write_bytes(content)
    root = camelyon_world
    with pytest.raises(ConfigError, match=message):
        run(SlideEvalConfig(slides=root / "slides", predictions=root / "pred",
                            annotations=root / "ann", labels=labels))  # fmt: skip


def test_slides_in_subfolders_are_found(camelyon_world: Path, tmp_path: Path) -> None:
    root = copy_world(camelyon_world, tmp_path)
    (root / "slides" / "batch2").mkdir()
    (root / "slides" / "tumor_b.tif").rename(root / "slides" / "batch2" / "tumor_b.tif")
    result = run(SlideEvalConfig(slides=root / "slides", predictions=root / "pred",
                                 annotations=root / "ann", rules="lymph"))  # fmt: skip
    assert result["n_slides"] == 3 and "batch2" in result["slides"]["tumor_b"]["slide"]


def test_read_only_out_in_slide_mode_is_one_line_error(
    camelyon_world: Path, tmp_path: Path
) -> None:
    import os

    from lymph.data.errors import OutputError

    if os.geteuid() == 0:
        out = Path("/sys/lymph-eval-out")  # the kernel refuses new files there, even to root
    else:
        out = tmp_path / "ro"
        out.mkdir()
        out.chmod(0o500)
    root = camelyon_world
    with pytest.raises(OutputError, match="cannot write .* not writable"):
        run(SlideEvalConfig(slides=root / "slides", predictions=root / "pred",
                            annotations=root / "ann", out=out, rules="lymph"))  # fmt: skip


def test_exclusions_and_bad_settings(camelyon_world: Path, tmp_path: Path) -> None:
    root = camelyon_world
    result = run(SlideEvalConfig(slides=root / "slides", predictions=root / "pred",
                                 annotations=root / "ann", exclude=("tumor_b",), rules="lymph"))
    assert sorted(result["slides"]) == ["normal_a", "tumor_a"] and result["excluded"] == ["tumor_b"]
    # ids match ignoring case, as CAMELYON16 writes Test_049 for test_049.tif
    upper = run(SlideEvalConfig(slides=root / "slides", predictions=root / "pred",
                                annotations=root / "ann", exclude=("TUMOR_B",), rules="lymph"))
    assert sorted(upper["slides"]) == ["normal_a", "tumor_a"]
    with pytest.raises(ConfigError, match="rules must be one of"):
        SlideEvalConfig(slides=root / "slides", predictions=root / "pred", rules="nice")
    with pytest.raises(ConfigError, match="missing must be one of"):
        SlideEvalConfig(slides=root / "slides", predictions=root / "pred", missing="drop")
    afile = tmp_path / "f"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        SlideEvalConfig(slides=root / "slides", predictions=root / "pred", out=afile)


def test_cli_slides_subcommand_equals_the_old_form(camelyon_world: Path) -> None:
    from click.testing import CliRunner

    from lymph.cli import main

    root = camelyon_world
    args = ["--slides", str(root / "slides"), "--predictions", str(root / "pred"),
            "--annotations", str(root / "ann"), "--rules", "lymph", "--json"]  # fmt: skip
    old = CliRunner().invoke(main, ["eval", *args])
    new = CliRunner().invoke(main, ["eval", "slides", *args])
    assert old.exit_code == 0 and new.exit_code == 0, old.output + new.output
    a, b = json.loads(old.stdout), json.loads(new.stdout)
    assert a["froc"] == b["froc"] and a["rules"] == "lymph" and a["auc"] == b["auc"]
    table = CliRunner().invoke(main, ["eval", "slides", *args[:-1]])
    assert "lymph rules" in table.output and "official rules: FROC undefined" in table.output


def test_synth_masks_have_level_5_for_the_official_rules(tmp_path: Path) -> None:
    import openslide

    from lymph.data.synth import SynthConfig, run
    from lymph.model.camelyon import official_mask_red

    run(SynthConfig(out=tmp_path, n_tumor=1, n_normal=0, size=(1000, 700), seed=0))
    mask = tmp_path / "tumor_001_mask.tif"
    with openslide.OpenSlide(str(mask)) as s:
        assert s.level_count > 5 and s.level_dimensions[5] == (32, 22)  # ceil(1000/32, 700/32)
    assert official_mask_red(mask).shape == (22, 32)
