"""Pretraining provenance: what each --pretrained checkpoint records about its data, checked
against the labeled store (a labeled slide is a test slide in one fold, so one that pretrained a
checkpoint leaks), and the notes table.md gives about the checkpoints."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lymph.data.errors import CheckpointError, ConfigError, LeakageError, StoreError
from lymph.model.study.conditions import PRETRAINED

if TYPE_CHECKING:
    from lymph.data.store import PatchStore

Arch = dict[str, object]
"""A checkpoint's recorded model settings (its config's "model")."""

PRETRAIN_RATIO = 30  # the paper's unlabeled corpus: ~30x the largest labeled set


@dataclass(frozen=True)
class Pretraining:
    """What a pretraining checkpoint records about its data, checked against the labeled store."""

    name: str
    path: Path
    arch: Arch = field(repr=False)
    stage: str | None
    pretext: str  # the pretext it was pretrained with (its fine-tunes keep it)
    store: str | None  # the pretraining store's path as recorded
    slides: tuple[str, ...]  # the slide ids it pretrained on (train and validation)
    n_patches: int | None  # patches of those slides, when the store is readable
    leaked: tuple[str, ...]  # labeled (hence test) slides that pretrained it
    unverifiable: str | None  # why the check could not be made, if it could not
    seed: int | None = None  # the pretraining run's recorded seed

    @property
    def condition(self) -> str:
        return PRETRAINED + self.name

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _resolved(path: str | os.PathLike | None) -> str | None:
    if not path:
        return None
    try:
        return str(Path(path).resolve())
    except OSError:
        return str(path)


def _locate_store(recorded: str, checkpoint: Path) -> str:
    """A recorded store path as it is found now: as written (relative to the working folder),
    else relative to a folder above the checkpoint (a relative path recorded by a run started
    elsewhere)."""
    path = Path(recorded)
    if path.is_absolute() or path.exists():
        return recorded
    for parent in Path(checkpoint).resolve().parents:
        if (parent / path).exists():
            return str(parent / path)
    return recorded


def read_pretraining(name: str | None, path: Path, labeled_store: PatchStore) -> Pretraining:
    """Read a checkpoint's recorded pretraining store and slides and find which labeled slides
    of `labeled_store` it saw: by slide id when it is the same store, else by source file."""
    from lymph.data.store import PatchStore
    from lymph.model.checkpoint import load_run_record

    record = load_run_record(path)
    arch: Arch = dict(record.model.to_dict())
    pretext = record.settings.get("pretext") or "identity"
    store_path = None if record.store is None else record.store.path
    if store_path is not None:
        store_path = _locate_store(store_path, path)
    slides = tuple(sorted({*(record.train_slides or ()), *(record.val_slides or ())}))
    leaked: list[str] = []
    n_patches = None
    why = None
    labeled = {s.slide_id: s for s in labeled_store.slides if s.labeled}
    if store_path is None or not slides:
        why = f"{path} records no pretraining store or slide ids"
    elif _resolved(store_path) == _resolved(labeled_store.path):
        leaked = sorted(set(slides) & set(labeled))
        n_patches = sum(labeled_store.slide(s).n_patches for s in slides)
    else:
        try:
            pre = PatchStore.open(store_path)
        except (StoreError, OSError) as exc:
            why = f"its pretraining store {store_path} cannot be read ({exc})"
        else:
            known = {s.slide_id for s in pre.slides}
            n_patches = sum(pre.slide(s).n_patches for s in slides if s in known)
            sources = {_resolved(pre.slide(s).attrs.get("source")) for s in slides if s in known}
            missing = [s for s in labeled.values() if not s.attrs.get("source")]
            leaked = sorted(
                s for s, info in labeled.items() if _resolved(info.attrs.get("source")) in sources
            )
            if None in sources or missing:
                why = "some slides record no source file, so the same slide cannot be recognised"
    return Pretraining(
        name=name or str(pretext), path=path, arch=arch, stage=record.stage,
        pretext=str(pretext),
        store=store_path, slides=slides, n_patches=n_patches, leaked=tuple(leaked),
        unverifiable=why, seed=record.seed,
    )  # fmt: skip


def check_pretraining(pre: Pretraining, *, allow: bool) -> list[str]:
    """Refuse (CheckpointError) a checkpoint pretrained on labeled (test) slides, or one whose
    data cannot be checked, unless `allow`; returns notes for table.md."""
    notes = []
    if pre.leaked:
        text = (
            f"{pre.path} was pretrained on {len(pre.leaked)} slide(s) of the labeled store "
            f"({', '.join(pre.leaked[:6])}{', ...' if len(pre.leaked) > 6 else ''}), and every "
            "labeled slide is a test slide in one fold"
        )
        if not allow:
            raise LeakageError(
                f"{text}: pretrain on a separate unlabeled store, or pass "
                "--allow-test-in-pretraining to run anyway (the table will say so)"
            )
        notes.append(f"{text} (allowed by --allow-test-in-pretraining: optimistic).")
    if pre.unverifiable:
        if not allow:
            raise LeakageError(
                f"cannot check that no test slide pretrained {pre.path}: "
                f"{pre.unverifiable}; pass --allow-test-in-pretraining to run anyway"
            )
        notes.append(f"{pre.path}: not checked for test slides ({pre.unverifiable}).")
    if pre.stage != "pretrain":
        warnings.warn(
            f"{pre.path} is a {pre.stage!r} checkpoint, not a reconstruction pretraining "
            "(`lymph train --stage pretrain`): the pretrained condition starts from it anyway",
            stacklevel=3,
        )
        notes.append(f"{pre.path} is a {pre.stage!r} checkpoint, not a pretraining.")
    return notes


def corpus_note(pre: Pretraining, largest: int) -> str | None:
    """A note when the pretraining corpus is under PRETRAIN_RATIO x the largest labeled set."""
    if pre.n_patches is None or pre.n_patches >= PRETRAIN_RATIO * largest:
        return None
    return (
        f"{pre.condition}: pretrained on {pre.n_patches} patches = "
        f"{pre.n_patches / largest:.1f}x the largest labeled set ({largest}); the paper's was "
        f"~{PRETRAIN_RATIO}x."
    )


def check_architectures(pres: Sequence[Pretraining], base_width: int | None) -> Arch:
    arch = pres[0].arch
    for p in pres[1:]:
        if p.arch != arch:
            raise CheckpointError(
                f"{p.path} has architecture {p.arch}, {pres[0].path} has {arch}: the pretexts "
                "compare only on one architecture; pretrain them with the same model settings"
            )
    if base_width is not None and base_width != arch.get("base_width"):
        raise CheckpointError(
            f"{pres[0].path} has base width {arch.get('base_width')}, --base-width "
            f"{base_width} asks for another: every condition uses the pretrained "
            "architecture; drop --base-width or pretrain at that width"
        )
    return arch


def group_pretrainings(
    pres: Sequence[Pretraining],
) -> tuple[dict[str, list[Pretraining]], list[str]]:
    """{pretrained condition: its checkpoints} in the order given, and notes; ConfigError when
    checkpoints of one name were pretrained with different pretexts."""
    groups: dict[str, list[Pretraining]] = {}
    for p in pres:
        groups.setdefault(p.condition, []).append(p)
    notes = []
    for cond, group in groups.items():
        kinds = sorted({p.pretext for p in group})
        if len(kinds) > 1:
            paths = ", ".join(str(p.path) for p in group)
            raise ConfigError(
                f"the checkpoints named {cond[len(PRETRAINED) :]!r} ({paths})"
                " were pretrained with different pretexts {kinds}: give each pretext its own "
                "name, e.g. --pretrained identity=a.pt --pretrained genesis=b.pt"
            )
        seeds = [p.seed for p in group]
        if len(group) < 2:
            notes.append(
                f"{cond}: one pretraining checkpoint, so pretraining randomness is not "
                "replicated (give >= 2 seeds: --pretrained NAME=a.pt --pretrained NAME=b.pt)."
            )
        elif None not in seeds and len(set(seeds)) < len(seeds):
            notes.append(f"{cond}: its checkpoints record the same pretraining seed {seeds}.")
    return groups, notes
