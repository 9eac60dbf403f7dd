from __future__ import annotations

import json
import re
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lymph.cli import main
from lymph.data.annotations import Annotations, read_annotations
from lymph.data.errors import ConfigError, OutputError
from lymph.data.partial import box_polygon
from lymph.data.pyramid import write_pyramidal_tiff
from lymph.data.tissue import summed_area, window_sums
from lymph.model.suggest import (
    SuggestConfig,
    find_maps,
    pick_boxes,
    run,
    uncertainty_lut,
)

H, W, DS = 400, 600, 16.0


def _prob_map(kind: str) -> np.ndarray:
    """uint8 map on an elliptic tissue: a lesion with a soft edge (p ~ 0.5 on a ring) and a
    faint spot, or (kind 'spot') one strong spot at (x 450, y 300)."""
    yy, xx = np.mgrid[0:H, 0:W]
    tissue = ((yy - 200) / 180) ** 2 + ((xx - 300) / 280) ** 2 < 1
    if kind == "lesion":
        p = 1 / (1 + np.exp(-(60 - np.hypot(yy - 150, xx - 200)) / 12))
        p = np.maximum(p, 0.5 * np.exp(-np.hypot(yy - 300, xx - 450) ** 2 / 800))
    else:
        p = 0.95 * np.exp(-np.hypot(yy - 300, xx - 450) ** 2 / 800)
    return np.where(tissue, np.clip(np.round(p * 255), 1, 255), 0).astype(np.uint8)


def _write_map(folder: Path, name: str, m: np.ndarray, *, mpp: float | None = 0.25) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}_tumor_map.tif"
    write_pyramidal_tiff(path, lambda i: m[i * 256:(i + 1) * 256], width=m.shape[1],
                         height=m.shape[0], channels=1, tile=256, compression="deflate",
                         mpp=None if mpp is None else mpp * DS, min_size=128)
    (folder / f"{name}_predict.json").write_text(json.dumps(
        {"slide": None, "mpp": mpp, "settings": {"map_downsample": DS}}))
    return path


@pytest.fixture
def maps(tmp_path: Path) -> Path:
    folder = tmp_path / "maps"
    _write_map(folder, "tumor_009", _prob_map("lesion"))
    _write_map(folder, "normal_002", _prob_map("spot"))
    return folder


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_window_sum_and_greedy_picks_never_overlap():
    rng = np.random.default_rng(0)
    a = rng.random((30, 40))
    ws = window_sums(summed_area(a), size=4)
    assert ws.shape == (27, 37)
    assert ws[5, 7] == pytest.approx(a[5:9, 7:11].sum())
    picks = pick_boxes(ws, nb=4, cap=12)
    assert len(picks) == 12
    assert picks[0] == np.unravel_index(np.argmax(ws), ws.shape)
    for i, (r, c) in enumerate(picks):
        for r2, c2 in picks[:i]:
            assert abs(r - r2) >= 4 or abs(c - c2) >= 4
    assert pick_boxes(np.zeros((5, 5)), nb=2, cap=3) == []  # nothing above min_score


def test_uncertainty_luts():
    e, m = uncertainty_lut("entropy"), uncertainty_lut("margin")
    assert e[0] == e[255] == 0 and m[0] == m[255] == 0
    assert e.max() == pytest.approx(1.0, abs=1e-4) and abs(int(e.argmax()) - 127.5) <= 0.5
    assert (e >= m - 1e-12).all()  # entropy >= margin score on [0, 1]


def test_suggest_ranks_spreads_and_labels_kinds(maps, tmp_path):
    out = tmp_path / "next"
    s = run(SuggestConfig(out=out, maps=maps, k=6, size=1200, per_slide=4))
    assert [x.rank for x in s.suggestions] == list(range(1, 7))
    assert [x.score for x in s.suggestions] == sorted((x.score for x in s.suggestions),
                                                      reverse=True)
    by_slide: dict[str, list] = {}
    for x in s.suggestions:
        by_slide.setdefault(x.slide, []).append(x)
        assert x.x1 - x.x0 == x.y1 - x.y0 == 1216  # 1200 px on the 16 px map grid
    assert all(len(v) <= 4 for v in by_slide.values()) and len(by_slide) == 2
    for v in by_slide.values():  # --spacing 1: a box side of space between any two boxes
        for i, a in enumerate(v):
            for b in v[:i]:
                side = a.x1 - a.x0
                assert (b.x0 >= a.x1 + side or a.x0 >= b.x1 + side or b.y0 >= a.y1 + side
                        or a.y0 >= b.y1 + side)
    normal = by_slide["normal_002"]
    assert {x.kind for x in normal} == {"false_positive"}
    best = normal[0]  # the strong spot, map (450, 300) = level 0 (7200, 4800)
    assert best.x0 <= 7200 <= best.x1 and best.y0 <= 4800 <= best.y1
    tumor = by_slide["tumor_009"]
    assert {x.kind for x in tumor} == {"uncertain"}
    # the most uncertain box straddles the lesion's edge (radius 60 map px around (200, 150))
    for x in tumor[:1]:
        cx, cy = (x.x0 + x.x1) / 2 / DS, (x.y0 + x.y1) / 2 / DS
        assert 20 < np.hypot(cx - 200, cy - 150) < 110
    rows = (out / "suggestions.csv").read_text().splitlines()
    assert rows[0].startswith("rank,slide,kind,score") and len(rows) == 7
    assert "1216" in rows[1] and "304.0" in rows[1]  # size in px and microns
    assert "rank  slide" in s.table()


def _tumor_feature(ring: list[list[float]], cls: str = "Tumor") -> dict:
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        ring + ring[:1]]}, "properties": {"classification": {"name": cls}}}


def test_exports_open_back_and_reviewed_boxes_become_regions(maps, tmp_path):
    out = tmp_path / "next"
    ring = [[2800, 1900], [3600, 1900], [3600, 2900], [2800, 2900]]
    region = [[2000, 1000], [4000, 1000], [4000, 3000], [2000, 3000]]
    ann_dir = tmp_path / "ann"
    ann_dir.mkdir()
    (ann_dir / "tumor_009.geojson").write_text(json.dumps(
        [_tumor_feature(ring), _tumor_feature(region, "Reviewed")]))  # partially annotated
    s = run(SuggestConfig(out=out, maps=maps, k=4, size=1200, annotations=ann_dir))
    mine = [x for x in s.suggestions if x.slide == "tumor_009"]
    for ext in ("geojson", "xml"):
        path = out / f"tumor_009_suggestions.{ext}"
        with pytest.warns(UserWarning, match=f"{len(mine)} `Suggested` box"):
            back = read_annotations(path)
        assert len(back.tumor) == 1 and len(back.reviewed) == 1  # the outlines came along
        np.testing.assert_allclose(back.tumor[0].points_level0, ring)
        assert back.reviewed[0].bbox_level0 == (2000, 1000, 4000, 3000)
        text = path.read_text()
        reviewed = text.replace('"name": "Suggested"', '"name": "Reviewed"').replace(
            'PartOfGroup="Suggested"', 'PartOfGroup="Reviewed"')
        edited = tmp_path / f"tumor_009_edited.{ext}"
        edited.write_text(reviewed)
        ann = read_annotations(edited)
        boxes = sorted(p.bbox_level0 for p in ann.reviewed)
        assert boxes == sorted([(x.x0, x.y0, x.x1, x.y1) for x in mine]
                               + [(2000, 1000, 4000, 3000)])
    png = out / "tumor_009_suggestions.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_exhaustive_annotation_stays_exhaustive_once_boxes_are_reviewed(maps, tmp_path):
    """Outlines without reviewed regions are exhaustive; the export adds a whole-slide
    reviewed region so that marking a box reviewed later adds to the slide, never shrinks
    its labels to the box."""
    ann_dir = tmp_path / "ann"
    ann_dir.mkdir()
    ring = [[2800, 1900], [3600, 1900], [3600, 2900], [2800, 2900]]
    (ann_dir / "tumor_009.geojson").write_text(json.dumps([_tumor_feature(ring)]))
    run(SuggestConfig(out=tmp_path / "next", maps=maps, k=4, size=1200, annotations=ann_dir))
    with pytest.warns(UserWarning, match="`Suggested` box"):
        back = read_annotations(tmp_path / "next" / "tumor_009_suggestions.xml")
    assert [p.bbox_level0 for p in back.reviewed] == [(0, 0, W * DS, H * DS)]


def test_exports_follow_the_fixture_conventions(maps, tmp_path, fixtures_dir):
    out = tmp_path / "next"
    run(SuggestConfig(out=out, maps=maps, k=3, size=1200))
    fx = ET.parse(fixtures_dir / "annotations" / "camelyon17-asap-xml" /
                  "patient_004_node_4.xml").getroot()
    mine = ET.parse(out / "tumor_009_suggestions.xml").getroot()
    for tag in ("Annotation", "Coordinate", "Group"):
        want = set(next(fx.iter(tag)).attrib)
        assert all(set(e.attrib) == want for e in mine.iter(tag)), tag
    assert [c.tag for c in mine] == [c.tag for c in fx] == ["Annotations", "AnnotationGroups"]
    assert {g.get("Name") for g in mine.iter("Group")} == {"Suggested"}
    assert all(a.get("Name").startswith("Suggested ") for a in mine.iter("Annotation"))
    gj = json.loads((out / "tumor_009_suggestions.geojson").read_text())
    fx_feats = json.loads((fixtures_dir / "annotations" / "dlup" / "qupath05.geojson"
                           ).read_text())["features"]
    assert gj["type"] == "FeatureCollection"
    for f in gj["features"]:
        assert set(fx_feats[0]) <= set(f) and f["geometry"]["type"] == "Polygon"
        ring = f["geometry"]["coordinates"][0]
        assert ring[0] == ring[-1] and len(ring) == 5
        props = f["properties"]
        assert props["objectType"] == "annotation"
        assert props["classification"]["name"] == "Suggested"
        assert props["rank"] == props["measurements"]["rank"] >= 1


def test_misses_near_outlines_and_reviewed_regions_are_skipped(tmp_path):
    maps = tmp_path / "maps"
    _write_map(maps, "tumor_010", _prob_map("spot"))  # a strong spot at level 0 (7200, 4800)
    ann_dir = tmp_path / "ann"
    ann_dir.mkdir()
    near = [[5600, 4300], [6300, 4300], [6300, 5300], [5600, 5300]]  # outline next to it
    feats = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        near + near[:1]]}, "properties": {"classification": {"name": "Tumor"}}}]
    (ann_dir / "tumor_010.geojson").write_text(json.dumps(feats))
    s = run(SuggestConfig(out=tmp_path / "a", maps=maps, k=3, size=1200,
                          annotations=ann_dir))
    assert s.suggestions[0].kind == "miss"
    x = s.suggestions[0]
    assert x.x0 <= 7200 <= x.x1 and x.y0 <= 4800 <= x.y1
    # the same spot inside a reviewed region is not proposed again
    region = [[6000, 3600], [8400, 3600], [8400, 6000], [6000, 6000]]
    feats.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        region + region[:1]]}, "properties": {"classification": {"name": "Reviewed"}}})
    (ann_dir / "tumor_010.geojson").write_text(json.dumps(feats))
    s2 = run(SuggestConfig(out=tmp_path / "b", maps=maps, k=3, size=1200,
                           annotations=ann_dir))
    assert (x.x0, x.y0) not in {(y.x0, y.y0) for y in s2.suggestions}
    for y in s2.suggestions:  # at most half inside, judged at block centres (1/4 box)
        inside = max(0, min(y.x1, 8400) - max(y.x0, 6000)) * max(
            0, min(y.y1, 6000) - max(y.y0, 3600))
        assert inside <= 0.75 * (y.x1 - y.x0) * (y.y1 - y.y0)
        assert y.kind != "miss"


def test_spacing_zero_allows_touching_never_overlap(maps, tmp_path):
    s = run(SuggestConfig(out=tmp_path / "o", maps=maps, k=8, size=1200, per_slide=8,
                          spacing=0))
    tumor = [x for x in s.suggestions if x.slide == "tumor_009"]
    assert len(tumor) >= 4
    for i, a in enumerate(tumor):
        assert not any(_overlap(a, b) for b in tumor[:i])
    centres = [((x.x0 + x.x1) / 2 / DS, (x.y0 + x.y1) / 2 / DS) for x in tumor[:3]]
    assert all(20 < np.hypot(cx - 200, cy - 150) < 110 for cx, cy in centres)  # ring the edge


def test_random_strategy_same_area_seeded(maps, tmp_path):
    a = run(SuggestConfig(out=tmp_path / "a", maps=maps, k=5, size=1200, per_slide=5,
                          strategy="random", seed=3))
    b = run(SuggestConfig(out=tmp_path / "b", maps=maps, k=5, size=1200, per_slide=5,
                          strategy="random", seed=3))
    c = run(SuggestConfig(out=tmp_path / "c", maps=maps, k=5, size=1200, per_slide=5,
                          strategy="random", seed=4))
    key = [(x.slide, x.x0, x.y0) for x in a.suggestions]
    assert key == [(x.slide, x.x0, x.y0) for x in b.suggestions]
    assert key != [(x.slide, x.x0, x.y0) for x in c.suggestions]
    assert len(a.suggestions) == 5 and {x.kind for x in a.suggestions} == {"random"}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({}, "either --maps"),
    ({"maps": "m", "checkpoint": "c.pt"}, "either --maps"),
    ({"checkpoint": "c.pt"}, "needs --slides"),
    ({"maps": "o"}, "is the --maps folder: pick another --out"),
    ({"maps": "m", "k": 0}, "k 0 out of range"),
    ({"maps": "m", "size": 4}, "size 4 out of range"),
    ({"maps": "m", "size_um": 0.1}, "size_um 0.1 out of range"),
    ({"maps": "m", "per_slide": 0}, "per_slide 0 must be >= 1"),
    ({"maps": "m", "spacing": -1}, "spacing -1 out of range"),
    ({"maps": "m", "score": "gini"}, "score 'gini' is not one of"),
    ({"maps": "m", "strategy": "coreset"}, "strategy 'coreset' is not one of"),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SuggestConfig(out=Path("o"), **kwargs)


def test_folder_without_maps_and_a_damaged_map(tmp_path, maps):
    with pytest.raises(ConfigError, match="no \\*_tumor_map.tif files; run `lymph predict"):
        run(SuggestConfig(out=tmp_path / "o", maps=tmp_path))
    (maps / "broken_tumor_map.tif").write_bytes(b"II*\x00garbage")
    with pytest.warns(UserWarning, match="broken_predict.json: missing; map broken"):
        s = run(SuggestConfig(out=tmp_path / "o", maps=maps, k=2))
    assert len(s.suggestions) == 2
    (source, error), = s.failed
    assert source.endswith("broken_tumor_map.tif") and "cannot open" in error


def test_edited_suggestions_are_not_overwritten(maps, tmp_path):
    out = tmp_path / "next"
    run(SuggestConfig(out=out, maps=maps, k=2, per_slide=1))
    f = out / "tumor_009_suggestions.geojson"
    f.write_text(f.read_text().replace('"Suggested"', '"Reviewed"'))
    with pytest.raises(OutputError, match="tumor_009_suggestions.geojson exists and lymph did"):
        run(SuggestConfig(out=out, maps=maps, k=2, per_slide=1))
    run(SuggestConfig(out=out, maps=maps, k=2, per_slide=1, force=True))


def test_cli_suggest(maps, tmp_path):
    r = CliRunner().invoke(main, ["suggest", "--maps", str(maps), "--out",
                                  str(tmp_path / "o"), "-k", "3", "--size-um", "300"])
    assert r.exit_code == 0, r.output
    assert "rank  slide" in r.output and "3 region(s) from 2 map(s)" in r.output
    assert "(1216 px = 304 um)" in r.output  # 300 um at 0.25 um/px, on the 16 px map grid
    r = CliRunner().invoke(main, ["suggest", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "either --maps" in r.output


def test_box_polygon_and_annotations_roundtrip():
    p = box_polygon(0, 0, 10, 20)
    assert p.bbox_level0 == (0, 0, 10, 20) and p.area_level0 == 200
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not Annotations(reviewed=(p,))  # reviewed only: no tumor


def test_labels_csv_makes_false_positives_and_extract_reads_reviewed_suggestions(tmp_path):
    """A slide labelled normal in the CSV (not by name) gets false-positive boxes; the boxes,
    marked reviewed in place, are what `find_annotations` then returns for the slide."""
    from lymph.data.annotations import find_annotations

    maps = tmp_path / "maps"
    _write_map(maps, "case_7", _prob_map("spot"))
    labels = tmp_path / "labels.csv"
    labels.write_text("slide,label\ncase_7,normal\n")
    out = tmp_path / "next"
    s = run(SuggestConfig(out=out, maps=maps, k=2, labels=labels))
    assert {x.kind for x in s.suggestions} == {"false_positive"}
    s2 = run(SuggestConfig(out=tmp_path / "n2", maps=maps, k=2))
    assert {x.kind for x in s2.suggestions} == {"uncertain"}
    f = out / "case_7_suggestions.xml"
    f.write_text(f.read_text().replace('PartOfGroup="Suggested"', 'PartOfGroup="Reviewed"', 1))
    found = find_annotations(tmp_path / "slides" / "case_7.tif", annotations_dir=out)
    assert found == f
    with pytest.warns(UserWarning, match="1 `Suggested` box"):
        ann = read_annotations(found)
    assert len(ann.reviewed) == 1 and not ann.tumor


@pytest.mark.slow
def test_from_a_checkpoint_and_slides(tmp_path):
    """--checkpoint + --slides: predict runs first into OUT/maps, the overview uses the
    slide's thumbnail, and the random strategy the slide's tissue mask."""
    import tifffile
    import torch

    from lymph.model.checkpoint import save_checkpoint
    from lymph.model.unet import UNet, UNetConfig

    slides = tmp_path / "slides"
    slides.mkdir()
    rgb = np.full((1024, 1536, 3), 245, np.uint8)
    rgb[128:900, 128:1400] = (200, 120, 180)
    rgb[300:600, 300:700] = (90, 30, 120)
    with tifffile.TiffWriter(slides / "case_1.tif") as tif:
        for i, d in enumerate((1, 2, 4)):
            tif.write(rgb[::d, ::d], tile=(256, 256), compression="deflate", photometric="rgb",
                      subfiletype=1 if i else 0, resolution=(1e4 / (0.5 * d),) * 2,
                      resolutionunit="CENTIMETER")
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, model=UNet(UNetConfig(base_width=4, depth=2, norm="group")),
                    config={"store": {"patch_size": 60, "level": 1}, "stage": "finetune"})
    out = tmp_path / "next"
    s = run(SuggestConfig(out=out, checkpoint=ckpt, slides=slides, k=3, size=256))
    assert (out / "maps" / "case_1_tumor_map.tif").is_file()
    assert 1 <= len(s.suggestions) <= 3 and not s.failed
    from PIL import Image

    png = Image.open(out / "case_1_suggestions.png")
    assert png.size[0] > png.size[1] > 100  # the slide's 3:2 thumbnail, not the map's
    r = run(SuggestConfig(out=tmp_path / "rand", maps=out / "maps", slides=slides, k=3,
                          size=256, strategy="random"))
    for x in r.suggestions:  # on the tissue box (128..1400 x 128..900), at least half
        ix = max(0, min(x.x1, 1400) - max(x.x0, 128))
        iy = max(0, min(x.y1, 900) - max(x.y0, 128))
        assert ix * iy >= 0.4 * (x.x1 - x.x0) * (x.y1 - x.y0)


def test_hostile_maps_and_metadata(tmp_path):
    maps = tmp_path / "maps"
    _write_map(maps, "blank", np.zeros((H, W), np.uint8))  # glass, or a model sure of nothing
    _write_map(maps, "tiny", _prob_map("lesion")[:40, :40])  # smaller than one box
    _write_map(maps, "odd", _prob_map("lesion"))
    (maps / "odd_predict.json").write_text(json.dumps(
        {"slide": 3, "mpp": -1, "settings": {"map_downsample": 0}}))
    with pytest.warns(UserWarning, match="odd_predict.json: unreadable or implausible "
                      r"\(ValueError: map_downsample 0"):
        s = run(SuggestConfig(out=tmp_path / "o", maps=maps, k=5, size=1200))
    assert {x.slide for x in s.suggestions} == {"odd"} and not s.failed
    assert not (tmp_path / "o" / "blank_suggestions.xml").exists()
    assert len((tmp_path / "o" / "suggestions.csv").read_text().splitlines()) == 1 + len(
        s.suggestions)
    for meta, why in (({"slide": None, "mpq": 0.5}, "KeyError: 'mpp'"),  # a flipped byte
                      ({"mpp": 0.5}, "KeyError: 'slide'"),
                      ({"slide": None, "mpp": 50.0}, "ValueError: mpp 50.0")):
        (maps / "odd_predict.json").write_text(json.dumps({**meta, "settings": {
            "map_downsample": 16}}))
        with pytest.warns(UserWarning, match=re.escape(f"implausible ({why}")):
            find_maps(maps)
    (maps / "odd_predict.json").write_text(json.dumps({"slide": None, "mpp": None, "settings": {
        "map_downsample": 8}}))  # a slide without an mpp: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert {m.name: (m.downsample, m.mpp) for m in find_maps(maps)}["odd"] == (8.0, None)
    (maps / "odd_predict.json").write_text("[1, 2]")
    with pytest.warns(UserWarning, match="odd_predict.json"):
        s2 = run(SuggestConfig(out=tmp_path / "p", maps=maps, k=2, size_um=300))
    assert not s2.suggestions  # blank: nothing uncertain; tiny: no box fits
    (source, error), = s2.failed  # odd: no mpp, so no size in microns
    assert source.endswith("odd_tumor_map.tif") and "pixels with --size" in error
