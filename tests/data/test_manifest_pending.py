"""A pending claim in .lymph-outputs.json owns only what lymph was about to write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lymph.data.errors import OutputError
from lymph.data.io import MANIFEST_NAME, OutputManifest, atomic_write_text


def test_a_foreign_file_marked_pending_is_not_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "S.xml"
    target.write_text("<my annotation/>")
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(
        {"format": "lymph-outputs", "version": 1, "files": {"S.xml": {"pending": True}}}))
    with pytest.raises(OutputError, match=r"S.xml exists and lymph did not write it"):
        OutputManifest(tmp_path).check(target)


def test_a_claimed_file_changed_after_the_claim_is_not_overwritten(tmp_path: Path) -> None:
    m = OutputManifest(tmp_path)
    target = tmp_path / "S.csv"
    with m.writing(target):
        atomic_write_text(target, "0.9,1,2\n")
    m.mark_pending(target)  # a rewrite that was killed before writing
    m.check(target)  # unchanged since the claim: the rerun may overwrite it
    target.write_text("edited by hand\n")
    with pytest.raises(OutputError, match=r"S.csv exists and lymph did not write it"):
        m.check(target)
