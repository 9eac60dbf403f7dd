"""Benchmark `lymph view`: tile latency (p50/p95, uncached and cached) and server memory on a
100,000 x 100,000 slide.

    nice .venv/bin/python bench/bench_view.py                  # writes bench_out/view/...
    nice .venv/bin/python bench/bench_view.py --size 50000 --tiles 200

The slide. A pyramidal JPEG TIFF (generic-tiff, 256 px tiles, levels halving down to under
2,048 px, mpp 0.25) written in I/O time: 64 distinct 256 px tiles of an H&E-like noise texture
are JPEG-encoded once by tifffile (YCbCr 4:2:0, quality 90, as `lymph synth` writes slides)
into a small TIFF, and the big file's tiles are those bytes repeated (tile (r, c) of every
level is tile (r * 7 + c) % 64), so each level decodes like a real one although it is not the
downsample of the level above (latency does not depend on what the pixels show). Beside it, a
6,250 x 6,250 tumor map (1/16, deflate, written as `lymph predict` writes maps).

The measurement. `lymph view` runs as its own process (the CLI, default 256 MiB tile cache);
this process is the browser, over HTTP/1.1 keep-alive:

1. uncached: ``--tiles`` distinct slide tiles, Deep Zoom levels drawn uniformly from the 9
   deepest (level 0 of the slide down to 1/256), positions uniform; one connection, in turn;
2. cached: the same tiles again;
3. six connections at once (a browser's per-host limit), ``--tiles`` further distinct tiles;
4. map tiles: ``--tiles // 2`` distinct tumor-map tiles (threshold 0.5), then again cached;
5. memory: the server's VmRSS and VmHWM (peak) after 1-4, then after ``--stream`` more
   distinct tiles through a 16 MiB cache (a second server), so the cache's bound shows.

Baseline, same run, in this process: OpenSlide ``read_region`` of a 256 x 256 level-0 tile at
the same kind of random positions plus a PIL JPEG encode (the least work a tile server does).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TILE = 256


def make_slide(path: Path, size: int, *, rng: np.random.Generator) -> float:
    """Write the size x size slide (see the module docstring); seconds taken (0 if cached)."""
    import tifffile

    from lymph.data.pyramid import pyramid_dimensions

    if path.is_file():
        return 0.0
    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    base = np.array([225, 160, 200], np.float32)  # eosin pink
    nuclei = np.array([80, 50, 140], np.float32)
    tiles = []
    for _ in range(64):
        blob = rng.random((TILE // 8, TILE // 8)) < 0.25
        mask = np.kron(blob, np.ones((8, 8), np.float32))[..., None]
        noise = rng.normal(0, 12, (TILE, TILE, 3)).astype(np.float32)
        tiles.append(np.clip(base * (1 - mask) + nuclei * mask + noise, 0, 255).astype(np.uint8))
    common = {"dtype": np.uint8, "tile": (TILE, TILE), "photometric": "rgb",
              "compression": "jpeg", "subsampling": (2, 2), "metadata": None}
    src = path.with_name("tiles64.tif")
    with tifffile.TiffWriter(src) as tw:
        tw.write(np.concatenate([np.concatenate(tiles[r * 8:(r + 1) * 8], axis=1)
                                 for r in range(8)], axis=0), compressionargs={"level": 90},
                 **common)
    with tifffile.TiffFile(src) as tf:
        page = tf.pages[0]
        encoded = []
        for i in range(64):
            tf.filehandle.seek(page.dataoffsets[i])
            encoded.append(tf.filehandle.read(page.databytecounts[i]))
    mpp = 0.25
    part = path.with_name(path.name + ".part")
    with tifffile.TiffWriter(part, bigtiff=True) as out:
        for k, (w, h) in enumerate(pyramid_dimensions(size, size)):
            px_cm = 1e4 / (mpp * 2**k)

            def gen(w: int = w, h: int = h):
                for r in range(-(-h // TILE)):
                    for c in range(-(-w // TILE)):
                        yield encoded[(r * 7 + c) % 64]

            out.write(gen(), shape=(h, w, 3), resolution=(px_cm, px_cm),
                      resolutionunit="CENTIMETER", subfiletype=1 if k else 0, **common)
    part.rename(path)
    src.unlink()
    return time.perf_counter() - t0


def make_map(path: Path, size: int) -> None:
    """A (size / 16)^2 tumor map: discs of probability ramps, written as predict writes maps."""
    from lymph.data.pyramid import write_pyramidal_tiff

    if path.is_file():
        return
    side = -(-size // 16)
    path.parent.mkdir(parents=True, exist_ok=True)
    yy = np.arange(TILE)[:, None]
    xx = np.arange(side)[None, :]

    def rows(i: int) -> np.ndarray:
        y = yy[: min(TILE, side - i * TILE)] + i * TILE
        d = np.hypot((xx % 800) - 400, (y % 800) - 400)
        return np.clip(255 - d * 0.9, 0, 255).astype(np.uint8)

    write_pyramidal_tiff(path, rows, width=side, height=side, channels=1, tile=TILE,
                         compression="deflate", mpp=0.25 * 16, min_size=512)


def random_tiles(n: int, size: int, *, rng: np.random.Generator, levels: int = 9,
                 seen: set | None = None) -> list[tuple[int, int, int]]:
    from lymph.model.view.tiles import DeepZoom

    dz = DeepZoom(size, size)
    seen = set() if seen is None else seen
    out = []
    while len(out) < n:
        level = int(rng.integers(dz.max_level - levels + 1, dz.max_level + 1))
        cols, rows = dz.grid(level)
        t = (level, int(rng.integers(cols)), int(rng.integers(rows)))
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


class Client:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def get(self, path: str) -> tuple[float, int]:
        t0 = time.perf_counter()
        self.conn.request("GET", path)
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path}: {resp.status} {body[:200]!r}")
        return (time.perf_counter() - t0) * 1e3, len(body)


def stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p95_ms": round(float(np.percentile(a, 95)), 2),
            "max_ms": round(float(a.max()), 2), "mean_ms": round(float(a.mean()), 2)}


def start_server(slides: Path, maps: Path, cache_mb: int) -> tuple[subprocess.Popen, int]:
    cmd = [str(ROOT / ".venv" / "bin" / "lymph"), "view", "--slides", str(slides),
           "--predictions", str(maps), "--port", "0", "--cache-mb", str(cache_mb)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # type: ignore[union-attr]
    return proc, int(m[1])


def memory(pid: int) -> dict[str, float]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: round(int(re.search(rf"{k}:\s+(\d+)", text)[1]) / 1024, 1)
            for k in ("VmRSS", "VmHWM")}


def run_tiles(port: int, paths: list[str], threads: int = 1) -> list[float]:
    if threads == 1:
        c = Client(port)
        return [c.get(p)[0] for p in paths]
    out: list[float] = []
    lock = threading.Lock()
    chunks = [paths[i::threads] for i in range(threads)]

    def work(chunk: list[str]) -> None:
        c = Client(port)
        ms = [c.get(p)[0] for p in chunk]
        with lock:
            out.extend(ms)

    ts = [threading.Thread(target=work, args=(ch,)) for ch in chunks]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def baseline(slide: Path, size: int, n: int, rng: np.random.Generator) -> dict[str, float]:
    import io

    import openslide

    ms = []
    with openslide.OpenSlide(str(slide)) as osr:
        for _ in range(n):
            x, y = (int(v) * TILE for v in rng.integers(0, size // TILE, 2))
            t0 = time.perf_counter()
            img = osr.read_region((x, y), 0, (TILE, TILE)).convert("RGB")
            img.save(io.BytesIO(), format="JPEG", quality=85)
            ms.append((time.perf_counter() - t0) * 1e3)
    return stats(ms)


def cpu_model() -> str:
    """The CPU's model name and its AVX-512 / AMX flags (nothing here uses them: tiles are
    libjpeg-turbo and zlib work)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    name = re.search(r"model name\s*:\s*(.*)", info)
    flags = sorted({f for f in re.findall(r"\b(avx512\w*|amx\w*)\b", info)})
    return f"{name[1] if name else platform.machine()} [{' '.join(flags)}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--tiles", type=int, default=300)
    ap.add_argument("--stream", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=ROOT / "bench_out" / "view")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "view.json")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    slides = args.cache / f"slides_{args.size}"
    maps = args.cache / f"maps_{args.size}"
    write_s = make_slide(slides / "big.tif", args.size, rng=np.random.default_rng(args.seed))
    make_map(maps / "big_tumor_map.tif", args.size)
    result: dict = {"size": args.size, "seed": args.seed, "slide_write_s": round(write_s, 1),
                    "slide_bytes": (slides / "big.tif").stat().st_size,
                    "cpu": cpu_model(),
                    "cores": os.cpu_count(), "loadavg_start": os.getloadavg(),
                    "python": sys.version.split()[0]}
    result["baseline_openslide_tile_jpeg"] = baseline(slides / "big.tif", args.size,
                                                      args.tiles, rng)
    seen: set = set()
    result.update(measure_default(slides, maps, args, rng, seen))
    result.update(measure_small_cache(slides, maps, args, rng, seen))
    result["loadavg_end"] = os.getloadavg()
    b = result["baseline_openslide_tile_jpeg"]["p50_ms"]
    result["ratio_uncached_p50_vs_baseline"] = round(result["uncached"]["p50_ms"] / b, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def measure_default(slides: Path, maps: Path, args: argparse.Namespace,
                    rng: np.random.Generator, seen: set) -> dict:
    """Steps 1-4 and the server's memory after them (default 256 MiB cache)."""
    result: dict = {}
    proc, port = start_server(slides, maps, 256)
    try:
        result["server_start_rss_mb"] = memory(proc.pid)
        first = random_tiles(args.tiles, args.size, rng=rng, seen=seen)
        paths = [f"/tiles/big/slide_files/{lv}/{c}_{r}.jpeg" for lv, c, r in first]
        result["uncached"] = stats(run_tiles(port, paths))
        result["cached"] = stats(run_tiles(port, paths))
        more = random_tiles(args.tiles, args.size, rng=rng, seen=seen)
        paths6 = [f"/tiles/big/slide_files/{lv}/{c}_{r}.jpeg" for lv, c, r in more]
        t0 = time.perf_counter()
        result["uncached_6_connections"] = stats(run_tiles(port, paths6, threads=6))
        result["uncached_6_connections"]["tiles_per_s"] = round(
            len(paths6) / (time.perf_counter() - t0), 1)
        mtiles = random_tiles(args.tiles // 2, -(-args.size // 16), rng=rng, levels=6)
        mpaths = [f"/tiles/big/map_t50_files/{lv}/{c}_{r}.png" for lv, c, r in mtiles]
        result["map_uncached"] = stats(run_tiles(port, mpaths))
        result["map_cached"] = stats(run_tiles(port, mpaths))
        result["server_rss_mb_after"] = memory(proc.pid)
    finally:
        proc.terminate()
        proc.wait()
    return result


def measure_small_cache(slides: Path, maps: Path, args: argparse.Namespace,
                        rng: np.random.Generator, seen: set) -> dict:
    """Step 5: memory over a stream of distinct tiles through a 16 MiB cache."""
    result: dict = {}
    proc, port = start_server(slides, maps, 16)
    try:
        stream = random_tiles(args.stream, args.size, rng=rng, seen=seen)
        spaths = [f"/tiles/big/slide_files/{lv}/{c}_{r}.jpeg" for lv, c, r in stream]
        half = len(spaths) // 2
        run_tiles(port, spaths[:half])
        mid = memory(proc.pid)
        result["stream_16mb_cache"] = stats(run_tiles(port, spaths[half:]))
        result["stream_16mb_cache"]["rss_mb_half_way"] = mid
        result["stream_16mb_cache"]["rss_mb_end"] = memory(proc.pid)
    finally:
        proc.terminate()
        proc.wait()
    return result


if __name__ == "__main__":
    main()
