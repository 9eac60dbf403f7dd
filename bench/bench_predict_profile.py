"""Where `lymph predict`'s time goes beside the forward pass, against the bare model's rate.

    .venv/bin/python bench/bench_predict_profile.py [--windows 4] [--threads 1]
        [--precision fp32] [--gpu]

One slide (the first tumor slide of bench_predict.py's cached 6,144 x 4,608 synthetic test
world, level 0) and the default UNet (width 32, depth 4, BatchNorm, untrained: speed does not
depend on the weights) claiming 300 px patches, so predict plans its 1,024 px margin tiles.
Measured in one process, interleaved: the bare forward (``predict_probs`` on one 1,024 px tile,
``--windows`` times) and ``predict_slide`` with ``max_windows=--windows`` (tissue mask, reading,
model, blending, post-processing and writing). Printed: predict's timings per stage, the
model-input pixels per second of predict's inference loop (read wait + model + blend) and of
its whole run, each as a ratio to the bare forward rate of the same model, precision, threads
and tile; the tiling's inferred pixels per tissue pixel (whole slide); and, with --cprofile,
the top functions of the predict run by own time.

``--gpu``: device cuda, batch 8, 8 read threads (prepared for a GPU machine; ``--dry-run``
checks the arguments and the slide here without running the model).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def bare_forward(ckpt: Path, tile: np.ndarray, *, n: int, device: str, precision: str,
                 batch: int) -> float:
    """Seconds for ``n`` tiles through ``predict_probs`` (after one warm-up batch)."""
    from lymph.model.checkpoint import load_model
    from lymph.model.infer import predict_probs

    model, _ = load_model(ckpt, device=device)
    images = np.repeat(tile[None], batch, axis=0)
    predict_probs(model, images, device=device, batch_size=batch, channels_last=True,
                  precision=precision)
    t0 = time.perf_counter()
    for _ in range(max(1, n // batch)):
        predict_probs(model, images, device=device, batch_size=batch, channels_last=True,
                      precision=precision)
    return (time.perf_counter() - t0) * n / (max(1, n // batch) * batch)


def run_predict(slide: Path, ckpt: Path, out: Path, args: argparse.Namespace) -> dict:
    from lymph.model.predict import PredictConfig, predict_slide

    config = PredictConfig(checkpoint=ckpt, out=out, device=args.device, threads=args.threads,
                           max_windows=args.windows, precision=args.precision, progress=False,
                           batch_size=args.batch, read_threads=args.read_threads, force=True)
    t0 = time.perf_counter()
    if args.cprofile:
        prof = cProfile.Profile()
        res = prof.runcall(predict_slide, slide, config)
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(15)
    else:
        res = predict_slide(slide, config)
    r = res.to_dict()
    r["wall_s"] = time.perf_counter() - t0
    return r


def main() -> None:
    from bench_predict import make_checkpoint, make_world, pair

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--windows", type=int, default=4, help="tiles inferred per run")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--cprofile", action="store_true")
    p.add_argument("--world-size", type=pair, default="6144x4608")
    p.add_argument("--cache", type=Path, default=Path("/tmp/lymph-bench"))
    args = p.parse_args()
    args.device = "cuda" if args.gpu else "cpu"
    args.batch = 8 if args.gpu else 1
    args.read_threads = min(8, os.cpu_count() or 1) if args.gpu else 1
    args.cache.mkdir(parents=True, exist_ok=True)
    world = make_world(args.cache, "test", n_tumor=4, n_normal=2, seed=1, size=args.world_size)
    slide = sorted(s for s in world.glob("tumor_*.tif") if not s.stem.endswith("_mask"))[0]
    ckpt = make_checkpoint(args.cache, "default", "batch")
    print(f"slide {slide.name}, device {args.device}, precision {args.precision}, "
          f"{args.threads} torch thread(s), {args.windows} tiles per run, batch {args.batch}, "
          f"{args.read_threads} read thread(s), load average {os.getloadavg()[0]:.1f}")
    if args.dry_run:
        print("dry run: arguments, slide and checkpoint ready")
        return
    import torch

    from lymph.data.slides import open_slide
    from lymph.model import predict_pipeline

    torch.set_num_threads(args.threads)
    bare: list[float] = []
    runs: dict[str, list[dict]] = {"serial": [], "pipelined": []}
    for _ in range(args.repeats):
        for mode in runs:  # interleaved: the blend thread off (the old loop) and on
            predict_pipeline.ENABLED = mode == "pipelined"
            runs[mode].append(run_predict(slide, ckpt, args.cache / f"profile_{mode}", args))
        predict_pipeline.ENABLED = True
        window = runs["pipelined"][-1]["window"]
        with open_slide(slide) as r:
            w, h = r.dimensions
            tile = r.read_region(((w - window) // 2, (h - window) // 2), 0, (window, window))
        bare.append(bare_forward(ckpt, tile, n=args.windows, device=args.device,
                                 precision=args.precision, batch=args.batch))
    report(runs, bare, args)


def report(runs: dict[str, list[dict]], bare: list[float], args: argparse.Namespace) -> None:
    keys = ("tissue", "read", "read_wait", "model", "blend", "blend_busy", "write_map",
            "write_outputs")
    print("| loop | run | wall s | " + " | ".join(f"{k} s" for k in keys) + " |")
    print("|---" * (len(keys) + 3) + "|")
    for mode, rs in runs.items():
        for k, r in enumerate(rs):
            t = r["timings"]
            print(f"| {mode} | {k} | {r['wall_s']:.2f} | "
                  + " | ".join(f"{t.get(key, 0.0):.2f}" for key in keys) + " |")
    r = runs["pipelined"][-1]
    px = r["n_windows"] * r["window"] ** 2 / 1e6
    bare_rate = px / float(np.median(bare))
    print(f"bare forward: {np.median(bare):.2f} s for {r['n_windows']} tiles, "
          f"{bare_rate:.3f} Mpx/s (runs: {', '.join(f'{b:.2f}' for b in bare)} s)")
    for mode, rs in runs.items():
        loop = np.median([sum(x["timings"].get(k, 0.0) for k in ("read_wait", "model", "blend"))
                          for x in rs])
        wall = np.median([x["wall_s"] for x in rs])
        print(f"{mode}: inference loop {px / loop:.3f} Mpx/s ({px / loop / bare_rate:.2f}x "
              f"bare); whole run {px / wall:.3f} Mpx/s ({px / wall / bare_rate:.2f}x bare; the "
              f"tissue mask and writing are for the whole slide, {r['n_windows']} of "
              f"{r['n_tissue_windows']} tiles inferred)")
    inferred = r["n_tissue_windows"] * r["window"] ** 2 / 1e6  # level 0 here
    print(f"tiling: {r['n_tissue_windows']} tissue tiles of {r['window']} px (margin "
          f"{r['margin']}), {inferred:.1f} Mpx inferred for {r['slide_tissue_mpx']:.1f} Mpx of "
          f"tissue: {inferred / r['slide_tissue_mpx']:.2f} inferred px per tissue px")


if __name__ == "__main__":
    main()
