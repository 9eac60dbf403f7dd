"""`lymph eval` (lymph/cli/eval.py): a plain group of `patches` and `slides`; scoring itself is
tested with the stages (tests/model/test_evaluate.py, tests/model/test_camelyon.py)."""

from __future__ import annotations

import click
from click.testing import CliRunner

from lymph.cli import main


def test_eval_alone_prints_its_help_and_exits_0():
    result = CliRunner().invoke(main, ["eval"])
    assert result.exit_code == 0, result.output
    assert result.output == CliRunner().invoke(main, ["eval", "--help"]).output
    assert "patches" in result.output and "slides" in result.output


def test_the_old_one_command_form_is_gone(tmp_path):
    for option in ("--store", "--slides"):
        result = CliRunner().invoke(main, ["eval", option, str(tmp_path)])
        assert result.exit_code == 2, result.output
        assert "No such option" in result.output and option in result.output


def test_each_subcommand_needs_its_inputs(tmp_path):
    patches = CliRunner().invoke(main, ["eval", "patches", "--store", str(tmp_path)])
    assert patches.exit_code == 2 and "Missing option '--checkpoint'" in patches.output
    slides = CliRunner().invoke(main, ["eval", "slides", "--predictions", str(tmp_path)])
    assert slides.exit_code == 2 and "Missing option '--slides'" in slides.output
    stray = CliRunner().invoke(main, ["eval", "slides", "--figures"])
    assert stray.exit_code == 2 and "No such option" in stray.output and "--figures" in stray.output


def test_each_options_help_describes_only_its_own_command():
    group = main.commands["eval"]
    assert isinstance(group, click.Group)
    for name in ("patches", "slides"):
        for param in group.commands[name].params:
            text = getattr(param, "help", None) or ""
            assert "mode:" not in text.lower(), (name, param.name, text)
