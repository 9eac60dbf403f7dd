"""Benchmark `lymph extract`: rate against bare OpenSlide, worker scaling, peak memory.

    .venv/bin/python bench/bench_extract.py [--out bench_out/extract] [--patches 1000]
        [--size 12000x9000] [--memory-patches 2000] [--skip-memory] [--skip-scaling]

1. Rate, one worker: `extract` of one synthetic tumor slide (synth_slides; tissue detection,
   annotations, sampling, mask rasterization, compression and writing included; Python imports
   done beforehand) against bare `openslide.OpenSlide.read_region` of the same patches (the
   coordinates extraction drew, in the same order) on the same slide, alternating, best of 2.
   Also extraction with every pixel through OpenSlide (`direct_tiles=False`).
2. Scaling: two slides, `--workers 1` against `--workers 2` (dask LocalCluster), with and
   without the cluster's start-up (measured alone in the same run).
3. Memory: peak RSS of a fresh process extracting `--memory-patches` patches (with masks) from a
   25,000^2 and a 100,000^2 slide. These slides are written by `write_pyramidal_tiff` from a
   cheap row source (tissue texture repeated inside an ellipse, one tumor polygon), not by
   synth_slides, whose 100,000^2 slide takes over an hour on this 2-core machine.

Everything is measured in the same run; the machine may be shared, so compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def bare_read(slide_path: Path, coords: np.ndarray, size: int) -> float:
    import openslide

    osr = openslide.OpenSlide(str(slide_path))
    t0 = time.perf_counter()
    for x, y in coords:
        np.asarray(osr.read_region((int(x), int(y)), 0, (size, size)))
    seconds = time.perf_counter() - t0
    osr.close()
    return seconds


def run_extract(slides: Path, out: Path, *, patches: int, workers: int = 1,
                direct_tiles: bool = True, labels: Path | None = None) -> tuple[float, object]:
    from lymph.pipeline.extract import ExtractConfig, extract

    shutil.rmtree(out, ignore_errors=True)
    cfg = ExtractConfig(slides=slides, out=out, labels=labels, patches_per_slide=patches,
                        workers=workers, progress=False, direct_tiles=direct_tiles)
    t0 = time.perf_counter()
    summary = extract(cfg)
    seconds = time.perf_counter() - t0
    if summary.failed:
        raise SystemExit(f"extraction failed: {summary.failed}")
    return seconds, summary


def rate(root: Path, *, patches: int, size: tuple[int, int]) -> dict:
    import zarr
    from lymph.data.synth import synth_slides

    world = root / "rate_slides"
    if not (world / "tumor_001.tif").exists():
        print(f"making a {size[0]}x{size[1]} synthetic tumor slide ...", flush=True)
        synth_slides(world, n_tumor=1, n_normal=0, size=size, seed=3)
    store = root / "rate.zarr"
    # warm-up: imports, page cache
    run_extract(world, store, patches=16)
    results: dict[str, list[float]] = {"bare": [], "extract": [], "extract_openslide": []}
    coords = None
    for _ in range(2):
        sec, _ = run_extract(world, store, patches=patches)
        results["extract"].append(sec)
        coords = zarr.open_group(str(store), mode="r")["slides/tumor_001/coords"][:]
        results["bare"].append(bare_read(world / "tumor_001.tif", coords, 300))
        sec, _ = run_extract(world, store, patches=patches, direct_tiles=False)
        results["extract_openslide"].append(sec)
    best = {k: min(v) for k, v in results.items()}
    return {"patches": patches, "slide": f"{size[0]}x{size[1]}",
            "seconds": best, "rates": {k: patches / v for k, v in best.items()},
            "ratio_extract_vs_bare": best["bare"] / best["extract"],
            "ratio_extract_openslide_vs_bare": best["bare"] / best["extract_openslide"]}


def scaling(root: Path, *, patches: int, size: tuple[int, int]) -> dict:
    from distributed import Client, LocalCluster
    from lymph.data.synth import synth_slides

    world = root / "scaling_slides"
    if not (world / "normal_001.tif").exists():
        print(f"making two {size[0]}x{size[1]} synthetic slides ...", flush=True)
        synth_slides(world, n_tumor=1, n_normal=1, size=size, seed=4)
    labels = world / "reference.csv"
    run_extract(world, root / "w1.zarr", patches=8, labels=labels)  # warm-up
    t1, _ = run_extract(world, root / "w1.zarr", patches=patches, labels=labels)
    t2, _ = run_extract(world, root / "w2.zarr", patches=patches, workers=2, labels=labels)
    t0 = time.perf_counter()
    import logging

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster)
    client.close()
    cluster.close()
    startup = time.perf_counter() - t0
    return {"patches_per_slide": patches, "slides": 2, "seconds_1_worker": t1,
            "seconds_2_workers": t2, "cluster_start_stop_seconds": startup,
            "speedup": t1 / t2, "speedup_without_cluster_start": t1 / max(t2 - startup, 1e-9)}


# --- memory -----------------------------------------------------------------------------------


def make_big_slide(folder: Path, side: int) -> Path:
    """A side x side pyramidal JPEG TIFF: H&E-like texture inside an ellipse (60% of the
    slide), glass elsewhere; `tumor.xml` marks one polygon inside the tissue."""
    from lymph.pipeline.pyramid import write_pyramidal_tiff

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tumor.tif"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    tile = 256
    texture = np.clip(np.array([200, 120, 170]) + rng.normal(0, 18, (tile, 4096, 3)), 0,
                      255).astype(np.uint8)
    glass = np.uint8(243)
    cx = cy = side / 2
    rx = ry = side * 0.44

    def rows(i: int) -> np.ndarray:
        y0 = i * tile
        h = min(tile, side - y0)
        out = np.full((h, side, 3), glass, np.uint8)
        dy = (y0 + h / 2 - cy) / ry
        if abs(dy) < 1:
            half = rx * np.sqrt(1 - dy * dy)
            a, b = int(cx - half), int(cx + half)
            for x in range(a - a % 4096, b, 4096):
                lo, hi = max(x, a), min(x + 4096, b)
                out[:, lo:hi] = texture[:h, lo - x:hi - x]
        return out

    t0 = time.perf_counter()
    write_pyramidal_tiff(path, rows, width=side, height=side, compression="jpeg", quality=80,
                         mpp=0.243, workers=2)
    r = side * 0.05
    pts = [(cx + r * np.cos(t), cy + r * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 64)[:-1]]
    coords = "".join(f'<Coordinate Order="{k}" X="{x:.1f}" Y="{y:.1f}" />'
                     for k, (x, y) in enumerate(pts))
    (folder / "tumor.xml").write_text(
        '<?xml version="1.0"?><ASAP_Annotations><Annotations><Annotation Name="t" '
        f'Type="Polygon" PartOfGroup="_0"><Coordinates>{coords}</Coordinates></Annotation>'
        "</Annotations></ASAP_Annotations>")
    print(f"  wrote {path} ({path.stat().st_size / 1e6:.0f} MB) in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return path


def child_memory(folder: str, out: str, patches: int) -> None:
    """Run in a fresh process: extract, print peak RSS."""
    from lymph.pipeline.extract import ExtractConfig, extract

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    s = extract(ExtractConfig(slides=Path(folder), out=Path(out), patches_per_slide=patches,
                              progress=False))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_mb": peak_kb / 1024, "seconds": time.perf_counter() - t0,
                      "patches": s.n_patches, "tumor": s.n_tumor, "failed": len(s.failed)}))


def memory(root: Path, *, patches: int) -> dict:
    out = {}
    for side in (25_000, 100_000):
        folder = root / f"mem_{side}"
        print(f"memory: {side}x{side} slide ...", flush=True)
        make_big_slide(folder, side)
        proc = subprocess.run([sys.executable, __file__, "--child-memory", str(folder),
                               str(root / f"mem_{side}.zarr"), str(patches)],
                              capture_output=True, text=True, check=True)
        out[side] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["ratio_100k_vs_25k"] = out[100_000]["peak_rss_mb"] / out[25_000]["peak_rss_mb"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("bench_out/extract"))
    ap.add_argument("--patches", type=int, default=1000)
    ap.add_argument("--size", type=_size, default=(12000, 9000))
    ap.add_argument("--memory-patches", type=int, default=2000)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--skip-rate", action="store_true")
    ap.add_argument("--child-memory", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_memory:
        child_memory(args.child_memory[0], args.child_memory[1], int(args.child_memory[2]))
        return
    import scipy.ndimage  # noqa: F401  (imports out of the timings)
    import zarr  # noqa: F401

    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    if not args.skip_rate:
        r = rate(args.out, patches=args.patches, size=args.size)
        report["rate"] = r
        print(f"\n1. rate, one worker, {r['patches']} patches of 300 px, {r['slide']} slide")
        print(f"   {'':34} {'seconds':>8} {'patches/s':>10} {'vs bare':>8}")
        for key, label in (("bare", "bare OpenSlide read_region"),
                           ("extract", "lymph extract (direct tiles)"),
                           ("extract_openslide", "lymph extract (OpenSlide only)")):
            sec, rt = r["seconds"][key], r["rates"][key]
            print(f"   {label:<34} {sec:>8.2f} {rt:>10.1f} {r['seconds']['bare'] / sec:>7.2f}x")
    if not args.skip_scaling:
        s = scaling(args.out, patches=args.patches, size=args.size)
        report["scaling"] = s
        print(f"\n2. scaling, 2 slides x {s['patches_per_slide']} patches")
        print(f"   1 worker   {s['seconds_1_worker']:8.2f} s")
        print(f"   2 workers  {s['seconds_2_workers']:8.2f} s  (cluster start/stop alone "
              f"{s['cluster_start_stop_seconds']:.2f} s)")
        print(f"   speedup {s['speedup']:.2f}x; without cluster start "
              f"{s['speedup_without_cluster_start']:.2f}x")
    if not args.skip_memory:
        m = memory(args.out, patches=args.memory_patches)
        report["memory"] = m
        print(f"\n3. peak RSS, {args.memory_patches} patches with masks, fresh process")
        for side in (25_000, 100_000):
            v = m[side]
            print(f"   {side:>7}^2 slide  {v['peak_rss_mb']:8.0f} MB  ({v['seconds']:.1f} s, "
                  f"{v['patches']} patches, {v['tumor']} tumor)")
        print(f"   100k / 25k: {m['ratio_100k_vs_25k']:.3f}")
    (args.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    print(f"\nreport: {args.out / 'report.json'}")


if __name__ == "__main__":
    main()
