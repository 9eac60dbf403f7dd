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
    with pytest.raises(ConfigError, match="--quick and --profile standard disagree"):
        StudyConfig(**base, quick=True, profile="standard")
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
    quick = StudyConfig(**base, quick=True)
    assert quick.profile == "quick" and quick.resolved("steps") is not None
    assert StudyConfig(**base, profile="quick", steps=7).resolved("steps") == 7
    assert parse_pretrained(["genesis=a.pt", "b.pt"]) == (("genesis", Path("a.pt")),
                                                          (None, Path("b.pt")))  # fmt: skip
