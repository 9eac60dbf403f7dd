"""One writer per folder (store, train/study/predict --out): the shared lock in data/lock.py."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lymph.data.errors import OutputError, StoreError
from lymph.data.lock import LOCK_FILE, folder_lock, run_folder_lock
from lymph.data.store import writer_lock


def test_symlinked_store_lock_never_truncates_its_target(tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    store.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    (store / LOCK_FILE).symlink_to(victim)
    with pytest.raises(StoreError, match=r"the lock file is a symlink; lymph never writes "
                                         r"through one\. delete .*\.lymph-writer\.lock"):
        with writer_lock(store):
            pass
    assert victim.read_text() == "keep me\n"


def test_symlinked_run_lock_never_truncates_its_target(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    (run / LOCK_FILE).symlink_to(victim)
    with pytest.raises(OutputError, match=r"the lock file is a symlink"):
        with run_folder_lock(run):
            pass
    assert victim.read_text() == "keep me\n"


def test_hard_linked_lock_is_left_untouched(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    victim = tmp_path / "precious.txt"
    victim.write_text("")
    os.link(victim, run / LOCK_FILE)
    with pytest.raises(OutputError, match=r"has 2 hard links .* it was left untouched"):
        with run_folder_lock(run):
            pass


def test_foreign_content_in_the_lock_file_is_left_untouched(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text("my notes\n")
    with pytest.raises(OutputError, match=r"holds data lymph did not write; it was left "
                                          r"untouched"):
        with run_folder_lock(run):
            pass
    assert (run / LOCK_FILE).read_text() == "my notes\n"


_FOREIGN_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()
"""


def test_lock_held_by_a_non_lymph_process_names_it_not_the_stale_record(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    stale = {"pid": 999999, "host": os.uname().nodename, "command": "lymph train OLD",
             "since": "2020-01-01T00:00:00+00:00"}
    (run / LOCK_FILE).write_text(json.dumps(stale) + "\n")
    holder = subprocess.Popen([sys.executable, "-c", _FOREIGN_HOLDER, str(run / LOCK_FILE)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputError) as info:
            with run_folder_lock(run):
                pass
        assert f"pid {holder.pid} on this host, not a lymph writer" in str(info.value)
        assert "OLD" not in str(info.value) and "999999" not in str(info.value)
    finally:
        holder.communicate("", timeout=30)


def test_release_clears_the_record(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with run_folder_lock(run) as info:
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == info["pid"] == os.getpid()
    assert (run / LOCK_FILE).read_text() == ""


def test_a_created_folder_holding_only_the_lock_is_removed(tmp_path: Path) -> None:
    with folder_lock(tmp_path / "new", what="x"):
        assert (tmp_path / "new" / LOCK_FILE).is_file()
    assert not (tmp_path / "new").exists()


def _hold(path: Path) -> int:
    """A second open file description locked in this process: flock conflicts with it."""
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    rec = {"pid": os.getpid(), "host": os.uname().nodename, "command": "holder-test",
           "since": "now"}
    os.pwrite(fd, json.dumps(rec).encode(), 0)
    return fd


def test_second_train_on_one_out_is_refused_naming_the_holder(tmp_path: Path) -> None:
    from lymph.model.train import TrainConfig, run

    out = tmp_path / "run"
    fd = _hold(out)
    try:
        config = TrainConfig(store=tmp_path / "nostore", out=out, steps=2, device="cpu")
        with pytest.raises(OutputError, match=rf"another lymph is writing this run folder "
                                              rf"\(pid {os.getpid()} .*holder-test\)"):
            run(config, progress=False)
    finally:
        os.close(fd)


def test_second_study_on_one_out_is_refused_naming_the_holder(tmp_path: Path) -> None:
    from lymph.model.study import StudyConfig, run

    out = tmp_path / "study"
    fd = _hold(out)
    try:
        config = StudyConfig(store=tmp_path / "nostore", pretrained=tmp_path / "p.pt", out=out)
        with pytest.raises(OutputError, match=r"another lymph is writing this study folder "
                                              r"\(pid .*holder-test\)"):
            run(config)
    finally:
        os.close(fd)


def test_second_predict_on_one_out_is_refused_naming_the_holder(
    tmp_path: Path, synth_world: Path
) -> None:
    from lymph.model.predict import PredictConfig, run

    out = tmp_path / "pred"
    fd = _hold(out)
    try:
        config = PredictConfig(slides=synth_world / "normal_001.tif",
                               checkpoint=tmp_path / "c.pt", out=out)
        with pytest.raises(OutputError, match=r"another lymph is writing this predict folder"):
            run(config)
    finally:
        os.close(fd)


def test_second_suggest_on_one_out_is_refused_naming_the_holder(tmp_path: Path) -> None:
    from lymph.model.suggest import SuggestConfig, run

    out = tmp_path / "next"
    fd = _hold(out)
    try:
        (tmp_path / "maps").mkdir()
        config = SuggestConfig(out=out, maps=tmp_path / "maps", k=2, size=1200)
        with pytest.raises(OutputError, match=r"another lymph is writing this suggest folder "
                                              r"\(pid .*holder-test\)"):
            run(config)
    finally:
        os.close(fd)
    assert not list(out.glob("*suggestions*"))
