"""Checks `lymph eval slides` makes on a predictions folder before scoring it: predictions made
from another file than the slide now at that path are refused (stale), and slides whose slide
score came from a fallback rather than `scores.csv` are named, and so are files that changed since
`lymph predict` wrote them (its `.lymph-outputs.json` records each one's sha256)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from lymph.data.errors import ConfigError
from lymph.data.identity import file_identity, identity_change


def check_fresh(name: str, slide: Path, detections: Path | None) -> str | None:
    """ConfigError naming the slide when its `S_predict.json` (written by `lymph predict`)
    records a source identity that the slide file no longer has (the slide was replaced, or
    two slides were swapped, after predict). Submissions without that file are not checked;
    a note (returned) when the file is there but cannot be read, since then nothing is."""
    if detections is None:
        return None
    meta_path = detections.parent / f"{name}_predict.json"
    if not meta_path.is_file():
        return None  # not a lymph predict output (a CAMELYON16 submission): nothing recorded
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            raise ValueError(f"a JSON {type(meta).__name__}, not an object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return (f"{meta_path}: cannot be read ({str(exc).splitlines()[0][:120]}): whether "
                f"{name}'s predictions are from the slide now at {slide} was not checked; "
                f"rerun `lymph predict` on it to rewrite the file")
    change = identity_change(meta.get("source_identity"), file_identity(slide),
                             what="slide file replaced after predict")
    if change is not None:
        raise ConfigError(
            f"{detections}: stale predictions for slide {name!r}: {slide}: {change}; rerun "
            f"`lymph predict` on it (or --exclude {name})"
        )
    return None


def fallback_note(sources: Sequence[tuple[str, str]]) -> str | None:
    """A note naming the slides whose score did not come from scores.csv, or None."""
    fallback = sorted(name for name, source in sources if source != "scores.csv")
    if not fallback:
        return None
    how = {source for name, source in sources if source != "scores.csv"}
    return (f"{len(fallback)} slide(s) took their slide score from a fallback, not scores.csv "
            f"({'; '.join(sorted(how))}): {fallback[:10]}"
            + (f" and {len(fallback) - 10} more" if len(fallback) > 10 else ""))


def changed_note(predictions: Path, files: Sequence[Path]) -> str | None:
    """A note naming those of `files` that differ from what `lymph predict` recorded writing
    in ``predictions/.lymph-outputs.json`` (a flipped digit, a hand edit), or None. Files it
    did not record (a CAMELYON16 submission, no manifest) are not judged."""
    from lymph.data.io import MANIFEST_NAME, OutputManifest

    manifest = OutputManifest(predictions)
    entries = manifest.entries()
    if not entries:
        return None
    changed = []
    for path in files:
        entry = entries.get(path.name)
        if isinstance(entry, dict) and "sha256" in entry and not manifest.recorded(path, entries):
            changed.append(path.name)
    if not changed:
        return None
    return (f"{len(changed)} file(s) differ from what lymph predict wrote (size or sha256 in "
            f"{predictions / MANIFEST_NAME}): {sorted(changed)[:10]}"
            + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
            + "; scored as they are now: rerun `lymph predict` if that was not meant")
