"""`run(StudyConfig)` end to end on a tiny world (model/study/run.py, with prepare, pool,
resume and pretraining): outputs, provenance, resume, refusals and the CLI command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lymph.data.errors import CheckpointError, ConfigError
from lymph.model.study import SCRATCH, SEG_ONLY, StudyConfig, run

CONDITIONS = (SCRATCH, SEG_ONLY, "pretrained_identity")


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
    from lymph.model.train import TrainConfig
    from lymph.model.train import run as train_run

    cfg = TrainConfig(store=store, out=out, stage="pretrain", steps=2, batch_size=2, crop=16,
                      base_width=4, depth=2, workers=0, val_slides=0, seed=seed, device="cpu",
                      eval_every=2, checkpoint_every=2, pretext=pretext)  # fmt: skip
    return train_run(cfg, progress=False).last


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
    base = dict(
        store=store,
        pretrained=pretrained,
        out=out,
        sizes=(4,),
        folds=2,
        repeats=1,
        steps=2,
        eval_every=1,
        patience=2,
        val_slides=2,
        val_patches=8,
        batch_size=2,
        crop=16,
        workers=0,
        device="cpu",
        progress=False,
        jobs=1,
        resamples=200,
    )
    return StudyConfig(**{**base, **kw})  # fmt: skip


def _check_provenance(rows: list[dict[str, str]]) -> None:
    """results.csv of the tiny study: disjoint slide splits, every test patch scored, each
    condition's pretraining and loss recorded, a fold's conditions on one subset and seed."""
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


@pytest.mark.slow  # over 5 s (make test-all runs it)
def test_study_runs_records_provenance_resumes_and_refuses_other_settings(tmp_path) -> None:
    import csv
    import json

    store, pretrained = _tiny_world(tmp_path)
    out = tmp_path / "study"
    first = run(_cfg(store, [f"identity={pretrained}"], out))
    assert (first.ran, first.skipped) == (6, 0)
    _check_provenance(list(csv.DictReader((out / "results.csv").open())))
    study = json.loads((out / "study.json").read_text())
    assert study["pretraining"][0]["leaked"] == [] and study["protocol"]["primary"]["size"] == 4
    table = (out / "table.md").read_text()
    assert table.index("Primary endpoint") < table.index("## Results")
    assert "**Primary endpoint**: no verdict: 2 pairs < 10" in table
    assert "Step cap 2: 100% of 6 runs never early-stopped" in table
    assert "Compute: 6 runs, " in table and " h of wall time" in table
    assert study["results"]["step_cap"]["at_cap"] == 1.0
    record = json.loads((out / "protocol.json").read_text())
    assert record["sha256"] == study["protocol_sha256"] and record["amendments"] == []
    assert f"Protocol sha256 `{record['sha256']}`" in table and "Deviations" in table
    assert (out / "f1_vs_size.png").stat().st_size > 0
    assert not list(out.rglob("*.pt"))  # checkpoints dropped after scoring

    # a killed study: one run lost its done.json and left a half-written train folder
    (out / "runs" / "n0004_f1_r0_scratch" / "done.json").unlink()
    (out / "runs" / "n0004_f1_r0_scratch" / "train" / "last.pt").write_bytes(b"half")
    second = run(_cfg(store, [f"identity={pretrained}"], out))
    assert (second.ran, second.skipped) == (1, 5)
    assert (out / "table.md").read_text() == table  # the same result again
    # a size added after results were seen: run, and listed as a deviation (not silent)
    third = run(_cfg(store, [f"identity={pretrained}"], out, sizes=(4, 6)))
    assert (third.ran, third.skipped) == (6, 6)
    assert "after 6 finished run(s), protocol " in (out / "table.md").read_text()
    assert "sizes: [4] → [4, 6]" in (out / "table.md").read_text()
    table = (out / "table.md").read_text()
    with pytest.raises(ConfigError, match="made with other settings.*steps: 2 then, 3 now"):
        run(_cfg(store, [f"identity={pretrained}"], out, steps=3))
    # a flipped or foreign done.json: named, with the fix, no traceback, nothing deleted
    done = out / "runs" / "n0004_f1_r0_scratch" / "done.json"
    done.write_text("garbage{")
    with pytest.raises(ConfigError, match="done.json: not a finished run's record.*delete"):
        run(_cfg(store, [f"identity={pretrained}"], out, sizes=(4, 6)))
    assert done.read_text() == "garbage{" and (out / "table.md").read_text() == table
    (out / "protocol.json").write_text("[1]")
    done.unlink()
    with pytest.raises(ConfigError, match="protocol.json: not a protocol record.*new --out"):
        run(_cfg(store, [f"identity={pretrained}"], out, sizes=(4, 6)))


def test_study_refuses_a_test_slide_in_pretraining(tmp_path) -> None:
    store, _ = _tiny_world(tmp_path)
    leaky = _pretrain(store, tmp_path / "leaky")  # pretrained on the labeled store itself
    with pytest.raises(CheckpointError, match="pretrained on 8 slide.*--allow-test-in-pretrain"):
        run(_cfg(store, leaky, tmp_path / "s"))
    from click.testing import CliRunner

    from lymph.cli import main

    refused = CliRunner().invoke(
        main,
        [
            "study",
            "--store",
            str(store),
            "--pretrained",
            str(leaky),
            "--out",
            str(tmp_path / "cli"),
        ],
    )
    assert refused.exit_code == 2, refused.output  # a setting to change: a usage error
    assert "--allow-test-in-pretraining" in refused.output
    done = run(_cfg(store, leaky, tmp_path / "s", allow_test_in_pretraining=True,
                          conditions=(SCRATCH,)))  # fmt: skip
    assert done.ran == 4
    assert "allowed by --allow-test-in-pretraining" in (tmp_path / "s" / "table.md").read_text()


def test_study_refuses_a_checkpoint_that_records_no_data(tmp_path) -> None:
    from lymph.model.checkpoint import save_checkpoint
    from lymph.model.unet import UNet, UNetConfig

    store, _ = _tiny_world(tmp_path)
    bare = tmp_path / "bare.pt"
    net = UNet(UNetConfig(base_width=4, depth=2))
    save_checkpoint(bare, model=net, config={"stage": "pretrain"})
    with pytest.raises(CheckpointError, match="records no pretraining store or slide ids"):
        run(_cfg(store, bare, tmp_path / "s"))


@pytest.mark.slow  # over 5 s (make test-all runs it)
def test_study_compares_pretexts_in_parallel_processes(tmp_path) -> None:
    import csv

    store, first = _tiny_world(tmp_path)
    second = _pretrain(tmp_path / "pre.zarr", tmp_path / "pre_run2", seed=1)
    out = tmp_path / "s"
    result = run(_cfg(store, [f"a={first}", f"b={second}"], out, jobs=2,
                            conditions=(SCRATCH,)))  # fmt: skip
    assert result.ran == 6
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted({r["condition"] for r in rows}) == ["pretrained_a", "pretrained_b", SCRATCH]
    assert ("pretrained_b", "pretrained_a") in result.summary[0]["comparisons"]
    assert "pretrained_b − pretrained_a" in (out / "table.md").read_text()


@pytest.mark.slow
def test_study_spans_pretraining_seeds_and_matches_each_pretexts_loss(tmp_path) -> None:
    import csv

    store, first = _tiny_world(tmp_path)
    second = _pretrain(tmp_path / "pre.zarr", tmp_path / "pre_run2", seed=1)
    genesis = _pretrain(tmp_path / "pre.zarr", tmp_path / "pre_gen", pretext="genesis")
    out = tmp_path / "s"
    pre = [f"identity={first}", f"identity={second}", f"genesis={genesis}"]
    result = run(_cfg(store, pre, out, repeats=2, folds=2, conditions=(SCRATCH,)))
    rows = list(csv.DictReader((out / "results.csv").open()))
    conds = {r["condition"] for r in rows}
    assert conds == {SCRATCH, "scratch_genesis", "pretrained_identity", "pretrained_genesis"}
    assert {r["pretext"] for r in rows if r["condition"] == "scratch_genesis"} == {"genesis"}
    ident = [r for r in rows if r["condition"] == "pretrained_identity"]
    # repeat r uses checkpoint r mod 2: each fold's two repeats span both pretraining seeds
    assert {(r["repeat"], r["pretrain_seed"]) for r in ident} == {("0", "0"), ("1", "1")}
    assert {r["init"] for r in ident} == {str(first), str(second)}
    comparisons = result.summary[0]["comparisons"]
    assert ("pretrained_genesis", "scratch_genesis") in comparisons
    assert ("pretrained_genesis", SCRATCH) not in comparisons
    assert "pretrained_genesis: one pretraining checkpoint" in result.notes[0]
    with pytest.raises(ConfigError, match="pretrained with different pretexts"):
        run(_cfg(store, [f"x={first}", f"x={genesis}"], tmp_path / "t"))


def test_study_refuses_other_base_width_and_too_few_slides(tmp_path) -> None:
    store, pretrained = _tiny_world(tmp_path)
    with pytest.raises(CheckpointError, match="has base width 4, --base-width 8"):
        run(_cfg(store, pretrained, tmp_path / "s", base_width=8))
    with pytest.raises(ConfigError, match="8 labeled slide.*cannot make 9 folds"):
        run(_cfg(store, pretrained, tmp_path / "s", folds=9))


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

    path = Path(__file__).resolve().parents[3] / "bench" / "bench_study_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_study_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--out", str(tmp_path / "b"), "--dry-run"])
    assert result["device"] == "cpu" and result["grid"]["runs"] == result["grid"]["grid_runs"]
    assert result["baseline_cpu_1_thread"]["run_id"] == result["same_run_on_device"]["run_id"]
    assert json.loads((tmp_path / "b" / "result.json").read_text())["jobs"] == 1
    table = (tmp_path / "b" / "study" / "runs").iterdir()
    assert len(list(table)) == result["grid"]["runs"]


def test_complete_sizes_and_the_interim_warning() -> None:
    from types import SimpleNamespace

    from lymph.model.study.run import complete_sizes, interim_line, interim_title

    runs = [SimpleNamespace(size=s) for s in (40, 40, 200, 200, 120)]
    assert complete_sizes(runs, []) == []  # type: ignore[arg-type]
    rows = [{"size": 40}, {"size": "40"}, {"size": 200}]
    assert complete_sizes(runs, rows) == [40]  # type: ignore[arg-type]
    assert complete_sizes(runs, [*rows, {"size": 200}, {"size": 120}]) == [200, 120, 40]  # type: ignore[arg-type]
    line = interim_line(SimpleNamespace(runs=runs), 3, [40])  # type: ignore[arg-type]
    assert line.startswith("**Interim: 3 of 5 runs finished.**")
    assert "finished (40); pending: 200, 120." in line
    title = interim_title(SimpleNamespace(runs=runs), 3, [40])  # type: ignore[arg-type]
    assert title == "INTERIM: 3 of 5 runs finished; sizes pending: 200, 120"


def test_the_study_figure_carries_its_title(tmp_path, monkeypatch) -> None:
    from matplotlib.figure import Figure

    from lymph.model.figures import plot_study_pairs

    titles = []
    monkeypatch.setattr(Figure, "suptitle", lambda self, t, **kw: titles.append(t))
    pts = {"a": [[0.6, 0.7]], "b": [[0.5, 0.6]]}
    deltas = {"a − b": [([0.1, 0.1], (0.05, 0.15))]}
    plot_study_pairs([40], pts, deltas, tmp_path / "f.png", primary="a − b")
    assert titles == []  # a finished study: no title
    plot_study_pairs([40], pts, deltas, tmp_path / "f.png", primary="a − b", title="INTERIM: x")
    assert titles == ["INTERIM: x"] and (tmp_path / "f.png").stat().st_size > 0


@pytest.mark.slow  # over 5 s (make test-all runs it)
def test_an_unfinished_study_tables_its_complete_sizes(tmp_path, monkeypatch) -> None:
    import json

    import lymph.model.study.pool as pool

    store, pretrained = _tiny_world(tmp_path)
    out = tmp_path / "study"
    real, calls = pool.execute, []

    def killed_after_seven(ctx, spec):
        calls.append(spec.run_id)
        if len(calls) > 7:
            raise KeyboardInterrupt
        return real(ctx, spec)

    monkeypatch.setattr(pool, "execute", killed_after_seven)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(store, [f"identity={pretrained}"], out, sizes=(4, 6)))
    table = (out / "table.md").read_text()  # written when size 4's sixth run finished
    assert "**Interim: 6 of 12 runs finished.**" in table
    assert "finished (4); pending: 6." in table
    assert "**Primary endpoint**: no verdict: 2 pairs < 10" in table
    assert "| 6 |" not in table and "Compute: 6 runs, " in table
    study = json.loads((out / "study.json").read_text())
    assert study["results"]["interim"] == {"complete_sizes": [4], "runs": 6}
    assert len((out / "results.csv").read_text().splitlines()) == 1 + 6  # every finished run
    monkeypatch.setattr(pool, "execute", real)
    done = run(_cfg(store, [f"identity={pretrained}"], out, sizes=(4, 6)))
    assert (done.ran, done.skipped) == (5, 7)
    table = (out / "table.md").read_text()
    assert "Interim" not in table and "Compute: 12 runs, " in table
    assert json.loads((out / "study.json").read_text())["results"]["interim"] is None
