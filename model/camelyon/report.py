"""What a slide evaluation reports: the metrics.json document (both rule sets' blocks, the
headline picked by ``rules``, slide AUC, per-slide detail, notes, settings), its FROC and ROC
plots, and ``SlideEvalResult``, what ``run`` returns.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lymph.data.errors import ConfigError
from lymph.data.io import atomic_write_json
from lymph.model.camelyon.auc import slide_auc
from lymph.model.camelyon.cases import SlideCase
from lymph.model.camelyon.config import RULE_NOTES, SlideEvalConfig
from lymph.model.camelyon.froc import Froc, froc, rate_key
from lymph.model.camelyon.lymph_rules import SlideScore
from lymph.model.camelyon.official import OfficialSlide, official_froc
from lymph.model.camelyon.scoring import Scored
from lymph.model.camelyon.truth import ITC_MAJOR_AXIS_UM, MERGE_DISTANCE_UM


@dataclass(frozen=True)
class SlideEvalResult:
    """What ``lymph eval slides`` found: the headline figures, typed, and ``metrics``, the
    metrics.json document (JSON-ready, in its key order), of which ``to_dict`` gives a copy.

    ``froc``: the headline FROC (``rules``' rule set); ``froc_official``, ``froc_lymph``: each
    rule set's (None where undefined); ``auc``: slide AUC (None with one class only);
    ``files``: what was written ({} without ``out``).
    """

    rules: str
    froc: float | None
    froc_official: float | None
    froc_lymph: float | None
    auc: float | None
    n_slides: int
    n_tumor_slides: int
    n_lesions: int
    notes: tuple[str, ...]
    files: Mapping[str, str]
    metrics: Mapping[str, object]

    def to_dict(self) -> dict[str, Any]:
        """The metrics.json document (with ``files`` when written), a copy."""
        return copy.deepcopy(dict(self.metrics))


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _count(value: object) -> int:
    return int(value) if isinstance(value, int) else 0


def slide_eval_result(metrics: dict[str, object], notes: list[str],
                      files: dict[str, str]) -> SlideEvalResult:
    """The typed view of a metrics document made by ``build_metrics``."""
    return SlideEvalResult(
        rules=str(metrics["rules"]),
        froc=_number(metrics["froc"]),
        froc_official=_number(metrics["froc_official"]),
        froc_lymph=_number(metrics["froc_lymph"]),
        auc=_number(metrics["auc"]),
        n_slides=_count(metrics["n_slides"]),
        n_tumor_slides=_count(metrics["n_tumor_slides"]),
        n_lesions=_count(metrics["n_lesions"]),
        notes=tuple(notes),
        files=dict(files),
        metrics=metrics,
    )


def build_metrics(
    config: SlideEvalConfig, cases: list[SlideCase], scored: list[Scored], notes: list[str]
) -> tuple[dict[str, object], Froc | None]:
    """The metrics.json document (without ``files``) and lymph's FROC curve (None when no
    slide could be scored by lymph's rules). ConfigError when the headline rule set cannot
    score these slides; notes for an undefined FROC or AUC are appended to ``notes``."""
    lymph_block, curve = lymph_block_of([s.lymph for s in scored if s.lymph is not None])
    official_block = official_block_of([s.official for s in scored if s.official is not None])
    headline = official_block if config.rules == "official" else lymph_block
    if "error" in headline:
        raise ConfigError(f"the {config.rules} rules cannot score these slides: "
                          f"{headline['error']}")  # fmt: skip
    for name, block in (("official", official_block), ("lymph", lymph_block)):
        if block.get("froc") is None:
            notes.append(f"{name} rules: FROC undefined ({block.get('error', 'no lesions')})")
    auc_scores = [s.probability for s in scored]
    auc_labels = [c.is_tumor for c in cases]
    auc: float | None
    try:
        auc = slide_auc(auc_scores, auc_labels)
    except ConfigError as exc:
        auc = None
        notes.append(f"AUC undefined: {exc}")
    metrics: dict[str, object] = {
        "rules": config.rules,
        "rule_note": RULE_NOTES[config.rules],
        "froc": headline.get("froc"),
        "froc_official": official_block.get("froc"),
        "froc_lymph": lymph_block.get("froc"),
        "froc_stepwise": lymph_block.get("froc_stepwise"),
        "sensitivity_at": headline.get("sensitivity_at", {}),
        "official": official_block,
        "lymph": lymph_block,
        "auc": auc,
        "n_slides": len(cases),
        "n_tumor_slides": int(sum(auc_labels)),
        "n_lesions": headline.get("n_lesions", 0),
        "excluded": list(config.exclude),
        "eval_downsample": config.downsample,
        "merge_distance_um": MERGE_DISTANCE_UM,
        "itc_major_axis_um": ITC_MAJOR_AXIS_UM,
        "notes": notes,
        "slides": {c.name: s.detail for c, s in zip(cases, scored, strict=True)},
        "config": config.to_dict(),
    }
    return metrics, curve


def lymph_block_of(inputs: list[SlideScore]) -> tuple[dict[str, object], Froc | None]:
    """The ``lymph`` block of metrics.json: lymph's FROC, both readings, its curve."""
    if not inputs:
        return {"froc": None, "error": "no slide to score"}, None
    curve = froc(inputs)
    block: dict[str, object] = {
        "froc": curve.interpolated,
        "froc_stepwise": curve.stepwise,
        "sensitivity_at": {
            rate_key(r): {"interpolated": curve.sensitivity_interpolated[r],
                          "stepwise": curve.sensitivity_stepwise[r]}
            for r in curve.sensitivity_interpolated
        },  # fmt: skip
        "n_slides": curve.n_slides,
        "n_lesions": curve.n_lesions,
        "curve": {
            "fps_per_slide": [float(v) for v in curve.fps_per_slide],
            "sensitivity": [None if math.isnan(v) else float(v) for v in curve.sensitivity],
            "thresholds": [None if math.isinf(v) else float(v) for v in curve.thresholds],
        },
    }
    return block, curve


def official_block_of(inputs: list[OfficialSlide | Exception]) -> dict[str, object]:
    """The ``official`` block of metrics.json, or the first slide's error that stopped it."""
    errors = [e for e in inputs if isinstance(e, Exception)]
    if errors:
        return {"froc": None, "error": str(errors[0])}
    if not inputs:
        return {"froc": None, "error": "no slide to score"}
    return official_froc([s for s in inputs if isinstance(s, OfficialSlide)])


def write_outputs(
    config: SlideEvalConfig, metrics: dict[str, object], scored: list[Scored], curve: Froc | None
) -> dict[str, str]:
    """froc.png (lymph's curve with the official one beside it), roc.png (with an AUC) and
    metrics.json (``metrics`` with ``files`` added) in ``config.out``; the files written."""
    from lymph.model.figures import plot_froc, plot_roc

    out = config.out
    assert out is not None
    files: dict[str, str] = {"metrics": str(out / "metrics.json")}
    if curve is not None and curve.n_lesions:
        official = metrics["official"]
        assert isinstance(official, dict)
        files["froc"] = str(plot_froc(curve, out / "froc.png", official=official))
    auc = _number(metrics["auc"])
    if auc is not None:
        files["roc"] = str(plot_roc([s.probability for s in scored],
                                    [s.detail["status"] == "tumor" for s in scored],
                                    out / "roc.png", auc=auc))  # fmt: skip
    metrics["files"] = files
    atomic_write_json(out / "metrics.json", metrics, sort_keys=False)
    return files
