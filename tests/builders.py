"""Small real things for tests: random patches and a tiny patch store, real Zarr on disk written
through the store's own writer (`lymph.data.store.write_slide`), and the arguments of a tiny
`lymph train` run."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lymph.data.store import create_store, write_slide

STORE_SETTINGS = {"patch_size": 8, "level": 0, "seed": 0, "patches_per_slide": 100}
"""The extraction settings a tiny store records (patch_size overridden by `tiny_store`)."""


def random_patches(rng: np.random.Generator, n: int, p: int = 8
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images, masks, labels, coords) of `n` random patches of `p` px, drawn in that order."""
    images = rng.integers(0, 256, (n, p, p, 3), dtype=np.uint8)
    masks = rng.integers(0, 2, (n, p, p), dtype=np.uint8)
    labels = rng.integers(0, 2, n, dtype=np.uint8)
    coords = rng.integers(0, 10_000, (n, 2), dtype=np.int64)
    return images, masks, labels, coords


def tiny_store(path: Path, *, slides: tuple[str, ...] = ("s1",), n: int = 150,
               patch_size: int = 8, seed: int = 5, status: str = "tumor",
               attrs: Mapping[str, Any] | None = None) -> Path:
    """A store at `path` of labeled slides `slides` (attrs: `status`, `source` `<id>.tif`, and
    `attrs`), each `n` random patches (`random_patches`
    from one `default_rng(seed)`, slide after slide: the first slide's arrays are
    `random_patches(np.random.default_rng(seed), n, patch_size)`)."""
    create_store(path, {**STORE_SETTINGS, "patch_size": patch_size})
    rng = np.random.default_rng(seed)
    for sid in slides:
        images, masks, labels, coords = random_patches(rng, n, patch_size)
        write_slide(path, sid, images=images, coords=coords, labels=labels, masks=masks,
                    attrs={"status": status, "source": f"{sid}.tif", **(attrs or {})})
    return path


def tiny_train_args(store: Path, out: Path, *, steps: int, extra: tuple[str, ...] = ()
                    ) -> list[str]:
    """`lymph train` arguments (after the program) of a tiny CPU pretraining on `store` into
    `out`: `steps` steps of batch 2, 32 px crops, a width-4 depth-2 UNet, no loader workers, no
    validation slides, quiet; then `extra`."""
    return ["train", "--store", str(store), "--out", str(out), "--steps", str(steps),
            "--batch-size", "2", "--crop", "32", "--base-width", "4", "--depth", "2",
            "--workers", "0", "--device", "cpu", "--quiet", "--val-slides", "0", *extra]


def flip_byte(file: Path, offset: int = 40) -> None:
    """Flip the lowest bit of byte `offset` of `file` (a damaged chunk)."""
    data = bytearray(file.read_bytes())
    data[offset] ^= 0x01
    file.write_bytes(bytes(data))


_STORE_LOCK_HOLDER = """
import sys
from lymph.data.store import writer_lock
with writer_lock(sys.argv[1], command="holder-test"):
    print("locked", flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def store_lock_holder(path: Path) -> Iterator[subprocess.Popen[str]]:
    """A real second process holding `path`'s store writer lock (command "holder-test") for
    the block; it exits when the block ends."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", _STORE_LOCK_HOLDER, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.communicate("", timeout=30)
