"""Calibrate a synthetic world's difficulty on the paper's baseline ONLY (issue 20, part 2).

The world is the `make study` labeled world (20 tumor + 8 normal slides, 8000x6000, seed 0,
level 2, 128 px patches, 128 per slide) made with `--world camelyon`. The runs are `seg_only`
fine-tunes of the standard study profile (1,200-step cap, patience 3, eval every 100, batch 8,
64 px crops, 4 inner-validation slides, threshold chosen on them), on the study's own folds,
subsets and seeds (`model.study.plan_runs`), with the architecture of the study's pretrained
checkpoints (width 8, GroupNorm: read from a 1-step pretraining checkpoint made here, whose
weights no run uses). No pretrained condition is run or looked at.

Every run's settings and F1 are appended to bench/results/world_calibration.csv (never
rewritten). Stages, each resumable:

    python bench/calibrate_world.py world   --dir cal --procs 2   # slides, split over processes
    python bench/calibrate_world.py extract --dir cal
    python bench/calibrate_world.py runs    --dir cal --sizes 200,40 --repeats 1 --shard 0/2
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "bench" / "results" / "world_calibration.csv"
LYMPH = str(Path(sys.executable).with_name("lymph"))
WORLD = {"n_tumor": 20, "n_normal": 8, "size": (8000, 6000), "seed": 0, "world": "camelyon",
         "centre": "mixed"}  # c1-c3: centre "auto" (the whole world from one lab)


def _slides() -> list[tuple[str, int]]:
    return [("tumor", i) for i in range(1, WORLD["n_tumor"] + 1)] + [
        ("normal", i) for i in range(1, WORLD["n_normal"] + 1)]


def stage_world(args: argparse.Namespace) -> None:
    """The world, byte-identical to `lymph synth --world camelyon` (slides depend only on
    (seed, status, index)), made by `--procs` processes; the parent writes the manifests."""
    out = args.dir / "slides"
    out.mkdir(parents=True, exist_ok=True)
    if args.child is not None:
        from lymph.data.synth import SynthConfig, plan_slide, write_slide

        k, n = (int(v) for v in args.child.split("/"))
        cfg = SynthConfig(out=out, n_tumor=WORLD["n_tumor"], n_normal=WORLD["n_normal"],
                          size=WORLD["size"], seed=WORLD["seed"], world=WORLD["world"],
                          centre=WORLD["centre"])
        for status, i in _slides()[k::n]:
            name = f"{status}_{i:03d}"
            if (out / f"{name}.tif").exists():
                continue
            plan = plan_slide(cfg, status, i)
            write_slide(plan, out / f"{name}.tif", cfg, lambda _n: None)
            print(name, "done", flush=True)
        return
    procs = [subprocess.Popen([sys.executable, __file__, "world", "--dir", str(args.dir),
                               "--child", f"{k}/{args.procs}"]) for k in range(args.procs)]
    if any(p.wait() for p in procs):
        raise SystemExit("a world process failed")
    _manifests(out)  # reference.csv and synth.json, as lymph.data.synth.run writes them


def _manifests(out: Path) -> None:
    from lymph.data.synth import (
        SynthConfig,
        SynthSlide,
        largest_kind,
        plan_slide,
        write_manifests,
    )

    cfg = SynthConfig(out=out, n_tumor=WORLD["n_tumor"], n_normal=WORLD["n_normal"],
                      size=WORLD["size"], seed=WORLD["seed"], world=WORLD["world"],
                          centre=WORLD["centre"])
    plans, slides = [], []
    for status, i in _slides():
        name = f"{status}_{i:03d}"
        plan = plan_slide(cfg, status, i)
        plans.append(plan)
        slides.append(SynthSlide(name=name, path=out / f"{name}.tif", status=status, xml=None,
                                 mask=None, lesions=plan.lesions,
                                 largest=largest_kind(plan.lesions)))
    write_manifests(out, cfg, slides, plans)


def stage_extract(args: argparse.Namespace) -> None:
    d = args.dir
    subprocess.run([LYMPH, "extract", "--slides", str(d / "slides"), "--out",
                    str(d / "store.zarr"), "--labels", str(d / "slides" / "reference.csv"),
                    "--level", "2", "--patch-size", "128", "--patches-per-slide", "128"],
                   check=True)
    if not (d / "arch" / "last.pt").exists():  # the study checkpoints' architecture only
        subprocess.run([LYMPH, "train", "--store", str(d / "store.zarr"), "--out",
                        str(d / "arch"), "--stage", "pretrain", "--steps", "1", "--eval-every",
                        "1", "--batch-size", "16", "--base-width", "8", "--crop", "96",
                        "--workers", "0", "--threads", "1", "--norm", "group", "--quiet"],
                       check=True)


def _done_ids() -> set[tuple[str, str]]:
    if not CSV.exists():
        return set()
    with CSV.open() as f:
        return {(r["calibration"], r["run_id"]) for r in csv.DictReader(f)}


def stage_runs(args: argparse.Namespace) -> None:
    from lymph.data.store import PatchStore
    from lymph.model import study as st

    d = args.dir
    store_path = d / "store.zarr"
    config = st.StudyConfig(store=store_path, pretrained=((None, d / "arch" / "last.pt"),),
                            out=d / "study", profile="standard", conditions=(st.SEG_ONLY,),
                            repeats=args.repeats, threads=1, progress=False)
    store = PatchStore.open(store_path)
    labeled = [(s.slide_id, s.status) for s in store.slides if s.labeled]
    labels = {sid: store.labels(sid) for sid, _ in labeled}
    runs = st.plan_runs(labeled, labels, sizes=args.sizes, n_folds=config.resolved.folds,
                        seed=config.seed, repeats=args.repeats, conditions=(st.SEG_ONLY,),
                        n_val=config.resolved.val_slides)
    pre = st.read_pretraining(None, d / "arch" / "last.pt", store)
    ctx = st.RunContext(config=config, arch=pre.arch, inits={},
                        pretexts={st.SEG_ONLY: "identity"}, pretrain={}, settings={})
    k, n = (int(v) for v in args.shard.split("/"))
    done = _done_ids()
    synth = json.loads((d / "slides" / "synth.json").read_text())
    for spec in runs[k::n]:
        if (args.label, spec.run_id) in done:
            continue
        t = time.perf_counter()
        row = st.execute(ctx, spec)
        _append({"calibration": args.label, "run_id": spec.run_id, "size": spec.size,
                 "fold": spec.fold, "repeat": spec.repeat, "condition": spec.condition,
                 "f1": round(row["f1"], 4), "ap": round(row["ap"], 4),
                 "precision": round(row["precision"], 4), "recall": round(row["recall"], 4),
                 "best_step": row["best_step"], "stopped_step": row["stopped_step"],
                 "steps_cap": row["steps_cap"], "seconds": round(time.perf_counter() - t, 1),
                 "world": f"{WORLD['world']} centre={WORLD['centre']}",
                 "world_params": json.dumps(synth.get("world")),
                 "profile": "standard", "base_width": pre.arch.get("base_width"),
                 "norm": pre.arch.get("norm")})
        print(spec.run_id, "F1", round(row["f1"], 4), flush=True)


def _append(row: dict) -> None:
    CSV.parent.mkdir(parents=True, exist_ok=True)
    new = not CSV.exists()
    with CSV.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stage", choices=("world", "extract", "runs"))
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=lambda s: tuple(int(v) for v in s.split(",")),
                    default=(200, 40))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--shard", default="0/1", help="k/n: run every n-th run from the k-th")
    ap.add_argument("--label", default="c1", help="calibration round name (a CSV column)")
    args = ap.parse_args()
    {"world": stage_world, "extract": stage_extract, "runs": stage_runs}[args.stage](args)


if __name__ == "__main__":
    main()
