"""Which slides ``lymph eval patches`` scores and which choose its threshold (``auto``), and
what it warns about the checkpoint's relation to the store: another patch geometry or scale,
or scored slides the checkpoint was trained on. The checkpoint is read as its ``RunRecord``;
its slide roles are the trainer's ``config["splits"]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lymph.data.errors import ConfigError, StoreError
from lymph.data.store import PatchStore
from lymph.model.checkpoint import RunRecord
from lymph.model.evaluate.config import AUTO, EvalConfig
from lymph.model.train.splits import pick_val_slides

# store settings that say nothing about which patches it holds: a copy or a rebuild of a
# store differs in them and still holds the same slides under the same ids
NOT_IDENTITY = frozenset({"path", "lymph_version", "schema_version", "workers", "scheduler",
                          "progress", "content_digest"})  # fmt: skip


def same_store(store: PatchStore, record: RunRecord) -> bool:
    """Whether the run in ``record`` trained on this store, so that its recorded slide ids name
    the same slides here: the same resolved path, or (a copy) the same extraction settings,
    every setting but those in ``NOT_IDENTITY``, both sides recording at least one."""
    trained = record.store
    if trained is None:
        return False
    if trained.path is not None:
        try:
            if Path(trained.path).resolve() == Path(store.path).resolve():
                return True
        except OSError:
            pass
    mine = {k: v for k, v in store.settings.items() if k not in NOT_IDENTITY}
    theirs = {k: v for k, v in trained.settings.items() if k not in NOT_IDENTITY}
    return bool(mine) and mine == theirs


def split_validation(
    slides: Sequence[tuple[str, str]], *, fraction: float, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    """Seeded split of labeled (slide_id, status) pairs into (validation, scored) slide ids.

    The validation part holds round(fraction * n) slides, at least one and at most n - 1, chosen
    by lymph's one rule (``pick_val_slides``, over the pairs sorted by id): tumor slides first,
    so at least one tumor slide when there is one, and the scored part keeps one tumor slide when
    there are two or more. ConfigError with fewer than two slides.
    """
    if len(slides) < 2:
        raise ConfigError(
            f"threshold 'auto' needs at least 2 labeled slides (one to choose the threshold, one "
            f"to score), the store has {len(slides)}; pass a number, e.g. --threshold 0.5"
        )
    n_val = min(max(1, round(fraction * len(slides))), len(slides) - 1)
    n_tumor = sum(status == "tumor" for _, status in slides)
    val = pick_val_slides(sorted(slides), n_val, rng=rng, keep_tumor=n_tumor >= 2)
    return val, sorted(s for s, _ in slides if s not in set(val))


def _requested(config: EvalConfig, store: PatchStore) -> list[str] | None:
    """The sorted ``config.slides``; StoreError for an unknown or unlabeled one."""
    if config.slides is None:
        return None
    for sid in config.slides:
        info = store.slide(sid)  # StoreError for an unknown id
        if not info.labeled:
            raise StoreError(
                f"{store.path}: slide {sid!r} is {info.status}, it has no masks to score; "
                "pass only tumor or normal slides to --slides"
            )
    return sorted(set(config.slides))


def choose_slides(
    config: EvalConfig, store: PatchStore, record: RunRecord, rng: np.random.Generator
) -> tuple[list[str], list[str], str]:
    """(scored slide ids, validation slide ids, where the validation part came from)."""
    labeled = [s for s in store.slides if s.labeled]
    if not labeled:
        raise StoreError(
            f"{store.path}: the store holds no labeled slide (tumor or normal), so there are no "
            "masks to score against; extract slides with annotations (`lymph extract` reads "
            "S.xml / S_mask.tif beside each slide, or --annotations DIR)"
        )
    labeled_ids = {s.slide_id for s in labeled}
    requested = _requested(config, store)
    if config.threshold != AUTO:
        return requested or sorted(labeled_ids), [], "none"
    if config.val_slides is not None:
        val, source = sorted(set(config.val_slides)), "given"
    else:
        recorded = record.val_slides if same_store(store, record) else None
        if (
            recorded
            and set(recorded) <= labeled_ids
            and (requested is None or not set(recorded) & set(requested))
        ):
            val, source = sorted(set(recorded)), "checkpoint"
        else:
            pool = [(s.slide_id, s.status) for s in labeled]
            if requested is not None:
                return requested, _rest(pool, requested), "all labeled slides not scored"
            val, _ = split_validation(pool, fraction=config.val_fraction, rng=rng)
            source = f"seeded split (seed {config.seed}, fraction {config.val_fraction})"
    return _checked(store, requested, labeled_ids, val), val, source


def _rest(pool: list[tuple[str, str]], requested: list[str]) -> list[str]:
    """The labeled slides outside ``requested`` (all of them choose the threshold)."""
    rest = [p for p in pool if p[0] not in set(requested)]
    if not rest:
        raise ConfigError(
            "threshold 'auto' needs labeled slides outside --slides to choose the "
            "threshold on; score fewer slides, or pass --threshold 0.5"
        )
    return sorted(p[0] for p in rest)


def _checked(
    store: PatchStore, requested: list[str] | None, labeled_ids: set[str], val: list[str]
) -> list[str]:
    """The slides to score beside the validation part ``val``; StoreError or ConfigError when
    a validation slide has no masks, one would be scored too, or none is left to score."""
    for sid in val:
        if not store.slide(sid).labeled:
            raise StoreError(f"{store.path}: validation slide {sid!r} has no masks")
    scored = requested if requested is not None else sorted(labeled_ids - set(val))
    overlap = sorted(set(scored) & set(val))
    if overlap:
        raise ConfigError(
            f"slides {overlap} would both choose the threshold and be scored; score other slides "
            "or pass a fixed --threshold"
        )
    if not scored:
        raise ConfigError("no labeled slide is left to score after the validation part")
    return scored


def _check_store_matches(store: PatchStore, record: RunRecord, warn: list[str]) -> None:
    trained = record.store
    if trained is None:
        return
    _check_scale(store, record, warn)
    for key in ("level", "patch_size", "mpp", "target_mpp"):
        if (key in trained.settings and key in store.settings
                and trained.settings[key] != store.settings[key]):  # fmt: skip
            warn.append(
                f"the checkpoint was trained on patches with {key}={trained.settings[key]!r}, "
                f"this store has {key}={store.settings[key]!r}: scores may not mean what you "
                "expect"
            )


def scale_factor(store: PatchStore, record: RunRecord) -> float | None:
    """The checkpoint's training mpp over the store patches' mpp when they differ by more than
    10% (model/scale.py), else None (no mpp on either side: None too)."""
    from lymph.model.scale import TOLERANCE, store_training_mpp

    level = store.settings.get("level")
    here = store_training_mpp(store.path, int(level)) if isinstance(level, int) else None
    there = None if record.store is None else record.store.mpp
    if here is None or there is None or abs(here / there - 1) <= TOLERANCE:
        return None
    return there / here


def _check_scale(store: PatchStore, record: RunRecord, warn: list[str]) -> None:
    """A note when the store's patches are more than 10% off the checkpoint's training mpp:
    ``run`` then resamples them to it (``rescaled_model``) and says so."""
    factor = scale_factor(store, record)
    if factor is not None and record.store is not None and record.store.mpp is not None:
        mpp = record.store.mpp
        warn.append(f"the store's patches are {mpp / factor:.3f} um/px and the "
                    f"checkpoint was trained at {mpp:.3f} um/px: each patch is "
                    f"resampled x{1 / factor:.3f} for the model and its map back to the patch "
                    "(extracting at the matching level would read sharper pixels)")


def leak_notes(store: PatchStore, record: RunRecord, scored: list[str]) -> list[str]:
    """Warnings (also returned, for the output's notes) about the checkpoint and this store:
    another patch geometry or scale, or scored slides it was trained on."""
    notes: list[str] = []
    _check_store_matches(store, record, notes)
    recorded_train = record.train_slides if same_store(store, record) else None
    leaked = sorted(set(recorded_train or []) & set(scored))
    if leaked:
        notes.append(
            f"slides {leaked} were used to train this checkpoint: their scores are optimistic; "
            "score held-out slides (--slides) or a store of test slides"
        )
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return notes
