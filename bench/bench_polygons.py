"""Benchmark: extraction of 100 patches from a slide whose ASAP XML holds many small polygons.

Each patch's mask used to be rasterised against every polygon; with the spatial index
(`lymph.data.polygon_index`) only polygons whose bounding box meets the patch are. Prints, in the
same run, the extraction time with 100 polygons (the baseline) and with each larger count, split
into reading the XML and extracting (tissue, plan, patches, masks).

    .venv/bin/python bench/bench_polygons.py [--counts 100,20000,100000] [--patches 100]

CPU seconds (this process) are printed beside wall seconds: on a loaded machine the wall time
is inflated, the CPU time much less so.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

SIZE = 8192  # level-0 px of the synthetic slide (square)
MPP = 0.25


def write_slide(path: Path) -> None:
    import tifffile

    rgb = np.full((SIZE, SIZE, 3), 240, np.uint8)
    rgb[512:-512, 512:-512] = (200, 120, 180)  # tissue
    with tifffile.TiffWriter(path) as tif:
        for i, d in enumerate((1, 2, 4, 8, 16)):
            tif.write(rgb[::d, ::d], tile=(256, 256), compression="deflate", photometric="rgb",
                      subfiletype=1 if i else 0, resolution=(1e4 / (MPP * d), 1e4 / (MPP * d)),
                      resolutionunit="CENTIMETER")


def write_xml(path: Path, n: int, rng: np.random.Generator) -> None:
    """n octagons of radius 12-30 px at random places inside the tissue."""
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    centres = rng.uniform(600, SIZE - 600, (n, 2))
    radii = rng.uniform(12, 30, n)
    parts = ['<?xml version="1.0"?><ASAP_Annotations><Annotations>']
    for k in range(n):
        xs = centres[k, 0] + radii[k] * np.cos(angles)
        ys = centres[k, 1] + radii[k] * np.sin(angles)
        coords = "".join(f'<Coordinate Order="{i}" X="{x:.1f}" Y="{y:.1f}"/>'
                         for i, (x, y) in enumerate(zip(xs, ys, strict=True)))
        parts.append(f'<Annotation Name="A{k}" Type="Polygon" PartOfGroup="_0">'
                     f"<Coordinates>{coords}</Coordinates></Annotation>")
    parts.append('</Annotations><AnnotationGroups><Group Name="_0" PartOfGroup="None"/>'
                 "</AnnotationGroups></ASAP_Annotations>")
    path.write_text("".join(parts))


def run_one(root: Path, n: int, patches: int) -> tuple[float, float]:
    from lymph.data.annotations import read_annotations
    from lymph.pipeline.extract import ExtractConfig, run

    slides = root / f"s{n}"
    slides.mkdir()
    (slides / "tumor_001.tif").symlink_to(root / "slide.tif")
    write_xml(slides / "tumor_001.xml", n, np.random.default_rng(n))
    t0, c0 = time.perf_counter(), time.process_time()
    read_annotations(slides / "tumor_001.xml")
    t_read, c_read = time.perf_counter() - t0, time.process_time() - c0
    config = ExtractConfig(slides=slides, out=root / f"s{n}.zarr", patch_size=256,
                           patches_per_slide=patches, seed=0, progress=False)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = run(config)
    t_all, c_all = time.perf_counter() - t0, time.process_time() - c0
    assert not summary.failed, summary.failed
    return t_read, c_read, t_all, c_all


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", default="100,20000,100000")
    ap.add_argument("--patches", type=int, default=100)
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_slide(root / "slide.tif")
        base = None
        for n in counts:
            t_read, c_read, t_all, c_all = run_one(root, n, args.patches)
            base = base or c_all
            print(f"{n:>7} polygons: read XML {t_read:6.2f} s wall ({c_read:6.2f} s CPU); extract "
                  f"{args.patches} patches (incl. reading it again) {t_all:6.2f} s wall "
                  f"({c_all:6.2f} s CPU = {c_all / base:5.1f}x the {counts[0]}-polygon "
                  "baseline's CPU)", flush=True)


if __name__ == "__main__":
    main()
