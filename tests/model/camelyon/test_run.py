"""A whole slide evaluation on real files (``run(SlideEvalConfig)``): masks, detections,
scores.csv and labels read from disk, the FROC of both rule sets, AUC, metrics.json and the
plots, and one-line errors for every bad input.

The masks of ``camelyon_world`` are 2-level TIFFs, which the official rules cannot read (no
level 5), so the tests of the scores themselves run lymph's rules; the official rules' scores
on real files are tested in test_official.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lymph.data.errors import ConfigError, SlideError
from lymph.model.camelyon import SlideEvalConfig, run


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


def test_run_end_to_end(camelyon_world: Path, tmp_path: Path) -> None:
    root = camelyon_world
    out = tmp_path / "eval"
    typed = run(SlideEvalConfig(slides=root / "slides", annotations=root / "ann",
                                predictions=root / "pred", out=out, rules="lymph"))
    result = typed.to_dict()
    assert (typed.n_slides, typed.n_tumor_slides, typed.n_lesions) == (3, 2, 3)
    assert typed.files == result["files"] and typed.notes == tuple(result["notes"])
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
    assert result["rules"] == "lymph" and typed.froc == result["froc"] == result["froc_lymph"]
    # the official rules cannot read these 2-level masks (no level 5): a note, not an error
    assert result["froc_official"] is None and "official rules" in " ".join(result["notes"])
    assert result["sensitivity_at"]["0.25"]["stepwise"] == pytest.approx(2 / 3)
    assert result["auc"] == 1.0
    assert (out / "froc.png").stat().st_size > 1000 and (out / "roc.png").stat().st_size > 1000
    assert json.loads((out / "metrics.json").read_text())["froc"] == result["froc"]


def test_run_labels_csv_and_bad_folders(camelyon_world: Path, tmp_path: Path) -> None:
    root = camelyon_world
    labels = tmp_path / "ref.csv"
    labels.write_text("tumor_a,Normal\n")
    with pytest.raises(ConfigError, match="tumor_a. is labelled normal but its name says tumor"):
        run(SlideEvalConfig(slides=root / "slides", annotations=root / "ann",
                            predictions=root / "pred", labels=labels))  # fmt: skip
    one = run(SlideEvalConfig(slides=root / "slides" / "tumor_b.tif", annotations=root / "ann",
                              predictions=root / "pred", rules="lymph")).to_dict()
    assert list(one["slides"]) == ["tumor_b"] and one["n_lesions"] == 1 and one["auc"] is None
    assert one["froc"] == 1.0  # its one lesion is hit and it has no false positive
    with pytest.raises(ConfigError, match="slides .* do not exist"):
        run(SlideEvalConfig(slides=tmp_path / "none", predictions=root / "pred"))
    with pytest.raises(ConfigError, match="predictions folder .* does not exist"):
        run(SlideEvalConfig(slides=root / "slides", annotations=root / "ann",
                            predictions=tmp_path / "nope"))  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no detection files"):
        run(SlideEvalConfig(slides=root / "slides", predictions=empty))
    (empty / "ghost.csv").write_text("0.5,1,1\n")
    with pytest.raises(SlideError, match="no slide in .* for the detection files"):
        run(SlideEvalConfig(slides=root / "slides", predictions=empty))


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
                                     annotations=root / "ann", missing="missed",
                                     rules="lymph")).to_dict()
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
    assert result.auc == 0.5  # tumor_a 0.9 > 0.5, tumor_b 0 < 0.5: 1 of 2 pairs


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
                                 annotations=root / "ann", rules="lymph")).to_dict()
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
                                 annotations=root / "ann", exclude=("tumor_b",),
                                 rules="lymph")).to_dict()
    assert sorted(result["slides"]) == ["normal_a", "tumor_a"] and result["excluded"] == ["tumor_b"]
    # ids match ignoring case, as CAMELYON16 writes Test_049 for test_049.tif
    upper = run(SlideEvalConfig(slides=root / "slides", predictions=root / "pred",
                                annotations=root / "ann", exclude=("TUMOR_B",),
                                rules="lymph")).to_dict()
    assert sorted(upper["slides"]) == ["normal_a", "tumor_a"]
    with pytest.raises(ConfigError, match="rules must be one of"):
        SlideEvalConfig(slides=root / "slides", predictions=root / "pred", rules="nice")
    with pytest.raises(ConfigError, match="missing must be one of"):
        SlideEvalConfig(slides=root / "slides", predictions=root / "pred", missing="drop")
    afile = tmp_path / "f"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        run(SlideEvalConfig(slides=root / "slides", predictions=root / "pred", out=afile))


def test_cli_slides_subcommand_json_and_table(camelyon_world: Path) -> None:
    from click.testing import CliRunner

    from lymph.cli import main

    root = camelyon_world
    args = ["--slides", str(root / "slides"), "--predictions", str(root / "pred"),
            "--annotations", str(root / "ann"), "--rules", "lymph", "--json"]  # fmt: skip
    done = CliRunner().invoke(main, ["eval", "slides", *args])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["rules"] == "lymph"
    table = CliRunner().invoke(main, ["eval", "slides", *args[:-1]])
    assert "lymph rules" in table.output and "official rules: FROC undefined" in table.output


def test_synth_masks_have_level_5_for_the_official_rules(tmp_path: Path) -> None:
    import openslide

    from lymph.data.synth import SynthConfig
    from lymph.data.synth import run as synth
    from lymph.model.camelyon import official_mask_red

    synth(SynthConfig(out=tmp_path, n_tumor=1, n_normal=0, size=(1000, 700), seed=0))
    mask = tmp_path / "tumor_001_mask.tif"
    with openslide.OpenSlide(str(mask)) as s:
        assert s.level_count > 5 and s.level_dimensions[5] == (32, 22)  # ceil(1000/32, 700/32)
    assert official_mask_red(mask).shape == (22, 32)


def test_the_config_never_touches_the_filesystem(tmp_path: Path) -> None:
    """Paths are checked when ``run`` starts, not when the config is made."""
    config = SlideEvalConfig(slides=tmp_path / "none", predictions=tmp_path / "nope")
    with pytest.raises(ConfigError, match="slides .* do not exist"):
        run(config)
