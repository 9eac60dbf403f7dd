"""Inference on uint8 patches of any size: reflect-pad to the model's multiple, run, crop back.

Never resizes. The model runs under the autocast of ``precision`` (``lymph.model.precision``:
"auto" is bf16 on CUDA and on AMX CPUs, fp32 elsewhere); on CUDA in channels_last memory format;
``channels_last=True`` asks for that memory format on the CPU too (measured by
bench/bench_predict.py: faster with oneDNN convolutions; whole-slide predict uses it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np
import torch

from lymph.data.errors import ConfigError
from lymph.model.augment import dihedral, dihedral_inverse
from lymph.model.precision import autocast, resolve_precision
from lymph.model.unet import UNet, unwrap

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device) -> torch.device:
    """ "auto" -> cuda, then mps, then cpu; a named device must be available (ConfigError)."""
    if isinstance(device, torch.device):
        return device
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ConfigError(f"device {name!r} is not one of {DEVICES}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for but CUDA is not available: use --device auto")
    if kind == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ConfigError("device 'mps' asked for but MPS is not available: use --device auto")
    return torch.device(name)


def pad_to_multiple(images: np.ndarray, multiple: int) -> tuple[np.ndarray, int, int]:
    """Reflect-pad (B,H,W,C) at the bottom/right to multiples of ``multiple``; returns the padded
    batch and the original H, W. numpy's reflect also handles pads larger than the image."""
    h, w = images.shape[1:3]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        pad = ((0, 0), (0, ph), (0, pw), (0, 0))
        images = (np.pad(images, pad, mode="reflect") if min(h, w) > 1
                  else np.pad(images, pad, mode="edge"))
    return images, h, w


def _check_images(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise ValueError(
            f"images must be a uint8 numpy array (N,H,W,3), got "
            f"{getattr(images, 'dtype', type(images).__name__)}"
        )
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N,H,W,3) RGB, got shape {images.shape}")


def _run(
    model: UNet,
    images: np.ndarray,
    *,
    device: str | torch.device,
    batch_size: int,
    head: Callable[[UNet, torch.Tensor], torch.Tensor],
    out_channels: int,
    channels_last: bool | None = None,
    precision: str = "auto",
) -> np.ndarray:
    _check_images(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    # a UNet, or a module with its interface (multiple, heads): scale.Rescaled wraps one
    net = cast(UNet, unwrap(model))
    dev = resolve_device(device)
    used = resolve_precision(precision, dev)
    net.to(dev)
    was_training = net.training
    net.eval()
    n, h, w = images.shape[:3]
    out = np.empty((n, out_channels, h, w), dtype=np.float32)
    cuda = dev.type == "cuda"
    last = cuda if channels_last is None else channels_last
    fmt = torch.channels_last if last else torch.contiguous_format
    if last:
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch stubs
    try:
        with torch.inference_mode(), autocast(dev, used):
            for start in range(0, n, batch_size):
                padded, _, _ = pad_to_multiple(images[start : start + batch_size], net.multiple)
                x = torch.from_numpy(np.ascontiguousarray(padded))
                # pinned host memory: the copy to the GPU overlaps (non_blocking)
                x = x.pin_memory().to(dev, non_blocking=True) if cuda else x.to(dev)
                x = x.permute(0, 3, 1, 2).float().div_(255).contiguous(memory_format=fmt)
                y = head(net, x)[:, :, :h, :w].float()
                out[start : start + len(padded)] = y.cpu().numpy()
    finally:
        net.train(was_training)
    return out


def predict_probs(
    model: UNet,
    images: np.ndarray,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    tta: bool = False,
    channels_last: bool | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """Tumor probabilities float32 (N,H,W) for uint8 (N,H,W,3) images of any H, W.

    ``tta``: the mean probability over the 8 dihedral transforms (8x the compute). The model is
    moved to ``device`` and left there (in channels_last format when ``channels_last``; None:
    on CUDA only).
    """

    def head(net: UNet, x: torch.Tensor) -> torch.Tensor:
        if not tta:
            return torch.sigmoid(net(x).mask_logits.float())
        acc = torch.zeros((x.shape[0], 1, *x.shape[2:]), device=x.device)
        for k in range(8):
            y = torch.sigmoid(net(dihedral(x, k, axes=(2, 3))).mask_logits.float())
            acc += dihedral_inverse(y, k, axes=(2, 3))
        return acc / 8

    return _run(model, images, device=device, batch_size=batch_size, head=head, out_channels=1,
                channels_last=channels_last, precision=precision)[:, 0]


def reconstruct(
    model: UNet,
    images: np.ndarray,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    precision: str = "auto",
) -> np.ndarray:
    """The model's reconstruction of uint8 (N,H,W,3) images of any size, as uint8 (N,H,W,3)."""

    def head(net: UNet, x: torch.Tensor) -> torch.Tensor:
        return net(x).reconstruction

    rec = _run(model, images, device=device, batch_size=batch_size, head=head, out_channels=3,
               precision=precision)
    return np.rint(np.clip(rec, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)
