"""run(SynthConfig): the files of a world (slides, XML, masks, manifests), byte-identical
for a seed."""

from __future__ import annotations

import csv
import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import openslide
import pytest
from matplotlib.path import Path as MplPath
from scipy import ndimage

from lymph.data.errors import ConfigError, OutputError
from lymph.data.synth import (
    SynthConfig,
    run,
)
from lymph.data.synth.world.params import PRESETS, resolve_centre

SIZE = (4096, 3072)


# sha256 of the default world's files (seed 7, 1 tumor + 1 normal, 1536x1024), computed with
# main's code before the camelyon world existed: the default world must stay byte-identical.
DEFAULT_DIGESTS = {
    "tumor_001.tif": "0d46dcf8f7fadd41d9e5f0eed87c95742348f14fc449ac85130e1facef41c6b0",
    "tumor_001.xml": "4eaa9e419abe653637c7581c7d7c0289afc35fb2c01f03773abe5ba216c29abc",
    "tumor_001_mask.tif": "f31769a276aaa8079f8314b43bcf1ee32198af148206c08e1021b32b80bf6a9c",
    "normal_001.tif": "24e3ea9ac954b6eabc066ca14d147b433e94787abdd17d73a803bbe0105b9e4d",
}


def _polygons(xml: Path) -> dict[str, list[np.ndarray]]:
    """Stdlib, namespace-free read of an ASAP XML: group -> list of (k, 2) level-0 polygons."""
    root = ET.parse(xml).getroot()
    assert root.tag == "ASAP_Annotations"
    out: dict[str, list[np.ndarray]] = {}
    for ann in root.find("Annotations").findall("Annotation"):
        assert ann.get("Type") == "Polygon"
        coords = sorted(ann.find("Coordinates"), key=lambda c: int(c.get("Order")))
        pts = np.array([[float(c.get("X")), float(c.get("Y"))] for c in coords])
        out.setdefault(ann.get("PartOfGroup"), []).append(pts)
    return out


def _truth(polys: dict[str, list[np.ndarray]], width: int, height: int, ds: float) -> np.ndarray:
    """Tumor (_0, _1) minus exclusion (_2) at the pixel centres of a downsampled grid,
    rasterized independently of lymph (matplotlib)."""
    yy, xx = np.mgrid[0:height, 0:width]
    pts = np.stack([(xx.ravel() + 0.5) * ds, (yy.ravel() + 0.5) * ds], axis=1)
    inside = np.zeros(len(pts), bool)
    for group in ("_0", "_1"):
        for p in polys.get(group, []):
            inside |= MplPath(p).contains_points(pts)
    for p in polys.get("_2", []):
        inside &= ~MplPath(p).contains_points(pts)
    return inside.reshape(height, width)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_synth_world_slides_open_with_levels_and_mpp(synth_world: Path) -> None:
    names = sorted(p.name for p in synth_world.iterdir())
    assert names[:3] == [".lymph-outputs.json", ".lymph-synth.json", ".lymph-writer.lock"]
    assert names[3:] == [
        "normal_001.tif", "reference.csv", "synth.json", "tumor_001.tif", "tumor_001.xml",
        "tumor_001_mask.tif",
    ]
    for name in ("tumor_001.tif", "normal_001.tif", "tumor_001_mask.tif"):
        s = openslide.OpenSlide(synth_world / name)
        assert s.properties["openslide.vendor"] == "generic-tiff"
        assert s.level_dimensions[:3] == ((4096, 3072), (2048, 1536), (1024, 768))
        if name.endswith("_mask.tif"):  # masks go on to 1 px, like CAMELYON16's: level 5 exists
            assert s.level_dimensions[5] == (128, 96) and s.level_dimensions[-1] == (1, 1)
        else:
            assert s.level_count == 3
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.243)
        assert float(s.properties["openslide.mpp-y"]) == pytest.approx(0.243)
    mask = openslide.OpenSlide(synth_world / "tumor_001_mask.tif")
    values = np.unique(np.asarray(mask.read_region((0, 0), 2, (1024, 768)))[..., :3])
    assert set(values.tolist()) == {0, 255}


def test_reference_csv_and_manifest(synth_world: Path) -> None:
    rows = list(csv.reader((synth_world / "reference.csv").open()))
    assert [r[:2] for r in rows] == [["tumor_001", "Tumor"], ["normal_001", "Normal"]]
    assert rows[0][2] in {"Macro", "Micro", "ITC"} and rows[1][2] == ""
    manifest = json.loads((synth_world / "synth.json").read_text())
    assert manifest["settings"]["seed"] == 0
    assert manifest["settings"]["size"] == [4096, 3072]
    assert manifest["settings"]["mpp"] == 0.243
    assert [s["name"] for s in manifest["slides"]] == ["tumor_001", "normal_001"]
    assert manifest["slides"][0]["lesions"] and not manifest["slides"][1]["lesions"]


def test_xml_is_camelyon16_asap_and_polygons_lie_on_tissue(synth_world: Path) -> None:
    root = ET.parse(synth_world / "tumor_001.xml").getroot()
    groups = [g.get("Name") for g in root.find("AnnotationGroups").findall("Group")]
    assert groups == ["_0", "_1", "_2"]
    polys = _polygons(synth_world / "tumor_001.xml")
    assert set(polys) <= {"_0", "_1", "_2"} and (polys.get("_0") or polys.get("_1"))
    slide = openslide.OpenSlide(synth_world / "tumor_001.tif")
    thumb = np.asarray(slide.read_region((0, 0), 2, (1024, 768)))[..., :3].astype(int)
    tissue = (thumb.max(axis=2) - thumb.min(axis=2) > 20) | (thumb.sum(axis=2) < 600)
    tissue = ndimage.binary_dilation(tissue, iterations=2)
    for group, plist in polys.items():
        for p in plist:
            ij = np.clip((p / 4).astype(int), 0, [1023, 767])
            on = tissue[ij[:, 1], ij[:, 0]].mean()
            assert on >= 0.98, f"{group} polygon: only {on:.0%} of vertices on tissue"
    # no tumor on the normal slide's glass either: it has no XML/mask at all
    assert not (synth_world / "normal_001.xml").exists()


def test_mask_tiff_agrees_with_the_xml_polygons(synth_world: Path) -> None:
    polys = _polygons(synth_world / "tumor_001.xml")
    truth = _truth(polys, 1024, 768, 4.0)
    mask = openslide.OpenSlide(synth_world / "tumor_001_mask.tif")
    got = np.asarray(mask.read_region((0, 0), 2, (1024, 768)))[..., 0] > 127
    assert truth.sum() > 500, "the tumor slide has tumor"
    iou = (truth & got).sum() / (truth | got).sum()
    assert iou > 0.95
    full = np.asarray(mask.read_region((0, 0), 0, SIZE))[..., 0] > 127
    assert abs(full.sum() / 16 - truth.sum()) / truth.sum() < 0.03


def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path) -> None:
    kw = {"n_tumor": 1, "n_normal": 0, "size": (1024, 768)}
    a = run(SynthConfig(out=tmp_path / "a", seed=5, **kw)).slides[0]
    b = run(SynthConfig(out=tmp_path / "b", seed=5, **kw)).slides[0]
    c = run(SynthConfig(out=tmp_path / "c", seed=6, **kw)).slides[0]
    for attr in ("path", "xml", "mask"):
        assert _sha(getattr(a, attr)) == _sha(getattr(b, attr))
    assert _sha(a.path) != _sha(c.path)
    assert _sha(a.xml) != _sha(c.xml)


def test_svs_format_is_aperio_with_mpp_and_associated_images(tmp_path: Path) -> None:
    s = run(SynthConfig(out=tmp_path, n_tumor=1, n_normal=0, size=(2304, 1024), fmt="svs",
                        mpp=0.25)).slides[0]
    assert s.path.name == "tumor_001.svs"
    o = openslide.OpenSlide(s.path)
    assert o.properties["openslide.vendor"] == "aperio"
    assert float(o.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    assert o.properties["openslide.objective-power"] == "40"
    assert o.level_dimensions == ((2304, 1024), (576, 256))
    assert {"thumbnail", "label", "macro"} <= set(o.associated_images)
    assert openslide.OpenSlide(s.mask).level_dimensions[0] == (2304, 1024)


def test_unwritable_output_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot create output folder .*a_file/out"):
        run(SynthConfig(out=blocker / "out", size=(512, 512)))


@pytest.mark.parametrize("name", ["tumor_001.tif", "tumor_001.xml", "normal_001.tif",
                                  "reference.csv"])
def test_a_file_lymph_did_not_write_is_never_overwritten(tmp_path: Path, name: str) -> None:
    """CAMELYON16's own files are named tumor_001.tif, tumor_001.xml, reference.csv: a synth
    pointed at such a folder stops before any work, naming the file, unless --force."""
    real = tmp_path / name
    real.write_bytes(b"a real slide, or its annotations")
    cfg = SynthConfig(out=tmp_path, n_tumor=1, n_normal=1, size=(512, 512))
    with pytest.raises(OutputError, match=rf"{name} exists and lymph did not write it .*--force"):
        run(cfg)
    assert real.read_bytes() == b"a real slide, or its annotations"
    assert not (tmp_path / "normal_001.tif").exists() or name == "normal_001.tif"
    run(SynthConfig(out=tmp_path, n_tumor=1, n_normal=1, size=(512, 512), force=True))
    assert real.read_bytes() != b"a real slide, or its annotations"


def test_a_rerun_rewrites_its_own_files_and_refuses_one_edited_since(tmp_path: Path) -> None:
    cfg = SynthConfig(out=tmp_path, n_tumor=1, n_normal=1, size=(512, 512))
    first = run(cfg).slides[0].path.read_bytes()
    assert run(cfg).slides[0].path.read_bytes() == first  # its own files: rewritten
    assert not (tmp_path / ".lymph-outputs.json.lock").exists()
    with (tmp_path / "tumor_001.xml").open("a") as fh:
        fh.write("<!-- edited by a pathologist -->")
    with pytest.raises(OutputError, match=r"tumor_001\.xml exists and lymph did not write it "
                                          r"\(or it changed since"):
        run(cfg)


def test_a_killed_synth_keeps_its_finished_slides(tmp_path: Path) -> None:
    """A rerun with the same settings writes only what is missing or not recorded as
    finished; other settings write everything again; a slide damaged since is refused, and
    with --force written again."""
    cfg = SynthConfig(out=tmp_path, n_tumor=1, n_normal=2, size=(512, 512))
    run(cfg)
    names = ("tumor_001.tif", "tumor_001_mask.tif", "normal_001.tif", "normal_002.tif")
    before = {n: (tmp_path / n).read_bytes() for n in names}
    stamp = {n: (tmp_path / n).stat().st_mtime_ns for n in names}
    (tmp_path / "normal_002.tif").unlink()  # killed while writing it
    run(cfg)
    assert {n: (tmp_path / n).read_bytes() for n in names} == before
    kept = [n for n in names if (tmp_path / n).stat().st_mtime_ns == stamp[n]]
    assert kept == ["tumor_001.tif", "tumor_001_mask.tif", "normal_001.tif"]
    data = bytearray((tmp_path / "normal_001.tif").read_bytes())
    data[-10] ^= 0x01
    (tmp_path / "normal_001.tif").write_bytes(bytes(data))
    with pytest.raises(OutputError, match=r"normal_001\.tif exists and lymph did not write"):
        run(cfg)
    run(SynthConfig(out=tmp_path, n_tumor=1, n_normal=2, size=(512, 512), force=True))
    assert (tmp_path / "normal_001.tif").read_bytes() == before["normal_001.tif"]
    run(SynthConfig(out=tmp_path, n_tumor=1, n_normal=2, size=(512, 512), seed=1))
    assert (tmp_path / "tumor_001.tif").read_bytes() != before["tumor_001.tif"]


def test_two_synths_on_one_folder(tmp_path: Path) -> None:
    from lymph.data.lock import run_folder_lock

    with run_folder_lock(tmp_path, what="this synth folder"):
        with pytest.raises(OutputError, match="this synth folder"):
            run(SynthConfig(out=tmp_path, n_tumor=0, n_normal=1, size=(512, 512)))


def test_default_world_is_byte_identical_to_main(tmp_path: Path) -> None:
    slides = run(SynthConfig(out=tmp_path, n_tumor=1, n_normal=1, size=(1536, 1024),
                             seed=7)).slides
    got = {p.name: _sha(p) for s in slides for p in (s.path, s.xml, s.mask) if p is not None}
    assert got == DEFAULT_DIGESTS
    assert "world" not in json.loads((tmp_path / "synth.json").read_text())["slides"][0]


def test_preset_same_seed_same_bytes(tmp_path: Path) -> None:
    kw = {"n_tumor": 1, "n_normal": 0, "size": (768, 512), "world": "camelyon", "seed": 5}
    a = run(SynthConfig(out=tmp_path / "a", **kw)).slides[0]
    b = run(SynthConfig(out=tmp_path / "b", **kw)).slides[0]
    for attr in ("path", "xml", "mask"):
        assert _sha(getattr(a, attr)) == _sha(getattr(b, attr))
    assert _sha(tmp_path / "a" / "synth.json") == _sha(tmp_path / "b" / "synth.json")
    manifest = json.loads((tmp_path / "a" / "synth.json").read_text())
    assert manifest["settings"]["world"] == "camelyon"
    assert manifest["world"]["outline"]["sigma"] == PRESETS["camelyon"].outline.sigma
    centre = manifest["slides"][0]["world"]["centre"]["name"]
    assert centre == resolve_centre("auto", 5).name
