"""Slide discovery: the slides under a folder (`discover_slides`), each with a unique id, and
the problems (dangling links, id collisions) a batch reports as failed slides."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lymph.data.errors import SlideError
from lymph.data.slides.names import (
    SLIDE_SUFFIXES,
    dicom_series_name,
    is_slide_path,
    safe_id,
    slide_id,
)


@dataclass(frozen=True)
class FoundSlide:
    """One slide found by `discover_slides`. `id`: unique within the discovery (see there);
    `path`: what to open (a DICOM series: its first `.dcm` file; OpenSlide finds the rest);
    `name`: the slide's name relative to the searched folder, `/`-separated (a DICOM series:
    `sub/<series>.dcm`); `files`: every file of the slide."""

    id: str
    path: Path
    name: str
    files: tuple[Path, ...]


@dataclass(frozen=True)
class SlideProblem:
    """A slide that cannot take part: `path` (the file, or the first of the colliding files)
    and a one-line `message` naming the file(s) and the fix. Callers list these as failed."""

    path: Path
    message: str


@dataclass(frozen=True)
class Discovery:
    """The result of `discover_slides`: the usable `slides` (sorted by name) and the `problems`
    (dangling links, id collisions, unusable names), which the batch reports as failed slides
    while the other slides go on."""

    root: Path
    slides: tuple[FoundSlide, ...]
    problems: tuple[SlideProblem, ...] = ()

    def __len__(self) -> int:
        return len(self.slides)

    def __iter__(self) -> Iterator[FoundSlide]:
        return iter(self.slides)

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.slides]

    def failed(self) -> list[tuple[str, str]]:
        """The problems as (source, "file: cause") pairs, the form batch summaries list."""
        return [(str(p.path), p.message) for p in self.problems]


def discover_slides(path: str | Path) -> Discovery:
    """The slides under `path`: a folder (searched recursively, hidden and `*.zarr` folders
    skipped), or one slide file or DICOM series folder.

    Candidates are decided by `is_slide_path`. The `.dcm` files of one folder are ONE DICOM
    slide. Ids are `slide_id(path)`; where two slides' ids collide (case-insensitively, since
    stores and outputs may live on case-insensitive disks), both take their name with the suffix
    (`boxes.tiff`, `boxes.dcm` -> `boxes_tiff`, `boxes_dcm`), then their relative path
    (`a/x.tif`, `b/x.tif` -> `a_x_tif`, `b_x_tif`); slides still colliding after that
    (`tumor 001.tif` beside `tumor_001.tif`) are problems naming every file involved. Dangling
    symlinks with a slide suffix are problems too. SlideError when `path` does not exist.
    """
    root = Path(path)
    if not root.exists():
        kind = "dangling symlink" if root.is_symlink() else "no such slide file or folder"
        raise SlideError(f"{root}: {kind}; pass the folder that holds the slides (or one slide)")
    if root.is_file() or (root.is_dir() and _is_dicom_folder(root)):
        files = tuple(sorted(root.glob("*.dcm"))) if root.is_dir() else (root,)
        found = [(root.name, files[0] if root.is_dir() else root, files)]
        return _assign_ids(root.parent, found, [])
    found, problems = _walk(root)
    return _assign_ids(root, found, problems)


def _is_dicom_folder(folder: Path) -> bool:
    """A folder whose visible files are all `.dcm` (a DICOM series given on its own)."""
    files = [e for e in os.scandir(folder) if not e.name.startswith(".")]
    return bool(files) and all(e.is_file() and e.name.lower().endswith(".dcm") for e in files)


_Found = tuple[str, Path, tuple[Path, ...]]  # (relative name, path to open, all files)


def _walk(root: Path) -> tuple[list[_Found], list[SlideProblem]]:
    """Candidate slides under `root` (sorted) and the dangling links among them."""
    found: list[_Found] = []
    problems: list[SlideProblem] = []
    dicom: dict[Path, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and not d.lower().endswith(".zarr"))
        folder = Path(dirpath)
        for fname in sorted(filenames):
            p = folder / fname
            rel = p.relative_to(root).as_posix()
            if fname.startswith("."):
                continue
            if p.is_symlink() and not p.exists():
                if Path(fname).suffix.lower() in SLIDE_SUFFIXES:
                    problems.append(SlideProblem(p, f"{p}: dangling symlink to "
                                                    f"{os.readlink(p)}; fix or remove the link"))
                continue
            if fname.lower().endswith(".dcm"):
                dicom.setdefault(folder, []).append(p)
            elif is_slide_path(p):
                found.append((rel, p, (p,)))
    for folder, files in dicom.items():
        rel_folder = folder.relative_to(root).as_posix()
        name = f"{dicom_series_name(folder)}.dcm"
        found.append((name if rel_folder == "." else f"{rel_folder}/{name}", files[0],
                      tuple(files)))
    return sorted(found), problems


def _id_candidates(name: str, path: Path) -> list[str]:
    """Ids of one slide, most preferred first: its `slide_id`, its name with the suffix, its
    relative path."""
    base = name.rsplit("/", 1)[-1]
    return [slide_id(path), safe_id(base.replace(".", "_")),
            safe_id(name.replace("/", "_").replace(".", "_"))]


def _assign_ids(root: Path, found: list[_Found], problems: list[SlideProblem]) -> Discovery:
    """Unique ids for `found` (see `discover_slides`); unusable names and collisions become
    problems."""
    cands: list[tuple[_Found, list[str]]] = []
    for item in found:
        try:
            cands.append((item, _id_candidates(item[0], item[1])))
        except SlideError as exc:
            problems.append(SlideProblem(item[1], str(exc)))
    ids = [c[0] for _, c in cands]
    for level in (1, 2):
        counts: dict[str, int] = {}
        for i in ids:
            counts[i.casefold()] = counts.get(i.casefold(), 0) + 1
        ids = [c[level] if counts[i.casefold()] > 1 else i
               for (_, c), i in zip(cands, ids, strict=True)]
    groups: dict[str, list[int]] = {}
    for k, i in enumerate(ids):
        groups.setdefault(i.casefold(), []).append(k)
    slides: list[FoundSlide] = []
    for k, ((name, path, files), _) in enumerate(cands):
        same = groups[ids[k].casefold()]
        if len(same) > 1:
            others = ", ".join(str(cands[j][0][1]) for j in same)
            problems.append(SlideProblem(path, f"{path}: slide id {ids[k]!r} is also the id of "
                                         f"another slide ({others}); rename one of them"))
        else:
            slides.append(FoundSlide(ids[k], path, name, files))
    return Discovery(root, tuple(sorted(slides, key=lambda s: s.name)), tuple(problems))
