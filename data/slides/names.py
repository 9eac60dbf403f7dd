"""Slide identity: which files are slides (`is_slide_path`, `is_mask_path`), and what each one
is called (`slide_id`, `safe_id`, `strip_slide_suffix`).

The one home of "what is this slide called". A slide's id names its zarr group in the store,
its output files (`S.csv`, `S_tumor_map.tif`), its row in the labels CSV and in scores.csv;
everything matches ids made by `slide_id`.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from lymph.data.errors import SlideError

SLIDE_SUFFIXES = frozenset({
    ".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif",
    ".dcm", ".czi", ".isyntax", ".png", ".jpg", ".jpeg", ".bmp", ".gif",
})
"""File suffixes treated as slide candidates; everything else (xml, csv, licences) is skipped
unless OpenSlide itself recognises the file. Images such as .png are candidates so that a stray
picture in a slide folder is reported, not silently ignored."""

MULTI_SUFFIXES = (".ome.tiff", ".ome.tif")
"""Suffixes of two parts: `x.ome.tif` is slide `x`, not `x.ome`."""

NOT_SLIDE_ENDINGS = ("_mask", "_tumor_map")
"""Stem endings (case-insensitive) of TIFFs that are never slides: annotation masks
(`S_mask.tif`, `S_Mask.tif`) and lymph's own probability maps (`S_tumor_map.tif`)."""

_NOT_SLIDE_SUFFIXES = frozenset({
    ".xml", ".json", ".geojson", ".csv", ".txt", ".md", ".py", ".log", ".pt", ".html", ".yaml",
    ".yml", ".toml", ".zip", ".gz",
})
"""Suffixes never handed to OpenSlide's format detection (annotations, tables, notes)."""

_MAX_ID_BYTES = 200
_UNSAFE_ID_CHARS = re.compile(r'[/\\:*?"<>|\s]')


def safe_id(name: str) -> str:
    """`name` made safe as one file name and one zarr group name, and nothing more: Unicode
    letters are kept (NFC-normalized); path separators, whitespace, control and format
    characters and the characters Windows forbids (`:*?"<>|`) become `_`; runs of dots become
    `_`; leading and trailing dots and underscores go (no hidden files, no `..`, no zarr-reserved
    `__` prefix). Idempotent. SlideError when nothing usable is left or the id is too long."""
    text = unicodedata.normalize("NFC", str(name))
    text = "".join("_" if unicodedata.category(c)[0] == "C" else c for c in text)
    text = _UNSAFE_ID_CHARS.sub("_", text)
    text = re.sub(r"\.{2,}", "_", text).strip("._")
    if not text:
        raise SlideError(f"slide name {name!r} leaves no usable id after removing unsafe "
                         "characters (path separators, control characters, dots); rename the "
                         "file")
    if len(text.encode("utf-8")) > _MAX_ID_BYTES:
        raise SlideError(f"slide name {name[:40]!r}... gives an id of "
                         f"{len(text.encode('utf-8'))} bytes, over {_MAX_ID_BYTES} (file "
                         "systems allow 255 with the output suffixes); rename the file shorter")
    return text


def strip_slide_suffix(name: str) -> str:
    """`name` without its slide suffix: `x.ome.tif` -> `x`, `tumor_001.TIF` -> `tumor_001`;
    a name without one (`Test_001`, `a.b`) is returned unchanged."""
    low = name.lower()
    for suffix in MULTI_SUFFIXES:
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    dot = name.rfind(".")
    if dot > 0 and low[dot:] in SLIDE_SUFFIXES:
        return name[:dot]
    return name


def dicom_series_name(folder: Path) -> str:
    """The name of the DICOM series in `folder`: the common prefix of its `.dcm` file stems
    (`boxes_0.dcm`, `boxes_1.dcm` -> `boxes`), else the folder's name."""
    try:
        stems = sorted(e.name[:-4] for e in os.scandir(folder)
                       if e.name.lower().endswith(".dcm") and not e.name.startswith("."))
    except OSError:
        stems = []
    return _common_prefix(stems).rstrip("_-. ") or folder.resolve().name


def slide_id(path: str | Path) -> str:
    """The id of the slide at `path` (or of a slide named `path` in a CSV): its name without the
    slide suffix, made safe by `safe_id`. `x.ome.tif` -> `x`; `CMU-1 small.svs` -> `CMU-1_small`;
    `腫瘍.tif` -> `腫瘍`; a DICOM series, given as its folder or as any of its existing `.dcm`
    files, is named by `dicom_series_name`. Only directories and existing `.dcm` files are
    looked at on disk; everything else is decided by the name alone."""
    p = Path(path)
    if p.suffix.lower() == ".dcm" and _on_disk(p, "file"):
        return safe_id(dicom_series_name(p.parent))
    if p.name and not p.name.lower().endswith(".zarr") and _on_disk(p, "dir"):
        return safe_id(dicom_series_name(p))
    return safe_id(strip_slide_suffix(p.name or str(path)))


def _on_disk(path: Path, kind: str) -> bool:
    """`path.is_file()` / `is_dir()`, False for names no file system takes (too long, NUL)."""
    try:
        return path.is_file() if kind == "file" else path.is_dir()
    except (OSError, ValueError):
        return False


def is_mask_path(path: str | Path) -> bool:
    """`S_mask.tif`, `S_Mask.tiff` (an annotation mask) or `S_tumor_map.tif` (lymph's map)."""
    stem = strip_slide_suffix(Path(path).name).lower()
    return stem != Path(path).name.lower() and stem.endswith(NOT_SLIDE_ENDINGS)


def is_slide_path(path: str | Path) -> bool:
    """Whether a file in a slide folder is a slide candidate (opened, and reported if it fails):
    a slide suffix or a file OpenSlide detects; masks, maps, hidden files and tables never."""
    p = Path(path)
    if p.name.startswith(".") or is_mask_path(p):
        return False
    suffix = p.suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return True
    if suffix in _NOT_SLIDE_SUFFIXES or not _on_disk(p, "file"):
        return False
    import openslide

    try:
        return openslide.OpenSlide.detect_format(str(p)) is not None
    except Exception:  # unreadable: not a slide candidate (permissions are reported on open)
        return False


def _common_prefix(names: Sequence[str]) -> str:
    if not names:
        return ""
    first, last = min(names), max(names)
    i = 0
    while i < min(len(first), len(last)) and first[i] == last[i]:
        i += 1
    return first[:i] if len(names) > 1 else first
