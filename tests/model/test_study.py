from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lymph.data.errors import CheckpointError, ConfigError
from lymph.model.study import (
    SCRATCH,
    SEG_ONLY,
    StudyConfig,
    balanced_subset,
    comparisons_for,
    inner_val_slides,
    make_folds,
    parse_pretrained,
    plan_runs,
)
from lymph.model.study_report import _pp

CONDITIONS = (SCRATCH, SEG_ONLY, "pretrained_identity")

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
    with pytest.warns(UserWarning, match="not balanced: 2 tumor and 4 non-tumor"):
        subset = balanced_subset(labels, 6, rng=np.random.default_rng(0))
    assert sum(int(labels["t"][i]) for _, i in subset) == 2  # all tumor patches, rest normal
    assert len(subset) == 6


def test_balanced_subset_too_large() -> None:
    with pytest.raises(ConfigError, match="fewer than the subset size 9"):
        balanced_subset({"t": np.array([1, 0, 1], np.uint8)}, 9, rng=np.random.default_rng(0))


def test_inner_validation_takes_tumor_first_and_keeps_one_to_train() -> None:
    train = [("tumor_a", "tumor"), ("tumor_b", "tumor"), ("normal_a", "normal")]
    val = inner_val_slides(train, 2, rng=np.random.default_rng(0))
    assert len(val) == 2 and "normal_a" in val
    assert sum(v.startswith("tumor") for v in val) == 1  # one tumor slide is left to train on
    only_tumor = [("t1", "tumor"), ("t2", "tumor"), ("t3", "tumor")]
    assert len(inner_val_slides(only_tumor, 2, rng=np.random.default_rng(0))) == 2


def test_inner_validation_needs_two_tumor_slides() -> None:
    with pytest.raises(ConfigError, match="training folds hold 1 tumor slide.*fewer --folds"):
        inner_val_slides([("t", "tumor"), ("n", "normal")], 1, rng=np.random.default_rng(0))


def test_plan_pairs_conditions_and_redraws_per_repeat() -> None:
    labels = _labels()
    runs = plan_runs(SLIDES, labels, sizes=(40, 20), n_folds=3, seed=7, repeats=2,
                     conditions=CONDITIONS)  # fmt: skip
    assert len(runs) == 2 * 3 * 2 * len(CONDITIONS)
    by_pair: dict[tuple, list] = {}
    for r in runs:
        by_pair.setdefault(r.pair, []).append(r)
        # no slide on two sides: train, inner validation and test are disjoint
        assert not set(r.train_slides) & set(r.test_slides)
        assert not set(r.val_slides) & (set(r.train_slides) | set(r.test_slides))
        assert {s for s, _ in r.subset} <= set(r.train_slides)
        assert any(s.startswith("tumor") for s in r.val_slides)
    for pair in by_pair.values():
        assert sorted(r.condition for r in pair) == sorted(CONDITIONS)
        assert len({r.subset for r in pair}) == 1  # identical labeled subsets
        assert len({r.train_seed for r in pair}) == 1
        assert len({r.val_slides for r in pair}) == 1
        assert len({r.run_id for r in pair}) == len(CONDITIONS)
    # the subset, seed and validation slides are redrawn per repeat
    r0, r1 = by_pair[(40, 0, 0)][0], by_pair[(40, 0, 1)][0]
    assert r0.subset != r1.subset and r0.train_seed != r1.train_seed
    assert r0.test_slides == r1.test_slides
    assert by_pair[(40, 0, 0)][0].train_seed != by_pair[(20, 0, 0)][0].train_seed


def test_plan_refuses_a_test_fold_without_tumor() -> None:
    slides = [("tumor_001", "tumor"), ("tumor_002", "tumor"), ("normal_001", "normal")]
    labels = {s: np.zeros(10, np.uint8) for s, _ in slides}
    with pytest.raises(ConfigError, match="test fold 2 .* holds no tumor slide"):
        plan_runs(slides, labels, sizes=(4,), n_folds=3, seed=0, conditions=CONDITIONS)


def test_comparisons_pair_each_pretext_with_the_scratch_run_of_its_loss() -> None:
    conds = [SCRATCH, "scratch_genesis", SEG_ONLY, "pretrained_identity", "pretrained_genesis"]
    pretexts = {"pretrained_identity": "identity", "pretrained_genesis": "genesis"}
    assert comparisons_for(conds, pretexts) == [
        ("pretrained_identity", SCRATCH), ("pretrained_genesis", "scratch_genesis"),
        ("pretrained_identity", SEG_ONLY), ("pretrained_genesis", SEG_ONLY),
        ("pretrained_genesis", "pretrained_identity"),
    ]  # fmt: skip


def test_study_config_validation(tmp_path) -> None:
    base = dict(store=tmp_path, pretrained=tmp_path / "p.pt", out=tmp_path)
    with pytest.raises(ConfigError, match="sizes must be integers >= 2"):
        StudyConfig(**base, sizes=(0,))
    with pytest.raises(ConfigError, match="sizes repeat"):
        StudyConfig(**base, sizes=(4, 4))
    with pytest.raises(ConfigError, match="outside"):
        StudyConfig(**base, threshold=2.0)
    with pytest.raises(ConfigError, match="--quick and --profile standard disagree"):
        StudyConfig(**base, quick=True, profile="standard")
    with pytest.raises(ConfigError, match="profile must be one of"):
        StudyConfig(**base, profile="huge")
    with pytest.raises(ConfigError, match="conditions .'nope'. unknown"):
        StudyConfig(**base, conditions=("nope",))
    with pytest.raises(ConfigError, match="one checkpoint twice"):
        StudyConfig(**{**base, "pretrained": ["a=x.pt", "a=x.pt"]})
    assert len(StudyConfig(**{**base, "pretrained": ["a=x.pt", "a=y.pt"]}).pretrained) == 2
    with pytest.raises(ConfigError, match=r"margin must be within \(0, 1\).*0.02 = 2 pp"):
        StudyConfig(**base, margin=2.0)
    with pytest.raises(ConfigError, match="pilot_sd must be within"):
        StudyConfig(**base, pilot_sd=0.0)
    with pytest.raises(ConfigError, match="not a pretext name"):
        parse_pretrained(["Bad Name=x.pt"])
    quick = StudyConfig(**base, quick=True)
    assert quick.profile == "quick" and quick.resolved("steps") is not None
    assert StudyConfig(**base, profile="quick", steps=7).resolved("steps") == 7
    assert parse_pretrained(["genesis=a.pt", "b.pt"]) == (("genesis", Path("a.pt")),
                                                          (None, Path("b.pt")))  # fmt: skip


P = 32


def _write_world(store, slides, *, root, labeled: bool, seed: int) -> None:
    from lymph.data.store import create_store, write_slide

    rng = np.random.default_rng(seed)
    create_store(store, {"patch_size": P, "level": 0, "seed": seed})
    for sid, tumor in slides:
        n = 8
        masks = np.zeros((n, P, P), np.uint8)
        labels = np.zeros(n, np.uint8)
        if tumor:
            masks[::2, 4:20, 6:26] = 1
            labels[::2] = 1
        images = np.where(masks[..., None] == 1, (90, 40, 140), (230, 170, 210))
        images = np.clip(images + rng.integers(-10, 10, images.shape), 0, 255).astype(np.uint8)
        status = ("tumor" if tumor else "normal") if labeled else "unlabeled"
        write_slide(
            store, sid, images=images, coords=np.zeros((n, 2), np.int64),
            labels=labels if labeled else None, masks=masks if labeled else None,
            attrs={"status": status, "source": str(root / f"{sid}.tif")},
        )  # fmt: skip


def _pretrain(store, out, *, seed: int = 0, pretext: str = "identity"):
    from lymph.model.train import TrainConfig, train

    cfg = TrainConfig(store=store, out=out, stage="pretrain", steps=2, batch_size=2, crop=16,
                      base_width=4, depth=2, workers=0, val_slides=0, seed=seed, device="cpu",
                      eval_every=2, checkpoint_every=2, pretext=pretext)  # fmt: skip
    return train(cfg, progress=False).last


LABELED = [(f"tumor_{i:03d}", True) for i in range(1, 7)] + [("normal_001", False),
                                                            ("normal_002", False)]  # fmt: skip


def _tiny_world(root):
    """A labeled world (6 tumor, 2 normal slides of 8 patches of 32 px) from one slide folder,
    and a separate unlabeled pretraining world from another, really pretrained for 2 steps."""
    store = root / "labeled.zarr"
    _write_world(store, LABELED, root=root / "lab_slides", labeled=True, seed=0)
    pre_store = root / "pre.zarr"
    _write_world(pre_store, [(f"tumor_{i:03d}", True) for i in range(1, 4)],
                 root=root / "pre_slides", labeled=False, seed=1)  # fmt: skip
    return store, _pretrain(pre_store, root / "pre_run")


def _cfg(store, pretrained, out, **kw):
    base = dict(store=store, pretrained=pretrained, out=out, sizes=(4,), folds=2, repeats=1,
                steps=2, eval_every=1, patience=2, val_slides=2, val_patches=8, batch_size=2,
                crop=16, workers=0, device="cpu", progress=False, jobs=1, resamples=200)
    return StudyConfig(**{**base, **kw})  # fmt: skip


def test_study_runs_records_provenance_resumes_and_refuses_other_settings(tmp_path) -> None:
    import csv
    import json

    from lymph.model.study import run_study

    store, pretrained = _tiny_world(tmp_path)
    out = tmp_path / "study"
    first = run_study(_cfg(store, [f"identity={pretrained}"], out))
    assert (first["ran"], first["skipped"]) == (6, 0)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted({r["condition"] for r in rows}) == sorted(CONDITIONS)
    for r in rows:
        train, val, test = (set(r[k].split(";")) for k in ("train_slides", "val_slides",
                                                            "test_slides"))  # fmt: skip
        assert not (train & val or train & test or val & test)
        assert int(r["n_test_patches"]) == 8 * len(test)  # every patch of every test slide
        assert 0 <= float(r["ap"]) <= 1 and 0 <= float(r["threshold"]) <= 1
        if r["condition"] == "pretrained_identity":
            assert r["pretrain_slides"] == "tumor_001;tumor_002;tumor_003"
            assert r["pretrain_store"].endswith("pre.zarr")
        else:
            assert r["pretrain_slides"] == ""
        assert float(r["recon_weight"] or 1) == (0.0 if r["condition"] == SEG_ONLY else 1.0)
    for fold in ("0", "1"):
        pair = [r for r in rows if r["fold"] == fold]
        assert len({r["subset_sha"] for r in pair}) == 1
        assert len({r["train_seed"] for r in pair}) == 1
    study = json.loads((out / "study.json").read_text())
    assert study["pretraining"][0]["leaked"] == [] and study["protocol"]["primary"]["size"] == 4
    table = (out / "table.md").read_text()
    assert table.index("Primary endpoint") < table.index("## Results")
    assert "**Primary endpoint**: no verdict: 2 pairs < 10" in table
    assert "Step cap 2: 100% of 6 runs never early-stopped" in table
    assert study["results"]["step_cap"]["at_cap"] == 1.0
    record = json.loads((out / "protocol.json").read_text())
    assert record["sha256"] == study["protocol_sha256"] and record["amendments"] == []
    assert f"Protocol sha256 `{record['sha256']}`" in table and "Deviations" in table
    assert (out / "f1_vs_size.png").stat().st_size > 0
    assert not list(out.rglob("*.pt"))  # checkpoints dropped after scoring

    # a killed study: one run lost its done.json and left a half-written train folder
    (out / "runs" / "n0004_f1_r0_scratch" / "done.json").unlink()
    (out / "runs" / "n0004_f1_r0_scratch" / "train" / "last.pt").write_bytes(b"half")
    second = run_study(_cfg(store, [f"identity={pretrained}"], out))
    assert (second["ran"], second["skipped"]) == (1, 5)
    assert (out / "table.md").read_text() == table  # the same result again
    # a size added after results were seen: run, and listed as a deviation (not silent)
    third = run_study(_cfg(store, [f"identity={pretrained}"], out, sizes=(4, 6)))
    assert (third["ran"], third["skipped"]) == (6, 6)
    assert "after 6 finished run(s), protocol " in (out / "table.md").read_text()
    assert "sizes: [4] → [4, 6]" in (out / "table.md").read_text()
    table = (out / "table.md").read_text()
    with pytest.raises(ConfigError, match="made with other settings.*steps: 2 then, 3 now"):
        run_study(_cfg(store, [f"identity={pretrained}"], out, steps=3))
    # a flipped or foreign done.json: named, with the fix, no traceback, nothing deleted
    done = out / "runs" / "n0004_f1_r0_scratch" / "done.json"
    done.write_text("garbage{")
    with pytest.raises(ConfigError, match="done.json: not a finished run's record.*delete"):
        run_study(_cfg(store, [f"identity={pretrained}"], out, sizes=(4, 6)))
    assert done.read_text() == "garbage{" and (out / "table.md").read_text() == table
    (out / "protocol.json").write_text("[1]")
    done.unlink()
    with pytest.raises(ConfigError, match="protocol.json: not a protocol record.*new --out"):
        run_study(_cfg(store, [f"identity={pretrained}"], out, sizes=(4, 6)))


def test_study_refuses_a_test_slide_in_pretraining(tmp_path) -> None:
    from lymph.model.study import run_study

    store, _ = _tiny_world(tmp_path)
    leaky = _pretrain(store, tmp_path / "leaky")  # pretrained on the labeled store itself
    with pytest.raises(CheckpointError, match="pretrained on 8 slide.*--allow-test-in-pretrain"):
        run_study(_cfg(store, leaky, tmp_path / "s"))
    from click.testing import CliRunner

    from lymph.cli import main

    refused = CliRunner().invoke(main, ["study", "--store", str(store), "--pretrained",
                                        str(leaky), "--out", str(tmp_path / "cli")])
    assert refused.exit_code == 2, refused.output  # a setting to change: a usage error
    assert "--allow-test-in-pretraining" in refused.output
    done = run_study(_cfg(store, leaky, tmp_path / "s", allow_test_in_pretraining=True,
                          conditions=(SCRATCH,)))  # fmt: skip
    assert done["ran"] == 4
    assert "allowed by --allow-test-in-pretraining" in (tmp_path / "s" / "table.md").read_text()


def test_study_refuses_a_checkpoint_that_records_no_data(tmp_path) -> None:
    from lymph.model.checkpoint import save_checkpoint
    from lymph.model.study import run_study
    from lymph.model.unet import UNet, UNetConfig

    store, _ = _tiny_world(tmp_path)
    bare = tmp_path / "bare.pt"
    net = UNet(UNetConfig(base_width=4, depth=2))
    save_checkpoint(bare, model=net, config={"stage": "pretrain"})
    with pytest.raises(CheckpointError, match="records no pretraining store or slide ids"):
        run_study(_cfg(store, bare, tmp_path / "s"))


def test_study_compares_pretexts_in_parallel_processes(tmp_path) -> None:
    import csv

    from lymph.model.study import run_study

    store, first = _tiny_world(tmp_path)
    second = _pretrain(tmp_path / "pre.zarr", tmp_path / "pre_run2", seed=1)
    out = tmp_path / "s"
    result = run_study(_cfg(store, [f"a={first}", f"b={second}"], out, jobs=2,
                            conditions=(SCRATCH,)))  # fmt: skip
    assert result["ran"] == 6
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted({r["condition"] for r in rows}) == ["pretrained_a", "pretrained_b", SCRATCH]
    assert ("pretrained_b", "pretrained_a") in result["summary"][0]["comparisons"]
    assert "pretrained_b − pretrained_a" in (out / "table.md").read_text()


def test_repeat_r_starts_from_checkpoint_r_mod_n() -> None:
    from types import SimpleNamespace

    from lymph.model.study import init_for

    ctx = SimpleNamespace(inits={"pretrained_a": (Path("s0.pt"), Path("s1.pt"))})
    spec = SimpleNamespace(condition="pretrained_a", repeat=0)
    picks = [init_for(ctx, SimpleNamespace(condition="pretrained_a", repeat=r)) for r in range(4)]
    assert picks == [Path("s0.pt"), Path("s1.pt"), Path("s0.pt"), Path("s1.pt")]
    assert init_for(ctx, SimpleNamespace(condition=SCRATCH, repeat=0)) is None
    assert init_for(ctx, spec) == Path("s0.pt")


@pytest.mark.slow
def test_study_spans_pretraining_seeds_and_matches_each_pretexts_loss(tmp_path) -> None:
    import csv

    from lymph.model.study import run_study

    store, first = _tiny_world(tmp_path)
    second = _pretrain(tmp_path / "pre.zarr", tmp_path / "pre_run2", seed=1)
    genesis = _pretrain(tmp_path / "pre.zarr", tmp_path / "pre_gen", pretext="genesis")
    out = tmp_path / "s"
    pre = [f"identity={first}", f"identity={second}", f"genesis={genesis}"]
    result = run_study(_cfg(store, pre, out, repeats=2, folds=2, conditions=(SCRATCH,)))
    rows = list(csv.DictReader((out / "results.csv").open()))
    conds = {r["condition"] for r in rows}
    assert conds == {SCRATCH, "scratch_genesis", "pretrained_identity", "pretrained_genesis"}
    assert {r["pretext"] for r in rows if r["condition"] == "scratch_genesis"} == {"genesis"}
    ident = [r for r in rows if r["condition"] == "pretrained_identity"]
    # repeat r uses checkpoint r mod 2: each fold's two repeats span both pretraining seeds
    assert {(r["repeat"], r["pretrain_seed"]) for r in ident} == {("0", "0"), ("1", "1")}
    assert {r["init"] for r in ident} == {str(first), str(second)}
    comparisons = result["summary"][0]["comparisons"]
    assert ("pretrained_genesis", "scratch_genesis") in comparisons
    assert ("pretrained_genesis", SCRATCH) not in comparisons
    assert "pretrained_genesis: one pretraining checkpoint" in result["notes"][0]
    with pytest.raises(ConfigError, match="pretrained with different pretexts"):
        run_study(_cfg(store, [f"x={first}", f"x={genesis}"], tmp_path / "t"))


def test_study_refuses_other_base_width_and_too_few_slides(tmp_path) -> None:
    from lymph.model.study import run_study

    store, pretrained = _tiny_world(tmp_path)
    with pytest.raises(CheckpointError, match="has base width 4, --base-width 8"):
        run_study(_cfg(store, pretrained, tmp_path / "s", base_width=8))
    with pytest.raises(ConfigError, match="8 labeled slide.*cannot make 9 folds"):
        run_study(_cfg(store, pretrained, tmp_path / "s", folds=9))


def test_study_command_runs_and_reports_bad_input(tmp_path) -> None:
    from click.testing import CliRunner

    from lymph.cli import main

    store, pretrained = _tiny_world(tmp_path)
    args = ["study", "--store", str(store), "--out", str(tmp_path / "s"), "--sizes", "4",
            "--folds", "2", "--repeats", "1", "--steps", "2", "--eval-every", "1",
            "--batch-size", "2", "--crop", "16", "--val-patches", "8", "--device", "cpu",
            "--jobs", "1", "--condition", "scratch"]  # fmt: skip
    result = CliRunner().invoke(main, [*args, "--pretrained", f"identity={pretrained}"])
    assert result.exit_code == 0, result.output
    assert "4 run(s) done now" in result.output and "Primary endpoint" in result.output
    bad = CliRunner().invoke(main, [*args, "--pretrained", "Bad Name=x.pt"])
    assert bad.exit_code == 2 and "is not a pretext name" in bad.output
    wide = CliRunner().invoke(main, [*args, "--pretrained", str(pretrained), "--margin", "0"])
    assert wide.exit_code == 2 and "--margin" in wide.output


@pytest.mark.slow
def test_gpu_bench_dry_run_runs_the_same_path_on_cpu(tmp_path) -> None:
    import importlib.util
    import json

    path = Path(__file__).resolve().parents[2] / "bench" / "bench_study_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_study_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--out", str(tmp_path / "b"), "--dry-run"])
    assert result["device"] == "cpu" and result["grid"]["runs"] == result["grid"]["grid_runs"]
    assert result["baseline_cpu_1_thread"]["run_id"] == result["same_run_on_device"]["run_id"]
    assert json.loads((tmp_path / "b" / "result.json").read_text())["jobs"] == 1
    table = (tmp_path / "b" / "study" / "runs").iterdir()
    assert len(list(table)) == result["grid"]["runs"]


def test_pp_keeps_the_sign_of_a_ci_bound_that_rounds_to_zero() -> None:
    # [-0.04, +1.33] pp with "no detectable effect" must not read as [+0.0, +1.3]
    assert _pp(-0.0004) == "-0.04" and _pp(0.0004, signed=False) == "0.04"
    assert _pp(0.0) == _pp(-0.0) == "+0.0" and _pp(0.0133) == "+1.3" and _pp(-0.02) == "-2.0"
    assert _pp(float("nan")) == "n/a"
