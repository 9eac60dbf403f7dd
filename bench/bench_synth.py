"""Benchmark `lymph synth`: generation speed (Mpx/s) and peak RSS against slide size, and the
best mean-colour balanced accuracy on a demo-sized slide set.

Each size is generated in a fresh child process (one tumor slide: slide + XML + mask TIFF) and
its peak RSS is read from that child's own rusage (os.wait4), so sizes do not mask each other.
The small size is the baseline measured in the same run: ratios against it are what to compare
across machines (the CPU may be shared).

    .venv/bin/python bench/bench_synth.py                       # 20k baseline + 100k, demo set
    .venv/bin/python bench/bench_synth.py --sizes 4096x3072 20000x20000 --no-colour
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, sys, time
from lymph.data.synth import SynthConfig, run
out = sys.argv[1]
w, h, seed, workers = (int(v) for v in sys.argv[2:6])
t = time.perf_counter()
slides = run(SynthConfig(out=out, n_tumor=1, n_normal=0, size=(w, h), seed=seed,
                         workers=workers)).slides
seconds = time.perf_counter() - t
s = slides[0]
print(json.dumps({"seconds": seconds, "slide_bytes": s.path.stat().st_size,
                  "mask_bytes": s.mask.stat().st_size, "lesions": [l.kind for l in s.lesions]}))
"""


def raise_if_failed(code: int, stderr: str) -> None:
    if code != 0:
        raise SystemExit(f"child failed with exit code {code}:\n{stderr[-3000:]}")


def spawn_measured(width: int, height: int, *, out: Path, seed: int, workers: int) -> dict:
    """Run one generation in a child; return its JSON report plus peak RSS (MB) from wait4."""
    out.mkdir(parents=True, exist_ok=True)
    log = out / "child.log"
    cmd = [sys.executable, "-c", CHILD, str(out), str(width), str(height), str(seed), str(workers)]
    with open(log, "w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text()
    raise_if_failed(proc.returncode, text)
    info = json.loads(text.strip().splitlines()[-1])
    info["wall"] = wall
    info["peak_rss_mb"] = usage.ru_maxrss / 1024  # Linux: KiB
    info["cpu_s"] = usage.ru_utime + usage.ru_stime
    return info


def colour_check(out: Path, *, n_tumor: int, n_normal: int, size: tuple[int, int],
                 seed: int) -> dict:
    from lymph.data.synth import SynthConfig, colour_separability, run

    t = time.perf_counter()
    slides = run(SynthConfig(out=out, n_tumor=n_tumor, n_normal=n_normal, size=size,
                             seed=seed)).slides
    gen = time.perf_counter() - t
    t = time.perf_counter()
    result = colour_separability(slides)
    result["generate_s"] = gen
    result["measure_s"] = time.perf_counter() - t
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["20000x20000", "100000x100000"],
                    help="WIDTHxHEIGHT sizes; the first is the baseline for ratios")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", dest="workers", type=int, default=1,
                    help="encoding threads per generation")
    ap.add_argument("--out", type=Path, default=None,
                    help="scratch folder (default: a temporary folder, removed at the end)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--no-colour", action="store_true", help="skip the demo-set colour check")
    ap.add_argument("--colour-set", default="3,2,12000x9000",
                    help="N_TUMOR,N_NORMAL,WxH of the colour check set (the demo's)")
    args = ap.parse_args()

    scratch = args.out or Path(tempfile.mkdtemp(prefix="bench_synth_"))
    print(f"lymph synth benchmark: {os.cpu_count()} CPUs (shared: other work may be running), "
          f"seed {args.seed}, scratch {scratch}")
    rows = []
    try:
        for spec in args.sizes:
            w, h = (int(v) for v in spec.lower().split("x"))
            target = scratch / f"size_{w}x{h}"
            print(f"generating {w} x {h} ...", flush=True)
            info = spawn_measured(w, h, out=target, seed=args.seed, workers=args.workers)
            info.update(width=w, height=h, mpx=w * h / 1e6)
            rows.append(info)
            if not args.keep:
                shutil.rmtree(target, ignore_errors=True)
        base = rows[0]
        print()
        print(f"{'size':>15} {'Mpx':>8} {'seconds':>8} {'Mpx/s':>7} {'CPU s':>7} "
              f"{'peak RSS MB':>11} {'RSS ratio':>9} {'s/Mpx ratio':>11} {'slide MB':>9} "
              f"{'mask MB':>8}  lesions")
        for r in rows:
            rate = r["mpx"] / r["seconds"]
            ratio_rss = r["peak_rss_mb"] / base["peak_rss_mb"]
            ratio_t = (r["seconds"] / r["mpx"]) / (base["seconds"] / base["mpx"])
            print(f"{r['width']:>7}x{r['height']:<7} {r['mpx']:>8.0f} {r['seconds']:>8.1f} "
                  f"{rate:>7.1f} {r['cpu_s']:>7.0f} {r['peak_rss_mb']:>11.0f} {ratio_rss:>9.2f} "
                  f"{ratio_t:>11.2f} {r['slide_bytes'] / 1e6:>9.0f} {r['mask_bytes'] / 1e6:>8.1f}"
                  f"  {','.join(r['lesions'])}")
        print("Mpx/s counts level-0 pixels of the slide; the time includes its pyramid, the XML "
              "and the mask TIFF.")
        if not args.no_colour:
            nt, nn, size = args.colour_set.split(",")
            w, h = (int(v) for v in size.lower().split("x"))
            print(f"\ncolour check: {nt} tumor + {nn} normal slides, {w}x{h}, seed {args.seed}")
            res = colour_check(scratch / "colour", n_tumor=int(nt), n_normal=int(nn),
                               size=(w, h), seed=args.seed)
            accs = res["balanced_accuracy"]
            print(f"{'feature':>8} {'best balanced accuracy':>23}")
            for k, v in accs.items():
                print(f"{k:>8} {v:>23.3f}")
            print(f"best {res['best']:.3f} (rule: <= 0.75) over {res['n_tumor']} tumor and "
                  f"{res['n_non_tumor']} non-tumor 300 px patches; generated in "
                  f"{res['generate_s']:.0f} s, measured in {res['measure_s']:.0f} s")
    finally:
        if args.out is None and not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
