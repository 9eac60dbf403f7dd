"""Identity by content (data/identity.py): what changed in a slide file, in words."""

from __future__ import annotations

from pathlib import Path

from lymph.data.identity import file_identity, identity_change


def test_identity_change_names_what_changed(tmp_path: Path) -> None:
    f = tmp_path / "a.bin"
    f.write_bytes(b"x" * 3_000_000)
    before = file_identity(f)
    assert identity_change(before, file_identity(f)) is None
    f.write_bytes(b"x" * 2_999_999 + b"y")  # same size, last MiB differs
    change = identity_change(before, file_identity(f))
    assert change is not None and change.startswith("slide file replaced after extraction "
                                                    "(content hash ")
    assert "size" not in change
