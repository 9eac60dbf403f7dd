from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lymph.cli import main
from lymph.data import world_render as wr
from lymph.data.errors import ConfigError
from lymph.data.outlines import (
    OutlineModel,
    load_real_outlines,
    radial_outline,
    shape_stats,
    summarize,
)
from lymph.data.synth import TILE, synth_slides, write_asap_xml
from lymph.data.synth_world import (
    PRESETS,
    CamelyonPlan,
    WorldParams,
    make_plan,
    resolve_centre,
)

# sha256 of the default world's files (seed 7, 1 tumor + 1 normal, 1536x1024), computed with
# main's code before the camelyon world existed: the default world must stay byte-identical.
DEFAULT_DIGESTS = {
    "tumor_001.tif": "0d46dcf8f7fadd41d9e5f0eed87c95742348f14fc449ac85130e1facef41c6b0",
    "tumor_001.xml": "4eaa9e419abe653637c7581c7d7c0289afc35fb2c01f03773abe5ba216c29abc",
    "tumor_001_mask.tif": "f31769a276aaa8079f8314b43bcf1ee32198af148206c08e1021b32b80bf6a9c",
    "normal_001.tif": "24e3ea9ac954b6eabc066ca14d147b433e94787abdd17d73a803bbe0105b9e4d",
}
# Plans big enough to hold every mimic (the study's slide size).
STUDY_SIZE = (8000, 6000)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _plan(index: int, status: str = "tumor", seed: int = 0) -> CamelyonPlan:
    plan = make_plan("camelyon", "auto", name="t", status=status, width=STUDY_SIZE[0],
                     height=STUDY_SIZE[1], mpp=0.243, seed=seed, index=index)
    assert isinstance(plan, CamelyonPlan)
    return plan


def test_default_world_is_byte_identical_to_main(tmp_path: Path) -> None:
    slides = synth_slides(tmp_path, n_tumor=1, n_normal=1, size=(1536, 1024), seed=7)
    got = {p.name: _sha(p) for s in slides for p in (s.path, s.xml, s.mask) if p is not None}
    assert got == DEFAULT_DIGESTS
    assert "world" not in json.loads((tmp_path / "synth.json").read_text())["slides"][0]


def test_preset_same_seed_same_bytes(tmp_path: Path) -> None:
    kw = {"n_tumor": 1, "n_normal": 0, "size": (768, 512), "world": "camelyon", "seed": 5}
    a = synth_slides(tmp_path / "a", **kw)[0]
    b = synth_slides(tmp_path / "b", **kw)[0]
    for attr in ("path", "xml", "mask"):
        assert _sha(getattr(a, attr)) == _sha(getattr(b, attr))
    assert _sha(tmp_path / "a" / "synth.json") == _sha(tmp_path / "b" / "synth.json")
    manifest = json.loads((tmp_path / "a" / "synth.json").read_text())
    assert manifest["settings"]["world"] == "camelyon"
    assert manifest["world"]["outline"]["sigma"] == PRESETS["camelyon"].outline.sigma
    centre = manifest["slides"][0]["world"]["centre"]["name"]
    assert centre == resolve_centre("auto", 5).name


def test_centres_change_stain_sharpness_and_quality() -> None:
    kw = {"name": "t", "status": "normal", "width": 512, "height": 512, "mpp": 0.243,
          "seed": 0, "index": 1}
    a, b = make_plan("camelyon", "A", **kw), make_plan("camelyon", "B", **kw)
    assert (a.jpeg_quality, b.jpeg_quality) == (90, 70)
    assert a.sharp_px == 0 < b.sharp_px
    assert a.stain.h_od != b.stain.h_od
    assert {resolve_centre("auto", s).name for s in range(12)} == {"A", "B", "C"}


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
        x, y, kinds, *_ = plan._candidates(tx, ty)
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
    for index in range(1, 4):
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
        x, y, kinds, *_ = plan._candidates(tx, ty)
        mine = plan.tumor_at(x, y) == n
        tumor_nuclei += int(np.isin(kinds[mine], wr.TUMOR_KINDS).sum())
        lymphs += int((kinds[mine] == wr.LYMPH).sum())
    assert tumor_nuclei >= 1 and lymphs >= 1  # tumor cells among lymphocytes
    write_asap_xml(tmp_path / "t.xml", plan.lesions)
    groups = [a.get("PartOfGroup") for a in ET.parse(tmp_path / "t.xml").iter("Annotation")]
    assert groups[n] == "_1"


def test_outline_shape_statistics_match_real_camelyon16(fixtures_dir: Path) -> None:
    """The preset's outlines: median perimeter^2/(4 pi area) within 20% of the real outlines',
    median solidity and convexity within 0.06."""
    real = summarize([shape_stats(p) for p in load_real_outlines(
        fixtures_dir / "annotations" / "ncrf-camelyon16")])
    rng = np.random.default_rng(1)
    model = PRESETS["camelyon"].outline
    gen = summarize([shape_stats(radial_outline(rng, 0, 0, r, model))
                     for r in rng.uniform(300, 4000, 150)])
    assert abs(gen["iso_median"] / real["iso_median"] - 1) <= 0.20, (gen, real)
    assert abs(gen["solidity_median"] - real["solidity_median"]) <= 0.06, (gen, real)
    assert abs(gen["convexity_median"] - real["convexity_median"]) <= 0.06, (gen, real)
    # the old star polygons were far too round: the check can fail
    smooth = summarize([shape_stats(radial_outline(rng, 0, 0, 800, OutlineModel(0.05, 1.5, 0)))
                        for _ in range(30)])
    assert smooth["iso_median"] < 0.6 * real["iso_median"]


def test_outline_stats_of_simple_shapes() -> None:
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1.0]])
    s = shape_stats(square)
    assert s["iso"] == pytest.approx(16 / (4 * np.pi))
    assert s["solidity"] == pytest.approx(1) and s["convexity"] == pytest.approx(1)
    notch = np.array([[0, 0], [2, 0], [2, 2], [1, 1], [0, 2.0]])
    assert shape_stats(notch)["solidity"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="needs >= 3 vertices"):
        shape_stats(square[:2])
    with pytest.raises(ValueError, match="degenerate polygon"):
        shape_stats(np.array([[0, 0], [1, 1], [2, 2.0]]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"world": "hospital"}, "world must be one of default, camelyon; got 'hospital'"),
        ({"centre": "Z"}, "centre must be one of auto, A, B, C, got 'Z'"),
    ],
)
def test_bad_world_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        synth_slides(tmp_path, n_tumor=1, n_normal=0, size=(512, 512), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fold_p": 1.5}, "fold_p must be in"),
        ({"pattern_p": (0.5, 0.5, 0.5)}, "pattern_p must be 3 probabilities"),
        ({"gc_radius_um": (100.0, 50.0)}, "gc_radius_um must be 0 < low <= high"),
    ],
)
def test_bad_world_params(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        WorldParams(**kwargs)


def test_bad_outline_model_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="outline sigma must be in"):
        OutlineModel(sigma=-1)
    with pytest.raises(ConfigError, match="no \\*.json outlines in"):
        load_real_outlines(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read outlines from .*bad.json"):
        load_real_outlines(tmp_path)


def test_cli_world_option(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["synth", "--out", str(tmp_path / "w"), "--world", "nope"])
    assert res.exit_code == 2 and "nope" in res.output
    res = runner.invoke(main, ["synth", "--out", str(tmp_path / "w"), "--tumor", "1",
                               "--normal", "0", "--size", "768x512", "--world", "camelyon",
                               "--centre", "C"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "w" / "synth.json").read_text())
    assert manifest["settings"]["centre"] == "C"


@pytest.mark.slow
def test_trivial_rules_do_not_separate_the_preset(tmp_path: Path) -> None:
    """The issue's bars on the preset: mean colour <= 0.75, nuclear size <= 0.80 balanced
    accuracy, on bench/bench_world.py's world (3 tumor + 1 normal at the study's 8000x6000,
    seed 0: about 50 tumor patches). On a 4096x3072 world (14 tumor patches) the colour rule
    reached 0.83 (README): the bar holds on this world, not on every small one."""
    from lymph.data.synth import colour_separability
    from lymph.data.world_checks import nuclear_size_separability

    slides = synth_slides(tmp_path, n_tumor=3, n_normal=1, size=STUDY_SIZE, seed=0,
                          world="camelyon")
    colour = colour_separability(slides)
    assert colour["n_tumor"] >= 40
    assert colour["best"] <= 0.75, colour
    assert nuclear_size_separability(slides)["balanced_accuracy"] <= 0.80
