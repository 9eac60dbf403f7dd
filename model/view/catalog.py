"""What `lymph view` shows: the slides (``discover_slides``), the files that belong to each, and
the JSON the viewer reads. Nothing here writes a file.

Per slide ``S`` (its id from discovery): ``S_tumor_map.tif``, ``S.csv`` (detections),
``S_predict.json`` (the map's downsample), ``S_suggestions.geojson`` (``lymph suggest``) and
``S``'s row of ``scores.csv`` in the predictions folder; the ground truth found by
``find_annotations`` (``--annotations``, default beside the slide); ``--labels`` marks normal
slides, whose every detection is a false positive. FROC hit/miss/FP counts are lymph's rules
(``model.camelyon.score_case``), computed only where ground truth exists.
"""

from __future__ import annotations

import json
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lymph.data.errors import ConfigError, LymphError
from lymph.data.io import as_paths
from lymph.model.view.tiles import THRESHOLDS, DeepZoom

if TYPE_CHECKING:
    from lymph.data.slides import OpenSlideReader

TRUTH_DOWNSAMPLE = 32.0  # mask TIFF outlines are traced at 1/32 (the evaluation frame)
MAX_OPEN_READERS = 16


@dataclass(frozen=True)
class ViewConfig:
    """Settings of `lymph view`. ``slides``: a folder or one slide; ``predictions``: the
    ``--out`` of ``lymph predict``; ``annotations``: ground truth (default beside each slide);
    ``labels``: a reference CSV (normal slides); ``export``: write a static site there instead
    of serving; ``cache_mb``: the tile cache's size."""

    slides: Path
    predictions: Path | None = None
    annotations: Path | None = None
    labels: Path | None = None
    suggestions: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    export: Path | None = None
    cache_mb: int = 256
    workers: int = 2
    quiet: bool = False

    def __post_init__(self) -> None:
        as_paths(self, ("slides", "predictions", "annotations", "labels", "suggestions", "export"))
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port {self.port} is not a TCP port; use 1-65535 (0: any free)")
        if not self.host or any(c.isspace() for c in self.host):
            raise ConfigError(f"--host {self.host!r} is not a host name or address; use "
                              "127.0.0.1 (this machine only) or 0.0.0.0 (every interface)")
        if not 1 <= self.cache_mb <= 65536:
            raise ConfigError(f"--cache-mb {self.cache_mb} is outside 1..65536 MiB")
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"--workers {self.workers} is outside 1..64")

    def check_paths(self) -> None:
        """ConfigError naming the path and the fix for inputs that are not there."""
        if not self.slides.exists():
            raise ConfigError(f"--slides {self.slides} does not exist; pass the slide folder "
                              "(or one slide)")
        for name, value, fix in (
                ("--predictions", self.predictions, "the --out folder of lymph predict"),
                ("--annotations", self.annotations, "the folder of S.xml / S.geojson / "
                 "S_mask.tif"),
                ("--suggestions", self.suggestions, "the --out folder of lymph suggest")):
            if value is not None and not value.is_dir():
                raise ConfigError(f"{name} {value} is not a folder; pass {fix}")
        if self.labels is not None and not self.labels.is_file():
            raise ConfigError(f"--labels {self.labels} is not a file; pass reference.csv")
        if self.export is not None and self.export.exists() and not self.export.is_dir():
            raise ConfigError(f"--export {self.export} is a file; pass a folder")


@dataclass
class SlideEntry:
    """One slide and its files; ``error`` when it cannot be opened (shown in the list)."""

    id: str
    name: str
    path: Path
    map_path: Path | None = None
    detections_path: Path | None = None
    suggestions_path: Path | None = None
    meta_path: Path | None = None
    annotation: Path | None = None
    is_tumor: bool | None = None
    score: float | None = None
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    slide_dz: DeepZoom | None = None
    map_dz: DeepZoom | None = None
    froc: dict[str, Any] | None = None


class ReaderPool:
    """Readers opened on first use and kept open (at most `max_open`, least recently used
    closed first, never while a request still reads from it)."""

    def __init__(self, max_open: int = MAX_OPEN_READERS) -> None:
        self.max_open = max_open
        self._open: OrderedDict[Path, OpenSlideReader] = OrderedDict()
        self._users: dict[Path, int] = {}
        self._lock = threading.Lock()
        self._opening: dict[Path, threading.Lock] = {}

    @contextmanager
    def reader(self, path: Path) -> Iterator[OpenSlideReader]:
        from lymph.data.slides import open_slide

        with self._lock:
            gate = self._opening.setdefault(path, threading.Lock())
        with gate:  # one open per file, whatever the number of requests
            with self._lock:
                reader = self._open.get(path)
            if reader is None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # mpp warnings: the list shows them
                    reader = open_slide(path)
                with self._lock:
                    self._open[path] = reader
        with self._lock:
            self._open.move_to_end(path)
            self._users[path] = self._users.get(path, 0) + 1
        try:
            yield reader
        finally:
            with self._lock:
                self._users[path] -= 1
                self._evict()

    def _evict(self) -> None:
        idle = [p for p in self._open if not self._users.get(p)]
        while len(self._open) > self.max_open and idle:
            self._open.pop(idle.pop(0)).close()

    def close(self) -> None:
        with self._lock:
            for reader in self._open.values():
                reader.close()
            self._open.clear()


def _read_scores(predictions: Path | None) -> tuple[dict[str, float], str | None]:
    from lymph.model.camelyon import read_scores_csv

    if predictions is None or not (predictions / "scores.csv").is_file():
        return {}, None
    try:
        return read_scores_csv(predictions / "scores.csv"), None
    except (LymphError, OSError) as exc:
        return {}, str(exc)


def _map_downsample(entry: SlideEntry, map_width: int) -> tuple[float, str | None]:
    """The map's level-0 px per map px: ``S_predict.json``'s, else the nominal ratio, with a
    warning naming the file when it was there but could not be read."""
    from lymph.model.camelyon import nominal_downsample

    nominal = nominal_downsample(entry.info["width"] / map_width)
    if entry.meta_path is None:
        return nominal, None
    try:
        meta = json.loads(entry.meta_path.read_text(encoding="utf-8"))
        value = float(meta["settings"]["map_downsample"])
        if math.isfinite(value) and value > 0:
            return value, None
        why = f"map_downsample {value!r} is not a positive number"
    except (OSError, ValueError) as exc:
        why = f"cannot be read ({str(exc).splitlines()[0][:120]})"
    except (KeyError, TypeError):
        why = "has no settings.map_downsample"
    return nominal, (f"{entry.meta_path}: {why}; the map is placed at the nominal downsample "
                     f"{nominal:g}; rerun `lymph predict` to rewrite it")


class Catalog:
    """The slides of one `lymph view`, their files, and the JSON the viewer reads."""

    def __init__(self, config: ViewConfig) -> None:
        from lymph.data.slides import discover_slides

        config.check_paths()
        self.config = config
        self.pool = ReaderPool()
        self.problems: list[str] = []
        found = discover_slides(config.slides)
        self.problems += [p.message for p in found.problems]
        scores, scores_error = _read_scores(config.predictions)
        if scores_error:
            self.problems.append(scores_error)
        self.labels = self._labels()
        self.entries: dict[str, SlideEntry] = {}
        for slide in found:
            entry = self._entry(slide.id, slide.name, slide.path)
            entry.score = scores.get(slide.id)
            self.entries[slide.id] = entry
        self._froc_lock = threading.Lock()
        self.froc_done = threading.Event()

    def _labels(self) -> Mapping[str, bool]:
        from lymph.data.annotations import read_labels_csv

        return read_labels_csv(self.config.labels) if self.config.labels is not None else {}

    def _entry(self, sid: str, name: str, path: Path) -> SlideEntry:
        from lymph.data.annotations import find_annotations

        entry = SlideEntry(id=sid, name=name, path=path)
        pred = self.config.predictions
        if pred is not None:
            files = {"map_path": f"{sid}_tumor_map.tif", "detections_path": f"{sid}.csv",
                     "meta_path": f"{sid}_predict.json"}
            for attr, fname in files.items():
                if (pred / fname).is_file():
                    setattr(entry, attr, pred / fname)
        where = self.config.suggestions or pred  # `lymph suggest --out`, else beside the maps
        if where is not None and (where / f"{sid}_suggestions.geojson").is_file():
            entry.suggestions_path = where / f"{sid}_suggestions.geojson"
        try:
            entry.annotation = find_annotations(path, annotations_dir=self.config.annotations)
        except OSError as exc:
            entry.error = f"{path}: cannot look for its annotations ({exc})"
        listed = self.labels.get(sid) if self.labels else None
        entry.is_tumor = True if entry.annotation is not None else listed
        self._probe(entry)
        return entry

    def _probe(self, entry: SlideEntry) -> None:
        """Open the slide (and its map) once: size, levels, mpp; an error instead when it
        cannot be read, so that the list shows it."""
        try:
            with self.pool.reader(entry.path) as reader:
                w, h = reader.dimensions
                entry.info = {
                    "width": int(w), "height": int(h), "mpp": reader.mpp,
                    "vendor": reader.vendor, "level_count": reader.level_count,
                    "level_dimensions": [list(d) for d in reader.level_dimensions],
                    "level_downsamples": list(reader.level_downsamples),
                    "warnings": list(reader.warnings),
                }
                reader.read_region((0, 0), reader.level_count - 1, (1, 1))
        except (LymphError, OSError, ValueError) as exc:
            entry.error = str(exc).splitlines()[0][:300]
            return
        entry.slide_dz = DeepZoom(entry.info["width"], entry.info["height"])
        if entry.map_path is not None:
            try:
                with self.pool.reader(entry.map_path) as mreader:
                    mw, mh = mreader.dimensions
                entry.map_dz = DeepZoom(int(mw), int(mh))
                ds, warning = _map_downsample(entry, int(mw))
                entry.info["map_downsample"] = ds
                if warning is not None:
                    entry.info["warnings"].append(warning)
                    self.problems.append(warning)
            except (LymphError, OSError, ValueError) as exc:
                entry.info["map_error"] = str(exc).splitlines()[0][:300]
                entry.map_dz = None

    # --- FROC -----------------------------------------------------------------------------

    def compute_froc(self) -> None:
        """Per-slide FROC counts (lymph's rules), per-detection status and missed lesions of
        every slide with ground truth; one slide's failure is recorded in its row, the others
        go on."""
        from lymph.model.camelyon import SlideEvalConfig
        from lymph.model.view.froc import score_for_view

        if self.config.predictions is None:
            self.froc_done.set()
            return
        cfg = SlideEvalConfig(slides=self.config.slides, predictions=self.config.predictions,
                              annotations=self.config.annotations, rules="lymph")
        for entry in self.entries.values():
            if entry.error or entry.is_tumor is None or entry.detections_path is None:
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result = score_for_view(slide_id=entry.id, slide=entry.path,
                                            detections=entry.detections_path,
                                            annotation=entry.annotation,
                                            is_tumor=bool(entry.is_tumor), config=cfg)
            except (LymphError, OSError, ValueError) as exc:
                result = {"error": str(exc).splitlines()[0][:300]}
            with self._froc_lock:
                entry.froc = result
        self.froc_done.set()

    # --- JSON ------------------------------------------------------------------------------

    def slide_row(self, entry: SlideEntry) -> dict[str, Any]:
        froc: dict[str, Any] | None
        if entry.error is None and entry.is_tumor is not None and entry.detections_path:
            froc = entry.froc if entry.froc is not None else (
                None if self.froc_done.is_set() else {"pending": True})
            if froc is not None and "counts" in froc:
                froc = froc["counts"]
        else:
            froc = None
        return {"id": entry.id, "name": entry.name, "score": entry.score,
                "status": {True: "tumor", False: "normal", None: None}[entry.is_tumor],
                "has_map": entry.map_dz is not None, "has_truth": entry.annotation is not None,
                "froc": froc, "error": entry.error}

    def site(self) -> dict[str, Any]:
        return {"slides": [self.slide_row(e) for e in self.entries.values()],
                "problems": self.problems, "thresholds": list(THRESHOLDS),
                "froc_pending": not self.froc_done.is_set(),
                "predictions": str(self.config.predictions) if self.config.predictions else None}

    def slide_info(self, entry: SlideEntry) -> dict[str, Any]:
        info: dict[str, Any] = {"id": entry.id, "name": entry.name, "error": entry.error}
        if entry.error is not None or entry.slide_dz is None:
            return info
        info.update(entry.info)
        info["slide"] = entry.slide_dz.to_dict()
        if entry.map_dz is not None:
            ds = entry.info["map_downsample"]
            info["map"] = dict(entry.map_dz.to_dict(), downsample=ds,
                               world_width=entry.map_dz.width * ds / entry.slide_dz.width)
        info["score"] = entry.score
        info["annotation"] = entry.annotation.name if entry.annotation else None
        return info

    def bundle(self, entry: SlideEntry) -> dict[str, Any]:
        """Everything the viewer needs for one slide (info, detections, truth, suggestions);
        a file that cannot be read gives an error string in its place."""
        out: dict[str, Any] = {"info": self.slide_info(entry),
                               "missed_lesions": (entry.froc or {}).get("missed"),
                               "froc_pending": not self.froc_done.is_set()}
        for key, make in (("detections", self.detections), ("truth", self.truth),
                          ("suggestions", self.suggestions)):
            try:
                out[key] = make(entry)
            except (LymphError, OSError, ValueError) as exc:
                out[key] = {"error": str(exc).splitlines()[0][:300]}
        return out

    def detections(self, entry: SlideEntry) -> list[dict[str, float | str | None]] | None:
        from lymph.model.camelyon import read_detections_csv

        if entry.detections_path is None:
            return None
        det = read_detections_csv(entry.detections_path)
        froc = entry.froc or {}
        status = froc.get("status") if len(froc.get("status") or ()) == len(det) else None
        order = np.argsort(-det[:, 0], kind="stable")
        return [{"p": round(float(det[i, 0]), 4), "x": float(det[i, 1]), "y": float(det[i, 2]),
                 "status": status[i] if status else None} for i in order]

    def truth(self, entry: SlideEntry) -> dict[str, Any] | None:
        from lymph.model.view.shapes import truth_outlines

        if entry.annotation is None or entry.error is not None:
            return None
        dims = (entry.info["width"], entry.info["height"])
        return truth_outlines(entry.path, entry.annotation, dimensions=dims)

    def suggestions(self, entry: SlideEntry) -> list[dict[str, Any]] | None:
        from lymph.model.view.shapes import read_suggestions

        if entry.suggestions_path is None:
            return None
        return read_suggestions(entry.suggestions_path)

    def close(self) -> None:
        self.pool.close()
