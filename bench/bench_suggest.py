"""Benchmark `lymph suggest` on the map of a 100,000 x 100,000 px slide: time and peak RSS.

    .venv/bin/python bench/bench_suggest.py [--out bench_out/suggest] [--slide 100000]
        [--k 20] [--size 1200] [--repeats 2]

1. Writes a fake map as `lymph predict` writes it (`S_tumor_map.tif`: pyramidal, 256 px deflate
   tiles, uint8, 1/16 of the slide: 6250 x 6250 for 100,000 px) plus `S_predict.json`. The map
   is tissue inside an ellipse with smooth lesions and faint noise (so the greedy selection
   meets many candidates), generated one tile row at a time (seeded).
2. Runs `lymph suggest --maps ... -k K --size SIZE` in a fresh process (imports included),
   `--repeats` times, and reads its peak RSS from the kernel (getrusage of the child).
3. In the same run, the baselines: a fresh process that only imports lymph's suggest module
   (the floor of any run), and one that decodes the whole map with tifffile (`page.asarray()`,
   what a non-streaming implementation needs at least): suggest's time and RSS are reported
   as ratios against both.

The machine may be shared, so compare ratios measured in the same run. Goal (issue 24): under
1 minute and under 1 GB RSS for the 100,000 px slide's map.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MAP_DS = 16


def write_fake_map(folder: Path, name: str, *, slide_px: int, seed: int) -> Path:
    """A `lymph predict`-style map of a `slide_px` square slide, written row by row."""
    from lymph.data.pyramid import write_pyramidal_tiff

    n = slide_px // MAP_DS
    rng = np.random.default_rng(seed)
    blobs = np.c_[rng.uniform(0.2, 0.8, (40, 2)) * n, rng.uniform(0.002, 0.02, 40) * n]
    tile = 256

    def rows(i: int) -> np.ndarray:
        y = np.arange(i * tile, min(n, (i + 1) * tile), dtype=np.float32)[:, None]
        x = np.arange(n, dtype=np.float32)[None, :]
        tissue = ((y - n / 2) / (0.45 * n)) ** 2 + ((x - n / 2) / (0.4 * n)) ** 2 < 1
        logit = np.full((len(y), n), -5.0, np.float32)
        for bx, by, r in blobs:
            if abs(float(by) - float(y[0, 0])) > 4 * r + tile:
                continue
            d = np.hypot(x - bx, y - by)
            logit = np.maximum(logit, (r - d) / (0.25 * r))
        noise = np.random.default_rng([seed, i]).normal(0, 0.6, logit.shape)
        p = 1 / (1 + np.exp(-(logit + noise)))
        return np.where(tissue, np.clip(np.round(p * 255), 1, 255), 0).astype(np.uint8)

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_tumor_map.tif"
    write_pyramidal_tiff(path, rows, width=n, height=n, channels=1, tile=tile,
                         compression="deflate", mpp=0.25 * MAP_DS, min_size=512)
    (folder / f"{name}_predict.json").write_text(json.dumps(
        {"slide": None, "mpp": 0.25, "settings": {"map_downsample": float(MAP_DS)}}))
    return path


HWM = ("import atexit, runpy, sys\n"
       "def hwm():\n"
       "    kb = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
       "    print(f'VmHWM {kb}', file=sys.stderr)\n"
       "atexit.register(hwm)\n"
       "sys.argv = sys.argv[1:]\n"
       "runpy.run_path(sys.argv[0], run_name='__main__') if sys.argv[0].endswith('.py') else "
       "exec(sys.argv[0])\n")
"""Runs a script or code and prints the process's peak RSS (VmHWM) on exit. VmHWM belongs to
the process image and restarts at exec, unlike getrusage's ru_maxrss, which also counts what
the forked child shared with this (larger) parent before exec."""


def measure(args: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MiB, stdout) of a fresh Python process running `args`
    (a script path and its arguments, or one string of code)."""
    cmd = [sys.executable, "-c", HWM, *args]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"failed: {' '.join(args)}\n{res.stderr[-2000:]}")
    kb = [ln.split()[1] for ln in res.stderr.splitlines() if ln.startswith("VmHWM ")]
    return seconds, int(kb[-1]) / 1024, res.stdout


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "?"
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith("flags")), [])
    return " ".join(f for f in flags if f.startswith(("avx512_bf16", "amx", "avx2"))) or "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench_out/suggest"))
    ap.add_argument("--slide", type=int, default=100_000, help="slide side in level-0 px")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--size", type=float, default=1200.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    maps = args.out / "maps"
    if args.out.exists():
        shutil.rmtree(args.out)
    t0 = time.perf_counter()
    path = write_fake_map(maps, "big", slide_px=args.slide, seed=args.seed)
    print(f"fake map {path} ({args.slide // MAP_DS}^2) written in "
          f"{time.perf_counter() - t0:.1f} s, {path.stat().st_size / 2**20:.1f} MiB")
    results = {}
    results["import"] = measure(["import lymph.cli, lymph.model.suggest"])
    results["decode_whole"] = measure([
        "import tifffile; a = tifffile.TiffFile(sys.argv[1]).pages[0].asarray(); "
        "print(a.shape, a.mean())", str(path)])
    runs = []
    for r in range(args.repeats):
        code = "from lymph.cli import main; main()"
        runs.append(measure([code, "suggest", "--maps", str(maps), "--out",
                             str(args.out / f"next{r}"), "-k", str(args.k), "--size",
                             str(args.size)]))
    best = min(runs, key=lambda t: t[0])
    results["suggest"] = best
    print(best[2].splitlines()[-1])
    cpu = platform.processor() or platform.machine()
    print(f"\nCPU: {cpu} (flags: {cpu_flags()}); python {platform.python_version()}")
    print(f"{'what':<14} {'seconds':>8} {'peak RSS MiB':>13}")
    for key, (s, rss, _) in results.items():
        print(f"{key:<14} {s:>8.2f} {rss:>13.0f}")
    s, rss, _ = best
    print(f"\nsuggest on a {args.slide:,} px slide's map: {s:.1f} s (goal < 60 s), peak RSS "
          f"{rss:.0f} MiB (goal < 1024 MiB); {s / results['decode_whole'][0]:.2f}x the time of "
          f"decoding the map whole, {rss - results['import'][1]:.0f} MiB above the bare import "
          f"(decoding the map whole: {results['decode_whole'][1] - results['import'][1]:.0f} "
          "MiB above it)")
    print("all runs (s): " + ", ".join(f"{t[0]:.2f}" for t in runs))


if __name__ == "__main__":
    main()
