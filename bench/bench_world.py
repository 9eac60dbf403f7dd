"""How hard is a synthetic world for trivial rules? Generates the default world and a preset
(the same seed, slide counts and size) in one run and reports, for each:

- the best balanced accuracy of one threshold on a patch's mean colour (R, G, B, H, S, V:
  `lymph.data.synth.colour_separability`; the issue's bar: <= 0.75),
- the best balanced accuracy of one threshold on a patch's mean dark-blob (nuclear) size
  (`synth/world/checks.nuclear_size_separability`; bar: <= 0.80),
- the shape statistics of the lesion outlines (perimeter^2 / (4 pi area), solidity, convexity)
  beside those of the real CAMELYON16 outlines in shared/fixtures, and the outline model fitted
  to them (`--fit` refits it),
- generation speed in Mpx/s (the default world is the baseline measured in the same run).

    .venv/bin/python bench/bench_world.py                    # 4 tumor + 2 normal, 4096x3072
    .venv/bin/python bench/bench_world.py --fit --out /tmp/bw --tumor 6 --normal 2

Results go to stdout and to bench/results/world_checks.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "fixtures" / "annotations" / "ncrf-camelyon16"


def one_world(world: str, out: Path, args: argparse.Namespace) -> dict:
    from lymph.data.synth import SynthConfig, colour_separability, run
    from lymph.data.synth.world.checks import nuclear_size_separability, world_outline_stats

    w, h = (int(v) for v in args.size.split("x"))
    t = time.perf_counter()
    slides = run(SynthConfig(out=out / world, n_tumor=args.tumor, n_normal=args.normal,
                             size=(w, h), seed=args.seed, world=world,
                             centre=args.centre)).slides
    seconds = time.perf_counter() - t
    colour = colour_separability(slides)
    size = nuclear_size_separability(slides)
    return {
        "world": world,
        "seconds": round(seconds, 1),
        "mpx_per_s": round(len(slides) * w * h / 1e6 / seconds, 3),
        "colour_best_bacc": round(colour["best"], 3),
        "colour_bacc": {k: round(v, 3) for k, v in colour["balanced_accuracy"].items()},
        "nuclear_size_bacc": round(size["balanced_accuracy"], 3),
        "nuclear_size_bacc_per_variant": {k: round(v, 3) for k, v in size["per_variant"].items()},
        "n_tumor_patches": colour["n_tumor"],
        "n_non_tumor_patches": colour["n_non_tumor"],
        "outlines": {k: round(v, 3) for k, v in world_outline_stats(slides).items()},
        "outlines_over_200um": {k: round(v, 3) for k, v in
                                world_outline_stats(slides, min_diameter_um=200).items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", default="camelyon")
    ap.add_argument("--centre", default="auto")
    ap.add_argument("--tumor", type=int, default=4)
    ap.add_argument("--normal", type=int, default=2)
    ap.add_argument("--size", default="4096x3072")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="keep the slides here")
    ap.add_argument("--fit", action="store_true", help="refit the outline model")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results" /
                    "world_checks.json")
    args = ap.parse_args()

    from lymph.data.synth.world.outlines import (
        fit_outline_model,
        load_real_outlines,
        shape_stats,
        summarize,
    )
    from lymph.data.synth.world.params import PRESETS

    real = summarize([shape_stats(p) for p in load_real_outlines(REAL)])
    report = {"settings": vars(args) | {"out": str(args.out), "results": str(args.results)},
              "cpu": platform.processor() or platform.machine(),
              "real_outlines": {k: round(v, 3) for k, v in real.items()},
              "preset_outline_model": PRESETS[args.world].outline.__dict__}
    if args.fit:
        model, stats = fit_outline_model(real)
        report["fitted_outline_model"] = model.__dict__
        report["fitted_outline_stats"] = {k: round(v, 3) for k, v in stats.items()}
    tmp = args.out or Path(tempfile.mkdtemp(prefix="bench_world_"))
    try:
        report["worlds"] = [one_world(w, tmp, args) for w in ("default", args.world)]
    finally:
        if args.out is None:
            shutil.rmtree(tmp, ignore_errors=True)
    base = report["worlds"][0]["mpx_per_s"]
    report["speed_ratio_vs_default"] = round(report["worlds"][1]["mpx_per_s"] / base, 3)
    text = json.dumps(report, indent=1)
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text + "\n")


if __name__ == "__main__":
    main()
