"""StudyConfig (model/study/config.py): every value validated, profiles included."""

from __future__ import annotations

from pathlib import Path

import pytest

from lymph.data.errors import ConfigError
from lymph.model.study import StudyConfig, parse_pretrained


def test_study_config_validation(tmp_path) -> None:
    base = dict(store=tmp_path, pretrained=tmp_path / "p.pt", out=tmp_path)
    with pytest.raises(ConfigError, match="sizes must be integers >= 2"):
        StudyConfig(**base, sizes=(0,))
    with pytest.raises(ConfigError, match="sizes repeat"):
        StudyConfig(**base, sizes=(4, 4))
    with pytest.raises(ConfigError, match="outside"):
        StudyConfig(**base, threshold=2.0)
    with pytest.raises(ConfigError, match="min_steps must be >= 0"):
        StudyConfig(**base, min_steps=-1)
    assert StudyConfig(**base, profile="standard").resolved.min_steps == 800
    assert StudyConfig(**base, profile="standard", min_steps=0).resolved.min_steps == 0
    with pytest.raises(ConfigError, match="profile must be one of"):
        StudyConfig(**base, profile="huge")
    with pytest.raises(ConfigError, match="conditions .'nope'. unknown"):
        StudyConfig(**base, conditions=("nope",))
    with pytest.raises(ConfigError, match="one checkpoint twice"):
        StudyConfig(**{**base, "pretrained": ["a=x.pt", "a=x.pt"]})
    assert len(StudyConfig(**{**base, "pretrained": ["a=x.pt", "a=y.pt"]}).pretrained) == 2
    with pytest.raises(ConfigError, match=r"margin must be within \(0, 1\).*0.02 = 2 pp"):
        StudyConfig(**base, margin=2.0)
    with pytest.raises(ConfigError, match="pilot_sd must be within"):
        StudyConfig(**base, pilot_sd=0.0)
    with pytest.raises(ConfigError, match="not a pretext name"):
        parse_pretrained(["Bad Name=x.pt"])
    quick = StudyConfig(**base, profile="quick")
    assert quick.profile == "quick" and quick.resolved.steps == 600
    assert StudyConfig(**base, profile="quick", steps=7).resolved.steps == 7
    assert parse_pretrained(["genesis=a.pt", "b.pt"]) == (("genesis", Path("a.pt")),
                                                          (None, Path("b.pt")))  # fmt: skip


def test_profile_settings_are_resolved_and_validated_when_the_config_is_made(
    tmp_path, monkeypatch
) -> None:
    from lymph.model.study import config as study_config

    base = dict(store=tmp_path, pretrained=tmp_path / "p.pt", out=tmp_path)
    standard = StudyConfig(**base, profile="standard", crop=32)
    assert standard.resolved.folds == 5 and standard.resolved.crop == 32
    assert standard.folds is None  # the given value stays as given (study.json records both)
    assert StudyConfig(**base).resolved.sizes == (200, 120, 80, 40)
    assert StudyConfig(**base).resolved.batch_size is None  # the trainer's own
    # a profile's own values pass the same checks as given ones
    broken = {**study_config.PROFILES["quick"], "folds": 1}
    monkeypatch.setitem(study_config.PROFILES, "quick", broken)
    with pytest.raises(ConfigError, match="folds must be >= 2"):
        StudyConfig(**base, profile="quick")
    assert StudyConfig(**base, profile="quick", folds=3).resolved.folds == 3
    monkeypatch.setitem(study_config.PROFILES, "quick", {**broken, "folds": 2, "steps": 2.5})
    with pytest.raises(ConfigError, match="steps must be an integer, got 2.5"):
        StudyConfig(**base, profile="quick")


def test_to_dict_records_the_given_and_the_resolved_settings(tmp_path) -> None:
    config = StudyConfig(store="s", pretrained="identity=p.pt", out="o", profile="quick",
                         sizes=[8, 4])  # fmt: skip
    d = config.to_dict()
    assert d["sizes"] == [8, 4] and d["steps"] is None and d["profile"] == "quick"
    assert d["resolved"]["sizes"] == [8, 4] and d["resolved"]["steps"] == 600
    assert d["pretrained"] == [["identity", "p.pt"]]
    assert list(d)[-1] == "resolved"


def test_profile_values_and_study_settings_name_the_same_settings() -> None:
    """`_resolve` fills StudySettings from PROFILE_KEYS: a setting added to one and not the
    other would be lost or fail."""
    import dataclasses

    from lymph.model.study import config as study_config

    fields = [f.name for f in dataclasses.fields(study_config.StudySettings)]
    assert list(study_config.ProfileValues.__annotations__) == fields
    assert list(study_config.PROFILE_KEYS) == fields
    for values in study_config.PROFILES.values():
        assert list(values) == fields
