"""What predict writes: scores.csv merged, a tumor map that opens in OpenSlide, and files lymph
did not write never overwritten (issue 11)."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lymph.data.errors import OutputError
from lymph.model.predict.config import PredictConfig
from lymph.model.predict.outputs import update_scores
from lymph.model.predict.slide import predict_slide


def test_update_scores_merges_rows(tmp_path: Path) -> None:
    update_scores(tmp_path, {"b": 0.5})
    update_scores(tmp_path, {"a": 0.25, "b": 0.75})
    rows = list(csv.reader((tmp_path / "scores.csv").open()))
    assert rows == [["slide", "probability"], ["a", "0.250000"], ["b", "0.750000"]]


def test_tumor_map_opens_in_openslide_with_the_slide_geometry(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    fake_probs: Callable[..., np.ndarray], geo: SimpleNamespace
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
        assert osr.dimensions == (math.ceil(geo.W0 / 16), math.ceil(geo.H0 / 16))
        assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(geo.MPP * 16, rel=1e-4)
        full = np.asarray(osr.read_region((0, 0), 0, osr.dimensions))[..., 0]
    t0, t1, u0, u1 = (v // 16 for v in geo.TUMOR_BOX)
    assert (full[t0 + 1 : t1 - 1, u0 + 1 : u1 - 1] == 255).all()  # inside the lesion
    outside = np.ones(full.shape, bool)
    outside[t0 - 1 : t1 + 1, u0 - 1 : u1 + 1] = False
    assert (full[outside] == 0).all()  # nothing else lights up: no offset, no seams


def test_predict_never_overwrites_an_annotation_in_out(
    world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    fake_probs: Callable[..., np.ndarray]
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
