"""`lymph synth`: its parameter errors, its table, --prefix and --world."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openslide
import pytest
from click.testing import CliRunner

from lymph.cli import main
from lymph.data.synth import (
    SynthConfig,
    run,
)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--size", "0x3072"], "zero or negative side"),
        (["--size", "200x3072"], "smaller than one 256 px tile"),
        (["--size", "big"], "is not WIDTHxHEIGHT"),
        (["--tumor", "0", "--normal", "0"], "nothing to make"),
        (["--format", "png"], "'png' is not one of"),
        (["--prefix", "pre/"], "may hold only letters, digits"),
        (["--workers", "2"], "No such option"),  # threads are --threads
    ],
)
def test_cli_bad_parameters(tmp_path: Path, args: list[str], match: str) -> None:
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    assert match in result.output


def test_cli_unwritable_out(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = CliRunner().invoke(main, ["synth", "--out", str(blocker / "o"), "--size", "512x512"])
    assert result.exit_code == 2
    assert "cannot write into" in result.output and "--out" in result.output


def test_cli_makes_slides_and_prints_a_table(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["synth", "--out", str(tmp_path), "--tumor", "1", "--normal", "1", "--size", "768x512",
         "--seed", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "tumor_001" in result.output and "normal_001" in result.output
    assert "wrote 2 slides" in result.output and "kept" not in result.output
    assert openslide.OpenSlide(tmp_path / "tumor_001.tif").dimensions == (768, 512)
    (tmp_path / "normal_001.tif").unlink()  # a killed run: the rerun writes only that one
    again = CliRunner().invoke(
        main,
        ["synth", "--out", str(tmp_path), "--tumor", "1", "--normal", "1", "--size", "768x512",
         "--seed", "2"],
    )
    assert again.exit_code == 0, again.output
    assert "wrote 1 slides, reference.csv and synth.json to " in again.output
    assert "; kept 1 slide(s) an earlier run with these settings finished" in again.output


def test_prefix_names_every_slide_and_file(tmp_path: Path) -> None:
    """--prefix keeps two worlds' ids apart (a pretraining world's tumor_001 looked like a
    labeled slide in results.csv); the pixels do not depend on the name."""
    import tifffile

    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "p"), "--tumor", "1",
                                       "--normal", "0", "--size", "768x512", "--prefix", "pre_",
                                       "--threads", "1"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "p").iterdir() if not p.name.startswith("."))
    assert names == ["pre_tumor_001.tif", "pre_tumor_001.xml", "pre_tumor_001_mask.tif",
                     "reference.csv", "synth.json"]
    assert (tmp_path / "p" / "reference.csv").read_text().startswith("pre_tumor_001,Tumor")
    run(SynthConfig(out=tmp_path / "q", n_tumor=1, n_normal=0, size=(768, 512)))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "p" / "pre_tumor_001.tif"),
                                  tifffile.imread(tmp_path / "q" / "tumor_001.tif"))


def test_cli_world_option(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["synth", "--out", str(tmp_path / "w"), "--world", "nope"])
    assert res.exit_code == 2 and "nope" in res.output
    res = runner.invoke(main, ["synth", "--out", str(tmp_path / "w"), "--tumor", "1",
                               "--normal", "0", "--size", "768x512", "--world", "camelyon",
                               "--centre", "C"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "w" / "synth.json").read_text())
    assert manifest["settings"]["centre"] == "C"
