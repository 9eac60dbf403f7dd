"""The output manifest: lymph overwrites only what it wrote itself."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from lymph.data.errors import OutputError
from lymph.data.io import MANIFEST_NAME, OutputManifest, atomic_write_text, ensure_dir


def test_a_file_lymph_wrote_may_be_rewritten(tmp_path: Path) -> None:
    m = OutputManifest(tmp_path)
    target = tmp_path / "S.csv"
    with m.writing(target):
        atomic_write_text(target, "a\n")
    with m.writing(target):  # unchanged since lymph wrote it: allowed
        atomic_write_text(target, "b\n")
    entry = json.loads((tmp_path / MANIFEST_NAME).read_text())["files"]["S.csv"]
    assert entry["size"] == 2 and len(entry["sha256"]) == 64 and target.read_text() == "b\n"


def test_written_is_the_state_recorded_when_written_not_a_pending_claim(tmp_path: Path) -> None:
    m = OutputManifest(tmp_path)
    target = tmp_path / "S_map.tif"
    assert m.written(target) is None  # never written
    m.mark_pending(target)
    assert m.written(target) is None  # claimed, not finished
    with m.writing(target):
        atomic_write_text(target, "abc")
    state = m.written(target)
    assert state is not None and state["size"] == 3 and len(state["sha256"]) == 64
    target.write_text("changed")  # the record says what lymph wrote, not what is there now
    assert m.written(target) == state


def test_a_foreign_file_is_refused_and_kept(tmp_path: Path) -> None:
    truth = tmp_path / "tumor_002.xml"
    truth.write_text("<ASAP_Annotations/>")
    m = OutputManifest(tmp_path)
    with pytest.raises(OutputError, match=r"tumor_002.xml exists and lymph did not write it.*"
                                          r"another --out.*--force"):
        with m.writing(truth):
            atomic_write_text(truth, "overwritten")
    assert truth.read_text() == "<ASAP_Annotations/>"
    with OutputManifest(tmp_path, force=True).writing(truth):
        atomic_write_text(truth, "overwritten")
    assert truth.read_text() == "overwritten"


def test_a_file_changed_since_lymph_wrote_it_is_refused(tmp_path: Path) -> None:
    m = OutputManifest(tmp_path)
    target = tmp_path / "S.geojson"
    with m.writing(target):
        atomic_write_text(target, "{}\n")
    target.write_text('{"edited": "by hand"}\n')
    with pytest.raises(OutputError, match="S.geojson exists and lymph did not write it"):
        m.check(target)


def test_a_writer_killed_mid_write_still_owns_its_file(tmp_path: Path) -> None:
    m = OutputManifest(tmp_path)
    target = tmp_path / "S_tumor_map.tif"
    m.mark_pending(target)
    target.write_bytes(b"half a file")  # killed before record()
    m.check(target)  # the rerun may overwrite it


def test_read_only_or_file_out_is_one_line_output_error(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    regular = tmp_path / "file"
    regular.write_text("x")
    with pytest.raises(OutputError, match="it is a regular file, not a folder"):
        ensure_dir(regular)

    def refuse(self: Path, *a: object, **k: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(OutputError, match=r"cannot write .*ro.*read-only mount"):
        OutputManifest(tmp_path / "ro").ensure_writable()


def test_a_manifest_hashes_each_version_of_a_file_once(tmp_path: Path, monkeypatch) -> None:
    import os

    import lymph.data.io as io_module

    m = OutputManifest(tmp_path)
    target = tmp_path / "tumor_001.tif"
    with m.writing(target):
        atomic_write_text(target, "slide")
    calls: list[Path] = []
    real = io_module._digest
    monkeypatch.setattr(io_module, "_digest", lambda p: calls.append(p) or real(p))
    m.check(target)
    assert m.recorded(target) and calls == []  # hashed when recorded: no second read
    target.write_text("other")  # a new version (new mtime): hashed again, and refused
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert not m.recorded(target) and len(calls) == 1
