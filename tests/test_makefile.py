"""`make demo` resumes: run twice, the second run redoes nothing that is done.

The recipe runs for real with a stand-in `lymph` (a shell script that logs its arguments and
writes the file each command writes last), so the test checks the Makefile's own logic (the
`test -f ... ||` guards and `--resume`) in a second, not the stages (each stage's resume has
its own tests: extract, train --resume, study)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_LYMPH = r"""#!/usr/bin/env bash
echo "$*" >> "$LYMPH_LOG"
out=""; prev=""
for a in "$@"; do [ "$prev" = "--out" ] && out="$a"; prev="$a"; done
case "$1" in
  synth) mkdir -p "$out"; touch "$out/reference.csv" ;;
  train) mkdir -p "$out"; touch "$out/last.pt" "$out/best.pt" "$out/loss.png" ;;
  extract|eval|predict|study) mkdir -p "$out"; touch "$out/metrics.json" ;;
esac
"""


def _make(tmp_path: Path, target: str) -> list[str]:
    log = tmp_path / "calls.log"
    log.write_text("")
    env = {**os.environ, "LYMPH_LOG": str(log)}
    done = subprocess.run(["make", "-s", "-C", str(ROOT), target, f"VENV={tmp_path / 'venv'}",
                           f"DEMO={tmp_path / 'demo'}", f"STUDY={tmp_path / 'study'}"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return log.read_text().splitlines()


@pytest.fixture()
def fake_venv(tmp_path: Path) -> Path:
    if shutil.which("make") is None:
        pytest.skip("no make")
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "lymph").write_text(FAKE_LYMPH)
    (bin_dir / "lymph").chmod(0o755)
    (tmp_path / "venv" / ".lymph-installed").touch()  # newer than pyproject.toml: no install
    return tmp_path


def test_make_demo_twice_the_second_run_resumes(fake_venv: Path):
    first = _make(fake_venv, "demo")
    commands = [c.split()[0] for c in first]
    assert commands.count("synth") == 3 and commands.count("train") == 2
    assert "predict" in commands and commands.count("eval") == 3  # + Figure 4 (pretraining)
    assert not any("--resume" in c for c in first)
    synths = [c for c in first if c.startswith("synth")]
    assert sum("--prefix pre_" in c for c in synths) == 1  # pretraining ids: pre_tumor_001
    assert sum("--prefix test_" in c for c in synths) == 1
    second = _make(fake_venv, "demo")
    again = [c.split()[0] for c in second]
    assert "synth" not in again and "predict" not in again and "eval" not in again
    trains = [c for c in second if c.startswith("train")]
    assert len(trains) == 2 and all("--resume" in c for c in trains)
    # extract and study resume by themselves (they skip what is complete)
    assert again.count("extract") == 3 and again.count("study") == 1


def test_clean_demo_removes_only_the_demo(fake_venv: Path):
    _make(fake_venv, "demo")
    assert (fake_venv / "demo" / "slides").is_dir()
    _make(fake_venv, "clean-demo")
    assert not (fake_venv / "demo").exists()
    assert (fake_venv / "venv" / "bin" / "lymph").exists()


@pytest.mark.parametrize("target", ["demo", "study"])
def test_every_call_is_a_command_with_its_options(fake_venv: Path, target: str):
    """Each `lymph` line of the recipe names a real (sub)command, not a group, and only its
    options, so a renamed command or option fails here rather than an hour into the run."""
    import shlex

    import click

    from lymph.cli import main

    for line in _make(fake_venv, target):
        words = shlex.split(line)
        cmd: click.Command = main
        while isinstance(cmd, click.Group):
            assert words and words[0] in cmd.commands, line
            cmd = cmd.commands[words.pop(0)]
        options = {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}
        assert all(w in options for w in words if w.startswith("--")), line
