"""Extract reruns compare each complete slide's source by content, not by path."""

from __future__ import annotations

import shutil
from pathlib import Path

from lymph.data.identity import file_identity
from lymph.data.store import PatchStore
from lymph.pipeline.extract import ExtractConfig, run


def test_rerun_redoes_a_slide_whose_file_was_replaced(tmp_path: Path, synth_world: Path) -> None:
    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(synth_world / "normal_001.tif", slides / "s_001.tif")
    config = ExtractConfig(slides=slides, out=tmp_path / "store.zarr", patch_size=64,
                           patches_per_slide=4, seed=0, progress=False)
    first = run(config)
    assert [r.slide_id for r in first.done] == ["s_001"]
    assert [r.slide_id for r in run(config).skipped] == ["s_001"]  # unchanged: skipped
    shutil.copy(synth_world / "tumor_001.tif", slides / "s_001.tif")
    third = run(config)
    assert not third.skipped and [r.slide_id for r in third.done] == ["s_001"]
    assert any("slide file replaced after extraction" in w for w in third.done[0].warnings)
    attrs = PatchStore.open(config.out).slide("s_001").attrs
    assert attrs["source_identity"] == file_identity(slides / "s_001.tif")


def test_a_png_named_as_a_mask_is_called_a_mask(tmp_path: Path, synth_world: Path) -> None:
    from PIL import Image

    slides = tmp_path / "slides"
    slides.mkdir()
    shutil.copy(synth_world / "normal_001.tif", slides / "x.tif")
    Image.new("RGB", (64, 64)).save(slides / "x_mask.tif", format="PNG")
    summary = run(ExtractConfig(slides=slides, out=tmp_path / "store.zarr", patch_size=64,
                                    patches_per_slide=4, seed=0, progress=False))
    ((source, error),) = summary.failed
    assert "x_mask.tif: cannot read this tumor mask" in error
    assert "move it out of the slide folder" not in error
