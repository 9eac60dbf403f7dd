"""The GPU path of a standard-profile `lymph study` run, as one script for a machine with a GPU.

    .venv/bin/python bench/bench_study_gpu.py --out bench_out/study_gpu          # CUDA machine
    .venv/bin/python bench/bench_study_gpu.py --out /tmp/sg --dry-run            # CPU, tiny

Steps (each reuses what an earlier call left in --out):
1. worlds: `lymph synth` + `lymph extract` of a labeled world (20 tumor + 8 normal slides,
   8000x6000, seed 0, 128 patches of 128 px per slide at level 2: 4 tumor slides per test
   fold at 5 folds) and a SEPARATE unlabeled pretraining world (25 slides, seed 2, 240 patches
   per slide = 6,000 patches = 30x the largest labeled set of 200);
2. pretraining on the pretraining store only, on the device: the identity pretext, and a
   restoration pretext (genesis) when the trainer knows `pretext`;
3. baseline in the same run: one standard-profile fine-tune + scoring (the grid's first run) on
   the CPU with one torch thread (what the 2-core machine pays per run), then the same run on
   the device (bf16 autocast: lymph's trainer enables it on CUDA);
4. the standard-profile grid (or its first `--max-runs` runs) on the device with `--jobs`
   processes sharing the GPU; wall time, seconds per run and the speed-up against step 3's CPU
   run; the extrapolated wall time of the whole grid.

Writes result.json in --out and prints it. `--dry-run`: the same path on the CPU with a tiny
world and budget (a few slides, 2 steps), so the script itself is tested without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

FULL = {
    "labeled": {"tumor": 20, "normal": 8, "size": "8000x6000", "per_slide": 128, "level": 2,
                "patch": 128},
    "pretrain": {"tumor": 25, "size": "8000x6000", "per_slide": 240, "level": 2, "patch": 128},
    "pretrain_steps": 2000, "pretrain_batch": 16, "pretrain_crop": 96, "base_width": 8,
    "norm": "group",  # as `make study`, whose recorded table used GroupNorm
    "study": {},  # the standard profile as it is
}  # fmt: skip
DRY = {
    "labeled": {"tumor": 6, "normal": 2, "size": "1024x768", "per_slide": 8, "level": 0,
                "patch": 32},
    "pretrain": {"tumor": 2, "size": "1024x768", "per_slide": 8, "level": 0, "patch": 32},
    "pretrain_steps": 2, "pretrain_batch": 4, "pretrain_crop": 16, "base_width": 4,
    "norm": "group",
    "study": {"sizes": (4,), "folds": 2, "repeats": 1, "steps": 2, "eval_every": 1,
              "val_slides": 2,  # the profile's 4 would leave no slide to train on
              "val_patches": 8, "crop": 16, "batch_size": 4, "resamples": 200,
              "conditions": ("scratch",)},
}  # fmt: skip


def _lymph(*args: str) -> None:
    cmd = [sys.executable, "-m", "lymph.cli", *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(ROOT.parent)})  # fmt: skip


def make_worlds(out: Path, plan: dict[str, Any]) -> tuple[Path, Path]:
    """The labeled store and the separate, unlabeled pretraining store (reused when there)."""
    lab, pre = plan["labeled"], plan["pretrain"]
    store, pre_store = out / "labeled.zarr", out / "pretrain.zarr"
    if not (out / "labeled_slides" / "synth.json").exists():
        _lymph("synth", "--out", str(out / "labeled_slides"), "--tumor", str(lab["tumor"]),
               "--normal", str(lab["normal"]), "--size", lab["size"], "--seed", "0")  # fmt: skip
    if not (out / "pretrain_slides" / "synth.json").exists():
        _lymph("synth", "--out", str(out / "pretrain_slides"), "--tumor", str(pre["tumor"]),
               "--normal", "0", "--size", pre["size"], "--seed", "2")  # fmt: skip
    _lymph("extract", "--slides", str(out / "labeled_slides"), "--out", str(store), "--labels",
           str(out / "labeled_slides" / "reference.csv"), "--level", str(lab["level"]),
           "--patch-size", str(lab["patch"]), "--patches-per-slide", str(lab["per_slide"]),
           "--quiet")  # fmt: skip
    (out / "no_annotations").mkdir(exist_ok=True)
    _lymph("extract", "--slides", str(out / "pretrain_slides"), "--out", str(pre_store),
           "--annotations", str(out / "no_annotations"), "--level", str(pre["level"]),
           "--patch-size", str(pre["patch"]), "--patches-per-slide", str(pre["per_slide"]),
           "--quiet")  # fmt: skip
    return store, pre_store


def pretrain(pre_store: Path, out: Path, plan: dict[str, Any], device: str) -> dict[str, Path]:
    """{pretext: last.pt} pretrained on the pretraining store only (reused when there)."""
    from lymph.model.train import TrainConfig, run

    done = {}
    for pretext in ("identity", "genesis"):
        run_dir = out / f"pretrain_{pretext}"
        if not (run_dir / "last.pt").exists():
            cfg = TrainConfig(
                store=pre_store, out=run_dir, stage="pretrain", steps=plan["pretrain_steps"],
                batch_size=plan["pretrain_batch"], crop=plan["pretrain_crop"],
                base_width=plan["base_width"], workers=0, val_slides=1, device=device,
                eval_every=max(1, plan["pretrain_steps"] // 4),
                checkpoint_every=max(1, plan["pretrain_steps"] // 4), norm=plan["norm"],
                pretext=pretext,
            )  # fmt: skip
            run(cfg, progress=False)
        done[pretext] = run_dir / "last.pt"
    return done


def _config(store: Path, ckpts: dict[str, Path], out: Path, plan: dict, **kw: Any) -> Any:
    from lymph.model.study import StudyConfig

    return StudyConfig(
        store=store, pretrained=[(n, p) for n, p in ckpts.items()], out=out,
        profile="standard", progress=False, **{**plan["study"], **kw},
    )  # fmt: skip


def one_run(config: Any) -> dict[str, Any]:
    """Time the grid's first run (fresh each time) with `config`'s device and threads."""
    import shutil

    from lymph.model.study import execute, study_context

    if config.out.exists():
        shutil.rmtree(config.out)
    plan, ctx = study_context(config)
    spec = plan.runs[0]
    t0 = time.perf_counter()
    row = execute(ctx, spec)
    return {"run_id": spec.run_id, "seconds": round(time.perf_counter() - t0, 2),
            "f1": row["f1"], "best_step": row["best_step"]}  # fmt: skip


def grid(config: Any, max_runs: int | None) -> dict[str, Any]:
    """The grid (its first max_runs runs when given) on the device; wall time per run."""
    from lymph.model.study import execute_all, study_context

    plan, ctx = study_context(config)
    runs = plan.runs[:max_runs] if max_runs else plan.runs

    class _Bar:  # execute_all reports progress through a tqdm-like object
        def set_postfix_str(self, _: str) -> None: ...

        def update(self, _: int) -> None: ...

    t0 = time.perf_counter()
    rows = execute_all(ctx, runs, _Bar())
    wall = time.perf_counter() - t0
    per_run = wall / max(len(rows), 1)
    return {"runs": len(rows), "grid_runs": len(plan.runs), "wall_s": round(wall, 1),
            "s_per_run": round(per_run, 2),
            "grid_wall_estimate_s": round(per_run * len(plan.runs), 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--jobs", type=int, default=8, help="processes sharing the device")
    ap.add_argument("--max-runs", type=int, default=None, help="time only the first N runs")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny world and budget")
    args = ap.parse_args(argv)
    plan = DRY if args.dry_run else FULL
    device = "cpu" if args.dry_run else args.device
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device here: run on a GPU machine, or pass --dry-run")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    store, pre_store = make_worlds(out, plan)
    ckpts = pretrain(pre_store, out, plan, device)
    t_prep = time.perf_counter() - t0
    cpu = one_run(_config(store, ckpts, out / "baseline_cpu", plan, device="cpu", jobs=1))
    dev = one_run(_config(store, ckpts, out / "baseline_dev", plan, device=device, jobs=1))
    jobs = 1 if args.dry_run else args.jobs  # the parallel path is tested in test_study
    cfg = _config(store, ckpts, out / "study", plan, device=device, jobs=jobs)
    result = {
        "device": device, "dry_run": args.dry_run, "prepare_s": round(t_prep, 1),
        "baseline_cpu_1_thread": cpu, "same_run_on_device": dev,
        "speedup_one_run": round(cpu["seconds"] / max(dev["seconds"], 1e-9), 2),
        "grid": grid(cfg, args.max_runs), "jobs": jobs,
    }  # fmt: skip
    if device.startswith("cuda"):
        import torch

        result["gpu"] = torch.cuda.get_device_name(0)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
