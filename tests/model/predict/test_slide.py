"""One slide end to end: geometry, detections and evaluation with a perfect 'model', a real
tiny UNet with TTA, an in-memory slide, and the old and new tilings side by side."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lymph.data.errors import ConfigError, SlideError
from lymph.model.camelyon import SlideEvalConfig, read_detections_csv
from lymph.model.camelyon import run as evaluate_slides
from lymph.model.predict.config import PredictConfig
from lymph.model.predict.run import find_slides, predict_slides
from lymph.model.predict.slide import predict_slide


def test_predict_slide_geometry_detections_and_evaluation(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    fake_probs: Callable[..., np.ndarray], geo: SimpleNamespace
) -> None:
    """With a perfect 'model' the lesion is found where the mask says, and FROC/AUC are 1."""
    import lymph.model.infer

    monkeypatch.setattr(lymph.model.infer, "predict_probs", fake_probs)
    out = tmp_path / "pred"
    config = PredictConfig(
        checkpoint=world / "tiny.pt", out=out, device="cpu", thumb_size=512, threads=1
    )
    results = predict_slides(find_slides(world / "slides")[0], config, progress=False)
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
    t0, t1, u0, u1 = geo.TUMOR_BOX
    assert u0 <= det[0, 1] < u1 and t0 <= det[0, 2] < t1
    assert read_detections_csv(out / "normal_n.csv").shape == (0, 3)
    scores = dict(list(csv.reader((out / "scores.csv").open()))[1:])
    assert float(scores["tumor_t"]) > 0.99 and float(scores["normal_n"]) == 0.0
    meta = json.loads((out / "tumor_t_predict.json").read_text())
    assert meta["settings"]["stride"] == tumor.stride and meta["mpp"] == pytest.approx(geo.MPP)
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


def test_predict_slide_with_a_real_tiny_unet_and_tta(
    world: Path, tmp_path: Path, geo: SimpleNamespace
) -> None:
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
    assert res.map_size == (math.ceil(geo.W0 / 16), math.ceil(geo.H0 / 16))
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


def test_predict_slide_takes_an_in_memory_slide_reader(
    world: Path, tmp_path: Path, geo: SimpleNamespace
) -> None:
    """An ArraySlide needs no file, and gives the map the same pixels in a TIFF give."""
    import tifffile

    from lymph.data.slides import ArraySlide

    rgb = np.full((geo.H0, geo.W0, 3), 245, np.uint8)
    r0, r1, c0, c1 = geo.TISSUE_BOX
    rgb[r0:r1, c0:c1] = geo.TISSUE
    t0, t1, u0, u1 = geo.TUMOR_BOX
    rgb[t0:t1, u0:u1] = geo.TUMOR
    kw = {"checkpoint": world / "tiny.pt", "device": "cpu", "thumb_size": 512, "threads": 1,
          "progress": False}
    mem = predict_slide(ArraySlide(rgb, downsamples=(1, 2, 4, 8), mpp=geo.MPP, path="tumor_t"),
                        PredictConfig(out=tmp_path / "mem", **kw))
    disk = predict_slide(world / "slides" / "tumor_t.tif", PredictConfig(out=tmp_path / "disk",
                                                                        **kw))
    assert mem.slide == "tumor_t" and mem.map_path == tmp_path / "mem" / "tumor_t_tumor_map.tif"
    assert mem.n_windows == disk.n_windows > 0
    np.testing.assert_array_equal(tifffile.imread(mem.map_path), tifffile.imread(disk.map_path))
    assert mem.probability == disk.probability


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


def test_new_tiling_agrees_with_the_old_and_is_cheaper(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    fake_probs: Callable[..., np.ndarray]
) -> None:
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
