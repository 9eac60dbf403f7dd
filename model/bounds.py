"""Memory bounds checked before any work: a UNet whose weights alone would not fit, and predict
settings (window, batch size, model width) whose batch would not fit in the memory there is.

The estimates are deliberately simple upper-bound-ish sums (float32 everywhere):

- weights: two 3x3 convolutions per level, ``w_i = base_width * 2**i``, encoder and decoder:
  about ``4 * 9 * 2 * sum(w_i**2 + w_i * w_{i-1})`` bytes (the exact count is within 2x);
- one predict batch: the float input (12 bytes per px), plus the feature maps a forward pass
  keeps (skip connections and the widest pair of maps at each level: ``3 * w_i`` floats per
  px at ``1 / 4**i`` of the pixels), plus the output; an underestimate of the transient peak,
  so a refusal is never a false alarm.
"""

from __future__ import annotations

from pathlib import Path

from lymph.data.errors import ConfigError

GIB = 1 << 30
MAX_WEIGHT_BYTES = 4 * GIB
"""Weights above this are refused: the widest tested model (base width 64, depth 5) has
about 0.5 GiB; a --base-width 100000 asks for terabytes."""
MAX_WINDOW = 16384
MAX_BATCH = 65536


def unet_weight_bytes(base_width: int, depth: int, in_channels: int = 3) -> int:
    """Approximate float32 bytes of a UNet's weights (see the module docstring)."""
    widths = [base_width * 2**i for i in range(depth + 1)]
    total, prev = 0, in_channels
    for w in widths:
        total += 9 * (prev * w + w * w)  # encoder (and bottleneck) block
        prev = w
    for i in range(depth - 1, -1, -1):
        w = widths[i]
        total += 9 * (2 * w * w + w * w) + widths[i + 1] * w  # decoder block + upsampling
    return 4 * total


def check_unet_size(base_width: int, depth: int, in_channels: int = 3) -> None:
    size = unet_weight_bytes(base_width, depth, in_channels)
    if size > MAX_WEIGHT_BYTES:
        raise ConfigError(
            f"base_width {base_width} with depth {depth}: the model's weights alone would take "
            f"about {size / GIB:,.0f} GiB (at most {MAX_WEIGHT_BYTES // GIB} GiB); use e.g. "
            "--base-width 32"
        )


def predict_batch_bytes(window: int, batch_size: int, base_width: int, depth: int) -> int:
    """Approximate bytes one predict batch needs (see the module docstring)."""
    px = window * window
    kept = sum(3 * base_width * 2**i * 4 * px / 4**i for i in range(depth + 1))
    return int(batch_size * (12 * px + kept + 8 * px))


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (None where unreadable)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_predict_options(window: int | None, batch_size: int) -> None:
    """Static caps (no model needed): ConfigError naming the option and a fix."""
    if window is not None and window > MAX_WINDOW:
        raise ConfigError(f"window {window} px is above {MAX_WINDOW} px (one window of it is "
                          f"{3 * window * window / GIB:,.1f} GiB of pixels); use e.g. "
                          "--window 1024")
    if batch_size > MAX_BATCH:
        raise ConfigError(f"batch_size {batch_size} is above {MAX_BATCH}; use e.g. "
                          "--batch-size 8")


def check_predict_memory(*, window: int, batch_size: int, base_width: int, depth: int,
                         device: str, available: int | None = None) -> None:
    """ConfigError when one batch of `window` px windows would not fit in the memory there is
    (host memory on CPU; the GPU's free memory on CUDA)."""
    need = predict_batch_bytes(window, batch_size, base_width, depth)
    where = "available memory"
    if available is None and (device.startswith("cuda") or device == "auto"):
        import torch

        if torch.cuda.is_available():
            available, where = torch.cuda.mem_get_info()[0], "free GPU memory"
    if available is None:
        available = available_memory()
    if available is not None and need > available:
        raise ConfigError(
            f"--window {window} with --batch-size {batch_size} and a model of base width "
            f"{base_width}: one batch needs about {need / GIB:,.1f} GiB, the {where} is "
            f"{available / GIB:,.1f} GiB; lower --batch-size or --window"
        )
