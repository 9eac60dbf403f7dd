"""Is a slide whole? `slide_damage` (arrays present, of `n_patches`, chunk files present),
`slide_is_complete` (what `lymph extract` skips), `describe_store` (`lymph info`) and
`verify_store` (`lymph info --verify`: every chunk decoded, every digest recomputed). Slides
are walked by `groups.slide_entries` and chunks checked by `chunks.chunk_problems`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from lymph.data.errors import StoreError
from lymph.data.store.chunks import chunk_problems, n_chunks
from lymph.data.store.groups import (
    SlideEntry,
    open_for_reading,
    open_slide_group,
    slide_entries,
)
from lymph.data.store.layout import (
    CHUNK_PATCHES,
    LABELED_STATUSES,
    SLIDES,
    array_names,
)
from lymph.data.store.schema import digest_problem, read_meta, slide_problem

if TYPE_CHECKING:
    import zarr


def slide_damage(store: Path, slide_id: str, group: zarr.Group, *,
                 chunks: bool = True) -> str | None:
    """Why slide group `group` (slide `slide_id` of the store at `store`) marked complete is not
    (an array missing, too short, a chunk file missing), or None if it is whole.
    `chunks=False` checks the arrays' metadata only."""
    attrs = group.attrs.asdict()
    n = attrs.get("n_patches")
    if not isinstance(n, int) or n < 0:
        return f"its n_patches attribute is {n!r}"
    for name in array_names(str(attrs.get("status", "unlabeled"))):
        try:
            array = cast("zarr.Array", group[name])
        except Exception:  # KeyError, or zarr's errors on a broken zarr.json
            return f"array {name!r} is missing"
        if array.shape[0] != n:
            return f"array {name!r} holds {array.shape[0]} patches, not n_patches {n}"
        if chunks:
            for i, _ in chunk_problems(store, slide_id, name, array, decode=False):
                return f"array {name!r} chunk {i} is missing"
    return None


def slide_state(root: zarr.Group, store: Path, entry: SlideEntry, *,
                chunks: bool) -> tuple[dict[str, Any], bool, str | None]:
    """(attrs, complete, damage) of one slide group: complete only if marked complete, its
    metadata matching the schema (`entry`) and whole (`slide_damage`). Raises the entry's
    StoreError when its metadata cannot be read."""
    if entry.error is not None:
        raise entry.error
    attrs = entry.attrs
    if not entry.marked_complete:
        return attrs, False, None
    if entry.problem is not None:
        return attrs, False, entry.problem
    group = cast("zarr.Group", cast("zarr.Group", root[SLIDES])[entry.slide_id])
    damage = slide_damage(store, entry.slide_id, group, chunks=chunks)
    return attrs, damage is None, damage


def slide_is_complete(path: str | Path, slide_id: str) -> bool:
    """Marked complete, its metadata matching the schema (`schema.slide_problem`) and
    every array whole, every chunk file present (else a rerun redoes it)."""
    path = Path(path)
    try:
        settings = read_meta(path / "zarr.json").get("attributes", {}).get("lymph", {})
        attrs, problem = slide_problem(path, slide_id, settings, chunk_patches=CHUNK_PATCHES)
        if problem is not None or not attrs.get("complete"):
            return False
        g = open_slide_group(path, slide_id)
    except Exception:  # unreadable metadata: damaged, so redone
        return False
    return bool(g.attrs.get("complete", False)) and slide_damage(path, slide_id, g) is None


def damaged_message(path: Path, slide_id: str, damage: str) -> str:
    return (f"{path}: slide {slide_id!r} is marked complete but {damage}; rerun `lymph extract` "
            "with the store's settings (it redoes damaged slides), or re-extract into a new "
            "--out")


def _slide_row(sid: str, attrs: dict[str, Any], complete: bool,
               damage: str | None) -> dict[str, Any]:
    """One slide as `describe_store` lists it."""
    n = int(attrs.get("n_patches", 0)) if complete else 0
    n_tumor = int(attrs.get("n_tumor", 0)) if complete else 0
    status = attrs.get("status", "unlabeled")
    labeled = status in LABELED_STATUSES
    return {
        "slide_id": sid, "status": status, "complete": complete, "damage": damage,
        "n_patches": n, "n_tumor": n_tumor if labeled else None,
        "n_non_tumor": n - n_tumor if labeled else None,
        "tissue_fraction": attrs.get("tissue_fraction"), "mpp": attrs.get("mpp"),
        "source": attrs.get("source"), "warnings": attrs.get("warnings", []),
    }


def describe_store(path: str | Path) -> dict[str, Any]:
    """Everything `lymph info` shows: schema version, settings, and every slide group (complete
    or not) with its status and patch counts per class. A slide marked complete whose arrays or
    chunk files are missing is not complete (`damage` says why). StoreError if `path` is no
    lymph store."""
    path, root, settings = open_for_reading(path)
    slides = []
    for entry in slide_entries(path, settings):
        try:
            attrs, complete, damage = slide_state(root, path, entry, chunks=True)
        except StoreError as exc:  # its metadata cannot be read: listed as damaged
            attrs, complete, damage = {}, False, str(exc)
        slides.append(_slide_row(entry.slide_id, attrs, complete, damage))
    done = [s for s in slides if s["complete"]]
    return {
        "path": str(path),
        "schema_version": settings.get("schema_version"),
        "settings": {k: v for k, v in settings.items() if k != "schema_version"},
        "slides": slides,
        "complete": bool(slides) and len(done) == len(slides),
        "totals": {
            "slides": len(slides), "complete_slides": len(done),
            "patches": sum(s["n_patches"] for s in done),
            "tumor": sum(s["n_tumor"] or 0 for s in done),
            "non_tumor": sum(s["n_non_tumor"] or 0 for s in done),
            "unlabeled": sum(s["n_patches"] for s in done if s["n_tumor"] is None),
        },
    }


@dataclass(frozen=True)
class BadChunk:
    slide_id: str
    array: str
    chunk: int | None  # None: the whole array (missing or too short)
    error: str


def verify_store(path: str | Path) -> tuple[int, list[BadChunk]]:
    """Read and checksum every chunk of every slide marked complete: (chunks read, bad ones).
    Each slide's metadata is checked against the schema first (`schema.slide_problem`)
    and its content digest recomputed (`schema.digest_problem`: swapped or foreign
    chunks, changed attributes or settings). Incomplete slides (a killed run) are not checked:
    `lymph extract` redoes them."""
    path, root, settings = open_for_reading(path)
    checked, bad = 0, []
    for entry in slide_entries(path, settings):
        sid = entry.slide_id
        if entry.error is not None:
            bad.append(BadChunk(sid, "zarr.json", None, str(entry.error)))
            continue
        if not entry.marked_complete:
            continue
        if entry.problem is not None:
            bad.append(BadChunk(sid, "zarr.json", None, f"slide {sid!r}: {entry.problem}"))
            continue
        n, found = _verify_arrays(root, path, sid, str(entry.attrs.get("status", "unlabeled")))
        checked += n
        bad.extend(found)
        problem = digest_problem(path, sid, settings, entry.attrs) if not found else None
        if problem is not None:  # every chunk sound, but not the slide's chunks
            bad.append(BadChunk(sid, "zarr.json", None, f"slide {sid!r}: {problem}"))
    return checked, bad


def _verify_arrays(root: zarr.Group, path: Path, sid: str,
                   status: str) -> tuple[int, list[BadChunk]]:
    """(chunks read, bad ones) of one slide's arrays, every chunk decoded."""
    checked, bad = 0, []
    for name in array_names(status):
        try:
            array = cast("zarr.Array", root[f"{SLIDES}/{sid}/{name}"])
        except Exception as exc:  # zarr's own checks of a document that passed ours
            bad.append(BadChunk(sid, name, None, f"slide {sid!r}: array {name!r} cannot be "
                                f"opened ({type(exc).__name__}: {exc})".splitlines()[0]))
            continue
        checked += n_chunks(array)
        bad.extend(BadChunk(sid, name, i, error)
                   for i, error in chunk_problems(path, sid, name, array, decode=True))
    return checked, bad
