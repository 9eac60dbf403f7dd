"""Where `lymph predict`'s time goes beside the forward pass, against the bare model's rate.

    .venv/bin/python bench/bench_predict_profile.py [--windows 4] [--threads 1]
        [--precision fp32] [--gpu]

One slide (the first tumor slide of bench_predict.py's cached 6,144 x 4,608 synthetic test
world, level 0) and the default UNet (width 32, depth 4, BatchNorm, untrained: speed does not
depend on the weights) claiming 300 px patches, so predict plans its 1,024 px margin tiles.
Measured in one process: ``predict_slide`` with ``max_windows=--windows`` (tissue mask,
reading, model, blending, post-processing and writing), with the blend thread off (the loop
before issue 23) and on, interleaved; then the bare forward (``net(x)`` on a prepared tensor)
and ``predict_probs`` on the same tile, interleaved. On a shared machine the load moves by
2-3x between runs, so only ratios taken within a run are printed: the model's share of the
inference loop (read wait + model + blend) and ``predict_probs`` against the bare forward;
their product is predict's model-input pixels per second as a fraction of the bare forward
rate of the same model, precision, threads and tile. Also the whole slide projected (all
tissue tiles, tissue mask and writing once), the tiling's inferred pixels per tissue pixel, and
with --cprofile the top functions of the predict run by own time.

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


def bare_vs_probs(ckpt: Path, tile: np.ndarray, *, device: str, precision: str, batch: int,
                  repeats: int) -> dict[str, float]:
    """Median seconds per tile of the bare forward (``net(x)`` on a prepared tensor, under the
    same autocast) and of ``predict_probs`` on the same uint8 tile, interleaved so that a loaded
    machine slows both alike."""
    import torch

    from lymph.model.checkpoint import load_model
    from lymph.model.infer import predict_probs
    from lymph.model.precision import autocast, resolve_precision

    model, _ = load_model(ckpt, device=device)
    model.eval().to(memory_format=torch.channels_last)
    images = np.repeat(tile[None], batch, axis=0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).to(device)
    x = x.contiguous(memory_format=torch.channels_last)
    used = resolve_precision(precision, device)

    def bare() -> None:
        with torch.inference_mode(), autocast(device, used):
            torch.sigmoid(model(x).mask_logits.float()).cpu()

    def probs() -> None:
        predict_probs(model, images, device=device, batch_size=batch, channels_last=True,
                      precision=precision)

    times: dict[str, list[float]] = {"bare": [], "predict_probs": []}
    bare()
    for _ in range(repeats):
        for name, fn in (("bare", bare), ("predict_probs", probs)):
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) / batch)
    return {k: float(np.median(v)) for k, v in times.items()}


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
    from lymph.model.predict import pipeline as predict_pipeline

    torch.set_num_threads(args.threads)
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
    bare = bare_vs_probs(ckpt, tile, device=args.device, precision=args.precision,
                         batch=args.batch, repeats=args.windows)
    report(runs, bare, args)


def report(runs: dict[str, list[dict]], bare: dict[str, float],
           args: argparse.Namespace) -> None:
    """Ratios measured within a run (robust to the machine's load): the loop's share in the
    model, and predict_probs against the bare forward (interleaved)."""
    keys = ("tissue", "read", "read_wait", "model", "blend", "blend_busy", "write_map",
            "write_outputs")
    print("| loop | run | wall s | " + " | ".join(f"{k} s" for k in keys) + " | model share |")
    print("|---" * (len(keys) + 4) + "|")
    share: dict[str, list[float]] = {m: [] for m in runs}
    for mode, rs in runs.items():
        for k, r in enumerate(rs):
            t = r["timings"]
            loop = sum(t.get(k, 0.0) for k in ("read_wait", "model", "blend"))
            share[mode].append(t["model"] / loop)
            print(f"| {mode} | {k} | {r['wall_s']:.2f} | "
                  + " | ".join(f"{t.get(key, 0.0):.2f}" for key in keys)
                  + f" | {share[mode][-1]:.4f} |")
    probs_eff = bare["bare"] / bare["predict_probs"]
    print(f"bare forward {bare['bare']:.2f} s/tile, predict_probs {bare['predict_probs']:.2f} "
          f"s/tile (interleaved): predict_probs runs at {probs_eff:.3f}x the bare rate")
    r = runs["pipelined"][-1]
    for mode in runs:
        eff = float(np.median(share[mode])) * probs_eff
        t = r["timings"]
        per_tile = sum(t.get(k, 0.0) for k in ("read_wait", "model", "blend")) / r["n_windows"]
        fixed = sum(t.get(k, 0.0) for k in ("tissue", "write_map", "write_outputs"))
        whole = r["n_tissue_windows"] * per_tile
        print(f"{mode}: model-input px/s of the inference loop = {eff:.3f}x the bare forward; "
              f"whole slide projected ({r['n_tissue_windows']} tiles, tissue mask and writing "
              f"once): {eff * whole / (whole + fixed):.3f}x")
    full = r["n_windows"] * r["window"] ** 2 / 1e6  # level 0 here
    print(f"tiling: {r['n_windows']} of {r['n_tissue_windows']} tissue tiles of {r['window']} px "
          f"(margin {r['margin']}) run: {r['inferred_mpx']:.1f} Mpx inferred (trimmed to tissue; "
          f"full tiles {full:.1f}); whole slides' inferred px per tissue px: bench_tiling.py")


if __name__ == "__main__":
    main()
