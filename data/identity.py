"""Identity by content, not by path: a slide file's size, mtime and a cheap content hash, and a
store's content digest.

- `file_identity` (recorded by extract as the slide attribute `source_identity`, and by predict
  in each slide's `_predict.json`): size, mtime and sha256 of the file's first and last MiB
  (of a DICOM folder: its files' names and sizes). Reading 2 MiB costs milliseconds on a
  gigapixel slide, and two different scans differ in their first or last MiB (headers, tile
  offsets, the last tiles).
- `identity_change`: what changed between two identities, in words ("slide file replaced
  after extraction: size 1234 -> 5678, content hash ab12... -> cd34..."), or None. A different
  mtime alone (a copy, a touch) is not a change.
- `store_content_digest`: sha256 over every complete slide's id and content digest
  (`lymph.data.store.schema.slide_digest`), which a checkpoint records; `train --resume`
  refuses a store whose digest changed (re-extracted with another seed, a slide redone).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lymph.data.store import SlideInfo

MIB = 1 << 20


def file_identity(path: str | os.PathLike) -> dict[str, Any] | None:
    """{"size", "mtime", "sha256_ends"} of a slide file or folder; None if it cannot be read."""
    path = Path(path)
    h = hashlib.sha256()
    try:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            size = sum(p.stat().st_size for p in files)
            mtime = max((p.stat().st_mtime for p in files), default=path.stat().st_mtime)
            for p in files:
                h.update(f"{p.relative_to(path)}\0{p.stat().st_size}\n".encode("utf-8",
                                                                              "surrogateescape"))
        else:
            st = path.stat()
            size, mtime = st.st_size, st.st_mtime
            with open(path, "rb") as fh:
                h.update(fh.read(MIB))
                if size > MIB:
                    fh.seek(max(MIB, size - MIB))
                    h.update(fh.read(MIB))
            h.update(str(size).encode())
    except OSError:
        return None
    return {"size": int(size), "mtime": round(float(mtime), 3), "sha256_ends": h.hexdigest()}


def identity_change(recorded: object, current: Mapping[str, Any] | None, *,
                    what: str = "slide file replaced after extraction") -> str | None:
    """`what` and the differing size / content hash, or None when they match (or nothing was
    recorded: a store or prediction made before identities were recorded)."""
    if not isinstance(recorded, Mapping) or "sha256_ends" not in recorded:
        return None
    if current is None:
        return f"{what}: the file can no longer be read"
    diffs = []
    if recorded.get("size") != current.get("size"):
        diffs.append(f"size {recorded.get('size')} -> {current.get('size')} bytes")
    if recorded.get("sha256_ends") != current.get("sha256_ends"):
        diffs.append(f"content hash {str(recorded.get('sha256_ends'))[:12]}... -> "
                     f"{str(current.get('sha256_ends'))[:12]}...")
    if not diffs:
        return None
    if recorded.get("mtime") != current.get("mtime"):
        diffs.append(f"modified {recorded.get('mtime')} -> {current.get('mtime')}")
    return f"{what} ({', '.join(diffs)})"


def store_content_digest(slides: Iterable[SlideInfo]) -> str:
    """sha256 over (slide id, recorded content digest) of `slides` (`PatchStore.slides`)."""
    h = hashlib.sha256()
    for s in sorted(slides, key=lambda s: s.slide_id):
        h.update(f"{s.slide_id}\0{s.attrs.get('digest')}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()
