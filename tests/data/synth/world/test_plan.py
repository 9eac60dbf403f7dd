"""CamelyonPlan: mimics (and their cells) never in the ground truth, tumor cells and ITCs in it,
tiles independent of order."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from lymph.data.synth import (
    TILE,
    make_plan,
    write_asap_xml,
)
from lymph.data.synth.world import render as wr
from lymph.data.synth.world.plan import CamelyonPlan

# Plans big enough to hold every mimic (the study's slide size).
STUDY_SIZE = (8000, 6000)


def _plan(index: int, status: str = "tumor", seed: int = 0) -> CamelyonPlan:
    plan = make_plan("camelyon", "auto", name="t", status=status, width=STUDY_SIZE[0],
                     height=STUDY_SIZE[1], mpp=0.243, seed=seed, index=index)
    assert isinstance(plan, CamelyonPlan)
    return plan


def test_tiles_do_not_depend_on_order() -> None:
    def plan() -> CamelyonPlan:
        return make_plan("camelyon", "A", name="t", status="tumor", width=768, height=600,
                         mpp=0.243, seed=3, index=1)

    forward = [plan().image_row(i) for i in range(3)]
    p = plan()
    backward = [p.image_row(i) for i in reversed(range(3))][::-1]
    for f, b in zip(forward, backward, strict=True):
        assert np.array_equal(f, b)


def _inside_points(blob, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    r, t = np.sqrt(rng.uniform(0, 1, n)) * 0.98, rng.uniform(0, 2 * np.pi, n)
    u, v = r * np.cos(t) * blob.a, r * np.sin(t) * blob.b
    c, s = np.cos(blob.theta), np.sin(blob.theta)
    return blob.cx + u * c - v * s, blob.cy + u * s + v * c


@pytest.mark.slow
def test_mimics_never_in_the_ground_truth() -> None:
    seen = {"gc": 0, "vessel": 0, "fat": 0}
    for index in range(1, 5):
        plan = _plan(index)
        for name, blobs in (("gc", plan.gcs), ("vessel", plan.vessels), ("fat", plan.fats)):
            for blob in blobs:
                seen[name] += 1
                x, y = _inside_points(blob)
                assert (plan.tumor_at(x, y) == -1).all(), f"{name} of slide {index} in a lesion"
    assert min(seen.values()) >= 1, seen


def _tiles_around(plan: CamelyonPlan, x: float, y: float, r: float) -> list[tuple[int, int]]:
    tx0, ty0 = int((x - r) // TILE), int((y - r) // TILE)
    tx1, ty1 = int((x + r) // TILE), int((y + r) // TILE)
    return [(tx, ty) for ty in range(max(ty0, 0), min(ty1, plan.n_ty - 1) + 1)
            for tx in range(max(tx0, 0), min(tx1, plan.n_tx - 1) + 1)]


@pytest.mark.slow
def test_mimic_cells_outside_the_mask_and_tumor_cells_inside() -> None:
    """Every nucleus of a mimic kind lies outside the mask; every tumor nucleus inside it."""
    plan = _plan(1)
    counts = np.zeros(len(wr.KIND_NAMES), int)
    tiles = {t for b in plan.gcs + plan.vessels for t in _tiles_around(plan, b.cx, b.cy, b.a)}
    for lk in plan.lesion_looks:
        tiles |= set(_tiles_around(plan, lk.cx, lk.cy, min(max(lk.radii), 3 * TILE)))
    for tx, ty in sorted(tiles):
        x, y, kinds, *_ = plan.candidates(tx, ty)
        if not x.size:
            continue
        inside = plan.tumor_at(x, y) >= 0  # the geometry the mask TIFF is rasterized from
        tumor_kind = np.isin(kinds, wr.TUMOR_KINDS)
        assert inside[tumor_kind].all()
        mimic = ~tumor_kind & (kinds != wr.LYMPH)
        assert not inside[mimic].any()
        counts += np.bincount(kinds, minlength=len(counts))
    for kind in (wr.CENTROBLAST, wr.TBM, wr.ENDOTHELIUM, wr.CARC):
        assert counts[kind] > 0, f"no {wr.KIND_NAMES[kind]} drawn"


@pytest.mark.slow
def test_itcs_present_in_xml_and_mask(tmp_path: Path) -> None:
    """Isolated tumor cells: small lesions annotated (group _1) and rasterized into the mask,
    holding a few tumor nuclei among lymphocytes."""
    itc = []
    for index in range(1, 7):  # c4 scatters about one ITC a slide (the others are clusters)
        plan = _plan(index)
        itc += [(plan, n, les) for n, les in enumerate(plan.lesions)
                if les.kind == "ITC" and plan.lesion_looks[n].pattern == "itc"]
    assert len(itc) >= 3
    plan, n, les = itc[0]
    cx, cy = les.points.mean(axis=0)
    x0, y0 = int(cx) - 128, int(cy) - 128
    mask = plan.tumor_mask(x0, y0, 256, 256)
    assert mask.sum() > 0
    tumor_nuclei = lymphs = 0
    for tx, ty in _tiles_around(plan, cx, cy, max(plan.lesion_looks[n].radii)):
        x, y, kinds, *_ = plan.candidates(tx, ty)
        mine = plan.tumor_at(x, y) == n
        tumor_nuclei += int(np.isin(kinds[mine], wr.TUMOR_KINDS).sum())
        lymphs += int((kinds[mine] == wr.LYMPH).sum())
    assert tumor_nuclei >= 1 and lymphs >= 1  # tumor cells among lymphocytes
    write_asap_xml(tmp_path / "t.xml", plan.lesions)
    groups = [a.get("PartOfGroup") for a in ET.parse(tmp_path / "t.xml").iter("Annotation")]
    assert groups[n] == "_1"
