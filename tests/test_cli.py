from __future__ import annotations

from click.testing import CliRunner

from lymph import __version__
from lymph.cli import main


def test_version_and_help_list_every_command():
    runner = CliRunner()
    assert __version__ in runner.invoke(main, ["--version"]).output
    out = runner.invoke(main, ["--help"]).output
    for command in ("synth", "extract", "info", "train", "eval", "study", "predict"):
        assert command in out


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


def test_study_help_states_each_profiles_defaults():
    """`lymph study --help` shows quick / standard / none for every profile setting, from the
    same PROFILES and DEFAULTS the study uses (it showed the no-profile values only)."""
    from lymph.model.study import DEFAULTS, PROFILES

    def text(value: object) -> str:
        if value is None:
            return "the trainer's"
        return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)

    params = {p.name: p for p in main.commands["study"].params}
    for key in DEFAULTS:
        helptext = " ".join(params[key].help.split())
        values = [text(PROFILES["quick"][key]), text(PROFILES["standard"][key]),
                  text(DEFAULTS[key])]
        wanted = (f"[default: {values[0]}]" if len(set(values)) == 1
                  else f"[default: {' / '.join(values)}]")
        assert wanted in helptext, (key, helptext)
