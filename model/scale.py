"""Physical scale: run a model at the microns per pixel it was trained at.

A model trained on ~1 um/px patches sees a 0.5 um/px slide's nuclei twice as large and calls
stroma tumor (the demo model at level 0 of a 40x slide: p=0.96, 27 detections, no warning).
Scanners differ (20x, 40x, vendors' pyramids differ), so lymph speaks microns here:

- ``training_mpp``: the microns per pixel of a store's patches (slide mpp x the extraction
  level's downsample; the median over the slides that record one), written into checkpoints;
- ``choose_scale``: the pyramid level of a slide whose mpp is within 10% of the training mpp
  (the closest), else a resampled virtual level at exactly the training mpp;
- ``ResampledReader``: a slide reader with that virtual level appended.

A slide without mpp uses the user's ``--mpp`` (microns per level-0 pixel, like ``lymph synth
--mpp``); without either it runs at the checkpoint's level with a warning.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

if TYPE_CHECKING:
    from lymph.data.slides import SlideReader
    from lymph.model.checkpoint import RunRecord

TOLERANCE = 0.10  # a level within 10% of the training mpp is used as it is


def level_mpps(slide_mpp: float, downsamples: Sequence[float]) -> list[float]:
    """Microns per pixel of each pyramid level."""
    return [slide_mpp * float(d) for d in downsamples]


def training_mpp(slides: Iterable[dict[str, Any]], level: int) -> float | None:
    """The microns per pixel of a store's patches: each slide's level-0 mpp (its ``mpp``
    attribute) times its ``level_downsamples[level]``; the median over the slides that record
    one, None when none does."""
    values = []
    for attrs in slides:
        mpp, ds = attrs.get("mpp"), attrs.get("level_downsamples")
        if not isinstance(mpp, int | float) or isinstance(mpp, bool) or not mpp > 0:
            continue
        factor = float(ds[level]) if isinstance(ds, Sequence) and level < len(ds) else 2.0**level
        values.append(float(mpp) * factor)
    return float(np.median(values)) if values else None


def store_training_mpp(store: str | Path, level: int) -> float | None:
    """``training_mpp`` of the slides of a lymph store (None when it cannot be read)."""
    from lymph.data.store import all_slide_attrs

    try:
        slides = all_slide_attrs(store)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return training_mpp(slides, level)


@dataclass(frozen=True)
class ScaleChoice:
    """Where one slide runs: ``level`` of the (possibly resampled) reader, ``downsample`` vs
    level 0, the resulting ``mpp`` (None when unknown), ``resampled`` when no pyramid level was
    within 10%, and ``note``, one line saying what was done and why."""

    level: int
    downsample: float
    mpp: float | None
    resampled: bool
    note: str
    warning: str | None = None


def choose_scale(*, name: str, downsamples: Sequence[float], slide_mpp: float | None,
                 user_mpp: float | None, target_mpp: float | None, level: int | None,
                 checkpoint_level: int) -> ScaleChoice:
    """The level (or resampling) at which slide ``name`` matches ``target_mpp``.

    ``level``: the user's ``--level`` (used as given, with a warning when it is more than 10%
    off the training mpp); ``slide_mpp``: the slide's own level-0 mpp, ``user_mpp`` the
    ``--mpp`` for slides without one; ``target_mpp``: the checkpoint's training mpp (None for
    checkpoints that predate it: the checkpoint's level, as before)."""
    mpp0, source = (slide_mpp, "") if slide_mpp else (user_mpp, " (--mpp)")
    if level is not None or target_mpp is None or mpp0 is None:
        return _fixed_level(name, downsamples, mpp0, source, target_mpp,
                            checkpoint_level if level is None else level, given=level is not None)
    mpps = level_mpps(mpp0, downsamples)
    errors = [abs(m / target_mpp - 1.0) for m in mpps]
    best = int(np.argmin(errors))
    head = f"{name}: slide {mpp0:.3f} um/px{source}, model trained at {target_mpp:.3f} um/px"
    if errors[best] <= TOLERANCE:
        return ScaleChoice(level=best, downsample=float(downsamples[best]), mpp=mpps[best],
                           resampled=False,
                           note=f"{head}: level {best} ({mpps[best]:.3f} um/px)")
    ds = target_mpp / mpp0
    base = max(i for i, d in enumerate(downsamples) if d <= ds * (1 + 1e-3)) if ds >= 1 else 0
    how = "downsampled" if ds >= float(downsamples[base]) else "upsampled"
    return ScaleChoice(level=len(downsamples), downsample=ds, mpp=target_mpp, resampled=True,
                       note=(f"{head}: no level within {TOLERANCE:.0%} "
                             f"({', '.join(f'{m:.3f}' for m in mpps)}), so level {base} is "
                             f"{how} x{float(downsamples[base]) / ds:.3f} to {target_mpp:.3f} "
                             "um/px"))


def _fixed_level(name: str, downsamples: Sequence[float], mpp0: float | None, source: str,
                 target_mpp: float | None, level: int, *, given: bool) -> ScaleChoice:
    ds = float(downsamples[level]) if level < len(downsamples) else 2.0**level
    mpp = None if mpp0 is None else mpp0 * ds
    why = "--level" if given else "the checkpoint's level"
    at = f" ({mpp:.3f} um/px{source})" if mpp is not None else ""
    note = f"{name}: level {level}{at}, {why}"
    warning = None
    if mpp0 is None and target_mpp is not None:
        warning = (f"{name}: the slide records no microns per pixel, so lymph cannot match the "
                   f"model's training scale ({target_mpp:.3f} um/px); ran at {why} {level}. "
                   "Pass --mpp (microns per level-0 pixel, e.g. 0.25 at 40x, 0.5 at 20x)")
    elif mpp is not None and target_mpp is not None and abs(mpp / target_mpp - 1) > TOLERANCE:
        warning = (f"{name}: level {level} is {mpp:.3f} um/px but the model was trained at "
                   f"{target_mpp:.3f} um/px ({mpp / target_mpp:.2f}x): its maps may not mean "
                   "much; drop --level to run at the training scale")
    elif target_mpp is None and not given:
        note += " (the checkpoint records no training mpp)"
    return ScaleChoice(level=level, downsample=ds, mpp=mpp, resampled=False, note=note,
                       warning=warning)


class ResampledReader:
    """``reader`` with one more level, ``downsample`` times level 0, read from the finest
    pyramid level at most that coarse (or level 0 when upsampling) and resized (box filter
    when shrinking, bilinear when enlarging). Everything else is the reader's."""

    def __init__(self, reader: SlideReader, downsample: float) -> None:
        self.reader = reader
        self.extra_downsample = float(downsample)
        ds = list(reader.level_downsamples)
        self.base = max((i for i, d in enumerate(ds) if d <= downsample * (1 + 1e-3)), default=0)
        w0, h0 = reader.dimensions
        extra = (max(1, int(w0 / downsample)), max(1, int(h0 / downsample)))
        self.level_count = reader.level_count + 1
        self.level_dimensions = (*reader.level_dimensions, extra)
        self.level_downsamples = (*ds, self.extra_downsample)

    def __getattr__(self, name: str) -> Any:  # path, dimensions, mpp, vendor, properties...
        return getattr(self.reader, name)

    def read_region(self, location_level0: tuple[int, int], level: int,
                    size: tuple[int, int], *, out: np.ndarray | None = None) -> np.ndarray:
        if level < self.reader.level_count:
            return self.reader.read_region(location_level0, level, size, out=out)
        from PIL import Image

        f = self.extra_downsample / float(self.reader.level_downsamples[self.base])
        src = (max(1, math.ceil(size[0] * f)), max(1, math.ceil(size[1] * f)))
        big = self.reader.read_region(location_level0, self.base, src)
        how = Image.Resampling.BOX if f >= 1 else Image.Resampling.BILINEAR
        img = np.asarray(Image.fromarray(big).resize((size[0], size[1]), how))
        if out is not None:
            out[...] = img
            return out
        return img

    def thumbnail(self, max_size: int) -> tuple[np.ndarray, float]:
        return self.reader.thumbnail(max_size)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> ResampledReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reader_at_scale(reader: SlideReader, *, target_mpp: float | None, user_mpp: float | None,
                    level: int | None, checkpoint_level: int) -> tuple[SlideReader, ScaleChoice]:
    """(the reader to run on, the choice) for one slide: the reader itself, or a
    ``ResampledReader`` whose extra level is the training scale."""
    choice = choose_scale(name=Path(reader.path).name, downsamples=reader.level_downsamples,
                          slide_mpp=reader.mpp, user_mpp=user_mpp, target_mpp=target_mpp,
                          level=level, checkpoint_level=checkpoint_level)
    if choice.resampled:
        return ResampledReader(reader, choice.downsample), choice
    return reader, choice


def checkpoint_mpp(record: RunRecord) -> float | None:
    """The training mpp a checkpoint records (``config.store.mpp``), None when absent."""
    return None if record.store is None else record.store.mpp


def scale_for_predict(reader: SlideReader, loaded: Any, config: Any
                      ) -> tuple[SlideReader, Any, str]:
    """For ``lymph predict``: (reader at the training scale, ``loaded`` with its level set to
    the chosen one, the line saying what was done). A warning when the scale cannot be matched
    (the line then starts with "WARNING")."""
    import dataclasses
    import warnings

    ckpt_level = _checkpoint_level(loaded)
    scaled, choice = reader_at_scale(reader, target_mpp=checkpoint_mpp(loaded.record),
                                     user_mpp=getattr(config, "mpp", None), level=config.level,
                                     checkpoint_level=ckpt_level)
    if choice.warning:
        warnings.warn(choice.warning, stacklevel=2)
    line = f"WARNING {choice.warning}" if choice.warning else choice.note
    return scaled, dataclasses.replace(loaded, level=choice.level), line


def _checkpoint_level(loaded: Any) -> int:
    """The checkpoint's extraction level (``loaded.level`` may already be --level's)."""
    store = loaded.record.store
    return int(loaded.level) if store is None or store.level is None else store.level


def rescaled_model(model: Any, factor: float) -> Any:
    """``model`` run at ``factor`` times the input's microns per pixel: each input is resized
    by 1/factor (area filter when shrinking, bilinear when enlarging), reflect-padded to the
    model's multiple, run, and its outputs resized back to the input's size. For `lymph eval
    patches` on a store whose patches are off the checkpoint's training scale: the metrics stay
    at the store's resolution, against its masks."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from lymph.model.unet import UNetOutput, unwrap

    inner = unwrap(model)

    class Rescaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner
            # an int property of the UNet (or of a Rescaled); nn.Module's __getattr__ types
            # every attribute Tensor | Module
            self.multiple = cast(int, inner.multiple)
            self.config = getattr(inner, "config", None)
            self.factor = float(factor)

        def forward(self, x: torch.Tensor) -> UNetOutput:
            h, w = x.shape[-2:]
            size = (max(1, round(h / self.factor)), max(1, round(w / self.factor)))
            mode = "area" if self.factor > 1 else "bilinear"
            y = F.interpolate(x, size=size, mode=mode,
                              **({} if mode == "area" else {"align_corners": False}))
            m = self.multiple
            ph, pw = (-size[0]) % m, (-size[1]) % m
            if ph or pw:
                y = F.pad(y, (0, pw, 0, ph), mode="reflect" if min(size) > max(ph, pw) else
                          "replicate")
            out = self.inner(y)

            def back(t: torch.Tensor) -> torch.Tensor:
                t = t[..., : size[0], : size[1]]
                return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)

            return UNetOutput(back(out.mask_logits), back(out.reconstruction))

    return Rescaled()
