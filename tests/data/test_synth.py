from __future__ import annotations

import csv
import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import openslide
import pytest
from click.testing import CliRunner
from matplotlib.path import Path as MplPath
from scipy import ndimage

from lymph.cli import main
from lymph.data.errors import ConfigError
from lymph.data.synth import (
    SlidePlan,
    SynthSlide,
    _best_balanced_accuracy,
    colour_separability,
    lesion_kind,
    synth_slides,
    tissue_fraction,
)

SIZE = (4096, 3072)


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


@pytest.fixture(scope="module")
def colour_world(tmp_path_factory: pytest.TempPathFactory) -> list[SynthSlide]:
    """3 tumor + 1 normal slides, seed 0: enough tumor patches to measure colour separability."""
    out = tmp_path_factory.mktemp("colour_world")
    return synth_slides(out, n_tumor=3, n_normal=1, size=SIZE, seed=0)


def test_synth_world_slides_open_with_levels_and_mpp(synth_world: Path) -> None:
    names = sorted(p.name for p in synth_world.iterdir())
    assert names == [
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


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=128)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m = np.cumsum(hist * centres)
    with np.errstate(all="ignore"):
        between = (m[-1] * w0 / w0[-1] - m) ** 2 / (w0 * w1)
    return float(centres[np.nanargmax(between)])


def test_tumor_nuclei_are_larger_than_lymphocytes(colour_world: list[SynthSlide]) -> None:
    """Morphology carries the label: nuclear blobs (Otsu on the blurred red channel, where
    hematoxylin absorbs) are much bigger in tumor patches than in non-tumor tissue."""
    medians: dict[bool, list[float]] = {True: [], False: []}
    for s in colour_world[:3]:
        img = np.asarray(openslide.OpenSlide(s.path).read_region((0, 0), 0, SIZE))[..., :3]
        gt = np.asarray(openslide.OpenSlide(s.mask).read_region((0, 0), 0, SIZE))[..., 0] > 127
        _nuclear_blob_medians(img, gt, medians)
    assert len(medians[True]) >= 5 and len(medians[False]) >= 5
    assert np.median(medians[True]) > 2 * np.median(medians[False])


def _nuclear_blob_medians(
    img: np.ndarray, gt: np.ndarray, medians: dict[bool, list[float]]
) -> None:
    for y in range(0, SIZE[1] - 300, 300):
        for x in range(0, SIZE[0] - 300, 300):
            rgb = img[y : y + 300, x : x + 300]
            frac = gt[y : y + 300, x : x + 300].mean()
            if tissue_fraction(rgb) < 0.9 or 0 < frac < 0.9:
                continue
            red = ndimage.gaussian_filter(rgb[..., 0].astype(float), 2)
            nuclei = ndimage.binary_opening(
                ndimage.binary_fill_holes(red < _otsu(red)), iterations=3
            )
            lab, n = ndimage.label(nuclei)
            if n:
                sizes = ndimage.sum_labels(nuclei, lab, np.arange(1, n + 1))
                medians[bool(frac >= 0.9)].append(float(np.median(sizes)))


def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path) -> None:
    kw = {"n_tumor": 1, "n_normal": 0, "size": (1024, 768)}
    a = synth_slides(tmp_path / "a", seed=5, **kw)[0]
    b = synth_slides(tmp_path / "b", seed=5, **kw)[0]
    c = synth_slides(tmp_path / "c", seed=6, **kw)[0]
    for attr in ("path", "xml", "mask"):
        assert _sha(getattr(a, attr)) == _sha(getattr(b, attr))
    assert _sha(a.path) != _sha(c.path)
    assert _sha(a.xml) != _sha(c.xml)


def test_tiles_do_not_depend_on_row_order() -> None:
    def plan() -> SlidePlan:
        return SlidePlan(name="t", status="tumor", width=1024, height=800, mpp=0.243, seed=3,
                         index=1)

    forward = [plan().image_row(i) for i in range(4)]
    p = plan()
    backward = [p.image_row(i) for i in reversed(range(4))][::-1]
    for f, b in zip(forward, backward, strict=True):
        assert np.array_equal(f, b)
    assert forward[3].shape == (800 - 768, 1024, 3)


def test_svs_format_is_aperio_with_mpp_and_associated_images(tmp_path: Path) -> None:
    s = synth_slides(tmp_path, n_tumor=1, n_normal=0, size=(2304, 1024), fmt="svs", mpp=0.25)[0]
    assert s.path.name == "tumor_001.svs"
    o = openslide.OpenSlide(s.path)
    assert o.properties["openslide.vendor"] == "aperio"
    assert float(o.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    assert o.properties["openslide.objective-power"] == "40"
    assert o.level_dimensions == ((2304, 1024), (576, 256))
    assert {"thumbnail", "label", "macro"} <= set(o.associated_images)
    assert openslide.OpenSlide(s.mask).level_dimensions[0] == (2304, 1024)


@pytest.mark.parametrize("seed", range(6))
def test_every_small_tumor_slide_has_tumor(seed: int) -> None:
    p = SlidePlan(name="t", status="tumor", width=4096, height=3072, mpp=0.243, seed=seed,
                  index=1)
    assert p.lesions
    area_level0 = p.tumor_mask(0, 0, 512, 384, downsample=8).sum() * 64
    assert area_level0 > 300 * 300, "room for at least one whole tumor patch"


def test_full_size_slides_have_camelyon_lesion_classes_and_holes() -> None:
    kinds: set[str] = set()
    holes = 0
    for i in range(1, 6):
        p = SlidePlan(name="t", status="tumor", width=100_000, height=100_000, mpp=0.243,
                      seed=0, index=i)
        for les in p.lesions:
            assert les.kind == lesion_kind(les.diameter_um)
            kinds.add(les.kind)
            holes += len(les.holes)
    assert kinds == {"Macro", "Micro", "ITC"}
    assert holes > 0
    assert lesion_kind(2500) == "Macro" and lesion_kind(500) == "Micro"
    assert lesion_kind(199) == "ITC"


def test_best_balanced_accuracy() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    assert _best_balanced_accuracy(np.array([1, 2, 3, 4, 5, 6.0]), y) == 1.0
    assert _best_balanced_accuracy(np.array([6, 5, 4, 3, 2, 1.0]), y) == 1.0  # either direction
    assert _best_balanced_accuracy(np.ones(6), y) == 0.5
    with pytest.raises(ValueError, match="need both tumor and non-tumor"):
        _best_balanced_accuracy(np.ones(3), np.ones(3))


def test_mean_colour_does_not_separate_tumor(colour_world: list[SynthSlide]) -> None:
    result = colour_separability(colour_world)
    assert result["n_tumor"] >= 20 and result["n_non_tumor"] >= 100
    for feature, bacc in result["balanced_accuracy"].items():
        assert bacc <= 0.75, f"mean {feature} separates tumor at {bacc:.3f} balanced accuracy"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": (0, 3072)}, "smaller than one 256 px tile"),
        ({"size": (255, 3072)}, "smaller than one 256 px tile"),
        ({"n_tumor": 0, "n_normal": 0}, "nothing to make"),
        ({"n_tumor": -1}, "slide counts must be >= 0"),
        ({"fmt": "ndpi"}, "format must be one of"),
        ({"mpp": 0.0}, "mpp 0.0 is implausible"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        synth_slides(tmp_path, **{"size": (512, 512), **kwargs})


def test_unwritable_output_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot create output folder .*a_file/out"):
        synth_slides(blocker / "out", size=(512, 512))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--size", "0x3072"], "zero or negative side"),
        (["--size", "200x3072"], "smaller than one 256 px tile"),
        (["--size", "big"], "is not WIDTHxHEIGHT"),
        (["--tumor", "0", "--normal", "0"], "nothing to make"),
        (["--format", "png"], "'png' is not one of"),
        (["--prefix", "pre/"], "may hold only letters, digits"),
        (["--workers", "2"], "No such option"),  # threads are --threads
    ],
)
def test_cli_bad_parameters(tmp_path: Path, args: list[str], match: str) -> None:
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    assert match in result.output


def test_cli_unwritable_out(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = CliRunner().invoke(main, ["synth", "--out", str(blocker / "o"), "--size", "512x512"])
    assert result.exit_code == 2
    assert "cannot write into" in result.output and "--out" in result.output


def test_cli_makes_slides_and_prints_a_table(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["synth", "--out", str(tmp_path), "--tumor", "1", "--normal", "1", "--size", "768x512",
         "--seed", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "tumor_001" in result.output and "normal_001" in result.output
    assert "wrote 2 slides" in result.output
    assert openslide.OpenSlide(tmp_path / "tumor_001.tif").dimensions == (768, 512)


def test_prefix_names_every_slide_and_file(tmp_path: Path) -> None:
    """--prefix keeps two worlds' ids apart (a pretraining world's tumor_001 looked like a
    labeled slide in results.csv); the pixels do not depend on the name."""
    import tifffile

    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "p"), "--tumor", "1",
                                       "--normal", "0", "--size", "768x512", "--prefix", "pre_",
                                       "--threads", "1"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert names == ["pre_tumor_001.tif", "pre_tumor_001.xml", "pre_tumor_001_mask.tif",
                     "reference.csv", "synth.json"]
    assert (tmp_path / "p" / "reference.csv").read_text().startswith("pre_tumor_001,Tumor")
    synth_slides(tmp_path / "q", n_tumor=1, n_normal=0, size=(768, 512))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "p" / "pre_tumor_001.tif"),
                                  tifffile.imread(tmp_path / "q" / "tumor_001.tif"))
