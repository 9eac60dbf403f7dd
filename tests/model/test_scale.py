from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lymph.model.checkpoint import save_checkpoint
from lymph.model.scale import (
    ResampledReader,
    choose_scale,
    store_training_mpp,
    training_mpp,
)
from lymph.model.unet import UNet, UNetConfig

H0, W0 = 768, 1024


def _write_slide(path: Path, rgb: np.ndarray, *, mpp: float | None) -> None:
    """A tiled generic TIFF (levels /1, /2, /4) OpenSlide opens, with mpp when given."""
    import tifffile

    with tifffile.TiffWriter(path) as tif:
        for i, d in enumerate((1, 2, 4)):
            extra = ({"resolution": (1e4 / (mpp * d), 1e4 / (mpp * d)),
                      "resolutionunit": "CENTIMETER"} if mpp else {})
            tif.write(rgb[::d, ::d], tile=(256, 256), compression="deflate", photometric="rgb",
                      subfiletype=1 if i else 0, **extra)


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """slides at 0.5 and 0.6 um/px and one without mpp; a checkpoint trained at 1.0 um/px
    (its store: level 0 of 1.0 um/px slides) and one from before checkpoints recorded mpp."""
    root = tmp_path_factory.mktemp("scale")
    rgb = np.full((H0, W0, 3), 245, np.uint8)
    rgb[128:640, 128:896] = (200, 120, 180)
    for name, mpp in (("half", 0.5), ("odd", 0.6), ("nompp", None)):
        (root / name).mkdir()
        _write_slide(root / name / f"{name}.tif", rgb, mpp=mpp)
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=4, depth=2, norm="group"))
    store = {"patch_size": 64, "level": 0, "mpp": 1.0}
    save_checkpoint(root / "at1.pt", model=model, config={"store": store, "stage": "finetune"})
    save_checkpoint(root / "old.pt", model=model,
                    config={"store": {"patch_size": 64, "level": 0}, "stage": "finetune"})
    return root


def test_a_level_within_10_percent_is_chosen():
    c = choose_scale(name="s", downsamples=(1, 2, 4), slide_mpp=0.5, user_mpp=None,
                     target_mpp=1.0, level=None, checkpoint_level=0)
    assert (c.level, c.resampled, c.mpp, c.warning) == (1, False, 1.0, None)
    assert "slide 0.500 um/px, model trained at 1.000 um/px: level 1 (1.000 um/px)" in c.note
    c = choose_scale(name="s", downsamples=(1, 4, 16), slide_mpp=0.243, user_mpp=None,
                     target_mpp=0.97, level=None, checkpoint_level=2)  # 0.972: 0.2% off
    assert c.level == 1 and not c.resampled


def test_no_level_within_10_percent_resamples_to_the_training_mpp():
    c = choose_scale(name="s", downsamples=(1, 2, 4), slide_mpp=0.6, user_mpp=None,
                     target_mpp=1.0, level=None, checkpoint_level=0)
    assert c.resampled and c.level == 3 and c.downsample == pytest.approx(1 / 0.6)
    assert "no level within 10% (0.600, 1.200, 2.400)" in c.note
    assert "level 0 is downsampled x0.600 to 1.000 um/px" in c.note
    c = choose_scale(name="s", downsamples=(1, 2), slide_mpp=0.5, user_mpp=None,
                     target_mpp=0.25, level=None, checkpoint_level=0)
    assert c.resampled and "level 0 is upsampled x2.000" in c.note


def test_a_slide_without_mpp_warns_and_uses_the_users_mpp():
    c = choose_scale(name="s.tif", downsamples=(1, 2, 4), slide_mpp=None, user_mpp=None,
                     target_mpp=1.0, level=None, checkpoint_level=0)
    assert c.level == 0 and "records no microns per pixel" in c.warning
    assert "Pass --mpp" in c.warning
    c = choose_scale(name="s.tif", downsamples=(1, 2, 4), slide_mpp=None, user_mpp=0.5,
                     target_mpp=1.0, level=None, checkpoint_level=0)
    assert c.level == 1 and c.warning is None and "0.500 um/px (--mpp)" in c.note


def test_a_given_level_is_kept_with_a_warning_when_off_scale():
    c = choose_scale(name="s", downsamples=(1, 2, 4), slide_mpp=0.5, user_mpp=None,
                     target_mpp=1.0, level=0, checkpoint_level=0)
    assert c.level == 0 and "trained at 1.000 um/px (0.50x)" in c.warning
    c = choose_scale(name="s", downsamples=(1, 2, 4), slide_mpp=0.5, user_mpp=None,
                     target_mpp=None, level=None, checkpoint_level=2)
    assert c.level == 2 and c.warning is None and "records no training mpp" in c.note


def test_training_mpp_is_the_median_level_mpp_of_the_slides(synth_store):
    slides = [{"mpp": 0.25, "level_downsamples": [1, 2, 4]},
              {"mpp": 0.5, "level_downsamples": [1, 2, 4]},
              {"mpp": None, "level_downsamples": [1, 2]}, {"mpp": 0.26}]
    assert training_mpp(slides, 1) == pytest.approx(0.52)
    assert training_mpp([{"mpp": None}], 0) is None
    assert store_training_mpp(synth_store, 0) == pytest.approx(0.243)


def test_resampled_reader_reads_the_extra_level_box_resized():
    from PIL import Image

    from lymph.data.slides import ArraySlide

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    slide = ArraySlide(rgb, downsamples=(1, 2), mpp=0.6)
    r = ResampledReader(slide, 1 / 0.6)
    assert r.level_count == 3 and r.level_dimensions[2] == (240, 180) and r.mpp == 0.6
    got = r.read_region((0, 0), 2, (60, 60))
    want = np.asarray(Image.fromarray(rgb[:100, :100]).resize((60, 60), Image.Resampling.BOX))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(r.read_region((0, 0), 1, (8, 8)),
                                  slide.read_region((0, 0), 1, (8, 8)))  # real levels: as is


def test_predict_runs_a_0_5_um_slide_at_the_1_um_training_scale_and_says_so(scaled, tmp_path):
    from lymph.cli import main

    done = CliRunner().invoke(main, ["predict", "--slides", str(scaled / "half"),
                                     "--checkpoint", str(scaled / "at1.pt"), "--out",
                                     str(tmp_path / "cli"), "--device", "cpu", "--quiet"])
    assert done.exit_code == 0, done.output
    assert "scale: half.tif: slide 0.500 um/px, model trained at 1.000 um/px: level 1 " \
        "(1.000 um/px)" in done.output
    meta = json.loads((tmp_path / "cli" / "half_predict.json").read_text())
    assert meta["settings"]["level"] == 1 and meta["settings"]["level_downsample"] == 2.0
    assert Path(meta["checkpoint"]).is_absolute()


@pytest.mark.slow
def test_predict_resamples_warns_without_mpp_and_takes_the_users(scaled, tmp_path):
    from lymph.model.predict import PredictConfig, predict_slide

    kw = {"checkpoint": scaled / "at1.pt", "device": "cpu", "thumb_size": 256, "threads": 1,
          "progress": False}
    r = predict_slide(scaled / "odd" / "odd.tif", PredictConfig(out=tmp_path / "b", **kw))
    assert r.level == 3 and "downsampled x0.600 to 1.000 um/px" in r.scale  # resampled
    assert abs(r.map_size[0] * r.map_downsample - W0) < r.map_downsample  # covers the slide
    assert abs(r.map_size[1] * r.map_downsample - H0) < r.map_downsample
    with pytest.warns(UserWarning, match="records no microns per pixel"):
        r = predict_slide(scaled / "nompp" / "nompp.tif",
                          PredictConfig(out=tmp_path / "c", **kw))
    assert r.level == 0 and r.scale.startswith("WARNING")
    r = predict_slide(scaled / "nompp" / "nompp.tif",
                      PredictConfig(out=tmp_path / "d", mpp=0.5, **kw))
    assert r.level == 1
    kw["checkpoint"] = scaled / "old.pt"
    r = predict_slide(scaled / "half" / "half.tif", PredictConfig(out=tmp_path / "e", **kw))
    assert r.level == 0 and "records no training mpp" in r.scale


def test_bad_mpp_is_refused():
    from lymph.data.errors import ConfigError
    from lymph.model.predict import PredictConfig

    with pytest.raises(ConfigError, match="mpp must be a number > 0"):
        PredictConfig(checkpoint=Path("x.pt"), out=Path("o"), mpp=0)
    with pytest.raises(ConfigError, match="mpp must be a number > 0"):
        PredictConfig(checkpoint=Path("x.pt"), out=Path("o"), mpp="0.5")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="mpp must be a number > 0"):
        PredictConfig(checkpoint=Path("x.pt"), out=Path("o"), mpp=True)


def test_rescaled_model_keeps_the_patch_size_and_is_the_model_at_factor_1():
    from lymph.model.infer import predict_probs, reconstruct
    from lymph.model.scale import rescaled_model

    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=4, depth=2, norm="group"))
    images = np.random.default_rng(0).integers(0, 255, (3, 40, 36, 3), dtype=np.uint8)
    same = rescaled_model(model, 1.0)
    np.testing.assert_allclose(predict_probs(same, images), predict_probs(model, images),
                               atol=1e-6)
    for factor in (2.0, 0.6):  # the model at half / 1.67x the store's resolution
        probs = predict_probs(rescaled_model(model, factor), images)
        assert probs.shape == (3, 40, 36) and np.isfinite(probs).all()
        assert reconstruct(rescaled_model(model, factor), images).shape == images.shape


def test_eval_patches_resamples_a_store_off_the_training_scale(tmp_path):
    """Store patches at 0.25 um/px, a checkpoint trained at 0.5 um/px: eval patches says so and
    scores the model at its training scale (the same numbers as the rescaled model's)."""
    from lymph.data.store import create_store, write_slide
    from lymph.model.evaluate import EvalConfig, run
    from lymph.model.infer import predict_probs
    from lymph.model.metrics import binarize, pixel_counts
    from lymph.model.scale import rescaled_model

    rng = np.random.default_rng(0)
    store = tmp_path / "s.zarr"
    create_store(store, {"patch_size": 32, "level": 0, "seed": 0, "patches_per_slide": 4})
    images = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    masks = np.zeros((4, 32, 32), np.uint8)
    masks[:2, 8:24, 8:24] = 1
    write_slide(store, "tumor_a", images=images, masks=masks, labels=np.array([1, 1, 0, 0],
                np.uint8), coords=np.zeros((4, 2), np.int64),
                attrs={"status": "tumor", "source": "tumor_a.tif", "mpp": 0.25,
                       "level_downsamples": [1.0, 2.0]})
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=4, depth=2, norm="group"))
    ckpt = tmp_path / "c.pt"
    save_checkpoint(ckpt, model=model, config={"stage": "finetune", "store": {
        "patch_size": 32, "level": 0, "mpp": 0.5}})
    with pytest.warns(UserWarning, match=r"0\.250 um/px .* trained at 0\.500 um/px"):
        result = run(EvalConfig(store=store, checkpoint=ckpt, threshold=0.5, device="cpu",
                                progress=False)).to_dict()
    assert any("0.250 um/px and the checkpoint was trained at 0.500 um/px" in n
               and "resampled x0.500" in n for n in result["notes"])
    want = pixel_counts(binarize(predict_probs(rescaled_model(model, 2.0), images), 0.5), masks)
    assert result["tp"] == want.tp and result["fp"] == want.fp
    assert not np.allclose(predict_probs(model, images),  # so the test can tell the scales
                           predict_probs(rescaled_model(model, 2.0), images), atol=1e-3)
