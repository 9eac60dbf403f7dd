"""The files of a synthetic world: each slide's pyramidal TIFF (generic or Aperio SVS), for a
tumor slide its CAMELYON16-style ASAP XML and mask TIFF, and the world's manifests
(reference.csv and synth.json)."""

from __future__ import annotations

import csv
import io
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from lymph import __version__
from lymph.data.io import atomic_write_text
from lymph.data.pyramid import write_pyramidal_tiff
from lymph.data.synth.config import MASK_MIN_SIZE, SYNTH_VERSION, TILE, UNRECORDED, SynthConfig
from lymph.data.synth.plan import Lesion, SlidePlan
from lymph.data.synth.world.params import world_settings


@dataclass(frozen=True)
class SynthSlide:
    """A generated slide and its ground truth files."""

    name: str
    path: Path
    status: str  # "tumor" | "normal"
    xml: Path | None
    mask: Path | None
    lesions: tuple[Lesion, ...] = field(default=(), repr=False)
    dimensions: tuple[int, int] = (0, 0)
    largest: str = ""  # largest lesion class (Macro/Micro/ITC), "" for normal slides
    kept: bool = False  # written by an earlier run with the same settings (run.py: PROGRESS)


def write_asap_xml(path: Path, lesions: tuple[Lesion, ...]) -> None:
    """CAMELYON16-style ASAP XML: tumor polygons in `_0`/`_1`, exclusion holes in `_2`."""
    root = ET.Element("ASAP_Annotations")
    anns = ET.SubElement(root, "Annotations")
    colours = {"_0": "#F4FA58", "_1": "#F4FA58", "_2": "#64FE2E"}
    n = 0

    def add(points: np.ndarray, group: str) -> None:
        nonlocal n
        a = ET.SubElement(
            anns,
            "Annotation",
            Name=f"Annotation {n}",
            Type="Polygon",
            PartOfGroup=group,
            Color=colours[group],
        )
        n += 1
        coords = ET.SubElement(a, "Coordinates")
        for order, (x, y) in enumerate(points):
            ET.SubElement(coords, "Coordinate", Order=str(order), X=f"{x:.4f}", Y=f"{y:.4f}")

    for les in lesions:
        add(les.points, les.group)
    for les in lesions:
        for hole in les.holes:
            add(hole, "_2")
    groups = ET.SubElement(root, "AnnotationGroups")
    for g, c in (("_0", "#FF0000"), ("_1", "#FF0000"), ("_2", "#00FF00")):
        grp = ET.SubElement(groups, "Group", Name=g, PartOfGroup="None", Color=c)
        ET.SubElement(grp, "Attributes")
    ET.indent(root, space="\t")
    tmp = path.with_name(path.name + ".part")
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)


def _label_image(name: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (400, 400), (236, 236, 230))
    d = ImageDraw.Draw(img)
    d.rectangle((20, 20, 380, 380), outline=(40, 40, 40), width=3)
    d.text((40, 60), "lymph synth", fill=(0, 0, 0))
    d.text((40, 100), name, fill=(0, 0, 0))
    return np.asarray(img)


def _objective_power(mpp: float) -> int:
    """Nominal objective magnification for an mpp (10 um / mpp, to the nearest 5x): 0.243 -> 40."""
    return max(1, int(round(10 / mpp / 5) * 5)) if mpp < 2 else max(1, round(10 / mpp))


def write_slide(plan: SlidePlan, path: Path, cfg: SynthConfig,
                tick: Callable[[int], None]) -> SynthSlide:
    """One slide (and for a tumor slide its ASAP XML and mask TIFF) from its plan; `tick(n)`
    after every n rows of level 0 written."""
    name, width, height = plan.name, plan.width, plan.height
    write_pyramidal_tiff(
        path, plan.image_row, width=width, height=height, compression="jpeg",
        quality=cfg.quality if plan.jpeg_quality is None else plan.jpeg_quality,
        mpp=cfg.mpp, layout="aperio" if cfg.fmt == "svs" else "generic",
        factor=4 if cfg.fmt == "svs" else 2,
        aperio_fields={"AppMag": _objective_power(cfg.mpp), "Filename": name},
        label=_label_image(name) if cfg.fmt == "svs" else None, workers=cfg.workers,
        progress=tick,
    )  # fmt: skip
    if plan.status == "tumor":
        xml = path.parent / f"{name}.xml"
        write_asap_xml(xml, plan.lesions)
        mask = path.parent / f"{name}_mask.tif"
        write_pyramidal_tiff(
            mask, plan.mask_row, width=width, height=height, channels=1,
            compression="deflate", mpp=cfg.mpp, downsample="majority",
            min_size=MASK_MIN_SIZE,  # levels to 1/32 and beyond, as CAMELYON16's
            workers=cfg.workers,
        )  # fmt: skip
    return slide_record(plan, path)


def slide_record(plan: SlidePlan, path: Path, *, kept: bool = False) -> SynthSlide:
    """What the slide of `plan` written at `path` holds (its files beside it)."""
    tumor = plan.status == "tumor"
    return SynthSlide(name=plan.name, path=path, status=plan.status,
                      xml=path.parent / f"{plan.name}.xml" if tumor else None,
                      mask=path.parent / f"{plan.name}_mask.tif" if tumor else None,
                      lesions=plan.lesions, dimensions=(plan.width, plan.height),
                      largest=largest_kind(plan.lesions), kept=kept)


def largest_kind(lesions: Sequence[Lesion]) -> str:
    """The largest CAMELYON16 class among `lesions` (Macro > Micro > ITC), "" for none."""
    order = {"ITC": 0, "Micro": 1, "Macro": 2}
    return max((les.kind for les in lesions), key=order.__getitem__, default="")


def write_manifests(out: Path, cfg: SynthConfig, slides: Sequence[SynthSlide],
                    plans: Sequence[SlidePlan]) -> None:
    """reference.csv (CAMELYON16's `name,Tumor|Normal,largest lesion`) and synth.json (every
    setting, the seed and what each slide holds), each written atomically."""
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    for s in slides:
        writer.writerow([s.name, "Tumor" if s.status == "tumor" else "Normal", s.largest])
    atomic_write_text(out / "reference.csv", buf.getvalue())
    manifest = {
        "synth_version": SYNTH_VERSION,
        "lymph_version": __version__,
        "settings": {**recorded_settings(cfg), "size": list(cfg.size), "tile": TILE},
        **({} if cfg.world == "default" else {"world": world_settings(cfg.world)}),
        "slides": [p.describe() for p in plans],
    }
    atomic_write_text(out / "synth.json", json.dumps(manifest, indent=1))


def recorded_settings(cfg: SynthConfig) -> dict[str, object]:
    """The settings synth.json records, in field order (not where the world is written, nor
    whether a progress bar was shown: neither changes a byte of it)."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in UNRECORDED}
