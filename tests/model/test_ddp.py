from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lymph.data.store import PatchStore, create_store, write_slide
from lymph.model.checkpoint import load_checkpoint, load_model
from lymph.model.layout import Layout
from lymph.model.stream import StoreStream, StreamConfig
from tests.builders import tiny_train_args

ROOT = Path(__file__).resolve().parents[2]
P = 36


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "store.zarr"
    rng = np.random.default_rng(0)
    create_store(path, {"patch_size": P, "level": 0, "seed": 0})
    for sid in ("a", "b"):
        n = 130
        write_slide(
            path,
            sid,
            images=rng.integers(0, 256, (n, P, P, 3), dtype=np.uint8),
            coords=np.zeros((n, 2), np.int64),
            attrs={},
        )
    return path


def test_ranks_read_disjoint_chunks(store: Path) -> None:
    chunks = PatchStore.open(store).chunks()
    cfg = StreamConfig(batch_size=2, crop=32, seed=0)
    per_rank = []
    for rank in range(2):
        ds = StoreStream(store, chunks, cfg, layout=Layout(rank=rank, world_size=2))
        per_rank.append({c for w in ds.windows(0, ds._shard()[0]) for c in w})
    assert not per_rank[0] & per_rank[1] and per_rank[0] | per_rank[1] == set(chunks)


@pytest.mark.slow  # over 5 s (make test-all runs it)
def test_torchrun_two_cpu_processes(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "lymph.cli",
        *tiny_train_args(store, out, steps=4, extra=("--checkpoint-every", "2")),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count("pretrain: 4 steps") == 1  # only rank 0 prints
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] == 4 and ckpt["extra"]["data"]["world_size"] == 2
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [
        4
    ]  # logged every 10 steps and at the end, once
    model, _ = load_model(out / "last.pt")
    assert model.config.base_width == 4
