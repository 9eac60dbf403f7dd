from __future__ import annotations

import numpy as np
import pytest

from lymph.data.errors import ConfigError
from lymph.model.metrics import PixelCounts
from lymph.model.study import (
    CONDITIONS,
    StudyConfig,
    balanced_subset,
    make_folds,
    plan_runs,
    summarize,
    table_markdown,
)

SLIDES = [(f"tumor_{i:03d}", "tumor") for i in range(7)] + [
    (f"normal_{i:03d}", "normal") for i in range(5)
]


def _labels(seed: int = 0, n: int = 30) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        sid: (rng.random(n) < 0.4).astype(np.uint8) if st == "tumor" else np.zeros(n, np.uint8)
        for sid, st in SLIDES
    }


def test_folds_never_share_a_slide_and_cover_all() -> None:
    folds = make_folds(SLIDES, 5, seed=1)
    assert len(folds) == 5
    flat = [s for f in folds for s in f]
    assert sorted(flat) == sorted(s for s, _ in SLIDES)  # each slide exactly once
    assert len(set(flat)) == len(flat)
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    # 7 tumor slides over 5 folds: every held-out fold holds a tumor slide
    assert all(any(s.startswith("tumor") for s in f) for f in folds)
    assert make_folds(SLIDES, 5, seed=1) == folds
    assert make_folds(SLIDES, 5, seed=2) != folds


def test_too_few_slides_for_folds() -> None:
    with pytest.raises(ConfigError, match="cannot make 5 folds grouped by slide.*--folds 3"):
        make_folds(SLIDES[:3], 5, seed=0)


def test_one_fold_is_not_cross_validation() -> None:
    with pytest.raises(ConfigError, match="folds must be >= 2"):
        make_folds(SLIDES, 1, seed=0)


def test_balanced_subset_is_balanced_seeded_and_unique() -> None:
    labels = _labels()
    a = balanced_subset(labels, 40, rng=np.random.default_rng([0, 1, 40]))
    assert a == balanced_subset(labels, 40, rng=np.random.default_rng([0, 1, 40]))
    assert len(a) == 40 and len(set(a)) == 40
    assert sum(int(labels[s][i]) for s, i in a) == 20


def test_balanced_subset_fills_a_short_class() -> None:
    labels = {"t": np.array([1, 1, 0, 0, 0, 0, 0, 0], np.uint8)}
    subset = balanced_subset(labels, 6, rng=np.random.default_rng(0))
    assert sum(int(labels["t"][i]) for _, i in subset) == 2  # all tumor patches, rest normal
    assert len(subset) == 6


def test_balanced_subset_too_large() -> None:
    with pytest.raises(ConfigError, match="fewer than the subset size 9"):
        balanced_subset({"t": np.array([1, 0, 1], np.uint8)}, 9, rng=np.random.default_rng(0))


def test_plan_pairs_conditions_on_identical_subsets() -> None:
    labels = _labels()
    runs = plan_runs(SLIDES, labels, sizes=(40, 20), n_folds=4, seed=7)
    assert len(runs) == 2 * 4 * len(CONDITIONS)
    by_key: dict[tuple[int, int], list] = {}
    for r in runs:
        by_key.setdefault((r.size, r.fold), []).append(r)
        # training subset only from training slides; test fold disjoint from training
        assert not set(r.train_slides) & set(r.test_slides)
        assert {s for s, _ in r.subset} <= set(r.train_slides)
    for pair in by_key.values():
        scratch, pre = sorted(pair, key=lambda r: r.condition)[::-1]
        assert (scratch.condition, pre.condition) == ("scratch", "pretrained")
        assert scratch.subset == pre.subset
        assert scratch.train_seed == pre.train_seed
        assert scratch.fingerprint()["subset_sha"] == pre.fingerprint()["subset_sha"]
        assert scratch.run_id != pre.run_id
    # different folds or sizes draw different subsets
    assert by_key[(40, 0)][0].subset != by_key[(40, 1)][0].subset
    assert by_key[(40, 0)][0].train_seed != by_key[(20, 0)][0].train_seed


def test_summary_and_table_hand_case() -> None:
    rows = []
    for fold, (f_s, f_p) in enumerate([(0.5, 0.6), (0.4, 0.3)]):
        for cond, f1 in (("scratch", f_s), ("pretrained", f_p)):
            rows.append(
                {
                    "size": 40,
                    "fold": fold,
                    "condition": cond,
                    "precision": f1,
                    "recall": 1.0,
                    "f1": f1,
                }
            )
    (entry,) = summarize(rows)
    assert entry["scratch_f1"] == pytest.approx((0.45, np.std([0.5, 0.4], ddof=1)))
    assert entry["pretrained_f1"][0] == pytest.approx(0.45)
    # paired differences: +0.1 and -0.1 -> mean 0, sd 0.1414
    assert entry["f1_diff"] == pytest.approx((0.0, np.std([0.1, -0.1], ddof=1)), abs=1e-12)
    assert entry["f1_diff_positive"] == 1 and entry["f1_diff_folds"] == 2
    md = table_markdown([entry])
    assert "| 40 | 45.00 ± 7.07 | 100.00 ± 0.00 | 45.00 ± 7.07 |" in md
    assert "+0.00 ± 14.14 | 1/2 |" in md


def test_study_config_validation(tmp_path) -> None:
    with pytest.raises(ConfigError, match="sizes must be integers >= 2"):
        StudyConfig(store=tmp_path, pretrained=tmp_path / "p.pt", out=tmp_path, sizes=(0,))
    with pytest.raises(ConfigError, match="sizes repeat"):
        StudyConfig(store=tmp_path, pretrained=tmp_path / "p.pt", out=tmp_path, sizes=(4, 4))
    with pytest.raises(ConfigError, match="threshold must be within"):
        StudyConfig(store=tmp_path, pretrained=tmp_path / "p.pt", out=tmp_path, threshold=2.0)
    quick = StudyConfig(store=tmp_path, pretrained=tmp_path / "p.pt", out=tmp_path, quick=True)
    assert quick.resolved("steps") is not None and quick.resolved("crop") is not None
    paper = StudyConfig(store=tmp_path, pretrained=tmp_path / "p.pt", out=tmp_path, steps=7)
    assert paper.resolved("steps") == 7 and paper.resolved("crop") is None


P = 32


def _tiny_world(root):
    """4 labeled slides of 8 patches (32 px) and an untrained tiny 'pretrained' checkpoint."""
    import torch

    from lymph.data.store import create_store, write_slide
    from lymph.model.checkpoint import save_checkpoint
    from lymph.model.unet import UNet, UNetConfig

    rng = np.random.default_rng(0)
    store = root / "store.zarr"
    create_store(store, {"patch_size": P, "level": 0, "seed": 0})
    for sid, tumor in (
        ("normal_001", False),
        ("tumor_001", True),
        ("tumor_002", True),
        ("tumor_003", True),
    ):
        n = 8
        masks = np.zeros((n, P, P), np.uint8)
        labels = np.zeros(n, np.uint8)
        if tumor:
            masks[::2, 4:20, 6:26] = 1
            labels[::2] = 1
        images = np.where(masks[..., None] == 1, (90, 40, 140), (230, 170, 210))
        images = np.clip(images + rng.integers(-10, 10, images.shape), 0, 255).astype(np.uint8)
        write_slide(
            store,
            sid,
            images=images,
            coords=np.zeros((n, 2), np.int64),
            labels=labels,
            masks=masks,
            attrs={"status": "tumor" if tumor else "normal"},
        )
    torch.manual_seed(0)  # the throwaway checkpoint's weights only
    pretrained = root / "pre.pt"
    save_checkpoint(
        pretrained, model=UNet(UNetConfig(base_width=4, depth=2)), config={"stage": "pretrain"}
    )
    return store, pretrained


def test_study_runs_resumes_and_refuses_other_settings(tmp_path) -> None:
    import csv

    from lymph.model.study import run_study

    store, pretrained = _tiny_world(tmp_path)
    cfg = dict(
        store=store,
        pretrained=pretrained,
        out=tmp_path / "study",
        sizes=(4,),
        folds=2,
        steps=2,
        batch_size=2,
        crop=16,
        workers=0,
        device="cpu",
        progress=False,
    )
    first = run_study(StudyConfig(**cfg))
    assert (first["ran"], first["skipped"]) == (4, 0)
    rows = list(csv.DictReader((tmp_path / "study" / "results.csv").open()))
    assert len(rows) == 4
    for fold in ("0", "1"):
        pair = [r for r in rows if r["fold"] == fold]
        assert {r["condition"] for r in pair} == set(CONDITIONS)
        assert len({r["subset_sha"] for r in pair}) == 1  # identical labeled subsets
        assert len({r["train_seed"] for r in pair}) == 1
        assert not set(pair[0]["train_slides"].split(";")) & set(pair[0]["test_slides"].split(";"))
    assert {r["steps"] for r in rows} == {"2"}
    for name in ("table.md", "f1_vs_size.png", "study.json"):
        assert (tmp_path / "study" / name).stat().st_size > 0
    assert "| 4 |" in (tmp_path / "study" / "table.md").read_text()
    assert not list((tmp_path / "study").rglob("*.pt"))  # checkpoints dropped after scoring

    # a rerun skips every finished run and reproduces the table
    table = (tmp_path / "study" / "table.md").read_text()
    (tmp_path / "study" / "runs" / "n0004_f1_pretrained" / "done.json").unlink()
    second = run_study(StudyConfig(**cfg))
    assert (second["ran"], second["skipped"]) == (1, 3)
    third = run_study(StudyConfig(**cfg))
    assert (third["ran"], third["skipped"]) == (0, 4)
    assert (tmp_path / "study" / "table.md").read_text() == table  # deterministic rerun

    with pytest.raises(ConfigError, match="made with other settings.*steps: 2 then, 3 now"):
        run_study(StudyConfig(**{**cfg, "steps": 3}))


def test_study_refuses_other_base_width(tmp_path) -> None:
    from lymph.data.errors import CheckpointError
    from lymph.model.study import run_study

    store, pretrained = _tiny_world(tmp_path)
    with pytest.raises(CheckpointError, match="has base width 4, --base-width 8"):
        run_study(
            StudyConfig(
                store=store,
                pretrained=pretrained,
                out=tmp_path / "s",
                sizes=(4,),
                folds=2,
                base_width=8,
                progress=False,
            )
        )


def test_study_too_few_slides_for_folds(tmp_path) -> None:
    from lymph.model.study import run_study

    store, pretrained = _tiny_world(tmp_path)
    with pytest.raises(ConfigError, match="4 labeled slide.*cannot make 5 folds"):
        run_study(
            StudyConfig(
                store=store,
                pretrained=pretrained,
                out=tmp_path / "s",
                sizes=(4,),
                folds=5,
                progress=False,
            )
        )


def test_pooled_over_folds_and_folds_without_tumor() -> None:
    # fold 0 has tumor; fold 1 holds only a normal slide (tp + fn == 0)
    counts = {
        (0, "scratch"): (6, 4, 4, 86), (0, "pretrained"): (8, 2, 2, 88),
        (1, "scratch"): (0, 5, 0, 95), (1, "pretrained"): (0, 0, 0, 100),
    }  # fmt: skip
    rows = []
    for (fold, cond), (tp, fp, fn, tn) in counts.items():
        c = PixelCounts(tp=tp, fp=fp, fn=fn, tn=tn)
        rows.append({"size": 40, "fold": fold, "condition": cond, **c.to_dict()})
    (entry,) = summarize(rows)
    # pooled scratch: tp 6, fp 9, fn 4 -> P 6/15, R 6/10, F1 12/25
    assert entry["scratch_pooled"]["precision"] == pytest.approx(6 / 15)
    assert entry["scratch_pooled"]["f1"] == pytest.approx(12 / 25)
    assert entry["pretrained_pooled"]["f1"] == pytest.approx(16 / 20)
    assert entry["folds_without_tumor"] == 1
    # per-fold convention: the normal fold scores 0 (false alarms) vs 1 (nothing predicted)
    assert entry["scratch_f1"][0] == pytest.approx((0.6 + 0.0) / 2)
    assert entry["pretrained_f1"][0] == pytest.approx((0.8 + 1.0) / 2)
    md = table_markdown([entry])
    assert "| 40 | 40.00 | 60.00 | 48.00 | 80.00 | 80.00 | 80.00 | 1 |" in md
    assert "hold no tumor pixels" in md
