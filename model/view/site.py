"""The viewer's site, shared by the server and the static export: the packaged static files
(a fixed list, made once from the package folder), the data scripts the page loads
(``data/site.js``, ``data/slides/<id>.js``: plain ``<script>`` files, so that an export opens
from ``file://``, where browsers refuse ``fetch``) and the tiles, through an LRU cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lymph.data.errors import LymphError
from lymph.model.view.catalog import Catalog, SlideEntry
from lymph.model.view.tiles import THRESHOLDS, TileCache, TileError, map_tile, slide_tile

STATIC_DIR = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".jpeg": "image/jpeg",
                 ".txt": "text/plain; charset=utf-8", ".json": "application/json",
                 ".dzi": "application/xml"}


class NotFound(LookupError):
    """A URL that names nothing the site has (404)."""


def static_files() -> dict[str, Path]:
    """{"static/<relative name>": file} of every packaged static file (index.html aside)."""
    files = {}
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            files["static/" + path.relative_to(STATIC_DIR).as_posix()] = path
    return files


def layer_threshold(layer: str) -> int | None:
    """None for "slide", the threshold percent of "map_tNN"; TileError for anything else."""
    if layer == "slide":
        return None
    if layer.startswith("map_t") and layer[5:].isdigit() and len(layer) <= 8:
        value = int(layer[5:])
        if value in THRESHOLDS:
            return value
    raise TileError(f"layer {layer[:20]!r} is not 'slide' or one of map_t00..map_t90 "
                    "(steps of 10)")


def _js(statement: str, data: Any) -> str:
    payload = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return statement.replace("@", payload.replace("</", "<\\/"))


class Site:
    """One catalog's pages, data scripts and tiles."""

    def __init__(self, catalog: Catalog, *, cache_bytes: int) -> None:
        self.catalog = catalog
        self.cache = TileCache(cache_bytes)
        self.static = static_files()

    def entry(self, sid: str) -> SlideEntry:
        entry = self.catalog.entries.get(sid)
        if entry is None:
            raise NotFound(f"no slide {sid[:80]!r}")
        return entry

    def site_js(self, *, mode: str) -> str:
        return _js("window.LYMPH_SITE = @;", dict(self.catalog.site(), mode=mode))

    def slide_js(self, sid: str) -> str:
        entry = self.entry(sid)
        return _js("window.LYMPH_SLIDES = window.LYMPH_SLIDES || {}; "
                   f"window.LYMPH_SLIDES[{json.dumps(sid)}] = @;", self.catalog.bundle(entry))

    def slide_json(self, sid: str) -> dict[str, Any]:
        return self.catalog.bundle(self.entry(sid))

    def dzi(self, sid: str, layer: str) -> str:
        entry = self.entry(sid)
        threshold = layer_threshold(layer)
        dz = entry.slide_dz if threshold is None else entry.map_dz
        if dz is None:
            raise NotFound(f"slide {sid!r} has no {'map' if threshold is not None else 'image'}"
                           + (f": {entry.error}" if entry.error else ""))
        return dz.dzi("jpeg" if threshold is None else "png")

    def tile(self, sid: str, layer: str, level: int, col: int, row: int) -> bytes:
        """The encoded tile; NotFound / TileError for requests outside what exists;
        LymphError/OSError when the file cannot be read there."""
        entry = self.entry(sid)
        threshold = layer_threshold(layer)
        path: Path | None
        if threshold is None:
            dz, path = entry.slide_dz, entry.path
        else:
            dz, path = entry.map_dz, entry.map_path
        if dz is None or path is None:
            reason = entry.error or entry.info.get("map_error") or "no tumor map"
            raise NotFound(f"slide {sid!r}: {reason}")
        dz.check(level, col, row)

        def make() -> bytes:
            with self.catalog.pool.reader(path) as reader:
                if threshold is None:
                    return slide_tile(reader, dz, level, col, row)
                return map_tile(reader, dz, level, col, row, threshold)

        return self.cache.get_or_make((sid, layer, level, col, row), make)


ReadError = (LymphError, OSError)
