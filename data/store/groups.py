"""The store's zarr groups: the root (opened, created, its header of settings checked against a
run's), the writer lock, and `slide_entries`, the one walk over a store's slide groups that
opening, `lymph info`, `--verify` and the training mpp all use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lymph.data.errors import NotAStoreError, OutputError, StoreError
from lymph.data.io import explain_os_error
from lymph.data.lock import LOCK_FILE, folder_lock
from lymph.data.store.layout import (
    CHUNK_PATCHES,
    RUNTIME_SETTINGS,
    SCHEMA_VERSION,
    SLIDES,
    jsonable,
)
from lymph.data.store.schema import check_group_meta, read_meta, slide_problem

if TYPE_CHECKING:
    import zarr


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """OS errors while writing the store (read-only, disk full) become one-line OutputErrors."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, OutputError):
            raise
        raise explain_os_error(Path(getattr(exc, "filename", None) or path), exc) from exc


def open_root(path: Path, mode: Literal["r", "r+", "a"]) -> zarr.Group:
    """The store's root group (its zarr.json checked as a plain group document first); a
    NotAStoreError for anything that is not a zarr v3 group."""
    import zarr

    if (path / "zarr.json").is_file():  # one line naming the file for any damage
        check_group_meta(path / "zarr.json")
    try:
        return zarr.open_group(str(path), mode=mode, zarr_format=3)
    except OSError as exc:
        if mode == "r" and isinstance(exc, FileNotFoundError):
            raise NotAStoreError(f"{path}: not a zarr v3 group (no zarr.json); make one with "
                                 "`lymph extract --slides DIR --out STORE`") from exc
        raise explain_os_error(path, exc) from exc
    except Exception as exc:  # zarr raises several types for "not a group"
        raise NotAStoreError(
            f"{path}: not a zarr v3 group ({type(exc).__name__}: {exc}); "
            "make one with `lymph extract --slides DIR --out STORE`"
        ) from exc


def check_header(path: Path, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The store's settings (`attrs["lymph"]`), refused unless of this schema version."""
    meta = attrs.get("lymph")
    if not isinstance(meta, dict):
        raise StoreError(
            f"{path}: a zarr group but not a lymph store (no 'lymph' attribute); "
            "make one with `lymph extract`"
        )
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        why = " (version 2 adds chunk checksums)" if version == 1 else ""
        raise StoreError(
            f"{path}: store schema version {version!r}, this lymph reads version "
            f"{SCHEMA_VERSION}{why}; re-extract into a new --out with this lymph: "
            "`lymph extract --slides DIR --out NEW_STORE`"
        )
    return dict(meta)


def differing_settings(stored: Mapping[str, Any], wanted: Mapping[str, Any]
                       ) -> dict[str, tuple[Any, Any]]:
    """Settings whose values differ, ignoring runtime-only ones: {name: (stored, wanted)}."""
    keys = (set(stored) | set(wanted)) - RUNTIME_SETTINGS - {"schema_version"}
    out = {}
    for key in sorted(keys):
        a, b = jsonable(stored.get(key)), jsonable(wanted.get(key))
        if a != b:
            out[key] = (a, b)
    return out


def create_store(path: str | Path, settings: Mapping[str, Any]) -> None:
    """Create a new store with `settings`, or check an existing one was made with the same.

    Raises StoreError naming every differing setting, so a rerun can never mix patches drawn
    with different settings in one store.
    """
    from lymph import __version__

    path = Path(path)
    meta = {"schema_version": SCHEMA_VERSION, **jsonable(dict(settings))}
    meta["lymph_version"] = __version__
    check_out(path)
    if (path / "zarr.json").exists():
        root = open_root(path, "r+")
        stored = check_header(path, root.attrs)
        diff = differing_settings(stored, meta)
        if diff:
            lines = ", ".join(f"{k}: store has {a!r}, this run asks {b!r}" for k, a, b in
                              ((k, *v) for k, v in diff.items()))
            raise StoreError(
                f"{path}: made with other settings ({lines}); rerun with the store's settings, "
                "or write to a new --out"
            )
        with writing(path):
            root.require_group(SLIDES)
        return
    with writing(path):
        path.mkdir(parents=True, exist_ok=True)
        root = open_root(path, "a")  # "a", not "w": "w" would delete the lock file
        root.require_group(SLIDES)
        root.attrs["lymph"] = meta


def check_out(path: str | Path) -> None:
    """Refuse, without touching it, an output that is a regular file or an existing folder that
    is not a lymph store of this schema version (a folder holding only the lock file is fine)."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise StoreError(f"--out {path}: a dangling symlink; point it at a folder or choose "
                         "another --out")
    if path.exists() and not path.is_dir():
        raise StoreError(f"--out {path}: is a regular file, not a store folder; choose a new "
                         "folder path for --out")
    if not path.is_dir():
        return
    if (path / "zarr.json").is_file():
        check_header(path, open_root(path, "r").attrs)
        return
    try:
        foreign = sorted(p.name for p in path.iterdir() if p.name != LOCK_FILE)
    except OSError as exc:
        raise explain_os_error(path, exc) from exc
    if foreign:
        raise StoreError(
            f"--out {path}: an existing folder that is not a lymph store ({len(foreign)} "
            f"entries lymph did not write, e.g. {foreign[0]!r}); nothing in it was changed. "
            "Extract into a new or empty folder"
        )


@contextlib.contextmanager
def writer_lock(path: str | Path, *, command: str | None = None) -> Iterator[dict[str, Any]]:
    """Hold the store's exclusive writer lock for the block (creating the folder if needed):
    `lymph.data.lock.folder_lock`, whose refusals (a second writer, named; a symlinked or
    foreign lock file, untouched) are StoreErrors here. Workers of a dask batch write under
    their client's lock."""
    with folder_lock(path, what="this store", error=StoreError, command=command) as info:
        yield info


def open_for_reading(path: str | Path) -> tuple[Path, zarr.Group, dict[str, Any]]:
    """(path, root group, settings) of an existing store; StoreError naming the fix otherwise."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store; make one with `lymph extract --out {path}`")
    if not path.is_dir():
        raise StoreError(f"{path}: a regular file, not a store folder; pass the folder that "
                         "`lymph extract --out` wrote")
    root = open_root(path, "r")
    return path, root, check_header(path, root.attrs)


def slide_ids(path: Path) -> list[str]:
    """The slide groups of a store, listed from its folder (a slide whose zarr.json is broken
    is listed, to be reported, rather than breaking the listing)."""
    folder = path / SLIDES
    if not (folder / "zarr.json").exists():
        return []
    check_group_meta(folder / "zarr.json")
    try:
        return sorted(d.name for d in folder.iterdir() if (d / "zarr.json").exists())
    except OSError as exc:
        raise explain_os_error(folder, exc) from exc


@dataclass(frozen=True)
class SlideEntry:
    """One slide group as its raw metadata stands (`schema.slide_problem`): `attrs`, and
    `problem` (why a slide marked complete breaks the schema) or `error` (its metadata cannot
    be read; `attrs` is then empty)."""

    slide_id: str
    attrs: dict[str, Any] = field(repr=False)
    problem: str | None = None
    error: StoreError | None = None

    @property
    def marked_complete(self) -> bool:
        return bool(self.attrs.get("complete"))


def slide_entries(path: Path, settings: Mapping[str, Any]) -> Iterator[SlideEntry]:
    """Every slide group of the store at `path` (`slide_ids`), its metadata checked against the
    schema from the raw files (`schema.slide_problem`)."""
    for sid in slide_ids(path):
        try:
            attrs, problem = slide_problem(path, sid, settings, chunk_patches=CHUNK_PATCHES)
        except StoreError as exc:
            yield SlideEntry(sid, {}, error=exc)
            continue
        yield SlideEntry(sid, attrs, problem=problem)


def all_slide_attrs(path: str | Path) -> list[dict[str, Any]]:
    """The attributes of every slide group of a store, complete or not; StoreError when a
    slide's metadata cannot be read."""
    path = Path(path)
    settings = read_meta(path / "zarr.json").get("attributes", {}).get("lymph", {})
    out = []
    for entry in slide_entries(path, settings):
        if entry.error is not None:
            raise entry.error
        out.append(entry.attrs)
    return out


def open_slide_group(path: Path, slide_id: str) -> zarr.Group:
    """A slide's group, read-only."""
    import zarr

    return zarr.open_group(str(path / SLIDES / slide_id), mode="r", zarr_format=3)


def slide_attrs(path: str | Path, slide_id: str) -> dict[str, Any]:
    """The attributes of one slide group, as zarr reads them."""
    return open_slide_group(Path(path), slide_id).attrs.asdict()


def single_threaded_reads() -> None:
    """Decode chunks in one zarr thread in this process (set before its first read)."""
    import zarr

    zarr.config.set({"threading.max_workers": 1})
