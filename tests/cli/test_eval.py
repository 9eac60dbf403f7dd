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


def test_the_validation_line_says_which_threshold_its_scores_belong_to(capsys):
    from lymph.cli.eval import _print_patches

    scores = {"precision": 0.5, "recall": 0.8, "f1": 0.6, "iou": 0.4}
    _print_patches({
        **scores, "n_patches": 4, "n_slides": 1, "threshold": 0.128, "threshold_mode": "auto",
        "slides": {"s": {**scores, "status": "tumor", "n_patches": 4}},
        "average_precision": 0.7, "at_recall_0.9_threshold": {
            "precision": 0.2224, "recall": 0.9614, "f1": 0.3612, "iou": 0.2},
        "validation": {"slides": ["v1", "v2"], "source": "seeded split",
                       "f1_best_threshold": 0.128, "recall_0.9_threshold": 0.075},
    })  # fmt: skip
    out = capsys.readouterr().out
    assert "F1-best 0.128 (the table above); at the 0.9-recall one, 0.075, the scored slides " \
        "pool to P 22.24% R 96.14% F1 36.12%" in out
