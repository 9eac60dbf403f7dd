"""Before any run: open the labeled store, read and check the pretraining provenance, choose the
conditions and plan the grid (`prepare` -> `StudyPlan`); nothing is trained or written."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lymph.data.errors import StoreError
from lymph.model.study.conditions import baseline_conditions, fine_tune_pretexts
from lymph.model.study.config import StudyConfig
from lymph.model.study.plan import RunSpec, make_folds, plan_runs
from lymph.model.study.pretraining import (
    Arch,
    Pretraining,
    check_architectures,
    check_pretraining,
    corpus_note,
    group_pretrainings,
    read_pretraining,
)

if TYPE_CHECKING:
    from lymph.data.store import PatchStore


@dataclass(frozen=True)
class StudyPlan:
    """A study's grid and what it was planned from."""

    store: PatchStore  # the labeled store
    labeled: list[tuple[str, str]]  # (slide_id, status) of its labeled slides
    pres: list[Pretraining]  # every --pretrained checkpoint, in the order given
    arch: Arch  # their (one) architecture
    runs: list[RunSpec]  # size, fold, repeat, then condition
    conditions: list[str]  # baselines, then one pretrained_<name> per name
    folds: list[tuple[str, ...]]  # the test folds' slide ids
    notes: list[str]  # table.md's notes
    sizes: tuple[int, ...]
    groups: dict[str, list[Pretraining]]  # pretrained condition -> its checkpoints
    pretexts: dict[str, str]  # pretrained condition -> its checkpoints' pretext

    def fine_tune_pretexts(self) -> dict[str, str]:
        """condition -> the pretext of its fine-tuning loss (every condition)."""
        return fine_tune_pretexts(self.conditions, self.pretexts)


def world_notes(slides: Sequence[tuple[str, str]], folds: Sequence[tuple[str, ...]]) -> list[str]:
    """A note when a test fold holds fewer than 2 tumor slides."""
    status = dict(slides)
    thin = [k for k, f in enumerate(folds) if sum(status[s] == "tumor" for s in f) < 2]
    if not thin:
        return []
    return [
        f"test fold(s) {thin} hold fewer than 2 tumor slides: the world is small for the "
        "question (issue 10 asks for >= 2 tumor slides per fold)."
    ]


def prepare(config: StudyConfig) -> StudyPlan:
    """Open the store, read the pretraining provenance, plan the grid (no training yet)."""
    from lymph.data.store import PatchStore

    store = PatchStore.open(config.store)
    labeled = [(s.slide_id, s.status) for s in store.slides if s.labeled]
    if not labeled:
        raise StoreError(
            f"{config.store}: no labeled (tumor or normal) slide: a study needs masks; extract "
            "slides with annotations"
        )
    pres = [read_pretraining(n, p, store) for n, p in config.pretrained]
    groups, notes = group_pretrainings(pres)
    for p in pres:
        notes += check_pretraining(p, allow=config.allow_test_in_pretraining)
    arch = check_architectures(pres, config.base_width)
    settings = config.resolved
    notes += [n for p in pres if (n := corpus_note(p, max(settings.sizes))) is not None]
    pretexts = {c: g[0].pretext for c, g in groups.items()}
    conditions = [*baseline_conditions(config.conditions, list(pretexts.values())), *groups]
    labels = {sid: store.labels(sid) for sid, _ in labeled}
    runs = plan_runs(
        labeled, labels, sizes=settings.sizes, n_folds=settings.folds, seed=config.seed,
        repeats=settings.repeats, conditions=conditions, n_val=settings.val_slides,
    )  # fmt: skip
    folds = make_folds(labeled, settings.folds, seed=config.seed)
    notes += world_notes(labeled, folds)
    return StudyPlan(
        store=store, labeled=labeled, pres=pres, arch=arch, runs=runs, conditions=conditions,
        folds=folds, notes=notes, sizes=settings.sizes, groups=groups, pretexts=pretexts,
    )  # fmt: skip
