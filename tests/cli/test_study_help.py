"""`lymph study`'s options (lymph/cli/study.py); the study itself: tests/model/test_study.py."""

from __future__ import annotations

from click.testing import CliRunner

from lymph.cli import main


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


def test_quick_is_gone_profile_quick_is_the_one_spelling(tmp_path):
    result = CliRunner().invoke(main, ["study", "--store", str(tmp_path), "--pretrained", "x.pt",
                                       "--out", str(tmp_path / "s"), "--quick"])
    assert result.exit_code == 2, result.output
    assert "No such option" in result.output and "--quick" in result.output
    assert "--profile" in CliRunner().invoke(main, ["study", "--help"]).output
