"""Benchmark of patch-mode evaluation (`lymph eval patches`): where the time goes.

Prints, measured in the same run (so the ratios hold even when other work loads the CPUs):
1. metric cost per 64-patch chunk of 300 x 300 px: `pixel_counts` and `PRAccumulator.update`
   (1001 bins) against a bare `np.count_nonzero` of the same masks (the baseline);
2. end-to-end `lymph.model.evaluate.run` patches/s on a synthetic store against `predict_probs`
   alone on the same patches already in memory (the baseline): the overhead of streaming the
   store and computing metrics;
3. slide mode (`lymph eval slides`) on one CAMELYON16-size level-5 frame (Tumor_001: 3,056 x
   6,912 px) with 1,000 detections: the official rules and lymph's (evaluation mask, ITCs,
   hits, FROC) against one bare distance transform of the frame (the baseline);
4. peak RSS of the process.

    .venv/bin/python bench/bench_eval.py [--patches 256] [--base-width 8] [--depth 4]
        [--frame 3056x6912]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lymph.data.store import CHUNK_PATCHES, create_store, write_slide
from lymph.model.checkpoint import save_checkpoint
from lymph.model.evaluate import EvalConfig, run
from lymph.model.infer import predict_probs
from lymph.model.metrics import PRAccumulator, binarize, pixel_counts
from lymph.model.unet import UNet, UNetConfig

P = 300


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=256)
    ap.add_argument("--base-width", type=int, default=8)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frame", default="3056x6912", help="level-5 frame WIDTHxHEIGHT")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)

    # 1. metrics on one chunk
    probs = rng.random((CHUNK_PATCHES, P, P), dtype=np.float32)
    masks = (rng.random((CHUNK_PATCHES, P, P)) < 0.2).astype(np.uint8)
    t_base = _best(lambda: np.count_nonzero(masks))
    t_counts = _best(lambda: pixel_counts(binarize(probs, 0.5), masks))
    acc = PRAccumulator(bins=1001)
    t_acc = _best(lambda: acc.update(probs, masks))
    mpx = CHUNK_PATCHES * P * P / 1e6
    print(f"metrics on one chunk ({CHUNK_PATCHES} x {P} x {P} px = {mpx:.2f} Mpx)")
    print("| step | ms/chunk | Mpx/s | x baseline |\n|---|---:|---:|---:|")
    for name, t in (("np.count_nonzero (baseline)", t_base),
                    ("binarize + pixel_counts", t_counts),
                    ("PRAccumulator.update (1001 bins)", t_acc)):
        print(f"| {name} | {1e3 * t:.1f} | {mpx / t:.0f} | {t / t_base:.1f} |")

    # 2. end to end on a synthetic store
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "s.zarr"
        create_store(store, {"patch_size": P, "level": 0, "seed": 0})
        n = args.patches
        images = rng.integers(0, 256, (n, P, P, 3), dtype=np.uint8)
        slide_masks = np.zeros((n, P, P), np.uint8)
        slide_masks[::2, 50:200, 80:250] = 1
        labels = slide_masks.reshape(n, -1).any(1).astype(np.uint8)
        coords = np.zeros((n, 2), np.int64)
        write_slide(store, "tumor_001", images=images, coords=coords, labels=labels,
                    masks=slide_masks, attrs={"status": "tumor"})
        torch.manual_seed(0)
        model = UNet(UNetConfig(base_width=args.base_width, depth=args.depth))
        ckpt = Path(tmp) / "m.pt"
        save_checkpoint(ckpt, model=model, config={"stage": "finetune"})
        model.eval()
        predict_probs(model, images[:4])  # warm-up
        t_model = _best(lambda: predict_probs(model, images, batch_size=16), repeat=1)
        t_eval = _best(lambda: run(EvalConfig(store=store, checkpoint=ckpt, batch_size=16,
                                              progress=False)), repeat=1)
        t_auto = _best(lambda: run(EvalConfig(store=store, checkpoint=ckpt, batch_size=16,
                                              progress=False, out=Path(tmp) / "o")), repeat=1)
    print(f"\nend to end, {n} patches of {P} px, UNet base width {args.base_width} depth "
          f"{args.depth}, {args.threads} threads")
    print("| step | s | patches/s | x baseline |\n|---|---:|---:|---:|")
    for name, t in (("predict_probs on in-memory patches (baseline)", t_model),
                    ("eval run, threshold 0.5", t_eval),
                    ("eval run + PR curve PNG + metrics.json", t_auto)):
        print(f"| {name} | {t:.2f} | {n / t:.1f} | {t / t_model:.2f} |")
    _bench_slide_rules(args.frame, rng)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {rss_mb:.0f} MB (includes the {n}-patch in-memory baseline copy, "
          f"{n * P * P * 3 / 1e6:.0f} MB)")


def _bench_slide_rules(frame: str, rng: np.random.Generator) -> None:
    """Section 3: both rule sets on one level-5 frame with random lesions and detections."""
    from scipy import ndimage

    from lymph.model import camelyon as cam

    w, h = (int(v) for v in frame.lower().split("x"))
    red = np.zeros((h, w), np.uint8)
    centres = []
    for _ in range(40):  # lesions of 1..60 px (8..470 um) at level 5
        r, c, n = int(rng.integers(0, h)), int(rng.integers(0, w)), int(rng.integers(1, 60))
        red[r : r + n, c : c + n] = 255
        centres.append(((c + n / 2) * 32, (r + n / 2) * 32))
    det = np.column_stack([rng.random(1000), rng.integers(0, w * 32, 1000),
                           rng.integers(0, h * 32, 1000)]).astype(np.float64)  # fmt: skip
    det[:40, 1:] = np.minimum(centres, [w * 32 - 1, h * 32 - 1])  # one detection per lesion
    normal = cam.official_slide(det, labels=None)

    def official() -> float | None:
        labels = cam.official_evaluation_mask(red)
        s = cam.official_slide(det, labels=labels, itc=cam.official_itc_labels(labels))
        return cam.official_froc([s, normal])["froc"]

    def lymph_rules() -> float | None:
        um = 0.243 * 32
        labels = cam.evaluation_mask(red > 0, um_per_px=um)
        s = cam.score_slide(det, labels=labels, itc=cam.itc_labels(labels, um_per_px=um))
        return cam.froc([s, cam.score_slide(det, labels=None)]).interpolated

    t_base = _best(lambda: ndimage.distance_transform_edt(255 - red), repeat=2)
    t_off = _best(official, repeat=2)
    t_lym = _best(lymph_rules, repeat=2)
    mpx = w * h / 1e6
    print(f"\nslide mode on one {w} x {h} level-5 frame ({mpx:.1f} Mpx), 40 lesions, "
          f"1,000 detections on it and on a normal slide (FROC official {official():.4f}, "
          f"lymph {lymph_rules():.4f})")
    print("| step | s | x baseline |\n|---|---:|---:|")
    for name, t in (("distance_transform_edt of the frame (baseline)", t_base),
                    ("official rules: mask, ITCs, hits, FROC", t_off),
                    ("lymph rules: mask, ITCs, hits, FROC", t_lym)):
        print(f"| {name} | {t:.2f} | {t / t_base:.2f} |")


if __name__ == "__main__":
    main()
