"""Predictions are tied to their slides by content: predict records each slide's identity and
`eval slides` refuses stale predictions; a slide cannot collide with predict's own tables; eval
names the slides that took their score from a fallback."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lymph.data.errors import ConfigError, OutputError
from lymph.data.identity import file_identity
from lymph.model.camelyon import SlideEvalConfig
from lymph.model.camelyon import run as eval_slides
from lymph.model.checkpoint import save_checkpoint
from lymph.model.predict.config import PredictConfig
from lymph.model.predict.run import find_slides, predict_slides, run
from lymph.model.unet import UNet, UNetConfig

MPP = 0.243
TISSUE, TUMOR = (200, 120, 180), (90, 30, 120)
H0, W0 = 1024, 1536


def _write_tiff(path: Path, rgb: np.ndarray) -> None:
    import tifffile

    with tifffile.TiffWriter(path) as tif:
        for i, d in enumerate((1, 2, 4)):
            tif.write(rgb[::d, ::d], tile=(256, 256), compression="deflate", photometric="rgb",
                      subfiletype=1 if i else 0, resolution=(1e4 / (MPP * d), 1e4 / (MPP * d)),
                      resolutionunit="CENTIMETER")


def _fake_probs(model: object, images: np.ndarray, **_: object) -> np.ndarray:
    dist = np.abs(images.astype(np.int16) - np.array(TUMOR, np.int16)).sum(-1)
    return (dist < 60).astype(np.float32)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """slides/tumor_t.tif (+ ann/tumor_t_mask.tif), slides/normal_n.tif, tiny.pt (level 1)."""
    root = tmp_path_factory.mktemp("predict_integrity")
    (root / "slides").mkdir()
    (root / "ann").mkdir()
    rgb = np.full((H0, W0, 3), 245, np.uint8)
    rgb[128:896, 128:1408] = TISSUE
    normal = rgb.copy()
    rgb[256:768, 384:896] = TUMOR
    _write_tiff(root / "slides/tumor_t.tif", rgb)
    _write_tiff(root / "slides/normal_n.tif", normal)
    mask = np.zeros((H0, W0, 3), np.uint8)
    mask[256:768, 384:896] = 255
    _write_tiff(root / "ann/tumor_t_mask.tif", mask)
    torch.manual_seed(0)
    save_checkpoint(root / "tiny.pt", model=UNet(UNetConfig(base_width=4, depth=2, norm="group")),
                    config={"store": {"patch_size": 60, "level": 1}, "stage": "finetune"})
    return root


def _predict(world: Path, slides: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> list:
    import lymph.model.infer

    monkeypatch.setattr(lymph.model.infer, "predict_probs", _fake_probs)
    config = PredictConfig(checkpoint=world / "tiny.pt", out=out, device="cpu", thumb_size=256,
                           threads=1)
    return predict_slides(find_slides(slides)[0], config, progress=False)


def test_predict_records_each_slides_identity(world: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    results = _predict(world, world / "slides", tmp_path / "pred", monkeypatch)
    assert [r.error for r in results] == [None, None]
    for name in ("tumor_t", "normal_n"):
        meta = json.loads((tmp_path / "pred" / f"{name}_predict.json").read_text())
        assert meta["source_identity"] == file_identity(world / "slides" / f"{name}.tif")


def test_eval_refuses_predictions_of_swapped_slides(world: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    slides = tmp_path / "slides"
    shutil.copytree(world / "slides", slides)
    _predict(world, slides, tmp_path / "pred", monkeypatch)
    config = SlideEvalConfig(slides=slides, predictions=tmp_path / "pred",
                             annotations=world / "ann", rules="lymph")
    assert eval_slides(config).auc == pytest.approx(1.0)  # fresh: scored
    a, b = slides / "tumor_t.tif", slides / "normal_n.tif"
    data_a = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data_a)
    with pytest.raises(ConfigError, match=r"stale predictions for slide 'normal_n': .*slide "
                                          r"file replaced after predict \(.*content hash"):
        eval_slides(config)


@pytest.mark.parametrize("damage", [b"{\"source_identity\": {\"size\"", b"[1, 2]", b"\xff\xfe"])
def test_eval_notes_a_damaged_predict_json_instead_of_skipping_the_check_silently(
        world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: bytes) -> None:
    """A damaged S_predict.json cannot say whether its slide was replaced: the slide is still
    scored, and a note names the file, that the check was not made, and the fix."""
    _predict(world, world / "slides", tmp_path / "pred", monkeypatch)
    (tmp_path / "pred" / "normal_n_predict.json").write_bytes(damage)
    result = eval_slides(SlideEvalConfig(slides=world / "slides", predictions=tmp_path / "pred",
                                         annotations=world / "ann", rules="lymph"))
    assert result.auc == pytest.approx(1.0)
    (note,) = [n for n in result.notes if "normal_n_predict.json" in n]
    assert re.search(r"cannot be read \(.+\): whether normal_n's predictions are from the slide "
                     r"now at .*normal_n\.tif was not checked; rerun `lymph predict`", note)


def test_eval_notes_files_changed_since_predict_wrote_them(
        world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A flipped digit in S.csv or scores.csv is still valid CSV: the manifest predict keeps
    (.lymph-outputs.json, sha256 per file) lets eval say which files changed."""
    _predict(world, world / "slides", tmp_path / "pred", monkeypatch)
    config = SlideEvalConfig(slides=world / "slides", predictions=tmp_path / "pred",
                             annotations=world / "ann", rules="lymph")
    assert not [n for n in eval_slides(config).notes if "differ from what" in n]
    det = tmp_path / "pred" / "tumor_t.csv"
    text = det.read_text()
    digit = next(i for i, c in enumerate(text) if c in "123456789")
    det.write_text(text[:digit] + str(int(text[digit]) - 1) + text[digit + 1:])
    scores = tmp_path / "pred" / "scores.csv"
    scores.write_text(scores.read_text() + "\n")
    (note,) = [n for n in eval_slides(config).notes if "differ from what" in n]
    assert re.search(r"2 file\(s\) differ from what lymph predict wrote \(size or sha256 in "
                     r".*\.lymph-outputs\.json\): \['scores\.csv', 'tumor_t\.csv'\]; scored as "
                     r"they are now: rerun `lymph predict`", note)


def test_eval_names_slides_scored_from_a_fallback(world: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _predict(world, world / "slides", tmp_path / "pred", monkeypatch)
    scores = tmp_path / "pred" / "scores.csv"
    rows = [r for r in csv.reader(scores.open()) if r[0] != "tumor_t"]
    with scores.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    result = eval_slides(SlideEvalConfig(slides=world / "slides", predictions=tmp_path / "pred",
                                         annotations=world / "ann", rules="lymph"))
    assert ("1 slide(s) took their slide score from a fallback, not scores.csv (max detection "
            "confidence (no scores.csv row)): ['tumor_t']") in result.notes


def test_a_slide_named_scores_cannot_write_over_scores_csv(world: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(world / "slides/normal_n.tif", slides / "scores.tif")
    shutil.copy(world / "slides/tumor_t.tif", slides / "tumor_t.tif")
    results = _predict(world, slides, tmp_path / "pred", monkeypatch)
    errors = {Path(r.item).name: r.error for r in results}
    assert errors["tumor_t.tif"] is None
    assert "would write its detections over predict's own scores.csv" in errors["scores.tif"]
    rows = list(csv.reader((tmp_path / "pred" / "scores.csv").open()))
    assert [r[0] for r in rows] == ["slide", "tumor_t"]


def test_predict_out_inside_a_store_is_refused(world: Path, tmp_path: Path) -> None:
    from lymph.data.store import create_store

    create_store(tmp_path / "store.zarr", {"patch_size": 8, "level": 0, "seed": 0})
    config = PredictConfig(slides=world / "slides", checkpoint=world / "tiny.pt",
                           out=tmp_path / "store.zarr" / "slides")
    with pytest.raises(ConfigError, match=r"--out .*store.zarr/slides is inside the patch store "
                                          r".*store.zarr: .*choose a folder outside it"):
        run(config)


def test_case_twins_are_named_not_called_no_slides(world: Path, tmp_path: Path) -> None:
    from lymph.data.errors import SlideError

    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(world / "slides/normal_n.tif", slides / "Tumor_002.tif")
    shutil.copy(world / "slides/normal_n.tif", slides / "tumor_002.tif")
    with pytest.raises(SlideError, match=r"slides: no slide can be predicted: .*Tumor_002\.tif"):
        find_slides(slides)


def test_predict_leaves_no_per_file_lock_behind(world: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22: empty `.lock` files were left in maps/. The run's writer lock stays (it is how
    a second run is refused); the per-file locks of scores.csv and the manifest go."""
    import lymph.model.infer

    monkeypatch.setattr(lymph.model.infer, "predict_probs", _fake_probs)
    out = tmp_path / "pred"
    results = run(PredictConfig(checkpoint=world / "tiny.pt", out=out, slides=world / "slides",
                                device="cpu", thumb_size=256, threads=1, progress=False))
    assert [r.error for r in results.tasks] == [None, None]
    assert (out / "scores.csv").is_file()
    assert sorted(p.name for p in out.glob(".*lock")) == [".lymph-writer.lock"]


def test_remove_idle_locks_keeps_what_lymph_did_not_write(tmp_path: Path) -> None:
    from lymph.data.io import remove_idle_locks

    (tmp_path / "empty.lock").touch()
    (tmp_path / "full.lock").write_text("someone's data")
    (tmp_path / "target").touch()
    (tmp_path / "link.lock").symlink_to(tmp_path / "target")
    remove_idle_locks(tmp_path, ("empty.lock", "full.lock", "link.lock", "missing.lock"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.lock", "link.lock", "target"]


def test_a_rerun_keeps_finished_slides_and_predicts_what_changed(
        world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a kill or a failed slide, a rerun predicts only what is missing: a slide is kept
    when its S_predict.json records this checkpoint and these settings, the slide file is
    the one predicted and every output is unchanged; anything else predicts it again."""
    slides, out = tmp_path / "slides", tmp_path / "pred"
    shutil.copytree(world / "slides", slides)

    def again(**change: object) -> dict[str, bool]:
        import lymph.model.infer

        monkeypatch.setattr(lymph.model.infer, "predict_probs", _fake_probs)
        settings: dict = {"checkpoint": world / "tiny.pt", "out": out, "device": "cpu",
                          "thumb_size": 256, "threads": 1, **change}
        config = PredictConfig(**settings)
        results = predict_slides(find_slides(slides)[0], config, progress=False)
        assert [r.error for r in results] == [None, None]
        return {r.value.slide: r.value.reused for r in results}

    assert again() == {"normal_n": False, "tumor_t": False}
    first = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert again() == {"normal_n": True, "tumor_t": True}
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == first
    (out / "normal_n_predict.json").unlink()  # killed before its last file
    assert again() == {"normal_n": False, "tumor_t": True}
    map_path = out / "tumor_t_tumor_map.tif"
    data = bytearray(map_path.read_bytes())
    data[-100] ^= 0x01  # a flipped byte in an output
    map_path.write_bytes(bytes(data))
    with pytest.raises(OutputError, match="tumor_t_tumor_map.tif exists and lymph did not "
                                          "write it .*--force"):
        again()  # changed since lymph wrote it: never overwritten without --force ...
    assert again(force=True) == {"normal_n": True, "tumor_t": False}  # ... nor kept
    assert map_path.read_bytes() == first["tumor_t_tumor_map.tif"]
    shutil.copy(slides / "tumor_t.tif", slides / "normal_n.tif")  # a slide replaced
    assert again() == {"normal_n": False, "tumor_t": True}
    copy = tmp_path / "copy.pt"
    copy.write_bytes((world / "tiny.pt").read_bytes())  # another path and mtime, same bytes
    assert again(checkpoint=copy) == {"normal_n": True, "tumor_t": True}
    torch.manual_seed(1)  # another model
    save_checkpoint(copy, model=UNet(UNetConfig(base_width=4, depth=2, norm="group")),
                    config={"store": {"patch_size": 60, "level": 1}, "stage": "finetune"})
    assert again(checkpoint=copy) == {"normal_n": False, "tumor_t": False}
    assert again(threshold=0.4) == {"normal_n": False, "tumor_t": False}  # another setting
    assert again(threshold=0.4, redo=True) == {"normal_n": False, "tumor_t": False}
    scores = dict(csv.reader((out / "scores.csv").open()))
    assert set(scores) == {"slide", "normal_n", "tumor_t"}


def test_the_cli_says_which_slides_it_kept(world: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import lymph.model.infer
    from lymph.cli import main

    monkeypatch.setattr(lymph.model.infer, "predict_probs", _fake_probs)
    args = ["predict", "--slides", str(world / "slides"), "--checkpoint", str(world / "tiny.pt"),
            "--out", str(tmp_path / "pred"), "--device", "cpu", "--threads", "1", "--quiet"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0 and "kept" not in first.output, first.output
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    assert re.search(r"2 of 2 slide\(s\) predicted into .*pred \(2 kept from an earlier run "
                     r"with this checkpoint and these settings; --redo predicts them again\)",
                     second.output)
    assert re.search(r"tumor_t +p=1\.000 +\d+ detection\(s\)  kept", second.output)
    third = CliRunner().invoke(main, [*args, "--redo"])
    assert third.exit_code == 0 and "kept" not in third.output, third.output
