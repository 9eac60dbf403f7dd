"""The official CAMELYON16 rules (`--rules official`): hand cases worked out from the script's
rules, and lymph's official-rule FROC against an independent port of Evaluation_FROC.py."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from lymph.data.errors import AnnotationError, ConfigError
from lymph.model.camelyon import (
    OFFICIAL_GROW_PX,
    OFFICIAL_ITC_PX,
    SlideEvalConfig,
    official_evaluation_mask,
    official_froc,
    official_itc_labels,
    official_mask_red,
    official_slide,
    run,
    truth_mask,
)

F32 = np.float32


def test_official_constants_are_the_scripts() -> None:
    assert OFFICIAL_GROW_PX == pytest.approx(75 / (0.243 * 32 * 2))  # 4.8225 px
    assert OFFICIAL_ITC_PX == pytest.approx(275 / (0.243 * 32))  # 35.365 px


def big_lesions(shape=(100, 120), boxes=((10, 10, 40), (10, 70, 40))) -> np.ndarray:
    """A level-5 red channel: 255 squares (row, col, side) on 0."""
    red = np.zeros(shape, np.uint8)
    for r, c, n in boxes:
        red[r : r + n, c : c + n] = 255
    return red


def xy(row: int, col: int) -> tuple[float, float]:
    """Level-0 (X, Y) inside level-5 pixel (row, col)."""
    return col * 32 + 5, row * 32 + 7


def test_ties_at_0_3_and_0_6_fall_apart_in_float32() -> None:
    labels = official_evaluation_mask(big_lesions())
    itc = official_itc_labels(labels)
    assert labels.max() == 2 and not itc
    tumor = official_slide(np.array([[0.6, *xy(20, 20)], [0.3, *xy(20, 80)]]),
                           labels=labels, itc=itc)  # fmt: skip
    normal = official_slide(np.array([[0.6, 1.0, 1.0], [0.3, 2.0, 2.0]]), labels=None)
    # TP (float32): f32(0.6) = 0.6000000238, f32(0.3) = 0.3000000119; FP (float64): 0.6, 0.3.
    # thresholds sorted(set) = 0.3, f32(0.3), 0.6, f32(0.6); the lowest (0.3) is dropped:
    #   f32(0.3): FP >= 0.30000001 -> {0.6}: 1, TP -> 2     => (1/2 FP per slide, 2/2)
    #   0.6     : FP {0.6}: 1, TP >= f32(0.6) -> 1          => (1/2, 1/2)
    #   f32(0.6): FP 0, TP 1                                => (0, 1/2)
    #   appended                                            => (0, 0)
    result = official_froc([tumor, normal])
    np.testing.assert_allclose(result["curve"]["fps_per_slide"], [0.5, 0.5, 0, 0])
    np.testing.assert_allclose(result["curve"]["sensitivity"], [1, 0.5, 0.5, 0])
    # np.interp on xp = [0, 0, .5, .5], fp = [0, .5, .5, 1]: 1/4 -> 0.5; 1/2 (the last xp) and
    # beyond -> 1. Mean (0.5 + 5) / 6.
    assert result["froc"] == pytest.approx(5.5 / 6, abs=1e-12)
    assert result["sensitivity_at"]["0.25"] == 0.5 and result["sensitivity_at"]["0.5"] == 1.0


def test_a_lesion_found_only_at_the_lowest_threshold_is_lost() -> None:
    labels = official_evaluation_mask(big_lesions(boxes=((10, 10, 40),)))
    tumor = official_slide(np.array([[0.2, *xy(20, 20)]]), labels=labels)
    normal = official_slide(np.array([[0.5, 1.0, 1.0]]), labels=None)
    # probabilities {f32(0.2), 0.5}: f32(0.2) is dropped; at 0.5: 1 FP over 2 slides, no hit;
    # curve (0.5, 0), (0, 0): the FROC is 0 although the lesion was found.
    result = official_froc([tumor, normal])
    assert result["froc"] == 0.0
    np.testing.assert_allclose(result["curve"]["fps_per_slide"], [0.5, 0])
    # with a second lesion missed, its 0 is the lowest probability and is dropped instead:
    two = official_evaluation_mask(big_lesions())
    tumor2 = official_slide(np.array([[0.2, *xy(20, 20)]]), labels=two)
    # thresholds f32(0.2) -> (1/2, 1/2), 0.5 -> (1/2, 0), (0, 0); xp [0, .5, .5] fp [0, 0, .5]
    # np.interp: 1/4 -> 0, 1/2 and beyond -> 0.5; mean 2.5 / 6
    assert official_froc([tumor2, normal])["froc"] == pytest.approx(2.5 / 6, abs=1e-12)


def test_only_255_is_tumor_and_a_mask_without_it_has_one_phantom_itc() -> None:
    red = big_lesions()
    red[10:50, 10:50] = 254  # an averaged level-5 value: not tumor for the official script
    labels = official_evaluation_mask(red)
    assert labels.max() == 1 and labels[30, 30] == 0 and labels[30, 90] > 0
    # no 255 at all: scipy's EDT measures from just outside the top-left corner, so the 17
    # pixels with (r + 1)^2 + c^2 < 4.8225^2 (5 + 5 + 4 + 3 by row) form one small ITC there
    phantom = official_evaluation_mask(np.full((40, 40), 128, np.uint8))
    assert phantom.max() == 1 and (phantom > 0).sum() == 17 and phantom[0, 0] == 1
    assert official_itc_labels(phantom) == {1}


def test_a_detection_outside_the_level5_frame_is_refused() -> None:
    labels = official_evaluation_mask(big_lesions())
    with pytest.raises(ConfigError, match=r"t.csv, detection 2 .* outside the mask's level-5"):
        official_slide(np.array([[0.5, 1, 1], [0.5, 120 * 32, 5]]), labels=labels,
                       source="t.csv")  # fmt: skip


# --- real files: a slide whose sides are not multiples of 32 ------------------------------------


def write_pyramid(path: Path, level0: np.ndarray, *, levels: int = 7, mpp: float = 0.243) -> None:
    """A tiled generic TIFF whose level k is level0[::2^k, ::2^k] (sizes ceil(side / 2^k))."""
    import tifffile

    opts = {"tile": (256, 256), "compression": "deflate", "photometric": "minisblack"}
    with tifffile.TiffWriter(path) as tif:
        tif.write(level0, resolution=(1e4 / mpp, 1e4 / mpp), resolutionunit="CENTIMETER", **opts)
        for k in range(1, levels):
            tif.write(np.ascontiguousarray(level0[:: 2**k, :: 2**k]), subfiletype=1, **opts)


@pytest.fixture(scope="module")
def odd_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tumor slide of 3191 x 3827 px (neither a multiple of 32): level 5 is 100 x 120 px and
    OpenSlide reports its downsample as 31.9; one 40 x 40 lesion at level-5 rows/cols 60..99,
    50..89."""
    root = tmp_path_factory.mktemp("odd")
    for d in ("slides", "pred"):
        (root / d).mkdir()
    w0, h0 = 32 * 100 - 9, 32 * 120 - 13
    level5 = np.zeros((120, 100), np.uint8)
    level5[60:100, 50:90] = 255
    mask0 = np.kron(level5, np.ones((32, 32), np.uint8))[:h0, :w0]
    write_pyramid(root / "slides" / "tumor_odd_mask.tif", mask0)
    write_pyramid(root / "slides" / "tumor_odd.tif", np.full((h0, w0), 200, np.uint8), levels=3)
    # a hit at level-5 col 46 (4 px of growth from col 50), an FP at col 45 (5 px: outside),
    # a low FP far away
    (root / "pred" / "tumor_odd.csv").write_text(
        f"0.5,{46 * 32},{70 * 32}\n0.8,{46 * 32 - 1},{70 * 32}\n0.1,10,10\n"
    )
    return root


def test_lymph_truth_uses_the_files_level5_pixels_whatever_the_size(odd_world: Path) -> None:
    import openslide

    mask = odd_world / "slides" / "tumor_odd_mask.tif"
    with openslide.OpenSlide(str(mask)) as s:
        assert s.level_dimensions[5] == (100, 120) and s.level_downsamples[5] != 32
    truth = truth_mask(odd_world / "slides" / "tumor_odd.tif", mask, dimensions=(3191, 3827))
    expected = np.zeros((120, 100), bool)
    expected[60:100, 50:90] = True
    np.testing.assert_array_equal(truth, expected)  # the pre-fix sampling shifted it 1 px


def test_official_rules_on_the_odd_sized_slide(odd_world: Path) -> None:
    red = official_mask_red(odd_world / "slides" / "tumor_odd_mask.tif")
    assert red.shape == (120, 100) and red[60, 50] == 255 and red[59, 50] == 0
    result = run(SlideEvalConfig(slides=odd_world / "slides", predictions=odd_world / "pred"))
    assert result.rules == "official" and result.froc == result.froc_official
    result = result.to_dict()
    # probabilities {0.1, f32(0.5), 0.8}, 0.1 dropped: 0.5 -> (1 FP, 1/1), 0.8 -> (1, 0), (0, 0)
    # np.interp on xp [0, 1, 1], fp [0, 0, 1]: 1/4, 1/2 -> 0; 1, 2, 4, 8 -> 1: mean 4/6
    assert result["rules"] == "official"
    assert result["froc"] == result["froc_official"] == pytest.approx(4 / 6, abs=1e-12)
    assert result["official"]["n_lesions"] == 1
    # lymph's rules keep 0.1: points (0,0) (1,0) (1,1) (2,1); 1/4, 1/2 -> 0 then 1: also 4/6
    assert result["froc_lymph"] == pytest.approx(4 / 6)


def test_official_rules_need_a_level5(tmp_path: Path) -> None:
    path = tmp_path / "m.tif"
    write_pyramid(path, np.zeros((300, 300), np.uint8), levels=3)
    with pytest.raises(AnnotationError, match="has 3 level.*level 5"):
        official_mask_red(path)


# --- an independent port of Evaluation_FROC.py ---------------------------------------------------


def port_label(binary: np.ndarray) -> np.ndarray:
    """measure.label(connectivity=2): 8-connected components, raster order, by flood fill."""
    out = np.zeros(binary.shape, np.int64)
    n = 0
    h, w = binary.shape
    for r0 in range(h):
        for c0 in range(w):
            if binary[r0, c0] and not out[r0, c0]:
                n += 1
                out[r0, c0] = n
                todo = deque([(r0, c0)])
                while todo:
                    r, c = todo.popleft()
                    for dr in (-1, 0, 1):
                        for dc in (-1, 0, 1):
                            rr, cc = r + dr, c + dc
                            if 0 <= rr < h and 0 <= cc < w and binary[rr, cc] and not out[rr, cc]:
                                out[rr, cc] = n
                                todo.append((rr, cc))
    return out


def port_major_axis(region: np.ndarray) -> float:
    """regionprops major_axis_length: 4 sqrt(largest eigenvalue of the inertia tensor)."""
    rows, cols = np.nonzero(region)
    cov = np.cov(np.vstack([rows, cols]).astype(float), bias=True)
    return 4 * float(np.sqrt(max(np.linalg.eigvalsh(np.atleast_2d(cov)).max(), 0)))


def port_evaluation(red: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """computeEvaluationMask + computeITCList at level 5, 0.243 um/px."""
    distance = ndimage.distance_transform_edt(255 - red)
    binary = distance < 75 / (0.243 * pow(2, 5) * 2)
    mask = port_label(ndimage.binary_fill_holes(binary))
    itc = [i for i in range(1, mask.max() + 1)
           if port_major_axis(mask == i) < 275 / (0.243 * pow(2, 5))]  # fmt: skip
    return mask, itc


def port_fp_tp(det: list[tuple[float, int, int]], mask, itc: list[int]):
    """compute_FP_TP_Probs: Python floats for FPs, a float32 array for TPs."""
    if mask is None:
        return [p for p, _, _ in det], np.zeros((0,), dtype=np.float32), 0
    max_label = int(np.amax(mask))
    fp, tp = [], np.zeros((max_label,), dtype=np.float32)
    for p, x, y in det:
        hit = mask[y // pow(2, 5), x // pow(2, 5)]
        if hit == 0:
            fp.append(p)
        elif hit not in itc and p > tp[hit - 1]:
            tp[hit - 1] = p
    return fp, tp, max_label - len(itc)


def port_froc(cases) -> float:
    """computeFROC, then the 6-rate mean as NCRF and MONAI complete the script."""
    fps = [p for fp, _, _ in cases for p in fp]
    tps = [p for _, tp, _ in cases for p in tp]
    total_fp, total_tp = [], []
    for thresh in sorted(set(fps + tps))[1:]:
        total_fp.append((np.asarray(fps) >= thresh).sum())
        total_tp.append((np.asarray(tps) >= thresh).sum())
    total_fp.append(0)
    total_tp.append(0)
    fp_rate = np.asarray(total_fp) / float(len(cases))
    sens = np.asarray(total_tp) / float(sum(n for _, _, n in cases))
    return float(np.mean(np.interp([0.25, 0.5, 1, 2, 4, 8], fp_rate[::-1], sens[::-1])))


def random_case(rng: np.random.Generator):
    """A random submission: 1-3 tumor slides (level-5 masks of random blobs, some averaged
    values and tiny ones), 1-2 normal slides, detections with tied and random probabilities."""
    slides = []
    grid = (0.1, 0.3, 0.6, 0.7, 0.9, 1.0)
    for tumor in [True] * int(rng.integers(1, 4)) + [False] * int(rng.integers(1, 3)):
        h, w = (int(v) for v in rng.integers(40, 90, 2))
        red = np.zeros((h, w), np.uint8)
        if tumor:
            for _ in range(int(rng.integers(1, 7))):
                r, c = int(rng.integers(0, h)), int(rng.integers(0, w))
                n = int(rng.choice([1, 2, 4, 12, 25]))
                red[r : r + n, c : c + n] = rng.choice([255, 255, 255, 128])
        det = []
        for _ in range(int(rng.integers(0, 25))):
            p = float(rng.choice(grid)) if rng.random() < 0.5 else float(rng.random())
            det.append((p, int(rng.integers(0, w * 32)), int(rng.integers(0, h * 32))))
        slides.append((tumor, red, det))
    return slides


def lymph_official(slides) -> float | None:
    inputs = []
    for tumor, red, det in slides:
        arr = np.array(det, np.float64).reshape(-1, 3)
        if tumor:
            labels = official_evaluation_mask(red)
            inputs.append(official_slide(arr, labels=labels, itc=official_itc_labels(labels)))
        else:
            inputs.append(official_slide(arr, labels=None))
    return official_froc(inputs)["froc"]


def test_official_rules_equal_a_port_of_the_script_on_random_cases() -> None:
    rng = np.random.default_rng(20160120)
    diffs = []
    for _ in range(40):
        slides = random_case(rng)
        ported = []
        for tumor, red, det in slides:
            mask, itc = port_evaluation(red) if tumor else (None, [])
            ported.append(port_fp_tp(det, mask, itc))
        if sum(n for _, _, n in ported) == 0:
            assert lymph_official(slides) is None  # no lesion to find: undefined
            continue
        diffs.append(abs(lymph_official(slides) - port_froc(ported)))
    assert len(diffs) >= 10
    assert max(diffs) <= 1e-9, max(diffs)


def test_official_labels_and_itc_equal_scikit_image() -> None:
    """The script's measure.label / regionprops (scikit-image is in the dev extras: a missing
    one fails here rather than skipping the cross-check)."""
    from skimage import measure
    rng = np.random.default_rng(5)
    for _ in range(20):
        _, red, _ = random_case(rng)[0]
        mine = official_evaluation_mask(red)
        filled = ndimage.binary_fill_holes(ndimage.distance_transform_edt(255 - red) < 4.8225)
        theirs = measure.label(filled, connectivity=2)
        assert mine.max() == theirs.max()
        # the same partition: each label of one is exactly one label of the other
        pairs = {(a, b) for a, b in zip(mine.ravel(), theirs.ravel(), strict=True)}
        assert len(pairs) == mine.max() + 1
        props = measure.regionprops(theirs)
        their_itc = {p.label for p in props if p.axis_major_length < 275 / (0.243 * 32)}
        mapping = dict(pairs)
        assert {mapping[i] for i in official_itc_labels(mine)} == their_itc


def test_major_axis_is_exact_far_from_the_origin() -> None:
    """Central moments about each centroid: no cancellation at CAMELYON16's 7,000-row frames."""
    from lymph.model.camelyon import major_axis_lengths

    labels = np.zeros((7000, 3100), np.int32)
    labels[6900:6911, 3000:3047] = 1  # an 11 x 47 region near the far corner
    labels[6950, 3090] = 2  # one pixel: axis 0
    lengths = major_axis_lengths(labels)
    assert lengths[0] == pytest.approx(port_major_axis(labels == 1), abs=1e-9)
    assert lengths[1] == 0.0
