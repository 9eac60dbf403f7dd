"""On-the-fly augmentation of uint8 patch batches (numpy, vectorised over the batch).

- The 8 dihedral transforms (4 rotations x optional flip), the same on image and mask (applied
  with the random crop, ``lymph.model.stream.random_crops``).
- Brightness, contrast, saturation and hue jitter on the image only. All four are linear in RGB,
  so they compose into one 3x3 matrix plus an offset per image and cost one batched matmul:
  brightness scales by ``b``; contrast blends with the image's mean grey; saturation blends with
  the pixel's grey (ITU-R 601 luma); hue rotates the chroma plane of YIQ (grey is kept), the
  usual linear approximation of an HSV hue shift.
The reconstruction target is the augmented image (the trainer reconstructs what it is given).
Default strengths follow Liu et al. 2017 (brightness 0.25, saturation 0.25, hue 0.04), with a
milder contrast (0.5 instead of 0.75). Settings are recorded in the checkpoint via ``to_dict``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from lymph.data.errors import ConfigError

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)
_RGB2YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float64
)
_YIQ2RGB = np.linalg.inv(_RGB2YIQ)

A = TypeVar("A", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths; each jitter factor is drawn uniformly in [1 - s, 1 + s]
    (hue: a shift in [-hue, +hue] of a full turn). 0 disables one; ``dihedral=False`` keeps the
    orientation."""

    dihedral: bool = True
    brightness: float = 0.25
    contrast: float = 0.5
    saturation: float = 0.25
    hue: float = 0.04

    def __post_init__(self) -> None:
        if not isinstance(self.dihedral, bool):
            raise ConfigError(f"AugmentConfig.dihedral must be a bool, got {self.dihedral!r}")
        for name in ("brightness", "contrast", "saturation"):
            v = getattr(self, name)
            if not 0.0 <= float(v) < 1.0:
                raise ConfigError(f"AugmentConfig.{name} must be in [0, 1), got {v!r}")
        if not 0.0 <= float(self.hue) <= 0.5:
            raise ConfigError(f"AugmentConfig.hue must be in [0, 0.5], got {self.hue!r}")

    @property
    def jitter(self) -> bool:
        return any(v > 0 for v in (self.brightness, self.contrast, self.saturation, self.hue))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def none(cls) -> AugmentConfig:
        return cls(dihedral=False, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)


def dihedral(x: A, k: int, *, axes: tuple[int, int]) -> A:
    """Dihedral transform k (0..7) over the two spatial ``axes``: rotate by k % 4 quarter turns,
    then flip the second axis when k >= 4. Works on numpy arrays and torch tensors."""
    if not 0 <= k < 8:
        raise ValueError(f"dihedral transform index must be in 0..7, got {k}")
    if isinstance(x, torch.Tensor):
        y = torch.rot90(x, k % 4, dims=axes)
        return torch.flip(y, dims=(axes[1],)) if k >= 4 else y
    y = np.rot90(x, k % 4, axes=axes)
    return np.flip(y, axis=axes[1]) if k >= 4 else y


def dihedral_inverse(x: A, k: int, *, axes: tuple[int, int]) -> A:
    """Undo ``dihedral(., k, axes=axes)``."""
    if not 0 <= k < 8:
        raise ValueError(f"dihedral transform index must be in 0..7, got {k}")
    if isinstance(x, torch.Tensor):
        y = torch.flip(x, dims=(axes[1],)) if k >= 4 else x
        return torch.rot90(y, -(k % 4), dims=axes)
    y = np.flip(x, axis=axes[1]) if k >= 4 else x
    return np.rot90(y, -(k % 4), axes=axes)


def jitter_matrices(
    n: int, *, config: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image (n,3,3) colour matrices and the (n,) brightness and contrast factors, drawn in
    a fixed order (brightness, contrast, saturation, hue)."""

    def factor(s: float) -> np.ndarray:
        return rng.uniform(1.0 - s, 1.0 + s, size=n) if s > 0 else np.ones(n)

    b = factor(config.brightness)
    c = factor(config.contrast)
    s = factor(config.saturation)
    theta = (
        rng.uniform(-config.hue, config.hue, size=n) * 2 * np.pi if config.hue > 0 else np.zeros(n)
    )
    eye = np.eye(3)
    sat = s[:, None, None] * eye + (1 - s)[:, None, None] * np.outer(np.ones(3), LUMA)
    cos, sin = np.cos(theta), np.sin(theta)
    rot = np.zeros((n, 3, 3))
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    hue = _YIQ2RGB @ rot @ _RGB2YIQ
    mats = (b * c)[:, None, None] * (hue @ sat)
    return mats, b, c


def color_jitter(
    images: np.ndarray, *, config: AugmentConfig, rng: np.random.Generator
) -> np.ndarray:
    """Brightness, contrast, saturation and hue jitter of uint8 (B,H,W,3) images -> uint8.

    One float32 conversion, one batched (HW x 3) @ (3 x 3) matmul per image, and a rounding
    cast; the contrast reference (each image's mean grey) is estimated on every 4th pixel in
    each direction, which is 16x cheaper and indistinguishable at these jitter strengths.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"color_jitter needs uint8 (B,H,W,3) RGB images, got {images.shape}")
    n = len(images)
    mats, b, c = jitter_matrices(n, config=config, rng=rng)
    # Contrast blends with the mean grey of the brightness-scaled image; the saturation and hue
    # matrices map grey to itself, so the offset is the same on all three channels.
    sample = images[:, ::4, ::4].reshape(n, -1, 3).astype(np.float32)
    mean_grey = (sample @ LUMA.astype(np.float32)).mean(axis=1)
    offset = ((1 - c) * b * mean_grey + 0.5).astype(np.float32)  # + 0.5: round on the cast
    flat = images.reshape(n, -1, 3).astype(np.float32)
    out = np.matmul(flat, np.ascontiguousarray(mats.transpose(0, 2, 1), dtype=np.float32))
    out += offset[:, None, None]
    np.clip(out, 0, 255.999, out=out)
    return out.astype(np.uint8).reshape(images.shape)

