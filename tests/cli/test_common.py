"""The exit convention of every command (lymph/cli/common.py): a bad setting is exit 2, any
other lymph error exit 1, each one line, never a traceback."""

from __future__ import annotations

from click.testing import CliRunner

from lymph.cli import main


def test_a_store_that_is_not_one_is_a_message_and_exit_2_not_a_traceback(tmp_path):
    """--store naming a folder that is no store is a bad setting: exit 2, like any ConfigError."""
    (tmp_path / "x.txt").write_text("not a store")
    result = CliRunner().invoke(main, ["train", "--store", str(tmp_path), "--out",
                                       str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "Error:" in result.output and "not a zarr v3 group" in result.output
    assert "make one with `lymph extract" in result.output
    assert "Traceback" not in result.output


def test_a_lymph_error_that_is_not_a_setting_exits_1(tmp_path):
    """A damaged input (here a checkpoint that is not one) is exit 1, not a usage error."""
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, ["predict", "--slides", str(tmp_path), "--checkpoint",
                                       str(bad), "--out", str(tmp_path / "maps")])
    assert result.exit_code == 1, result.output
    assert "Error:" in result.output and "Traceback" not in result.output


def test_a_config_error_is_one_usage_line(tmp_path):
    """train's stage rules live in TrainConfig alone: the group turns its ConfigError into
    `Error: <message>`, exit 2, before any store is opened."""
    result = CliRunner().invoke(main, ["train", "--store", str(tmp_path), "--out",
                                       str(tmp_path / "run"), "--stage", "pretrain",
                                       "--from-scratch"])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert errors == ["Error: --init / --from-scratch are for --stage finetune; continue a "
                      "pretraining with --resume"]


def test_a_warning_prints_as_one_line_without_source(monkeypatch):
    import warnings

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after
    result = CliRunner().invoke(main, ["info", "--help"])
    assert result.exit_code == 0
    text = warnings.formatwarning(UserWarning("labeled set not balanced"), UserWarning,
                                  "/x/prepare.py", 82, "runs = plan_runs(")  # fmt: skip
    assert text == "warning: labeled set not balanced\n"
