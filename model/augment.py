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



# ----------------------------------------------------------------------------- pretext corruptions
# Restoration pretexts corrupt the (already augmented) float batch (B, C, H, W) in [0, 1] on its
# device; the target stays the original. Pure functions of the batch and an explicit
# torch.Generator on the batch's device: a run resumed at step S draws what an unbroken run did.

PRETEXTS = ("identity", "genesis", "inpaint")


def _uniform(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=device)


def _numpy_rng(gen: torch.Generator, device: torch.device) -> np.random.Generator:
    """A numpy Generator seeded from ``gen`` (one draw, one device sync): the per-box geometry
    is drawn on the host and applied to the batch in one indexing op."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=device).item())
    return np.random.default_rng(seed)


def bezier_intensity(x: torch.Tensor, *, gen: torch.Generator) -> torch.Tensor:
    """Models Genesis' non-linear intensity transform: each image's values pass through a random
    monotonic cubic Bezier curve from (0, 0) to (1, 1) (reversed with probability 1/2)."""
    b, device = len(x), x.device
    t = torch.linspace(0, 1, 256, device=device)
    ctrl = _uniform((b, 2, 2), gen, device)  # the two inner control points (x, y)
    basis = torch.stack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3])  # (4,T)
    px = basis[1] * ctrl[:, 0, :1] + basis[2] * ctrl[:, 1, :1] + basis[3]  # (B, T)
    py = basis[1] * ctrl[:, 0, 1:] + basis[2] * ctrl[:, 1, 1:] + basis[3]
    px, order = torch.sort(px, dim=1)
    py = torch.gather(py, 1, order)
    flip = _uniform((b,), gen, device) < 0.5
    py = torch.where(flip[:, None], 1 - py, py)
    flat = x.reshape(b, -1).contiguous()
    idx = torch.searchsorted(px.contiguous(), flat).clamp(1, px.shape[1] - 1)
    x0, x1 = torch.gather(px, 1, idx - 1), torch.gather(px, 1, idx)
    y0, y1 = torch.gather(py, 1, idx - 1), torch.gather(py, 1, idx)
    w = ((flat - x0) / (x1 - x0).clamp_min(1e-6)).clamp(0, 1)
    return (y0 + w * (y1 - y0)).reshape(x.shape)


def local_pixel_shuffle(
    x: torch.Tensor, *, gen: torch.Generator, blocks: int = 100, max_frac: float = 0.1
) -> torch.Tensor:
    """Models Genesis' local pixel shuffling: in ``blocks`` random windows per image (sides up to
    ``max_frac`` of the image), the pixels are permuted (all channels together)."""
    b, c, h, w = x.shape
    rng = _numpy_rng(gen, x.device)
    top = max(1, int(max_frac * min(h, w)))
    index = np.tile(np.arange(h * w).reshape(h, w), (b, 1, 1))
    for i in range(b):
        sizes = rng.integers(1, top + 1, size=(blocks, 2))
        for bh, bw in sizes:
            y0, x0 = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
            win = index[i, y0 : y0 + bh, x0 : x0 + bw]
            index[i, y0 : y0 + bh, x0 : x0 + bw] = rng.permutation(win.ravel()).reshape(bh, bw)
    idx = torch.from_numpy(index.reshape(b, 1, -1)).to(x.device).expand(b, c, h * w)
    return torch.gather(x.reshape(b, c, -1), 2, idx).reshape(x.shape)


def random_boxes(
    shape: tuple[int, ...], *, gen: torch.Generator, device: torch.device,
    count: int, low: float, high: float,
) -> torch.Tensor:  # fmt: skip
    """(B, 1, H, W) float 0/1 masks: the union of ``count`` boxes per image, each side drawn in
    [low, high] x the image side."""
    b, _, h, w = shape
    rng = _numpy_rng(gen, device)
    mask = np.zeros((b, 1, h, w), np.float32)
    for i in range(b):
        for _ in range(count):
            bh = rng.integers(max(1, int(low * h)), max(1, int(high * h)) + 1)
            bw = rng.integers(max(1, int(low * w)), max(1, int(high * w)) + 1)
            y0, x0 = rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1)
            mask[i, :, y0 : y0 + bh, x0 : x0 + bw] = 1
    return torch.from_numpy(mask).to(device)


def paint(x: torch.Tensor, *, gen: torch.Generator, outpaint: float = 0.8) -> torch.Tensor:
    """Models Genesis' in-/out-painting: per image, with probability ``outpaint`` everything
    outside one central-ish box (sides 3/7 to 4/7) becomes uniform noise; otherwise up to 5
    boxes (sides 1/6 to 1/3) do."""
    inner = random_boxes(x.shape, gen=gen, device=x.device, count=1, low=3 / 7, high=4 / 7)
    holes = random_boxes(x.shape, gen=gen, device=x.device, count=5, low=1 / 6, high=1 / 3)
    out_p = (_uniform((len(x), 1, 1, 1), gen, x.device) < outpaint).float()
    region = out_p * (1 - inner) + (1 - out_p) * holes
    noise = _uniform(tuple(x.shape), gen, x.device)
    return x * (1 - region) + noise * region


def genesis_corrupt(
    x: torch.Tensor, *, gen: torch.Generator, p_shuffle: float = 0.5, p_intensity: float = 0.9,
    p_paint: float = 0.9,
) -> torch.Tensor:  # fmt: skip
    """Models Genesis (Zhou et al., MedIA 2021) corruption of a batch in [0, 1]: local pixel
    shuffling, then the non-linear intensity transform, then in-/out-painting, each applied per
    image with its probability (the paper's defaults). Returns a new tensor."""
    b = len(x)

    def pick(p: float) -> torch.Tensor:
        return (_uniform((b, 1, 1, 1), gen, x.device) < p).to(x.dtype)

    m = pick(p_shuffle)
    x = m * local_pixel_shuffle(x, gen=gen) + (1 - m) * x
    m = pick(p_intensity)
    x = m * bezier_intensity(x, gen=gen) + (1 - m) * x
    m = pick(p_paint)
    return m * paint(x, gen=gen) + (1 - m) * x


def inpaint_corrupt(
    x: torch.Tensor, *, gen: torch.Generator, count: int = 3, low: float = 0.1, high: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked-region inpainting: ``count`` random boxes per image are replaced by mid grey;
    returns (corrupted batch, (B, 1, H, W) mask of the hidden pixels) so the loss can be taken
    on the hidden area only."""
    mask = random_boxes(x.shape, gen=gen, device=x.device, count=count, low=low, high=high)
    return x * (1 - mask) + 0.5 * mask, mask


def corrupt(
    pretext: str, x: torch.Tensor, *, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(model input, loss mask or None = every pixel) of a batch for ``pretext``."""
    if pretext == "identity":
        return x, None
    if pretext == "genesis":
        return genesis_corrupt(x, gen=gen), None
    if pretext == "inpaint":
        return inpaint_corrupt(x, gen=gen)
    raise ConfigError(f"pretext must be one of {PRETEXTS}, got {pretext!r}")
