"""Benchmark ``--precision``: bf16 autocast against fp32, side by side in one run.

    .venv/bin/python bench/bench_precision.py                  # all three parts
    .venv/bin/python bench/bench_precision.py --skip-quality   # speed only (minutes)

Prints the CPU's bf16 flags, torch's CPU capability and what ``--precision auto`` resolves to
here, then:

1. Forward (what predict runs): the default UNet (width 32, depth 4, BatchNorm, channels_last,
   eval mode, inference_mode) on tiles of ``--tiles`` px with ``--thread-counts`` torch
   threads: seconds per tile in fp32 and under bf16 autocast, measured interleaved (fp32, bf16,
   fp32, bf16, ...; the median of ``--repeats``) so that a loaded machine slows both alike;
   the speed-up, and the max / mean abs difference of the tumor probabilities on an H&E-like
   tile of a synthetic slide.
2. Fine-tune step: the same UNet in train mode, one AdamW step (forward, BCE + reconstruction
   loss, backward, step) on a batch of ``--batch`` crops of ``--crop`` px, fp32 vs bf16,
   interleaved likewise.
3. Quality (small synthetic worlds, as bench_predict.py part 3): a width-8 UNet trained for
   ``--train-steps`` steps in fp32 and, from the same seed, under bf16 autocast; the fp32
   model's full maps of the test world predicted in fp32 and in bf16 (map mean abs diff, FROC,
   AUC, pixel F1 of the map at 0.5 against the masks, inference seconds), the bf16-trained
   model's maps (fp32 predict) for the fine-tune's agreement, and an fp32 model trained from
   another seed: the run-to-run noise that agreement is to be read against.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
PAIR = ("fp32", "bf16")


def header() -> None:
    import torch

    from lymph.model.precision import cpu_features, resolve_precision

    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"CPU {model}, {os.cpu_count()} CPU(s); bf16 flags {sorted(cpu_features()) or 'none'}; "
          f"torch {torch.__version__} capability {torch.backends.cpu.get_cpu_capability()}; "
          f"--precision auto -> {resolve_precision('auto', 'cpu')} on cpu; "
          f"load average {os.getloadavg()[0]:.1f}")


def he_tile(args: argparse.Namespace, size: int) -> np.ndarray:
    """An H&E-like (size, size, 3) uint8 tile from the middle of the test world's first tumor
    slide (made once, cached)."""
    from bench_predict import make_world

    from lymph.data.slides import open_slide

    (n_tumor, n_normal), cache = args.test_world, args.cache
    world = make_world(cache, "test", n_tumor=n_tumor, n_normal=n_normal, seed=1,
                       size=args.world_size)
    slide = sorted(p for p in world.glob("tumor_*.tif") if not p.stem.endswith("_mask"))[0]
    with open_slide(slide) as r:
        w, h = r.dimensions
        return r.read_region(((w - size) // 2, (h - size) // 2), 0, (size, size))


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each callable, run in turn ``repeats`` times after one warm-up each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def default_unet(seed: int = 0):
    import torch

    from lymph.model.unet import UNet, UNetConfig

    net = UNet(UNetConfig(base_width=32, depth=4, norm="batch"),
               generator=torch.Generator().manual_seed(seed))
    return net.to(memory_format=torch.channels_last)


def forward_part(args: argparse.Namespace) -> None:
    import torch

    from lymph.model.infer import predict_probs

    net = default_unet().eval()
    print("\n1. forward, default UNet (BatchNorm, channels_last), eval")
    print("| tile | threads | fp32 s | bf16 s | bf16 speed-up | max / mean abs prob diff |")
    print("|---|---|---|---|---|---|")
    before = torch.get_num_threads()
    for size in args.tiles:
        tile = he_tile(args, size)[None]
        probs = {p: predict_probs(net, tile, device="cpu", channels_last=True, precision=p)
                 for p in ("fp32", "bf16")}
        diff = np.abs(probs["fp32"] - probs["bf16"])
        for threads in args.thread_counts:
            torch.set_num_threads(threads)
            fns = {p: (lambda p=p, tile=tile: predict_probs(
                net, tile, device="cpu", channels_last=True, precision=p)) for p in PAIR}
            t = interleaved(fns, args.repeats)
            print(f"| {size} | {threads} | {t['fp32']:.3f} | {t['bf16']:.3f} | "
                  f"{t['fp32'] / t['bf16']:.2f}x | {diff.max():.4f} / {diff.mean():.4f} |",
                  flush=True)
    torch.set_num_threads(before)


def step_part(args: argparse.Namespace) -> None:
    import torch

    from lymph.model.losses import reconstruction_loss
    from lymph.model.precision import autocast

    net = default_unet().train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    tile = he_tile(args, args.crop * 2)
    crops = []
    for _ in range(args.batch):
        y, x = rng.integers(0, args.crop, size=2)
        crops.append(tile[y : y + args.crop, x : x + args.crop])
    images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255)
    images = images.contiguous(memory_format=torch.channels_last)
    masks = torch.from_numpy(rng.random((args.batch, 1, args.crop, args.crop)) > 0.7).float()

    def step(precision: str) -> None:
        with autocast("cpu", precision):
            out = net(images)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            out.mask_logits.float(), masks) + reconstruction_loss(out.reconstruction, images)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    print(f"\n2. fine-tune step, default UNet, batch {args.batch} x {args.crop} px, AdamW")
    print("| threads | fp32 s/step | bf16 s/step | bf16 speed-up |")
    print("|---|---|---|---|")
    before = torch.get_num_threads()
    for threads in args.thread_counts:
        torch.set_num_threads(threads)
        t = interleaved({p: (lambda p=p: step(p)) for p in ("fp32", "bf16")}, args.repeats)
        print(f"| {threads} | {t['fp32']:.3f} | {t['bf16']:.3f} | "
              f"{t['fp32'] / t['bf16']:.2f}x |", flush=True)
    torch.set_num_threads(before)


def pixel_f1(world: Path, out: Path, names: list[str]) -> float:
    """Pooled pixel F1 of the maps (>= 0.5) against the tumor masks, at the map's grid."""
    import tifffile

    from lymph.data.slides import open_slide

    tp = fp = fn = 0
    for name in names:
        pred = tifffile.imread(out / f"{name}_tumor_map.tif") >= 128
        mask_path = world / f"{name}_mask.tif"
        truth = np.zeros_like(pred)
        if mask_path.is_file():
            with open_slide(mask_path) as m:
                full = m.read_region((0, 0), 0, m.dimensions)[..., 0] > 127
            h, w = pred.shape
            d = int(np.ceil(full.shape[0] / h))
            pad = np.zeros((h * d, w * d), bool)
            pad[: full.shape[0], : full.shape[1]] = full[: h * d, : w * d]
            truth = pad.reshape(h, d, w, d).mean(axis=(1, 3)) > 0.5
        tp += int((pred & truth).sum())
        fp += int((pred & ~truth).sum())
        fn += int((~pred & truth).sum())
    return 2 * tp / max(2 * tp + fp + fn, 1)


def quality_part(args: argparse.Namespace) -> None:
    from bench_predict import make_world, map_diff, predict_world, train_tiny

    size, (n_tumor, n_normal) = args.world_size, args.test_world
    train = make_world(args.cache, "train", n_tumor=4, n_normal=0, seed=0, size=size)
    test = make_world(args.cache, "test", n_tumor=n_tumor, n_normal=n_normal, seed=1, size=size)
    import torch

    torch.set_num_threads(args.threads)  # training too: oversubscribed OpenMP threads on a
    # shared machine ran the tiny model's steps 4-8x slower than one thread
    ns = argparse.Namespace(device="cpu", threads=args.threads)
    print(f"\n3. quality: worlds {train.name} / {test.name}, width-8 UNet (BatchNorm), "
          f"{args.train_steps} steps, {args.threads} torch thread(s)")
    trained = {p: train_tiny(args.cache, train, norm="batch", steps=args.train_steps,
                             precision=p) for p in ("fp32", "bf16")}
    runs = {
        "fp32 train, fp32 predict": predict_world(test, trained["fp32"], args.cache / "p_ff",
                                                  ns, precision="fp32"),
        "fp32 train, bf16 predict": predict_world(test, trained["fp32"], args.cache / "p_fb",
                                                  ns, precision="bf16"),
        "bf16 train, fp32 predict": predict_world(test, trained["bf16"], args.cache / "p_bf",
                                                  ns, precision="fp32"),
        # the run-to-run noise of training: the same fp32 fine-tune from another seed
        "fp32 train seed 1, fp32 predict": predict_world(
            test, train_tiny(args.cache, train, norm="batch", steps=args.train_steps, seed=1),
            args.cache / "p_ff1", ns, precision="fp32"),
        "bf16 train seed 1, fp32 predict": predict_world(
            test, train_tiny(args.cache, train, norm="batch", steps=args.train_steps, seed=1,
                             precision="bf16"),
            args.cache / "p_bf1", ns, precision="fp32"),
    }
    base = runs["fp32 train, fp32 predict"]
    print("| run | infer s | speed-up | map mean abs diff (all / tissue) | pixel F1 | "
          "detections | FROC lymph / official (lesions) | AUC |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in runs.items():
        diff = map_diff(base["out"], r["out"], base["names"])
        f1 = pixel_f1(test, r["out"], r["names"])
        print(f"| {name} | {r['seconds']:.2f} | {base['seconds'] / r['seconds']:.2f}x | "
              f"{diff[0]:.4f} / {diff[1]:.4f} | {f1:.3f} | {r['detections']} | "
              f"{r['froc']:.3f} / {r['froc_official']:.3f} ({r['n_lesions']}) | "
              f"{r['auc']:.3f} |", flush=True)


def main() -> None:
    from bench_predict import pair

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiles", default="256,512", help="forward tile sizes, px")
    p.add_argument("--thread-counts", default="1,2", help="torch threads to measure")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=4, help="fine-tune batch")
    p.add_argument("--crop", type=int, default=256, help="fine-tune crop, px")
    p.add_argument("--threads", type=int, default=1, help="torch threads of part 3")
    p.add_argument("--world-size", type=pair, default="6144x4608")
    p.add_argument("--test-world", type=pair, default="4x2")
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--cache", type=Path, default=Path("/tmp/lymph-bench"))
    args = p.parse_args()
    args.tiles = [int(v) for v in args.tiles.split(",") if v]
    args.thread_counts = [int(v) for v in args.thread_counts.split(",") if v]
    args.cache.mkdir(parents=True, exist_ok=True)
    header()
    if not args.skip_speed:
        forward_part(args)
        step_part(args)
    if not args.skip_quality:
        quality_part(args)


if __name__ == "__main__":
    main()
