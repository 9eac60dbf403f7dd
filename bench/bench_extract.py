"""Benchmark `lymph extract`: rate against bare OpenSlide, worker scaling, peak memory.

    .venv/bin/python bench/bench_extract.py [--out bench_out/extract] [--patches 1000]
        [--size 12000x9000] [--memory-patches 2000] [--skip-memory] [--skip-scaling]

1. Rate, one worker: `extract` of one synthetic tumor slide (lymph.data.synth.run; tissue detection,
   annotations, sampling, mask rasterization, compression and writing included; Python imports
   done beforehand) against bare `openslide.OpenSlide.read_region` of the same patches (the
   coordinates extraction drew, in the same order) on the same slide, alternating, best of 2.
   Also extraction with every pixel through OpenSlide (`direct_tiles=False`), and with one
   decode thread (`--threads 1`; the writer thread still overlaps) beside the default
   (decode threads = the CPUs; issue 23).
2. Scaling: two slides, `--workers 1` against `--workers 2` (dask LocalCluster), with and
   without the cluster's start-up (measured alone in the same run). On warm clusters: 1 and 2
   workers at one decode thread each (worker scaling alone: one worker with the default
   threads already uses every core), and 1 worker with the default threads (what a user gets
   without --workers).
3. Memory: peak RSS of a fresh process extracting `--memory-patches` patches (with masks) from a
   25,000^2 and a 100,000^2 slide. These slides are tiled from 9 pre-encoded JPEG tiles
   (texture inside an ellipse, glass outside, one tumor polygon) in ~20 s, not by `lymph synth`,
   whose 100,000^2 slide was on course to take over an hour on this shared 2-core machine.
4. Checksums (with the rate): the crc32c of every chunk file of the rate store (what the writer
   appends and every read verifies), timed over bytes already in memory, against the
   extraction's wall time and against reading the same store back through PatchStore.

Everything is measured in the same run; the machine may be shared, so compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def bare_read(slide_path: Path, coords: np.ndarray, size: int) -> tuple[float, float]:
    import openslide

    osr = openslide.OpenSlide(str(slide_path))
    t0, c0 = time.perf_counter(), time.process_time()
    for x, y in coords:
        np.asarray(osr.read_region((int(x), int(y)), 0, (size, size)))
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    osr.close()
    return seconds, cpu


def run_extract(slides: Path, out: Path, *, patches: int, workers: int = 1,
                direct_tiles: bool = True, labels: Path | None = None,
                threads: int | None = None) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, summary)."""
    from lymph.pipeline.extract import ExtractConfig, run

    shutil.rmtree(out, ignore_errors=True)
    cfg = ExtractConfig(slides=slides, out=out, labels=labels, patches_per_slide=patches,
                        workers=workers, progress=False, direct_tiles=direct_tiles,
                        threads=threads)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = run(cfg)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if summary.failed:
        raise SystemExit(f"extraction failed: {summary.failed}")
    return seconds, cpu, summary


def rate(root: Path, *, patches: int, size: tuple[int, int]) -> dict:
    import zarr

    from lymph.data.synth import SynthConfig, run

    world = root / "rate_slides"
    if not (world / "tumor_001.tif").exists():
        print(f"making a {size[0]}x{size[1]} synthetic tumor slide ...", flush=True)
        run(SynthConfig(out=world, n_tumor=1, n_normal=0, size=size, seed=3))
    store = root / "rate.zarr"
    # warm-up: imports, page cache
    run_extract(world, store, patches=16)
    wall: dict[str, list[float]] = {"bare": [], "extract": [], "extract_openslide": [],
                                    "extract_1thread": []}
    cpu: dict[str, list[float]] = {k: [] for k in wall}
    for _ in range(2):
        w, c, _ = run_extract(world, store, patches=patches)
        wall["extract"].append(w)
        cpu["extract"].append(c)
        coords = zarr.open_group(str(store), mode="r")["slides/tumor_001/coords"][:]
        w, c = bare_read(world / "tumor_001.tif", coords, 300)
        wall["bare"].append(w)
        cpu["bare"].append(c)
        w, c, _ = run_extract(world, store, patches=patches, direct_tiles=False)
        wall["extract_openslide"].append(w)
        cpu["extract_openslide"].append(c)
        w, c, _ = run_extract(world, store, patches=patches, threads=1)
        wall["extract_1thread"].append(w)
        cpu["extract_1thread"].append(c)
    best_wall = {k: min(v) for k, v in wall.items()}
    best_cpu = {k: min(v) for k, v in cpu.items()}
    run_extract(world, store, patches=patches)  # the store of the direct-tile extraction
    checks = checksum_cost(store, extract_seconds=best_wall["extract"])
    return {"checksums": checks, "patches": patches, "slide": f"{size[0]}x{size[1]}",
            "wall_seconds": best_wall,
            "cpu_seconds": best_cpu,
            "ratio_wall": {k: best_wall["bare"] / v for k, v in best_wall.items()},
            "ratio_cpu": {k: best_cpu["bare"] / v for k, v in best_cpu.items()}}


def checksum_cost(store: Path, *, extract_seconds: float) -> dict:
    """crc32c time over every chunk file's bytes (read into memory first) as a fraction of the
    extraction's wall time and of a full read of the store through PatchStore."""
    import google_crc32c

    from lymph.data.store import PatchStore

    chunks = [p.read_bytes() for p in sorted(store.rglob("c/**/*")) if p.is_file()]
    t0 = time.perf_counter()
    for data in chunks:
        google_crc32c.value(data[:-4])
    crc = time.perf_counter() - t0
    ps = PatchStore.open(store)
    t0 = time.perf_counter()
    for ref in ps.chunks():
        ps.read(ref.slide_id, ref.start, ref.stop)
    read = time.perf_counter() - t0
    return {"chunk_files": len(chunks), "megabytes": sum(map(len, chunks)) / 1e6,
            "crc_seconds": crc, "extract_seconds": extract_seconds, "read_seconds": read,
            "fraction_of_extract": crc / extract_seconds, "fraction_of_read": crc / read}


def _warm_cluster(n: int) -> tuple[Any, Any]:

    from distributed import Client, LocalCluster

    from lymph.data.cluster import local_cluster

    cluster = local_cluster(LocalCluster, n)  # as lymph starts its own (no MALLOC_TRIM_THRESHOLD_)
    client = Client(cluster)

    def warm() -> None:
        import scipy.ndimage  # noqa: F401
        import zarr  # noqa: F401

        import lymph.pipeline.extract  # noqa: F401

    client.run(warm)
    return cluster, client


def burn_cpu(seconds: float) -> float:
    """A pure CPU loop of `seconds` of CPU time: the control for what the machine gives."""
    c0 = time.process_time()
    x = 0
    while time.process_time() - c0 < seconds:
        x += 1
    return float(x)


def _burn_item(_item: object, *, seconds: float) -> float:
    return burn_cpu(seconds)


def _warm_rounds(world: Path, root: Path, *, labels: Path, patches: int,
                 configs: tuple[tuple[int, int | None], ...], clusters: dict[int, Any]
                 ) -> tuple[dict, dict, dict[int, list[float]]]:
    """Three interleaved rounds (best of 3: the shared machine's load moves fast) of extract on
    each warm cluster configuration and of a pure CPU loop on 1 and 2 workers: wall seconds
    and slide CPU seconds per configuration, and the CPU loop's wall seconds per worker count."""
    import functools

    from lymph.data.cluster import map_slides
    from lymph.pipeline.extract import ExtractConfig
    from lymph.pipeline.extract import run as extract

    warm: dict[tuple[int, int | None], list[float]] = {c: [] for c in configs}
    cpu: dict[tuple[int, int | None], list[float]] = {c: [] for c in configs}
    control: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(3):
        for n, threads in configs:
            out = root / f"s{n}_{threads}.zarr"
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            summary = extract(ExtractConfig(slides=world, out=out, labels=labels,
                                            patches_per_slide=patches, progress=False,
                                            scheduler=clusters[n][0].scheduler_address,
                                            threads=threads))
            warm[(n, threads)].append(time.perf_counter() - t0)
            cpu[(n, threads)].append(sum(r.cpu_seconds for r in summary.done))
            assert not summary.failed, summary.failed
        for n in (1, 2):
            t0 = time.perf_counter()
            map_slides(functools.partial(_burn_item, seconds=2.0), ["a", "b"],
                       scheduler=clusters[n][0].scheduler_address, progress=False)
            control[n].append(time.perf_counter() - t0)
    return warm, cpu, control


def scaling(root: Path, *, patches: int, size: tuple[int, int]) -> dict:
    """Two slides through `--workers 1` (in process) and `--workers 2` (LocalCluster, start-up
    included), then through warm 1- and 2-worker clusters (`--scheduler`, interleaved, best of
    3), where the ratio is the parallel speedup alone, next to a pure CPU loop's speedup on the
    same clusters (what the shared machine gives at that moment)."""
    from lymph.data.synth import SynthConfig, run

    world = root / "scaling_slides"
    if not (world / "normal_001.tif").exists():
        print(f"making two {size[0]}x{size[1]} synthetic slides ...", flush=True)
        run(SynthConfig(out=world, n_tumor=1, n_normal=1, size=size, seed=4))
    labels = world / "reference.csv"
    load_before = os.getloadavg()[0]
    run_extract(world, root / "w1.zarr", patches=8, labels=labels)  # warm-up
    t1, _, _ = run_extract(world, root / "w1.zarr", patches=patches, labels=labels)
    t2, _, _ = run_extract(world, root / "w2.zarr", patches=patches, workers=2, labels=labels)
    clusters = {n: _warm_cluster(n) for n in (1, 2)}
    # (workers, decode threads per worker): one worker with the default threads (the CPUs)
    # already uses every core, so worker scaling alone is measured at one decode thread each
    configs = ((1, 1), (2, 1), (1, None))
    try:
        warm, cpu, control = _warm_rounds(world, root, labels=labels, patches=patches,
                                          configs=configs, clusters=clusters)
    finally:
        for cluster, client in clusters.values():
            client.close()
            cluster.close()
    best = {f"{n}x{t or 'default'}": min(v) for (n, t), v in warm.items()}
    best_control = {n: min(v) for n, v in control.items()}
    # one worker at one decode thread still keeps more than one core busy (its writer thread,
    # mask rasterisation): two workers can then gain at most cores / that (and never more than
    # 2x), on a perfect machine
    busy_1 = min(cpu[(1, 1)]) / best["1x1"]
    ceiling = min(2.0, min(2, os.cpu_count() or 1) / busy_1)
    return {"patches_per_slide": patches, "slides": 2, "seconds_1_worker": t1,
            "seconds_2_workers": t2, "speedup_cold": t1 / t2,
            "warm_cluster_seconds": best, "speedup_warm": best["1x1"] / best["2x1"],
            "speedup_vs_threads": best["1xdefault"] / best["2x1"],
            "slide_cpu_seconds": {f"{n}x{t or 'default'}": min(v) for (n, t), v in cpu.items()},
            "control_cpu_loop_seconds": best_control,
            "speedup_control": best_control[1] / best_control[2],
            "efficiency_vs_control": (best["1x1"] / best["2x1"])
            / (best_control[1] / best_control[2]),
            "cores_busy_1_worker": busy_1, "speedup_ceiling": ceiling,
            "load_average_1min": [load_before, os.getloadavg()[0]]}


# --- memory -----------------------------------------------------------------------------------


def _encoded_tiles(tiles: list[np.ndarray]) -> tuple[list[bytes], bytes | None]:
    """JPEG tile bytes exactly as tifffile writes them (encoded once, reused)."""
    import io

    import tifffile

    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as tw:
        for t in tiles:
            tw.write(t, tile=(256, 256), compression="jpeg", compressionargs={"level": 80},
                     photometric="rgb")
    out = []
    buf.seek(0)
    with tifffile.TiffFile(buf) as tf:
        tables = tf.pages[0].jpegtables
        for page in tf.pages:
            buf.seek(page.dataoffsets[0])
            out.append(buf.read(page.databytecounts[0]))
    return out, tables


def make_big_slide(folder: Path, side: int) -> Path:
    """A side x side pyramidal JPEG TIFF (BigTIFF, 256 px tiles, levels down by 2 to < 2048
    px): H&E-like texture tiles inside an ellipse (60% of the slide), glass tiles elsewhere;
    `tumor.xml` marks one polygon inside the tissue. Tiles are 9 pre-encoded JPEGs written
    as bytes, so a 100,000^2 slide (2.5 GB) takes ~20 s; every read still decodes its tiles."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tumor.tif"
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    textures = [np.clip(np.array([200, 120, 170]) + rng.normal(0, 18, (256, 256, 3)), 0,
                        255).astype(np.uint8) for _ in range(8)]
    enc, tables = _encoded_tiles([np.full((256, 256, 3), 243, np.uint8), *textures])
    t0 = time.perf_counter()
    part = path.with_suffix(".part")
    with tifffile.TiffWriter(part, bigtiff=True) as tw:
        level = 0
        while True:
            ds = 2 ** level
            w = h = -(-side // ds)

            def tiles(w: int = w, h: int = h, ds: int = ds):  # noqa: ANN202
                for ty in range(-(-h // 256)):
                    cy = ((ty + 0.5) * 256 * ds - side / 2) / (side * 0.44)
                    for tx in range(-(-w // 256)):
                        cx = ((tx + 0.5) * 256 * ds - side / 2) / (side * 0.44)
                        yield enc[1 + (tx * 7 + ty * 3) % 8] if cx * cx + cy * cy < 1 else enc[0]

            extra = ({"resolution": (1e4 / 0.243, 1e4 / 0.243), "resolutionunit": "CENTIMETER"}
                     if level == 0 else {"subfiletype": 1})
            tw.write(tiles(), shape=(h, w, 3), dtype=np.uint8, tile=(256, 256),
                     compression="jpeg", compressionargs={"level": 80}, photometric="rgb",
                     jpegtables=tables, **extra)
            if max(w, h) < 2048:
                break
            level += 1
    part.rename(path)
    c, r = side / 2, side * 0.05
    pts = [(c + r * np.cos(t), c + r * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 64)[:-1]]
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
    from lymph.pipeline.extract import ExtractConfig, run

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    s = run(ExtractConfig(slides=Path(folder), out=Path(out), patches_per_slide=patches,
                              progress=False))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_mb": peak_kb / 1024, "seconds": time.perf_counter() - t0,
                      "patches": s.n_patches, "tumor": s.n_tumor, "failed": len(s.failed)}))


def memory(root: Path, *, patches: int) -> dict:
    out: dict[int | str, Any] = {}
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


def _print_rate(r: dict) -> None:
    print(f"\n1. rate, one worker, {r['patches']} patches of 300 px, {r['slide']} slide "
          "(best of 2; CPU = this process's CPU time)")
    print(f"   {'':34} {'wall s':>7} {'patches/s':>9} {'vs bare':>8} {'CPU s':>7} "
          f"{'vs bare':>8}")
    for key, label in (("bare", "bare OpenSlide read_region"),
                       ("extract", "lymph extract (direct tiles)"),
                       ("extract_1thread", "lymph extract --threads 1"),
                       ("extract_openslide", "lymph extract (OpenSlide only)")):
        w, c = r["wall_seconds"][key], r["cpu_seconds"][key]
        print(f"   {label:<34} {w:>7.2f} {r['patches'] / w:>9.1f} "
              f"{r['ratio_wall'][key]:>7.2f}x {c:>7.2f} {r['ratio_cpu'][key]:>7.2f}x")
    k = r["checksums"]
    print(f"\n4. crc32c over {k['chunk_files']} chunk files ({k['megabytes']:.1f} MB): "
          f"{k['crc_seconds'] * 1e3:.1f} ms = {100 * k['fraction_of_extract']:.2f}% of the "
          f"extraction ({k['extract_seconds']:.2f} s), {100 * k['fraction_of_read']:.2f}% of "
          f"reading it back ({k['read_seconds']:.2f} s)")


def _print_scaling(s: dict) -> None:
    print(f"\n2. scaling, 2 slides x {s['patches_per_slide']} patches "
          f"(1-min load average {s['load_average_1min'][0]:.1f} -> "
          f"{s['load_average_1min'][1]:.1f} on {os.cpu_count()} CPUs)")
    print(f"   --workers 1 (in process)          {s['seconds_1_worker']:8.2f} s")
    print(f"   --workers 2 (cluster start incl.)  {s['seconds_2_workers']:8.2f} s  "
          f"speedup {s['speedup_cold']:.2f}x")
    w, sc = s["warm_cluster_seconds"], s["slide_cpu_seconds"]
    for key, label in (("1x1", "1 worker x 1 decode thread"),
                       ("2x1", "2 workers x 1 decode thread"),
                       ("1xdefault", f"1 worker x {os.cpu_count()} decode threads")):
        print(f"   warm cluster, {label:<30} {w[key]:8.2f} s  (slide CPU {sc[key]:.2f} s)")
    print(f"   worker scaling (2 vs 1 worker, 1 thread each): {s['speedup_warm']:.2f}x; "
          f"2 workers vs 1 worker with the default threads: {s['speedup_vs_threads']:.2f}x")
    c = s["control_cpu_loop_seconds"]
    print(f"   control: 2 tasks x 2 s CPU loop    {c[1]:8.2f} s / {c[2]:.2f} s  "
          f"speedup {s['speedup_control']:.2f}x (what this machine gives now)")
    print(f"   extraction speedup / control speedup: {s['efficiency_vs_control']:.2f}")
    print(f"   one worker x 1 thread keeps {s['cores_busy_1_worker']:.2f} cores busy: "
          f"2 workers can gain at most {s['speedup_ceiling']:.2f}x on a perfect machine, "
          f"{s['speedup_ceiling'] * s['speedup_control'] / 2:.2f}x at the control's "
          f"efficiency")


def _print_memory(m: dict, *, patches: int) -> None:
    print(f"\n3. peak RSS, {patches} patches with masks, fresh process")
    for side in (25_000, 100_000):
        v = m[side]
        print(f"   {side:>7}^2 slide  {v['peak_rss_mb']:8.0f} MB  ({v['seconds']:.1f} s, "
              f"{v['patches']} patches, {v['tumor']} tumor)")
    print(f"   100k / 25k: {m['ratio_100k_vs_25k']:.3f}")


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
        _print_rate(r)
    if not args.skip_scaling:
        s = scaling(args.out, patches=args.patches, size=args.size)
        report["scaling"] = s
        _print_scaling(s)
    if not args.skip_memory:
        m = memory(args.out, patches=args.memory_patches)
        report["memory"] = m
        _print_memory(m, patches=args.memory_patches)
    from lymph.data.io import atomic_write_json

    atomic_write_json(args.out / "report.json", json.loads(json.dumps(report, default=str)))
    print(f"\nreport: {args.out / 'report.json'}")


if __name__ == "__main__":
    main()
