"""``run(SlideEvalConfig) -> SlideEvalResult``: the whole slide evaluation, from the folders to
metrics.json and the plots.
"""

from __future__ import annotations

from lymph.model.camelyon.cases import plan_cases
from lymph.model.camelyon.config import SlideEvalConfig, check_paths
from lymph.model.camelyon.files import read_scores_csv
from lymph.model.camelyon.report import (
    SlideEvalResult,
    build_metrics,
    slide_eval_result,
    write_outputs,
)
from lymph.model.camelyon.scoring import score_case
from lymph.model.eval_checks import changed_note, check_fresh, fallback_note


def run(config: SlideEvalConfig) -> SlideEvalResult:
    """Lesion FROC (both rule sets, ``config.rules`` the headline) and slide AUC of a
    ``lymph predict`` output folder or any CAMELYON16-style submission; writes
    ``metrics.json``, ``froc.png`` and ``roc.png`` into ``config.out`` when given."""
    check_paths(config)
    cases, notes = plan_cases(config)
    scores: dict[str, float] = {}
    scores_path = config.predictions / "scores.csv"
    if scores_path.is_file():
        scores = read_scores_csv(scores_path)
    for case in cases:
        unchecked = check_fresh(case.name, case.slide, case.detections)
        if unchecked is not None:
            notes.append(unchecked)
    changed = changed_note(config.predictions, [c.detections for c in cases if c.detections]
                           + ([scores_path] if scores_path.is_file() else []))  # fmt: skip
    if changed is not None:
        notes.append(changed)
    scored = [score_case(case, config, scores) for case in cases]
    note = fallback_note([(c.name, str(s.detail["score_source"]))
                          for c, s in zip(cases, scored, strict=True)])  # fmt: skip
    if note:
        notes.append(note)
    for case, s in zip(cases, scored, strict=True):
        if "froc" in s.detail:
            notes.append(f"{case.name}: tumor by the labels CSV but not annotated: not in the FROC")
    metrics, curve = build_metrics(config, cases, scored, notes)
    files: dict[str, str] = {}
    if config.out is not None:
        files = write_outputs(config, metrics, scored, curve)
    return slide_eval_result(metrics, notes, files)
