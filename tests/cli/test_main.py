"""The `lymph` group (lymph/cli/__init__.py): every command registered, each with an example in
its --help, every path option a pathlib.Path, and `python -m lymph.cli` (torchrun's way in)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from lymph import __version__
from lymph.cli import main

COMMANDS = ("synth", "extract", "info", "train", "eval", "study", "predict", "suggest", "view")


def _every_command() -> list[tuple[list[str], click.Command]]:
    """(path, command) of every command and group below `main`, e.g. (["eval", "slides"], ...)."""
    found: list[tuple[list[str], click.Command]] = []

    def walk(path: list[str], cmd: click.Command) -> None:
        if path:
            found.append((path, cmd))
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk([*path, name], sub)

    walk([], main)
    return found


def test_version_and_help_list_every_command():
    runner = CliRunner()
    assert __version__ in runner.invoke(main, ["--version"]).output
    out = runner.invoke(main, ["--help"]).output
    for command in COMMANDS:
        assert command in out
    assert set(main.commands) == set(COMMANDS)


def test_every_commands_help_has_an_example():
    """The README says every command has --help with an example: a line that runs it."""
    paths = [p for p, _ in _every_command()]
    assert ["eval", "patches"] in paths and ["eval", "slides"] in paths
    for path, _ in _every_command():
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, result.output
        runs = [line.strip() for line in result.output.splitlines()
                if line.strip().startswith(f"lymph {' '.join(path)} ")]
        assert runs, f"`lymph {' '.join(path)} --help` shows no example:\n{result.output}"


def test_every_path_option_is_a_pathlib_path():
    checked = 0
    for path, cmd in _every_command():
        for param in cmd.params:
            if isinstance(param.type, click.Path):
                assert param.type.type is Path, (path, param.name)
                checked += 1
    assert checked >= 30


def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "lymph.cli", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert __version__ in done.stdout
