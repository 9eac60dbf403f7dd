"""What the tests of lymph.model.train share: tiny stores, the tiny config every test trains
with, and one pretrained run (session-scoped: copy before changing)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lymph.data.store import create_store, write_slide
from lymph.model.train import TrainConfig, run

P = 36  # patch size of the test stores; crops of 32 with depth 2 (multiple 4)


def slide_arrays(rng: np.random.Generator, n: int, tumor: bool) -> dict[str, np.ndarray]:
    """Pink 'tissue' noise; tumor patches carry a dark purple disc that the mask marks."""
    img = rng.integers(150, 230, (n, P, P, 3), dtype=np.uint8)
    img[..., 1] = (img[..., 1] * 0.7).astype(np.uint8)
    labels = np.zeros(n, np.uint8)
    masks = np.zeros((n, P, P), np.uint8)
    if tumor:
        labels[: n // 2] = 1
        yy, xx = np.mgrid[:P, :P]
        for i in range(n // 2):
            cy, cx = rng.integers(8, P - 8, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 100
            masks[i][disc] = 1
            img[i][disc] = (90, 40, 120)
    return {"images": img, "labels": labels, "masks": masks, "coords": np.zeros((n, 2), np.int64)}


def make_store(path: Path, slides: dict[str, str], *, n: int = 70) -> Path:
    """slides: id -> "tumor" | "normal" | "unlabeled"."""
    rng = np.random.default_rng(0)
    create_store(path, {"patch_size": P, "level": 0, "seed": 0})
    for sid, status in slides.items():
        d = slide_arrays(rng, n, status == "tumor")
        if status == "unlabeled":
            d = {"images": d["images"], "coords": d["coords"]}
        write_slide(path, sid, attrs={"status": status}, **d)
    return path


def tiny_config(store: Path, out: Path, **kw: object) -> TrainConfig:
    """A run of 4 steps of a width-4, depth-2 UNet on crops of 32, on the CPU; ``kw`` changes
    any setting."""
    base: dict[str, object] = dict(
        store=store,
        out=out,
        steps=4,
        batch_size=4,
        crop=32,
        base_width=4,
        depth=2,
        workers=0,
        device="cpu",
        checkpoint_every=2,
        eval_every=2,
        log_every=1,
        val_patches=8,
        lr=3e-3,
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


MakeStore = Callable[..., Path]
Cfg = Callable[..., TrainConfig]


@pytest.fixture(scope="session")
def make_tiny_store() -> MakeStore:
    """``make_tiny_store(path, {slide id: status}, n=70)``: a store of P-pixel patches."""
    return make_store


@pytest.fixture(scope="session")
def tiny_slide() -> Callable[..., dict[str, np.ndarray]]:
    """``tiny_slide(rng, n, tumor)``: the arrays of one slide of the tiny stores."""
    return slide_arrays


@pytest.fixture(scope="session")
def cfg() -> Cfg:
    """``cfg(store, out, **changes)``: the tiny TrainConfig."""
    return tiny_config


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(
        tmp_path_factory.mktemp("train") / "store.zarr",
        {"t1": "tumor", "t2": "tumor", "n1": "normal", "u1": "unlabeled"},
    )


@pytest.fixture(scope="session")
def pretrained(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """last.pt of a 4-step pretraining on ``store``."""
    return run(tiny_config(store, tmp_path_factory.mktemp("pre") / "run"), progress=False).last
