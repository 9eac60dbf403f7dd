"""Benchmark of the streaming trainer: memory against store size, loader and model throughput.

    .venv/bin/python bench/bench_train.py            # CPU: (a) memory, (b) loader vs model
    .venv/bin/python bench/bench_train.py --short    # smaller stores and fewer steps
    .venv/bin/python bench/bench_train.py --arch     # (c) only: decoder variants, pretext cost
    .venv/bin/python bench/bench_train.py --gpu      # on a CUDA machine: steps/s, data wait,
                                                     # achieved TFLOP/s vs the card's bf16 peak

(a) Peak RSS (VmHWM) of a 200-step pretrain run (UNet base width 8, depth 4, crop 128, batch 8, one
    loader worker) on a 2,000-patch and a 20,000-patch store, each run in a fresh process; the
    main process's and the loader worker's peaks are reported. Goal: growth <= 10%.
(b) The streaming dataset (whole chunks, crop 256, dihedral + colour jitter, batch 16) in one
    process, apart from the model, against the CPU model's training rate at the defaults (base
    width 32, depth 4, crop 256, batch 16, AdamW). Goals: >= 800 patches/s per worker and >= 20x
    the model. Both figures come from the same run, so a loaded machine shifts both.

Stores are 300 px patches cut at random from a real 1000 x 1000 H&E tile (tiatoolbox's
target_image.png from the shared fixtures), randomly rotated/flipped with +-6 levels of noise,
so they compress like tissue (blosc-lz4 ~1.3x) rather than like constant arrays. They are
kept in --out and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TILE = ROOT.parent / "shared" / "fixtures" / "images" / "tiatoolbox" / "target_image.png"
PATCH = 300
PER_SLIDE = 500

# Dense bf16 tensor-core peaks (TFLOP/s, without sparsity) from the vendors' data sheets.
BF16_PEAK = {
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10": 125.0,
}


def _tile() -> np.ndarray:
    from PIL import Image

    if TILE.exists():
        return np.asarray(Image.open(TILE).convert("RGB"))
    rng = np.random.default_rng(0)  # no fixtures: smooth pink noise
    base = rng.integers(140, 230, (125, 125, 3), dtype=np.uint8)
    return np.kron(base, np.ones((8, 8, 1), np.uint8))


def build_store(path: Path, n_patches: int, *, seed: int = 0) -> Path:
    """A store of ``n_patches`` H&E-like 300 px patches (PER_SLIDE per slide, unlabeled)."""
    from lymph.data.store import PatchStore, create_store, write_slide

    if (path / "zarr.json").exists():
        try:
            if sum(s.n_patches for s in PatchStore.open(path).slides) == n_patches:
                return path
        except Exception:
            pass
        import shutil

        shutil.rmtree(path)
    tile = _tile()
    rng = np.random.default_rng(seed)
    create_store(path, {"patch_size": PATCH, "level": 0, "seed": seed, "bench": True})
    h, w = tile.shape[:2]
    for s in range(0, n_patches, PER_SLIDE):
        n = min(PER_SLIDE, n_patches - s)
        ys = rng.integers(0, h - PATCH, n)
        xs = rng.integers(0, w - PATCH, n)
        imgs = np.stack([tile[y : y + PATCH, x : x + PATCH] for y, x in zip(ys, xs, strict=True)])
        for k in range(4):
            sel = slice(k, None, 4)
            imgs[sel] = np.rot90(imgs[sel], k, axes=(1, 2))
        noise = rng.integers(-6, 7, imgs.shape, dtype=np.int16)
        imgs = np.clip(imgs.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        coords = np.stack([xs, ys], axis=1).astype(np.int64)
        write_slide(
            path,
            f"slide_{s // PER_SLIDE:04d}",
            images=imgs,
            coords=coords,
            attrs={"status": "unlabeled"},
        )
    return path


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ---------------------------------------------------------------- (a) memory: one child per run


def _status_kb(pid: int | str, key: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _child_pids() -> list[int]:
    pids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        try:
            pids += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def memory_child(store: str, out: str, steps: int) -> None:
    import torch

    torch.set_num_threads(2)
    from lymph.model.train import TrainConfig, run

    cfg = TrainConfig(
        store=Path(store),
        out=Path(out),
        stage="pretrain",
        steps=steps,
        batch_size=8,
        crop=128,
        base_width=8,
        depth=4,
        workers=1,
        device="cpu",
        val_slides=0,
        checkpoint_every=steps,
        log_every=50,
    )
    worker_peak = [0]
    stop = threading.Event()

    def sample_workers() -> None:  # the loader workers' own high-water marks, twice a second
        while not stop.wait(0.5):
            for pid in _child_pids():
                worker_peak[0] = max(worker_peak[0], _status_kb(pid, "VmHWM"))

    sampler = threading.Thread(target=sample_workers, daemon=True)
    sampler.start()
    res = run(cfg, progress=False)
    stop.set()
    sampler.join()
    # VmHWM, not ru_maxrss: Linux carries the pre-exec high-water mark of the forked parent
    # (the bench process, which built the stores) into ru_maxrss.
    me = _status_kb("self", "VmHWM")
    kids = worker_peak[0]
    print(
        json.dumps(
            {
                "main_kb": me,
                "worker_kb": kids,
                "seconds": res.seconds,
                "patches_per_s": res.patches_per_s,
            }
        )
    )


def run_memory(out: Path, sizes: tuple[int, int], steps: int) -> list[dict]:
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        store = build_store(out / f"store_{n}.zarr", n)
        built = time.perf_counter() - t0
        run = out / f"run_mem_{n}"
        if run.exists():
            import shutil

            shutil.rmtree(run)
        res = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(store), str(run), str(steps)],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode:
            raise SystemExit(f"memory child failed:\n{res.stdout}\n{res.stderr}")
        rec = json.loads(res.stdout.strip().splitlines()[-1])
        rec.update(n=n, store_mb=_du(store) / 1e6, build_s=built)
        rows.append(rec)
    return rows


# ---------------------------------------------------------------- (b) loader vs model


def loader_rate(
    store: Path, *, batches: int, augment: bool, crop: int = 256, batch_size: int = 16
) -> float:
    from lymph.data.store import PatchStore
    from lymph.model.augment import AugmentConfig
    from lymph.model.stream import StoreStream, StreamConfig

    cfg = StreamConfig(
        batch_size=batch_size,
        crop=crop,
        seed=0,
        augment=AugmentConfig() if augment else AugmentConfig.none(),
    )
    it = iter(StoreStream(store, PatchStore.open(store).chunks(), cfg))
    next(it)  # the first window
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - t0)


def dataloader_rate(store: Path, *, workers: int, batches: int) -> float:
    from torch.utils.data import DataLoader

    from lymph.data.store import PatchStore
    from lymph.model.layout import Layout
    from lymph.model.stream import StoreStream, StreamConfig

    cfg = StreamConfig(batch_size=16, crop=256, seed=0)
    ds = StoreStream(store, PatchStore.open(store).chunks(), cfg, layout=Layout(workers=workers))
    it = iter(DataLoader(ds, batch_size=None, num_workers=workers, prefetch_factor=4))
    for _ in range(workers * 2):
        next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * 16 / (time.perf_counter() - t0)
    del it
    return rate


def model_rate(
    *,
    base_width: int = 32,
    crop: int = 256,
    batch_size: int = 16,
    steps: int = 2,
    channels_last: bool = False,
) -> float:
    import torch

    from lymph.model.losses import reconstruction_loss
    from lymph.model.unet import UNet, UNetConfig

    model = UNet(UNetConfig(base_width=base_width), generator=torch.Generator().manual_seed(0))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch_size, 3, crop, crop)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        loss = reconstruction_loss(model(x).reconstruction, x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - t0)


# ---------------------------------------------------------------- GPU


def _gpu_device(dry_run_on_cpu: bool) -> tuple[Any, str]:
    import torch

    if dry_run_on_cpu:
        return torch.device("cpu"), "cpu (dry run)"
    if not torch.cuda.is_available():
        raise SystemExit("--gpu needs CUDA")
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    return dev, torch.cuda.get_device_name(dev)


def _loader_steps(
    store: Path, train_step: Any, sync: Any, *, dev: Any, steps: int, batch_size: int,
    crop: int, workers: int,
) -> tuple[float, float]:  # fmt: skip
    """(seconds, seconds blocked on data) of ``steps`` training steps fed by the streaming
    loader, after a warm-up of two batches per worker."""
    from torch.utils.data import DataLoader

    from lymph.data.store import PatchStore
    from lymph.model.layout import Layout
    from lymph.model.stream import StoreStream, StreamConfig, to_tensors

    cfg = StreamConfig(batch_size=batch_size, crop=crop, seed=0)
    ds = StoreStream(store, PatchStore.open(store).chunks(), cfg, layout=Layout(workers=workers))
    it = iter(DataLoader(ds, batch_size=None, num_workers=workers, pin_memory=dev.type == "cuda",
                         prefetch_factor=4, persistent_workers=False))  # fmt: skip
    for _ in range(workers * 2):
        x, _ = to_tensors(next(it), dev, channels_last=True)
        train_step(x)
    sync()
    wait = 0.0
    t0 = time.perf_counter()
    for _ in range(steps):
        sync()
        tw = time.perf_counter()
        batch = next(it)
        wait += time.perf_counter() - tw
        x, _ = to_tensors(batch, dev, channels_last=True)
        train_step(x)
    sync()
    return time.perf_counter() - t0, wait


def gpu_bench(
    out: Path,
    *,
    steps: int,
    batch_size: int,
    workers: int,
    base_width: int,
    n_patches: int,
    crop: int = 256,
    dry_run_on_cpu: bool = False,
) -> None:
    """``dry_run_on_cpu``: exercise this code path on a CPU with tiny settings (no figures)."""
    import torch

    from lymph.model.losses import reconstruction_loss
    from lymph.model.unet import UNet, UNetConfig

    dev, name = _gpu_device(dry_run_on_cpu)
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    peak = next((v for k, v in BF16_PEAK.items() if k in name), None)
    t0 = time.perf_counter()
    store = build_store(out / f"store_{n_patches}.zarr", n_patches)
    print(f"device: {name}; store of {n_patches} patches ready in {time.perf_counter() - t0:.0f} s")
    model = UNet(UNetConfig(base_width=base_width), generator=torch.Generator().manual_seed(0))
    model = model.to(dev, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=cuda)

    def train_step(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            out = model(x)
        loss = reconstruction_loss(out.reconstruction, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    x0 = torch.rand(batch_size, 3, crop, crop, device=dev).contiguous(
        memory_format=torch.channels_last
    )
    flops, synthetic = _model_rate(train_step, sync, x0, steps=steps)
    # the same with the streaming loader; GPU idle time = time blocked on data after a sync
    real_s, wait = _loader_steps(store, train_step, sync, dev=dev, steps=steps,
                                 batch_size=batch_size, crop=crop, workers=workers)  # fmt: skip
    real = steps / real_s
    _print_gpu(name=name, base_width=base_width, crop=crop, batch_size=batch_size,
               workers=workers, synthetic=synthetic, real=real, wait_frac=wait / real_s,
               flops=flops, peak=peak)  # fmt: skip


def _model_rate(train_step: Callable[[Any], Any], sync: Callable[[], None], x0: Any, *,
                steps: int) -> tuple[float, float]:
    """The model alone, on a batch already on the device: FLOPs of one training step (forward +
    backward, optimizer excluded) and steps per second after 5 warm-up steps."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        train_step(x0)
    flops = fc.get_total_flops()
    for _ in range(5):
        train_step(x0)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(x0)
    sync()
    return float(flops), steps / (time.perf_counter() - t0)


def _print_gpu(
    *, name: str, base_width: int, crop: int, batch_size: int, workers: int, synthetic: float,
    real: float, wait_frac: float, flops: float, peak: float | None,
) -> None:  # fmt: skip
    rows = [
        ("card", name),
        (
            "model",
            f"UNet base {base_width}, depth 4, crop {crop}, batch {batch_size}, bf16, "
            "channels_last, fused AdamW",
        ),
        ("loader workers", workers),
        ("steps/s, model alone (batch on GPU)", f"{synthetic:.2f}"),
        ("steps/s, with the streaming loader", f"{real:.2f}"),
        ("patches/s, with the loader", f"{real * batch_size:.0f}"),
        ("GPU waiting for data (sync'd, per step)", f"{100 * wait_frac:.1f}%"),
        ("slowdown vs model alone", f"{100 * (1 - real / synthetic):.1f}%"),
        ("FLOPs per step (fwd+bwd)", f"{flops / 1e12:.3f} TFLOP"),
        ("achieved TFLOP/s, model alone", f"{flops * synthetic / 1e12:.1f}"),
        ("achieved TFLOP/s, with loader", f"{flops * real / 1e12:.1f}"),
        ("bf16 dense peak", f"{peak:.0f} TFLOP/s" if peak else "unknown card"),
        ("MFU, model alone", f"{100 * flops * synthetic / 1e12 / peak:.1f}%" if peak else "-"),
    ]
    width = max(len(str(k)) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


# ---------------------------------------------------------------- architecture and pretext cost


def arch_bench(*, steps: int, base_width: int = 8, crop: int = 96, batch: int = 16) -> None:
    """(c) Training-step time (forward, backward, AdamW; 1 thread) of the old decoder (2x2
    transposed conv, zero padding, GroupNorm gcd(8, C)) against today's defaults (1x1 conv +
    bilinear, reflect padding, 8 channels per group), and the pretext corruptions' time per
    batch; rounds interleave the variants so a loaded machine slows all of them alike."""
    import torch

    from lymph.model.augment import corrupt
    from lymph.model.unet import UNet, UNetConfig

    torch.set_num_threads(1)
    variants = {
        "transpose/zeros/gcd (old)": dict(upsample="transpose", padding_mode="zeros",
                                          channels_per_group=None),
        "bilinear/zeros/8": dict(padding_mode="zeros"),
        "bilinear/reflect/8 (default)": {},
    }  # fmt: skip
    models = {k: UNet(UNetConfig(base_width=base_width, depth=4, **kw),
                      generator=torch.Generator().manual_seed(0)) for k, kw in variants.items()}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-3) for k, m in models.items()}
    x = torch.rand(batch, 3, crop, crop, generator=torch.Generator().manual_seed(1))
    times: dict[str, list[float]] = {k: [] for k in [*variants, "genesis", "inpaint"]}
    gen = torch.Generator().manual_seed(2)
    for _ in range(steps + 1):  # the first round warms up and is dropped
        for k, m in models.items():
            t0 = time.perf_counter()
            out = m(x)
            loss = (out.reconstruction - x).pow(2).mean() + out.mask_logits.mean()
            opts[k].zero_grad()
            loss.backward()
            opts[k].step()
            times[k].append(time.perf_counter() - t0)
        for name in ("genesis", "inpaint"):
            t0 = time.perf_counter()
            corrupt(name, x, gen=gen)
            times[name].append(time.perf_counter() - t0)
    base = float(np.median(times[next(iter(variants))][1:]))
    print(f"\n(c) step time, width {base_width}, depth 4, crop {crop}, batch {batch}, 1 thread "
          f"(median of {steps})")  # fmt: skip
    for k, t in times.items():
        med = float(np.median(t[1:]))
        print(f"  {k:<30} {1000 * med:8.1f} ms  {med / base:5.2f}x the old step")


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "bench_out" / "train")
    ap.add_argument("--short", action="store_true", help="200 vs 2,000 patches, 50 steps")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--arch", action="store_true", help="only (c): decoder and pretext cost")
    ap.add_argument("--gpu-steps", type=int, default=50)
    ap.add_argument("--gpu-batch", type=int, default=64)
    ap.add_argument("--gpu-workers", type=int, default=min(12, os.cpu_count() or 1))
    ap.add_argument("--gpu-patches", type=int, default=4000)
    ap.add_argument("--gpu-dry-run-on-cpu", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        store, out, steps = args.memory_child
        memory_child(store, out, int(steps))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    if args.gpu_dry_run_on_cpu:
        gpu_bench(
            args.out,
            steps=2,
            batch_size=2,
            workers=1,
            base_width=4,
            n_patches=200,
            crop=64,
            dry_run_on_cpu=True,
        )
        return
    if args.gpu:
        gpu_bench(
            args.out,
            steps=args.gpu_steps,
            batch_size=args.gpu_batch,
            workers=args.gpu_workers,
            base_width=32,
            n_patches=args.gpu_patches,
        )
        return
    if args.arch:
        arch_bench(steps=5 if args.short else 20)
        return
    cpu_bench(args)


def cpu_bench(args: argparse.Namespace) -> None:
    """(a) memory against store size and (b) loader vs model throughput."""
    import torch

    torch.set_num_threads(2)
    sizes = (200, 2000) if args.short else (2000, 20000)
    steps = 50 if args.short else 200
    print(f"lymph bench_train: {os.cpu_count()} CPUs, torch {torch.__version__}")
    if not args.skip_memory:
        rows = run_memory(args.out, sizes, steps)
        print(
            f"\n(a) peak RSS of a {steps}-step pretrain run (base width 8, crop 128, batch 8, "
            "1 loader worker)"
        )
        print(f"{'patches':>8} {'store MB':>9} {'main MB':>8} {'worker MB':>10} {'run s':>7}")
        for r in rows:
            print(
                f"{r['n']:>8} {r['store_mb']:>9.0f} {r['main_kb'] / 1024:>8.0f} "
                f"{r['worker_kb'] / 1024:>10.0f} {r['seconds']:>7.1f}"
            )
        a, b = rows
        g_main = b["main_kb"] / a["main_kb"] - 1
        g_work = b["worker_kb"] / a["worker_kb"] - 1
        g_sum = (b["main_kb"] + b["worker_kb"]) / (a["main_kb"] + a["worker_kb"]) - 1
        print(
            f"growth {sizes[0]} -> {sizes[1]} patches: main {100 * g_main:+.1f}%, worker "
            f"{100 * g_work:+.1f}%, sum {100 * g_sum:+.1f}%  (goal <= +10%)"
        )
    store = build_store(args.out / f"store_{sizes[0]}.zarr", sizes[0])
    nb = 20 if args.short else 60
    raw = loader_rate(store, batches=nb, augment=False)
    aug = loader_rate(store, batches=nb, augment=True)
    dl2 = dataloader_rate(store, workers=2, batches=nb)
    m32 = model_rate(steps=1)
    m32cl = model_rate(steps=1, channels_last=True)
    print("\n(b) throughput, patches/s (crop 256, batch 16)")
    print(f"  loader, 1 process, chunks + crops only        {raw:8.0f}")
    print(f"  loader, 1 process, + dihedral + colour jitter {aug:8.0f}   (goal >= 800)")
    print(f"  DataLoader, 2 worker processes, augmented     {dl2:8.0f}")
    print(f"  CPU model training, base 32 (eager)           {m32:8.2f}")
    print(f"  CPU model training, base 32 (channels_last)   {m32cl:8.2f}")
    print(
        f"  loader (1 worker) / model (best)              {aug / max(m32, m32cl):8.0f}x  "
        "(goal >= 20x)"
    )


if __name__ == "__main__":
    main()
