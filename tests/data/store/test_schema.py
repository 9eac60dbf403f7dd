"""Store metadata inside the checksum net (data/store/schema.py): schema checks on every open,
per-slide content digests in `verify_store`, and a one-bit-flip fuzz over every zarr.json."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from lymph.data.errors import StoreError
from lymph.data.store import PatchStore, describe_store, verify_store
from tests.builders import tiny_store


def _store(path: Path, *, n: int = 3, slides: tuple[str, ...] = ("tumor_a",)) -> Path:
    return tiny_store(path, slides=slides, n=n, patch_size=4, seed=0, attrs={"mpp": 0.25})


def _edit(file: Path, fn) -> None:
    meta = json.loads(file.read_text())
    fn(meta)
    file.write_text(json.dumps(meta))


def _bad(path: Path) -> list[str]:
    return [b.error for b in verify_store(path)[1]]


def test_flipped_status_is_refused_on_open_and_by_verify(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    file = path / "slides" / "tumor_a" / "zarr.json"
    file.write_bytes(file.read_bytes().replace(b'"tumor"', b'"tumos"'))
    with pytest.raises(StoreError, match=r"slide 'tumor_a' is marked complete but its status "
                                         r"attribute is 'tumos', not one of"):
        PatchStore.open(path)
    assert any("status attribute is 'tumos'" in e for e in _bad(path))


def test_a_slide_with_damaged_metadata_is_redone_by_extract(tmp_path: Path) -> None:
    from lymph.data.store import slide_is_complete

    path = _store(tmp_path / "s.zarr")
    assert slide_is_complete(path, "tumor_a")
    file = path / "slides" / "tumor_a" / "zarr.json"
    file.write_bytes(file.read_bytes().replace(b'"tumor"', b'"tumos"'))
    assert not slide_is_complete(path, "tumor_a")  # the rerun the error message promises


def test_shape_changed_in_array_metadata_is_refused(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    _edit(path / "slides/tumor_a/images/zarr.json", lambda m: m.update(shape=[3, 5, 4, 3]))
    with pytest.raises(StoreError, match=r"array 'images' .* has shape \[3, 5, 4, 3\], not "
                                         r"\[3, 4, 4, 3\]"):
        PatchStore.open(path)


def test_channels_changed_in_array_metadata_is_refused(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    _edit(path / "slides/tumor_a/images/zarr.json", lambda m: m.update(shape=[3, 4, 4, 2]))
    with pytest.raises(StoreError, match=r"has shape \[3, 4, 4, 2\]"):
        PatchStore.open(path)


def test_dtype_changed_is_refused(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    _edit(path / "slides/tumor_a/labels/zarr.json", lambda m: m.update(data_type="int8"))
    with pytest.raises(StoreError, match=r"has data type 'int8', not 'uint8'"):
        PatchStore.open(path)


def test_removed_crc32c_codec_is_refused(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    _edit(path / "slides/tumor_a/images/zarr.json",
          lambda m: m.update(codecs=[c for c in m["codecs"] if c["name"] != "crc32c"]))
    with pytest.raises(StoreError, match=r"has codecs \['bytes', 'blosc'\], not \['bytes', "
                                         r"'blosc', 'crc32c'\]"):
        PatchStore.open(path)
    assert any("crc32c checksum must be last" in e for e in _bad(path))


def test_chunk_shape_changed_is_refused(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    _edit(path / "slides/tumor_a/masks/zarr.json",
          lambda m: m["chunk_grid"]["configuration"].update(chunk_shape=[32, 4, 4]))
    with pytest.raises(StoreError, match=r"has 32 patches per chunk, not 64"):
        PatchStore.open(path)


@pytest.mark.parametrize("damage", ["json", "unicode", "permission"])
def test_unreadable_slide_metadata_is_one_line_naming_the_file(
    tmp_path: Path, damage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _store(tmp_path / "s.zarr")
    file = path / "slides" / "tumor_a" / "zarr.json"
    if damage == "json":
        file.write_bytes(file.read_bytes()[:-5])
    elif damage == "unicode":
        file.write_bytes(file.read_bytes().replace(b"tumor_a.tif", b"tumor_\xff.tif"))
    elif os.geteuid() != 0:
        file.chmod(0)
    else:  # root reads any file: the kernel's refusal, as an unprivileged user gets it
        import errno

        real = Path.read_bytes

        def refuse(self: Path) -> bytes:
            if self == file:
                raise PermissionError(errno.EACCES, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(Path, "read_bytes", refuse)
    why = {"json": "JSONDecodeError", "unicode": "UnicodeDecodeError",
           "permission": "PermissionError"}[damage]
    with pytest.raises(StoreError, match=rf"slides/tumor_a/zarr.json: unreadable metadata "
                                         rf"\({why}"):
        PatchStore.open(path)
    info = describe_store(path)
    assert info["slides"][0]["complete"] is False and why in info["slides"][0]["damage"]
    assert any(why in e for e in _bad(path))


def test_swapped_chunks_are_caught_by_the_digest(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr", n=130)
    c = path / "slides/tumor_a/images/c"
    a, b = c / "0/0/0/0", c / "1/0/0/0"
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    assert any("content digest does not match" in e for e in _bad(path))


def test_chunk_copied_from_another_slide_is_caught_by_the_digest(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr", slides=("tumor_a", "tumor_b"))
    shutil.copy(path / "slides/tumor_b/coords/c/0/0", path / "slides/tumor_a/coords/c/0/0")
    bad = verify_store(path)[1]
    assert [(b.slide_id, b.array) for b in bad] == [("tumor_a", "zarr.json")]
    assert "content digest does not match" in bad[0].error


def test_changed_attribute_and_setting_are_caught_by_the_digest(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    _edit(path / "slides/tumor_a/zarr.json", lambda m: m["attributes"].update(mpp=0.5))
    assert any("content digest does not match" in e for e in _bad(path))
    _edit(path / "slides/tumor_a/zarr.json", lambda m: m["attributes"].update(mpp=0.25))
    assert _bad(path) == []
    _edit(path / "zarr.json", lambda m: m["attributes"]["lymph"].update(seed=1))
    assert any("content digest does not match" in e for e in _bad(path))


def test_missing_digest_is_reported(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    _edit(path / "slides/tumor_a/zarr.json", lambda m: m["attributes"].pop("digest"))
    assert any("no content digest recorded" in e for e in _bad(path))


# --- one-bit flips of every metadata file -------------------------------------------------


def _snapshot(path: Path) -> object:
    store = PatchStore.open(path)
    out = []
    for s in store.slides:
        batch = store.read(s.slide_id, 0, s.n_patches)
        out.append((s.slide_id, s.status, s.n_patches, s.n_tumor, batch.images.tobytes(),
                    batch.coords.tobytes(), batch.labels.tobytes(), batch.masks.tobytes()))
    return out


def _flip_outcome(path: Path, reference: object) -> str:
    """'error' (one-line StoreError), 'bad' (verify lists it) or 'equal' (verify clean and
    data equal); AssertionError on a traceback or a silent change."""
    try:
        bad = verify_store(path)[1]
    except StoreError as exc:
        assert "\n" not in str(exc), str(exc)
        return "error"
    if bad:
        assert all("\n" not in b.error for b in bad)
        try:  # readers (train, eval) on the flagged store: a StoreError line, never a traceback
            _snapshot(path)
        except StoreError as exc:
            assert "\n" not in str(exc)
        return "bad"
    try:
        got = _snapshot(path)
    except StoreError as exc:
        assert "\n" not in str(exc)
        return "error"
    assert got == reference, "a flip changed the data with verify clean"
    return "equal"


def _fuzz(tmp_path: Path, *, sample: int | None, seed: int = 0) -> dict[str, int]:
    base = _store(tmp_path / "base.zarr")
    reference = _snapshot(base)
    work = tmp_path / "work.zarr"
    shutil.copytree(base, work)
    files = sorted(p.relative_to(base) for p in base.rglob("zarr.json"))
    flips = [(f, bit) for f in files for bit in range((base / f).stat().st_size * 8)]
    if sample is not None:
        rng = np.random.default_rng(seed)
        flips = [flips[i] for i in sorted(rng.choice(len(flips), sample, replace=False))]
    counts: dict[str, int] = {}
    for rel, bit in flips:
        original = (base / rel).read_bytes()
        data = bytearray(original)
        data[bit // 8] ^= 1 << (bit % 8)
        (work / rel).write_bytes(bytes(data))
        try:
            outcome = _flip_outcome(work, reference)
        except Exception as exc:
            raise AssertionError(f"flip of bit {bit} of {rel}: {type(exc).__name__}: {exc}") \
                from exc
        finally:
            (work / rel).write_bytes(original)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def test_sampled_one_bit_flips_of_metadata_are_caught_or_harmless(tmp_path: Path) -> None:
    counts = _fuzz(tmp_path, sample=150)
    assert sum(counts.values()) == 150 and counts.get("error", 0) + counts.get("bad", 0) > 100


@pytest.mark.slow
def test_every_one_bit_flip_of_metadata_is_caught_or_harmless(tmp_path: Path) -> None:
    counts = _fuzz(tmp_path, sample=None)
    print(f"one-bit flips of every zarr.json: {counts}")  # pytest -m slow -s shows it
    assert counts.get("error", 0) + counts.get("bad", 0) > 0


def test_info_on_a_store_left_by_a_full_disk_lists_every_slide_quietly(tmp_path: Path) -> None:
    import warnings

    path = _store(tmp_path / "s.zarr", slides=("tumor_a", "tumor_b", "tumor_c"))
    for sid in ("tumor_b", "tumor_c"):
        (path / "slides" / sid / "zarr.json").write_bytes(b"")  # the write that found no space
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zarr's six ZarrUserWarning lines were printed here
        info = describe_store(path)
    assert [s["slide_id"] for s in info["slides"]] == ["tumor_a", "tumor_b", "tumor_c"]
    assert [s["complete"] for s in info["slides"]] == [True, False, False]
    assert "slides/tumor_b/zarr.json: unreadable metadata (JSONDecodeError" in \
        info["slides"][1]["damage"]
