"""The study's protocol: what table.md declares before any run (`build_protocol`), its sha256
over canonical JSON, and its record in OUT/protocol.json: the protocol as first declared; one
that changes after the first finished run is appended as an amendment, and table.md lists every
amendment as a deviation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

from lymph.data.errors import ConfigError
from lymph.data.io import atomic_write_json
from lymph.model.study.conditions import comparisons_for, condition_label
from lymph.model.study.config import PROFILE_NOTES, StudyConfig
from lymph.model.study.prepare import StudyPlan
from lymph.model.study.stats import ALPHA, MIN_PAIRS, PILOT_SD, Primary, min_detectable_effect

PRIMARY_SIZE = 40


class Power(TypedDict):
    """The protocol's power line."""

    n: int
    sd: float
    ratio: float
    sd_source: str
    mde: float | None
    mde_independent: float | None


class ResultsProtocol(TypedDict):
    """What the results part of table.md reads from a protocol."""

    primary: Primary
    margin: float
    steps: int


class StudyProtocol(ResultsProtocol):
    """Everything table.md declares before any run (protocol.json hashes it)."""

    secondary: list[list[str]]
    profile: str
    profile_note: str
    world: str
    conditions: list[str]
    condition_labels: list[str]
    pretrained: dict[str, list[str]]
    sizes: list[int]
    seed: int
    eval_every: int
    patience: int
    min_steps: int
    early_stopping: bool
    folds: int
    repeats: int
    resamples: int
    alpha: float
    min_pairs: int
    power: Power


def _world(config: StudyConfig, plan: StudyPlan) -> str:
    """The protocol's world line: the labeled slides and each condition's pretraining."""
    labeled = plan.labeled
    n_tumor = sum(st == "tumor" for _, st in labeled)
    n_patches = sum(plan.store.slide(s).n_patches for s, _ in labeled)
    return (
        f"{len(labeled)} labeled slides ({n_tumor} tumor, {len(labeled) - n_tumor} normal, "
        f"{n_patches} patches) in {config.store}; pretraining: "
        + "; ".join(f"{c} from {len(g)} checkpoint(s) (seeds "
                    f"{', '.join(str(p.seed) for p in g)}) on {len(g[0].slides)} slides "
                    f"({g[0].n_patches} patches) of {g[0].store}"
                    for c, g in plan.groups.items())  # fmt: skip
    )


def _power(config: StudyConfig, plan: StudyPlan) -> Power:
    """The smallest ΔF1 the design detects with 80% power, from the pilot sd."""
    runs = plan.runs
    ratio = float(np.mean([len(r.test_slides) / (len(r.train_slides) + len(r.val_slides))
                           for r in runs])) if runs else 0.0  # fmt: skip
    n_pairs = config.resolved.folds * config.resolved.repeats
    return {
        "n": n_pairs, "sd": config.pilot_sd, "ratio": ratio,
        "sd_source": "the c4 standard study's observed paired sd at 40 labels, identity − "
                     "scratch" if abs(config.pilot_sd - PILOT_SD) < 1e-12 else "--pilot-sd",
        "mde": _finite(min_detectable_effect(config.pilot_sd, n_pairs, ratio=ratio)),
        "mde_independent": _finite(min_detectable_effect(config.pilot_sd, n_pairs)),
    }  # fmt: skip


def build_protocol(config: StudyConfig, plan: StudyPlan) -> StudyProtocol:
    """What table.md declares before any run; its sha256 is recorded (protocol.json)."""
    sizes = plan.sizes
    settings = config.resolved
    comparisons = comparisons_for(plan.conditions, plan.pretexts)
    pretexts = plan.fine_tune_pretexts()
    return {
        "primary": {
            "comparison": list(comparisons[0]),
            "size": PRIMARY_SIZE if PRIMARY_SIZE in sizes else min(sizes),
        },
        "secondary": [list(c) for c in comparisons],
        "profile": config.profile or "none",
        "profile_note": PROFILE_NOTES[config.profile],
        "world": _world(config, plan), "conditions": plan.conditions,
        "condition_labels": [condition_label(c, pretexts) for c in plan.conditions],
        "pretrained": {c: [str(p.path) for p in g] for c, g in plan.groups.items()},
        "sizes": list(sizes), "seed": config.seed,
        "steps": settings.steps, "eval_every": settings.eval_every,
        "patience": settings.patience, "min_steps": settings.min_steps,
        "early_stopping": True,  # recorded (and hashed) since the trainer stopped early
        "folds": settings.folds, "repeats": settings.repeats,
        "resamples": config.resamples, "alpha": ALPHA, "margin": config.margin,
        "min_pairs": MIN_PAIRS, "power": _power(config, plan),
    }  # fmt: skip


def _finite(value: float) -> float | None:
    """None for NaN: the protocol compares equal to itself when read back."""
    return None if value != value else value


def protocol_sha256(protocol: Mapping[str, object]) -> str:
    """sha256 of the protocol's canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(protocol, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _changes(old: object, new: object, prefix: str = "") -> list[str]:
    """Each leaf that differs between two (nested) protocols, as "key: old → new"."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _changes(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} → {new!r}"]


def read_protocol_record(path: Path) -> dict[str, Any]:
    """The protocol record at `path`, each declared protocol checked against its own sha256:
    ConfigError naming the file when it is not a record or was edited after it was written."""
    fix = ("restore it, or use a new --out (its deviations from the declared protocol cannot "
           "be listed without it)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        declared = [(record["protocol"], record["sha256"])]
        declared += [(a["protocol"], a["sha256"]) for a in record["amendments"] if "protocol" in a]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{path}: not a protocol record ({exc}); {fix}") from None
    for protocol, sha in declared:
        if not isinstance(protocol, Mapping) or protocol_sha256(protocol) != sha:
            raise ConfigError(f"{path}: a declared protocol no longer matches its sha256 "
                              f"{str(sha)[:12]}… (the file was edited or damaged); {fix}")
    return dict(record)


def record_protocol(
    path: Path, protocol: Mapping[str, object], *, n_results: int
) -> dict[str, Any]:
    """Write or extend the protocol record at `path` (OUT/protocol.json) and return it.

    Before any finished run the protocol is (re)declared; after one, a different protocol is
    appended as an amendment {"sha256", "after_results", "changes"} (never silently accepted).
    A record missing beside finished runs (a study begun before protocols were hashed) is
    written now, with that fact as its first amendment."""
    sha = protocol_sha256(protocol)
    record: dict[str, Any] | None = None
    if path.exists():
        record = read_protocol_record(path)
    if record is None or n_results == 0:
        record = {"protocol": dict(protocol), "sha256": sha, "amendments": []}
        if n_results:
            record["amendments"].append({
                "sha256": sha, "after_results": n_results,
                "changes": [f"protocol first recorded after {n_results} finished run(s)"],
            })  # fmt: skip
        atomic_write_json(path, record)
        return record
    latest = record["amendments"][-1] if record["amendments"] else record
    if latest["sha256"] != sha:
        current = latest.get("protocol", record["protocol"])
        record["amendments"].append({
            "sha256": sha, "after_results": n_results, "protocol": dict(protocol),
            "changes": _changes(current, protocol) or ["(order or types only)"],
        })  # fmt: skip
        atomic_write_json(path, record)
    return record


def deviation_lines(record: Mapping[str, Any]) -> list[str]:
    """table.md's lines for a protocol record's amendments."""
    return [
        f"after {a['after_results']} finished run(s), protocol {a['sha256'][:12]}: "
        + "; ".join(a["changes"])
        for a in record.get("amendments", [])
    ]
