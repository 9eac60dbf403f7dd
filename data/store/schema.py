"""Store metadata inside the checksum net: the schema of every slide's metadata, checked from the
raw `zarr.json` files (before zarr reads them), and each slide's content digest.

Chunk bytes carry crc32c checksums; this module covers what describes them:

- every metadata file read here is one `StoreError` line naming the file when it cannot be read
  or decoded (JSONDecodeError, PermissionError, UnicodeDecodeError, ...);
- each array's shape, dtype, chunk shape, chunk key encoding and codec list (bytes little-endian,
  blosc, crc32c: a checksum that is really there) against the schema and the slide's recorded
  `n_patches`, and the slide's `status`, `complete`, `n_patches`, `n_tumor` against the schema
  (`slide_problem`, on every open);
- a per-slide digest (`slide_digest`): sha256 over the store's content settings, the slide's
  attributes, its arrays' metadata and the crc32c of every chunk in order, recorded as the
  attribute `digest` when the slide completes. `verify_store` recomputes it, so swapped chunks,
  a chunk copied from another slide (each with a valid checksum) and any changed attribute or
  setting are caught. Attributes written after completion must be listed in `UNDIGESTED`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

from lymph.data.errors import StoreError
from lymph.data.store.layout import RUNTIME_SETTINGS, SLIDES, STATUSES, array_names, chunk_path

UNDIGESTED = frozenset({"digest", "complete"})
"""Slide attributes outside the digest: the digest itself and the completion mark."""
CODECS = ["bytes", "blosc", "crc32c"]
ARRAY_KEYS = frozenset({"zarr_format", "node_type", "shape", "data_type", "chunk_grid",
                        "chunk_key_encoding", "fill_value", "codecs", "attributes",
                        "dimension_names", "storage_transformers"})
GROUP_KEYS = frozenset({"zarr_format", "node_type", "attributes", "consolidated_metadata"})


def read_meta(file: Path) -> dict:
    """A metadata file's JSON object; StoreError (one line, naming the file) otherwise."""
    fix = ("rerun `lymph extract` with the store's settings (it redoes damaged slides), or "
           "re-extract into a new --out")
    try:
        value = json.loads(file.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{file}: metadata file missing; {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StoreError(f"{file}: unreadable metadata ({type(exc).__name__}: "
                         f"{why.splitlines()[0] if why else ''}); {fix}") from None
    if not isinstance(value, dict):
        raise StoreError(f"{file}: metadata is not a JSON object; {fix}")
    return value


def check_group_meta(file: Path) -> dict:
    """A group's zarr.json (`read_meta`), refused unless it is a plain zarr v3 group document."""
    meta = read_meta(file)
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "group" or \
            not set(meta) <= GROUP_KEYS or not isinstance(meta.get("attributes", {}), dict) \
            or meta.get("consolidated_metadata") is not None:
        raise StoreError(f"{file}: not a zarr v3 group document (keys {sorted(meta)}); the "
                         "store's metadata was changed or damaged: re-extract into a new --out")
    return meta


def expected_shapes(name: str, n: int, patch_size: int) -> tuple[tuple[int, ...], str]:
    """(shape, data_type) of array `name` of a slide of `n` patches."""
    p = patch_size
    return {"images": ((n, p, p, 3), "uint8"), "coords": ((n, 2), "int64"),
            "labels": ((n,), "uint8"), "masks": ((n, p, p), "uint8")}[name]


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def array_problem(meta: Mapping[str, Any], *, name: str, n: int, patch_size: int,
                  chunk_patches: int) -> str | None:
    """Why an array's zarr.json does not match the schema, or None."""
    shape, dtype = expected_shapes(name, n, patch_size)
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "array" or \
            not set(meta) <= ARRAY_KEYS:
        return f"is not a zarr v3 array document (keys {sorted(meta)})"
    got = meta.get("shape")
    if not isinstance(got, list) or tuple(got) != shape:
        return f"has shape {got!r}, not {list(shape)} ({n} patches of {patch_size} px)"
    if meta.get("data_type") != dtype:
        return f"has data type {meta.get('data_type')!r}, not {dtype!r}"
    grid = meta.get("chunk_grid")
    chunks = grid.get("configuration", {}).get("chunk_shape") if isinstance(grid, dict) else None
    if (not isinstance(grid, dict) or grid.get("name") != "regular" or not isinstance(chunks, list)
            or len(chunks) != len(shape) or not all(_is_int(c) and c > 0 for c in chunks)
            or tuple(chunks[1:]) != shape[1:]):
        return f"has chunk grid {grid!r}, not regular chunks of {list(shape[1:])}"
    whole = name in ("coords", "labels")  # one chunk of the slide's capacity
    if (chunks[0] < max(n, 1)) if whole else (chunks[0] != chunk_patches):
        want = f">= {max(n, 1)}" if whole else str(chunk_patches)
        return f"has {chunks[0]} patches per chunk, not {want}"
    key = meta.get("chunk_key_encoding")
    if key != {"name": "default", "configuration": {"separator": "/"}}:
        return f"has chunk key encoding {key!r}, not default '/'"
    codecs = meta.get("codecs")
    names = [c.get("name") for c in codecs if isinstance(c, dict)] \
        if isinstance(codecs, list) else None
    if names != CODECS:
        return f"has codecs {names!r}, not {CODECS} (the crc32c checksum must be last)"
    assert isinstance(codecs, list)  # names is None otherwise
    if (codecs[0].get("configuration") or {}).get("endian") not in ("little", None) or \
            (dtype == "int64" and (codecs[0].get("configuration") or {}).get("endian")
             != "little"):
        return f"has byte order {codecs[0].get('configuration')!r}, not little-endian"
    if meta.get("storage_transformers") not in (None, []):
        return "has storage transformers lymph does not write"
    return None


def attrs_problem(attrs: Mapping[str, Any]) -> str | None:
    """Why a complete slide's attributes break the schema, or None."""
    status, n, n_tumor = attrs.get("status"), attrs.get("n_patches"), attrs.get("n_tumor")
    if status not in STATUSES:
        return f"its status attribute is {status!r}, not one of {', '.join(STATUSES)}"
    if attrs.get("complete") is not True:
        return f"its complete attribute is {attrs.get('complete')!r}"
    if not _is_int(n) or n < 0:
        return f"its n_patches attribute is {n!r}"
    if not _is_int(n_tumor) or not 0 <= n_tumor <= n or (status == "unlabeled" and n_tumor):
        return f"its n_tumor attribute is {n_tumor!r} (n_patches {n}, status {status})"
    return None


def slide_problem(store: Path, slide_id: str, settings: Mapping[str, Any], *,
                  chunk_patches: int) -> tuple[dict[str, Any], str | None]:
    """(attrs, problem) of one slide group read from its raw zarr.json files: problem is None
    when the slide is incomplete (not marked complete) or its metadata matches the schema.
    StoreError when a metadata file cannot be read."""
    group_dir = store / SLIDES / slide_id
    attrs = check_group_meta(group_dir / "zarr.json").get("attributes", {})
    if not attrs.get("complete"):
        return attrs, None
    problem = attrs_problem(attrs)
    if problem is not None:
        return attrs, problem
    patch_size = settings.get("patch_size")
    if not _is_int(patch_size) or patch_size < 1:
        return attrs, f"the store's patch_size setting is {patch_size!r}"
    for name in array_names(attrs["status"]):
        file = group_dir / name / "zarr.json"
        if not file.is_file():
            return attrs, f"array {name!r} is missing"
        why = array_problem(read_meta(file), name=name, n=attrs["n_patches"],
                            patch_size=patch_size, chunk_patches=chunk_patches)
        if why is not None:
            return attrs, f"array {name!r} ({file}) {why}"
    return attrs, None


def chunk_crcs(array_dir: Path, meta: Mapping[str, Any]) -> list[str]:
    """The crc32c (last 4 bytes, hex) of every chunk file of an array, in order; 'missing' for
    a missing or too short file."""
    shape = meta["shape"]
    per = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
    out = []
    for i in range(math.ceil(shape[0] / per) if shape[0] else 0):
        file = chunk_path(array_dir, i, len(shape))
        try:
            with open(file, "rb") as fh:
                fh.seek(-4, 2)
                out.append(fh.read(4).hex())
        except OSError:
            out.append("missing")
    return out


def slide_digest(store: Path, slide_id: str, settings: Mapping[str, Any],
                 attrs: Mapping[str, Any]) -> str:
    """sha256 of the slide's content: store settings (runtime ones aside), attributes (but
    `UNDIGESTED`), each array's metadata and its chunks' crc32c in order."""
    group_dir = store / SLIDES / slide_id
    arrays = {}
    for name in array_names(str(attrs.get("status"))):
        meta = read_meta(group_dir / name / "zarr.json")
        arrays[name] = {"meta": {k: v for k, v in meta.items() if k != "attributes"},
                        "crc32c": chunk_crcs(group_dir / name, meta)}
    content = {
        "settings": {k: v for k, v in settings.items() if k not in RUNTIME_SETTINGS},
        "attrs": {k: v for k, v in attrs.items() if k not in UNDIGESTED},
        "arrays": arrays,
    }
    blob = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def digest_problem(store: Path, slide_id: str, settings: Mapping[str, Any],
                   attrs: Mapping[str, Any]) -> str | None:
    """Why the slide's recorded digest does not match its content, or None."""
    recorded = attrs.get("digest")
    if not isinstance(recorded, str):
        return ("no content digest recorded (written by an older lymph, or the attribute was "
                "damaged)")
    if slide_digest(store, slide_id, settings, attrs) != recorded:
        return ("its content digest does not match (chunks swapped or replaced, or its "
                "attributes, array metadata or the store's settings changed after it was "
                "written)")
    return None


def enclosing_store(path: Path) -> Path | None:
    """The lymph patch store that `path` is (or lies inside), or None."""
    for folder in (path, *path.parents):
        meta = folder / "zarr.json"
        try:
            if meta.is_file() and '"lymph"' in meta.read_text(encoding="utf-8", errors="replace"):
                attrs = read_meta(meta).get("attributes")
                if isinstance(attrs, dict) and isinstance(attrs.get("lymph"), dict):
                    return folder
        except (OSError, StoreError):
            continue
    return None
