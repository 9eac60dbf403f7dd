"""Memory bounds checked up front, and the last tracebacks turned into one-line errors: a full
disk under torch.save, a tampered --init state_dict, a hostile study done.json, a path with
non-UTF-8 bytes."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lymph.data.errors import CheckpointError, ConfigError
from lymph.data.io import atomic_write_text
from lymph.data.store import create_store, write_slide
from lymph.model.bounds import GIB, check_predict_memory
from lymph.model.predict import PredictConfig
from lymph.model.study.resume import read_done
from lymph.model.train import TrainConfig, run
from lymph.model.unet import UNetConfig

P = 36


def test_predict_window_above_the_cap_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"window 65536 px is above 16384 px .*--window 1024"):
        PredictConfig(checkpoint=tmp_path / "c.pt", out=tmp_path, window=65536)


def test_predict_batch_size_above_the_cap_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"batch_size 1000000 is above 65536"):
        PredictConfig(checkpoint=tmp_path / "c.pt", out=tmp_path, batch_size=1_000_000)


def test_base_width_whose_weights_cannot_fit_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"base_width 100000 with depth 4: the model's weights "
                                          r"alone would take about [\d,]+ GiB"):
        UNetConfig(base_width=100_000, depth=4)


def test_predict_batch_that_cannot_fit_in_memory_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"--window 8192 with --batch-size 64 .* one batch "
                                          r"needs about [\d,.]+ GiB, the available memory is "
                                          r"8\.0 GiB; lower --batch-size or --window"):
        check_predict_memory(window=8192, batch_size=64, base_width=32, depth=4, device="cpu",
                             available=8 * GIB)
    check_predict_memory(window=1024, batch_size=8, base_width=32, depth=4, device="cpu",
                         available=8 * GIB)  # the default-sized batch fits


def test_predict_run_refuses_a_batch_too_big_for_this_machine(tmp_path: Path) -> None:
    from lymph.model.checkpoint import save_checkpoint
    from lymph.model.predict import predict_slides
    from lymph.model.unet import UNet

    save_checkpoint(tmp_path / "c.pt", model=UNet(UNetConfig(base_width=4, depth=2)),
                    config={"store": {"patch_size": 60, "level": 0}, "stage": "finetune"})
    config = PredictConfig(checkpoint=tmp_path / "c.pt", out=tmp_path / "o", window=16384,
                           batch_size=65536, device="cpu")
    with pytest.raises(ConfigError, match=r"one batch needs about [\d,.]+ GiB"):
        predict_slides([tmp_path / "nothing.tif"], config, progress=False)


_FULL_DISK = """
import resource, signal, sys
from lymph.data.errors import OutputError
from lymph.model.checkpoint import save_checkpoint
from lymph.model.unet import UNet, UNetConfig
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.RLIM_INFINITY))
try:
    save_checkpoint(sys.argv[1], model=UNet(UNetConfig(base_width=8, depth=2)), config={})
except OutputError as exc:
    print("ERR", exc)
"""


def test_torch_save_on_a_full_disk_is_one_line_naming_the_file(tmp_path: Path) -> None:
    """A real short write: the file size limit makes torch's zip writer fail as on ENOSPC."""
    target = tmp_path / "last.pt"
    target.write_bytes(b"previous")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", _FULL_DISK, str(target)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"ERR cannot write {target}: torch.save failed (")
    assert "the disk is probably full" in out.stdout and len(out.stdout.splitlines()) == 1
    assert target.read_bytes() == b"previous"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bounds") / "store.zarr"
    rng = np.random.default_rng(0)
    create_store(path, {"patch_size": P, "level": 0, "seed": 0})
    for sid, status in (("t1", "tumor"), ("t2", "tumor"), ("n1", "normal")):
        labels = np.array([1, 0] * 10 if status == "tumor" else [0] * 20, np.uint8)
        masks = np.zeros((20, P, P), np.uint8)
        masks[labels == 1, 8:20, 8:20] = 1
        write_slide(path, sid, images=rng.integers(0, 256, (20, P, P, 3), dtype=np.uint8),
                    coords=np.zeros((20, 2), np.int64), labels=labels, masks=masks,
                    attrs={"status": status})
    return path


def _cfg(store: Path, out: Path, **kw: object) -> TrainConfig:
    return TrainConfig(store=store, out=out, steps=2, batch_size=4, crop=32, base_width=4,
                       depth=2, workers=0, device="cpu", checkpoint_every=2, eval_every=2,
                       log_every=1, val_patches=8, **kw)


@pytest.fixture(scope="module")
def pretrained(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run(_cfg(store, tmp_path_factory.mktemp("pre") / "run"), progress=False).last


@pytest.mark.parametrize("tamper", ["mis-shaped", "extra"])
def test_init_with_a_tampered_state_dict_is_one_line(store: Path, pretrained: Path,
                                                     tmp_path: Path, tamper: str) -> None:
    ckpt = torch.load(pretrained, weights_only=False)
    key = next(iter(ckpt["model"]))
    if tamper == "mis-shaped":
        ckpt["model"][key] = torch.zeros(3, 3)
    else:
        ckpt["model"]["intruder.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "bad.pt")
    config = replace(_cfg(store, tmp_path / "ft"), stage="finetune", init=tmp_path / "bad.pt",
                     labeled=8)
    why = "size mismatch" if tamper == "mis-shaped" else "Unexpected key"
    with pytest.raises(CheckpointError, match=rf"--init .*bad.pt: its weights do not fit the "
                                              rf"architecture it records \(.*{why}"):
        run(config, progress=False)


_SPEC = SimpleNamespace(run_id="n0004_f0_r0_scratch", size=4, fold=0, repeat=0,
                        condition="scratch")
_ROW = {"run_id": "n0004_f0_r0_scratch", "size": 4, "fold": 0, "repeat": 0,
        "condition": "scratch", "precision": 0.5, "recall": 0.5, "f1": 0.5, "dice": 0.4,
        "iou": 0.3, "ap": 0.6}


@pytest.mark.parametrize(("row", "why"), [
    ({k if k != "f1" else "f2": v for k, v in _ROW.items()}, r"its row has no f1"),
    ({**_ROW, "f1": "0.5x"}, r"its row's f1 is '0\.5x', not a number"),
    ({**_ROW, "f1": True}, r"its row's f1 is True, not a number"),
    ({**_ROW, "run_id": "other"}, r"its row's run_id is 'other'"),
])
def test_done_json_with_a_bad_row_is_one_line(tmp_path: Path, row: dict, why: str) -> None:
    import json

    done = tmp_path / "done.json"
    done.write_text(json.dumps({"row": row}))
    with pytest.raises(ConfigError, match=rf"done.json: not a finished run's record \({why}.*"
                                          r"delete .* to rerun this run"):
        read_done(done, _SPEC)
    assert read_done(_write(tmp_path, _ROW), _SPEC)["row"] == _ROW


def _write(tmp_path: Path, row: dict) -> Path:
    import json

    path = tmp_path / "ok" / "done.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"row": row}))
    return path


def test_done_json_that_is_a_folder_is_one_line(tmp_path: Path) -> None:
    done = tmp_path / "done.json"
    done.mkdir()
    with pytest.raises(ConfigError, match=r"done.json: not a finished run's record "
                                          r"\(IsADirectoryError: Is a directory\)"):
        read_done(done, _SPEC)


def test_text_with_a_non_utf8_path_is_written_as_its_bytes(tmp_path: Path) -> None:
    name = os.fsdecode(b"st\xffore.zarr")
    out = atomic_write_text(tmp_path / "table.md", f"store: {name}\n")
    assert out.read_bytes() == b"store: st\xffore.zarr\n"
