"""Which slides a slide evaluation scores: each slide of the folder (not excluded) paired with
its detection file and ground truth, tumor or normal by its annotation or the labels CSV.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lymph.data.annotations import find_annotations, read_labels_csv
from lymph.data.errors import ConfigError, SlideError
from lymph.data.slides import discover_slides
from lymph.model.camelyon.config import SlideEvalConfig


@dataclass(frozen=True)
class SlideCase:
    """One slide to score: its detections file (None: none was written), ground truth, class."""

    name: str
    slide: Path
    detections: Path | None
    annotation: Path | None
    is_tumor: bool


def _slide_files(slides: Path) -> dict[str, Path]:
    """{id: path} of one slide, or of the slides under a folder (recursively), by the ids
    ``lymph predict`` names its outputs by (``data.slides.slide_id``). SlideError naming the
    files for slides that cannot take part (id collisions, dangling links)."""
    found = discover_slides(slides)
    if found.problems:
        raise SlideError(
            "; ".join(p.message for p in found.problems[:3])
            + (f" (and {len(found.problems) - 3} more)" if len(found.problems) > 3 else "")
        )
    return {s.id: s.path for s in found}


def plan_cases(config: SlideEvalConfig) -> tuple[list[SlideCase], list[str]]:
    """The slides to score and notes: each slide of ``config.slides`` not excluded, paired with
    its ``S.csv``. SlideError for a detection file without a slide; ConfigError for slides
    without a detection file unless ``missing == "missed"`` (then a note and a warning)."""
    excluded = {e.casefold() for e in config.exclude}  # Test_049 excludes test_049.tif
    detections = {
        p.stem: p
        for p in sorted(config.predictions.glob("*.csv"))
        if p.name != "scores.csv" and p.stem.casefold() not in excluded
    }
    slides = {k: v for k, v in _slide_files(config.slides).items()
              if k.casefold() not in excluded}  # fmt: skip
    if config.slides.is_file():
        detections = {k: v for k, v in detections.items() if k in slides}
    if not detections:
        raise ConfigError(
            f"no detection files (S.csv) in {config.predictions}"
            + (f" for {config.slides.name}" if config.slides.is_file() else "")
            + "; run `lymph predict` into it first"
        )
    orphans = sorted(set(detections) - set(slides))
    if orphans:
        raise SlideError(
            f"no slide in {config.slides} for the detection files {orphans[:5]} of "
            f"{config.predictions}; point --slides at the folder of the predicted slides"
        )
    notes: list[str] = []
    without = sorted(set(slides) - set(detections))
    if without and config.missing == "error":
        raise ConfigError(
            f"{len(without)} slide(s) of {config.slides} have no detection file in "
            f"{config.predictions}: {without[:5]}; run `lymph predict` on them, leave them out "
            "(--exclude ID), or pass --score-missing to score them as all-missed"
        )
    if without:
        note = (
            f"{len(without)} slide(s) without predictions scored as all-missed (probability 0, "
            f"no detections): {without[:10]}"
        )
        notes.append(note)
        warnings.warn(note, stacklevel=3)
    labels = _read_labels(config.labels) if config.labels is not None else {}
    cases = [
        _case(name, path, detections.get(name), labels, config) for name, path in slides.items()
    ]
    return sorted(cases, key=lambda c: c.name), notes


def _read_labels(path: Path) -> Mapping[str, bool]:
    return read_labels_csv(path)  # one-line LabelsError (a ConfigError) for any bad file


def _case(
    name: str, path: Path, det: Path | None, labels: Mapping[str, bool], config: SlideEvalConfig
) -> SlideCase:
    annotation = find_annotations(path, annotations_dir=config.annotations)
    listed = labels.get(name)
    if listed is False and annotation is not None:
        raise ConfigError(
            f"{config.labels} says {name} is normal but {annotation} annotates tumor in it; "
            "fix the labels CSV or remove the annotation"
        )
    return SlideCase(name, path, det, annotation, annotation is not None or bool(listed))

