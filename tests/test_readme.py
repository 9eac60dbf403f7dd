"""The README's "The pipeline" section is executed, so it cannot drift from the code.

The fast test checks every `lymph` line of the section's shell blocks against the CLI (the
command exists, every option is one of its options) and every `LYMPH_<COMMAND>_<OPTION>`
variable of its toy-size block against an option (a misspelt variable would be ignored in
silence). The slow test runs the blocks as written, in a temporary folder, with bash."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from lymph.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def pipeline_blocks() -> list[str]:
    """The fenced blocks of the README between "## The pipeline" and its first subsection."""
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## The pipeline\n")
    end = text.index("\n### ", start)
    return re.findall(r"^```\n(.*?)^```$", text[start:end], re.S | re.M)


def _commands(block: str) -> list[list[str]]:
    return [shlex.split(line, comments=True) for line in block.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def _resolve(args: list[str]) -> tuple[click.Command, str]:
    """The click command a `lymph ...` line runs, and its env-var name prefix."""
    cmd: click.Command = main
    prefix = "LYMPH"
    rest = list(args)
    while isinstance(cmd, click.Group) and rest and rest[0] in cmd.commands:
        name = rest.pop(0)
        cmd = cmd.commands[name]
        prefix += "_" + name.upper().replace("-", "_")
    return cmd, prefix


def _options(cmd: click.Command) -> dict[str, click.Parameter]:
    return {opt: p for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}


def test_every_line_names_a_command_and_its_options():
    blocks = pipeline_blocks()
    assert len(blocks) == 2, "the pipeline block and the toy-size block"
    lymph_lines = [c for c in _commands(blocks[0]) if c[0] == "lymph"]
    assert {c[1] for c in lymph_lines} >= {"synth", "extract", "info", "train", "eval", "study",
                                           "predict"}
    for words in lymph_lines:
        cmd, _ = _resolve(words[1:])
        assert cmd is not main, words
        options = _options(cmd)
        for word in words:
            if word.startswith("--"):
                assert word.split("=")[0] in options, f"{' '.join(words)}: no option {word}"


def test_every_toy_size_variable_sets_an_option():
    exports = [c for c in _commands(pipeline_blocks()[1])]
    assert exports and all(c[0] == "export" for c in exports)
    commands = {name: cmd for name, cmd in main.commands.items()}
    for words in exports:
        for assignment in words[1:]:
            var, _, value = assignment.partition("=")
            _, command, option = var.split("_", 2)
            cmd = commands[command.lower()]
            names = {p.name.upper(): p for p in cmd.params}
            assert option in names, f"{var}: `lymph {command.lower()}` has no such option"
            ctx = cmd.make_context(command.lower(), [], resilient_parsing=True)
            names[option].type_cast_value(ctx, value)  # the value parses


@pytest.mark.slow
def test_the_pipeline_runs_as_written_at_toy_sizes(tmp_path):
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "lymph").exists():
        pytest.skip(f"no lymph executable beside {sys.executable}")
    toy, pipeline = pipeline_blocks()[1], pipeline_blocks()[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LYMPH_")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    script = f"set -euo pipefail\n{toy}\n{pipeline}"
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for path in ("store.zarr", "pretrain_store.zarr", "runs/pre/last.pt", "runs/ft/best.pt",
                 "eval/metrics.json", "study/table.md", "maps/scores.csv",
                 "maps/eval/metrics.json"):
        assert (tmp_path / path).exists(), path
