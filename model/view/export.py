"""`lymph view --export OUT`: the viewer as a static folder that opens from ``file://`` (or any
static web server), laid out as the server's URLs:

    OUT/index.html, OUT/static/...            the page, its script and OpenSeadragon
    OUT/data/site.js, OUT/data/slides/S.js    the slide list and each slide's data
    OUT/tiles/S/slide.dzi, slide_files/L/C_R.jpeg              the slide's Deep Zoom tiles
    OUT/tiles/S/map_tNN.dzi, map_tNN_files/L/C_R.png           the map at each threshold
    OUT/lymph_view.json                       what was exported, with which settings

Every Deep Zoom tile of every readable slide is written (about 1.33x the level-0 tiles); the
map's tiles once per threshold (a map holds 1/256 of the slide's pixels at downsample 16).
Nothing is written outside OUT; a non-empty OUT that is not a lymph view export is refused.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lymph.data.errors import LymphError, OutputError
from lymph.model.view.catalog import Catalog, ViewConfig
from lymph.model.view.site import STATIC_DIR, Site
from lymph.model.view.tiles import THRESHOLDS, DeepZoom

MARKER = "lymph_view.json"


def _check_out(out: Path) -> None:
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise OutputError(f"--export {out} is a non-empty folder that lymph view did not write; "
                          "choose a new or empty folder")


def _inside(root: Path, *parts: str) -> Path:
    """root / parts, refusing any part that could leave root (ids come from discovery and are
    safe already; this is the belt to their braces)."""
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\\" in part or "\0" in part:
            raise OutputError(f"refusing to write {part!r} under {root}")
    return root.joinpath(*parts)


def _tiles(dz: DeepZoom) -> list[tuple[int, int, int]]:
    return [(level, col, row) for level in range(dz.max_level + 1)
            for col in range(dz.grid(level)[0]) for row in range(dz.grid(level)[1])]


def _write_layer(site: Site, out: Path, sid: str, layer: str, dz: DeepZoom, ext: str,
                 pool: ThreadPoolExecutor, progress: Any) -> tuple[int, list[str]]:
    base = _inside(out, "tiles", sid)
    base.mkdir(parents=True, exist_ok=True)
    (base / f"{layer}.dzi").write_text(dz.dzi(ext), encoding="utf-8")
    for level in range(dz.max_level + 1):
        (base / f"{layer}_files" / str(level)).mkdir(parents=True, exist_ok=True)

    def one(t: tuple[int, int, int]) -> str | None:
        level, col, row = t
        try:
            data = site.tile(sid, layer, level, col, row)
        except (LymphError, OSError, ValueError) as exc:
            return f"{sid} {layer} {level}/{col}_{row}: {str(exc)[:200]}"
        (base / f"{layer}_files" / str(level) / f"{col}_{row}.{ext}").write_bytes(data)
        return None

    errors = []
    tiles = _tiles(dz)
    for err in pool.map(one, tiles):
        if err is not None:
            errors.append(err)
        if progress is not None:
            progress.update(1)
    return len(tiles) - len(errors), errors


def _copy_static(out: Path) -> None:
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            rel = path.relative_to(STATIC_DIR)
            dest = out / ("index.html" if rel.as_posix() == "index.html" else Path("static", rel))
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)


def export_site(config: ViewConfig) -> dict[str, Any]:
    """Write the static site of `config`'s slides into ``config.export``; returns a summary
    (slides, tiles, errors). One slide's unreadable tiles are listed, the rest go on."""
    assert config.export is not None
    out = config.export
    _check_out(out)
    catalog = Catalog(config)
    try:
        catalog.compute_froc()
        site = Site(catalog, cache_bytes=0)  # every tile is written once: nothing to cache
        out.mkdir(parents=True, exist_ok=True)
        _copy_static(out)
        layers = []
        for sid, entry in catalog.entries.items():
            if entry.slide_dz is not None:
                layers.append((sid, "slide", entry.slide_dz, "jpeg"))
            if entry.map_dz is not None:
                layers += [(sid, f"map_t{t:02d}", entry.map_dz, "png") for t in THRESHOLDS]
        progress = None
        if not config.quiet:
            from tqdm import tqdm

            progress = tqdm(total=sum(dz.n_tiles() for *_, dz, _ in layers), unit="tile",
                            desc="export")
        written, errors = 0, []
        with ThreadPoolExecutor(config.workers) as pool:
            for sid, layer, dz, ext in layers:
                n, errs = _write_layer(site, out, sid, layer, dz, ext, pool, progress)
                written += n
                errors += errs
        if progress is not None:
            progress.close()
        (out / "data" / "slides").mkdir(parents=True, exist_ok=True)
        (out / "data" / "site.js").write_text(site.site_js(mode="export"), encoding="utf-8")
        for sid in catalog.entries:
            _inside(out, "data", "slides", f"{sid}.js").write_text(site.slide_js(sid),
                                                                   encoding="utf-8")
        summary = {"slides": len(catalog.entries), "tiles": written, "errors": errors,
                   "problems": list(catalog.problems),
                   "thresholds": list(THRESHOLDS),
                   "settings": {k: str(v) if isinstance(v, Path) else v
                                for k, v in vars(config).items()}}
        (out / MARKER).write_text(json.dumps(summary, indent=2), encoding="utf-8")
        return summary
    finally:
        catalog.close()
