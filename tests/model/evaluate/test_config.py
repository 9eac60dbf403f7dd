"""EvalConfig and its threshold."""

from __future__ import annotations

from pathlib import Path

import pytest

from lymph.data.errors import ConfigError
from lymph.model.evaluate import EvalConfig, parse_threshold


def test_unknown_threshold_string() -> None:
    with pytest.raises(ConfigError, match="neither a number in \\[0, 1\\] nor 'auto'"):
        parse_threshold("best")


def test_threshold_out_of_range() -> None:
    with pytest.raises(ConfigError, match="outside \\[0, 1\\]"):
        parse_threshold("1.5")
    assert parse_threshold(" AUTO ") == "auto" and parse_threshold("0.25") == 0.25



def test_figures_need_out(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pass --out DIR with --figures"):
        EvalConfig(store=tmp_path / "s.zarr", checkpoint=tmp_path / "c.pt", figures=True)



def test_max_patches_per_slide_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_patches_per_slide must be >= 1"):
        EvalConfig(store=tmp_path / "s.zarr", checkpoint=tmp_path / "c.pt",
                   max_patches_per_slide=0)


def test_the_config_never_touches_the_filesystem(tmp_path: Path) -> None:
    """Paths are checked when ``run`` starts, not when the config is made."""
    from lymph.model.evaluate import run

    afile = tmp_path / "f"
    afile.write_text("x")
    config = EvalConfig(store=tmp_path / "none.zarr", checkpoint=tmp_path / "none.pt", out=afile)
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        run(config)
