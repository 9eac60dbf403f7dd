"""`lymph view`: a real server on 127.0.0.1 (ephemeral port) over `view_world`; tiles, data,
bad ids, traversal attempts, bad tile numbers, a corrupt slide; the static export."""

from __future__ import annotations

import http.client
import io
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lymph.data.errors import ConfigError, OutputError
from lymph.model.view.catalog import ViewConfig
from lymph.model.view.server import make_server
from lymph.model.view.tiles import DeepZoom, TileCache, colormap_lut


@pytest.fixture(scope="module")
def server(view_world: Path) -> Iterator[str]:
    srv = make_server(ViewConfig(slides=view_world / "slides", predictions=view_world / "maps",
                                 port=0, cache_mb=8))
    srv.start()
    srv.site.catalog.froc_done.wait(60)
    yield srv.url
    srv.close()


def _get(url: str, path: str, *, method: str = "GET") -> tuple[int, dict, bytes]:
    """A raw request: the path is sent exactly as given (no client-side normalisation)."""
    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def _data(body: bytes) -> dict:
    """The JSON inside a data script (`window.X = {...};`)."""
    return json.loads(re.search(r"= (\{.*\});\s*$", body.decode(), re.S)[1])


def _image(url: str, path: str) -> np.ndarray:
    status, _, body = _get(url, path)
    assert status == 200, (path, body)
    return np.asarray(Image.open(io.BytesIO(body)))


def test_server_listens_on_loopback_only(server: str) -> None:
    assert server.startswith("http://127.0.0.1:")


def test_page_static_and_slide_list(server: str) -> None:
    status, headers, body = _get(server, "/")
    assert status == 200 and b"static/viewer.js" in body
    assert headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/static/openseadragon.min.js", "/static/viewer.js", "/static/viewer.css",
                 "/static/images/zoomin_rest.png", "/static/OPENSEADRAGON-LICENSE.txt"):
        assert _get(server, path)[0] == 200, path
    status, _, body = _get(server, "/api/slides.json")
    site = json.loads(body)
    rows = {s["id"]: s for s in site["slides"]}
    assert set(rows) == {"tumor_001", "normal_001", "broken"}
    assert rows["tumor_001"]["score"] == 0.97 and rows["tumor_001"]["has_map"]
    froc = rows["tumor_001"]["froc"]  # synth's tumor_001 has 2 lesions; the detection hits one
    assert froc == {"lesions": 2, "lesions_hit": 1, "false_positives": 1, "detections": 2,
                    "missed": 1}
    assert rows["normal_001"]["froc"] is None  # no annotation, no labels: no ground truth
    assert rows["broken"]["error"] and "broken.tif" in rows["broken"]["error"]
    assert _data(_get(server, "/data/site.js")[2])["slides"] == site["slides"]


def test_labels_make_a_normal_slide_scorable(view_world: Path) -> None:
    srv = make_server(ViewConfig(slides=view_world / "slides", predictions=view_world / "maps",
                                 labels=view_world / "slides" / "reference.csv", port=0))
    try:
        srv.site.catalog.froc_done.wait(60)
        rows = {s["id"]: s for s in srv.site.catalog.site()["slides"]}
        assert rows["normal_001"]["status"] == "normal"
        assert rows["normal_001"]["froc"]["false_positives"] == 1
    finally:
        srv.close()


def test_slide_data(server: str, view_world: Path) -> None:
    truth = json.loads((view_world / "truth.json").read_text())
    data = json.loads(_get(server, "/api/slides/tumor_001.json")[2])
    info = data["info"]
    assert (info["width"], info["height"]) == (4096, 3072) and info["mpp"] == pytest.approx(0.243)
    assert info["slide"]["max_level"] == 12 and info["map"]["downsample"] == 16
    assert info["map"]["world_width"] == pytest.approx(256 * 16 / 4096)
    assert data["detections"] == [
        {"p": 0.95, "x": truth["tumor"][0], "y": truth["tumor"][1], "status": "hit"},
        {"p": 0.6, "x": truth["normal"][0], "y": truth["normal"][1], "status": "fp"}]
    (box,) = data["missed_lesions"]  # tumor_001's other lesion, which no detection hit
    assert not (box[0] <= truth["tumor"][0] < box[2] and box[1] <= truth["tumor"][1] < box[3])
    inside = [p for p in data["truth"]["tumor"]
              if all(box[0] <= x <= box[2] and box[1] <= y <= box[3] for x, y in p)]
    assert inside  # the box holds a ground-truth outline
    assert data["froc_pending"] is False
    assert data["truth"]["source"] == "tumor_001.xml" and data["truth"]["tumor"]
    tx, ty = truth["tumor"]
    xs = [p[0] for poly in data["truth"]["tumor"] for p in poly]
    ys = [p[1] for poly in data["truth"]["tumor"] for p in poly]
    assert min(xs) < tx < max(xs) and min(ys) < ty < max(ys)
    assert data["suggestions"][0]["name"] == "label me" and data["suggestions"][0]["score"] == 0.42
    assert _data(_get(server, "/data/slides/tumor_001.js")[2]) == data
    for part in ("info", "detections", "truth", "suggestions"):
        assert json.loads(_get(server, f"/api/slides/tumor_001/{part}.json")[2]) == data[part]
    assert _get(server, "/api/slides/tumor_001/secrets.json")[0] == 404
    normal = json.loads(_get(server, "/api/slides/normal_001.json")[2])
    assert normal["truth"] is None and normal["suggestions"] is None and "map" not in normal["info"]


def test_slide_tiles_match_the_slide(server: str, view_world: Path) -> None:
    import openslide

    status, headers, body = _get(server, "/tiles/tumor_001/slide_files/12/3_2.jpeg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    tile = np.asarray(Image.open(io.BytesIO(body)))
    assert tile.shape == (256, 256, 3)
    with openslide.OpenSlide(str(view_world / "slides" / "tumor_001.tif")) as osr:
        ref = np.asarray(osr.read_region((768, 512), 0, (256, 256)).convert("RGB"))
    assert np.abs(tile.astype(int) - ref).mean() < 4  # JPEG re-encoding only
    assert _image(server, "/tiles/tumor_001/slide_files/11/7_5.jpeg").shape == (256, 256, 3)
    whole = _image(server, "/tiles/tumor_001/slide_files/8/0_0.jpeg")
    assert whole.shape == (192, 256, 3)  # 4096x3072 / 16, one tile
    dzi = _get(server, "/tiles/tumor_001/slide.dzi")[2].decode()
    assert DeepZoom(4096, 3072).dzi("jpeg") == dzi


def test_map_tiles_colour_and_threshold(server: str, view_world: Path) -> None:
    truth = json.loads((view_world / "truth.json").read_text())
    status, headers, body = _get(server, "/tiles/tumor_001/map_t50_files/8/0_0.png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    rgba = np.asarray(Image.open(io.BytesIO(body)))
    assert rgba.shape == (192, 256, 4)
    tx, ty = (v // 16 for v in truth["tumor"])
    nx, ny = (v // 16 for v in truth["normal"])
    assert tuple(rgba[ty, tx]) == tuple(colormap_lut()[255])
    assert rgba[ny, nx, 3] == 0  # transparent outside the tumor
    assert (rgba[..., 3] > 0).mean() == pytest.approx((rgba[..., 3] == 255).mean())


@pytest.mark.parametrize("path, status", [
    ("/tiles/../../etc/passwd", 404),
    ("/tiles/%2e%2e/%2e%2e/etc/passwd", 404),
    ("/static/../../../etc/passwd", 404),
    ("/static/%2e%2e/%2e%2e/cli.py", 404),
    ("/static/..%2f..%2fcli.py", 404),
    ("/static//etc/passwd", 404),
    ("//etc/passwd", 404),
    ("/etc/passwd", 404),
    ("http://127.0.0.1/etc/passwd", 404),
    ("/data/slides/..%2f..%2fetc%2fpasswd.js", 404),
    ("/api/slides/%2Fetc%2Fpasswd.json", 404),
    ("/tiles/%2Fetc%2Fpasswd/slide_files/0/0_0.jpeg", 404),
    ("/tiles/tumor_001/..%2f..%2ftumor_001.xml_files/0/0_0.jpeg", 404),
    ("/data/slides/tumor_001.xml.js", 404),
    ("/api/slides/no_such_slide.json", 404),
    ("/tiles/no_such_slide/slide_files/0/0_0.jpeg", 404),
    ("/tiles/tumor_001/slide_files/13/0_0.jpeg", 404),  # level above the pyramid
    ("/tiles/tumor_001/slide_files/999999/0_0.jpeg", 404),
    ("/tiles/tumor_001/slide_files/12/16_0.jpeg", 404),  # column outside
    ("/tiles/tumor_001/slide_files/12/0_12.jpeg", 404),  # row outside
    ("/tiles/tumor_001/slide_files/12/0_0.png", 404),  # wrong format
    ("/tiles/tumor_001/slide_files/-1/0_0.jpeg", 400),
    ("/tiles/tumor_001/slide_files/12/-1_0.jpeg", 400),
    ("/tiles/tumor_001/slide_files/12/0_-5.jpeg", 400),
    ("/tiles/tumor_001/slide_files/99999999999999999999/0_0.jpeg", 400),
    ("/tiles/tumor_001/slide_files/1e3/0_0.jpeg", 400),
    ("/tiles/tumor_001/slide_files/%201/0_0.jpeg", 400),
    ("/tiles/tumor_001/slide_files/12/0x1_0.jpeg", 400),
    ("/tiles/tumor_001/slide_files/12/%ff_0.jpeg", 400),  # not UTF-8
    ("/tiles/tumor_001/map_t55_files/8/0_0.png", 404),  # threshold not offered
    ("/tiles/tumor_001/map_t50_files/9/0_0.png", 404),
    ("/tiles/normal_001/map_t50_files/0/0_0.png", 404),  # no map
    ("/tiles/broken/slide_files/0/0_0.jpeg", 404),  # the corrupt slide
    ("/tiles/broken/slide.dzi", 404),
])
def test_bad_and_hostile_requests(server: str, path: str, status: int) -> None:
    got, headers, body = _get(server, path)
    assert got == status, (path, body)
    assert headers["Content-Type"].startswith("text/plain")
    assert len(body) < 500 and b"root:" not in body and b"Traceback" not in body


def test_corrupt_slide_is_listed_and_the_server_goes_on(server: str) -> None:
    status, _, body = _get(server, "/api/slides/broken.json")
    assert status == 200 and "broken.tif" in json.loads(body)["info"]["error"]
    _, _, body = _get(server, "/tiles/broken/slide_files/0/0_0.jpeg")
    assert b"broken.tif" in body
    assert _get(server, "/tiles/tumor_001/slide_files/0/0_0.jpeg")[0] == 200


def test_methods_other_than_get_and_head_are_refused(server: str) -> None:
    assert _get(server, "/", method="POST")[0] == 501
    assert _get(server, "/", method="PUT")[0] == 501
    status, headers, body = _get(server, "/api/slides.json", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 0


def test_garbage_on_the_socket_does_not_stop_the_server(server: str) -> None:
    host, port = re.match(r"http://([^:/]+):(\d+)/", server).groups()
    for junk in (b"\x00\xff\xfe garbage\r\n\r\n", b"GET " + b"/a" * 40000 + b" HTTP/1.1\r\n\r\n"):
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(junk)
            s.recv(1024)
    assert _get(server, "/api/slides.json")[0] == 200


def test_tile_cache_is_bounded() -> None:
    cache = TileCache(1000)
    for i in range(50):
        cache.get_or_make(("t", i), lambda: b"x" * 100)
    assert cache.nbytes <= 1000 and len(cache) == 10
    assert cache.get_or_make(("t", 49), lambda: b"other") == b"x" * 100  # most recent kept
    assert cache.get_or_make(("t", 0), lambda: b"new") == b"new"  # oldest dropped
    assert cache.get_or_make(("big",), lambda: b"y" * 5000) == b"y" * 5000
    assert cache.nbytes <= 1000


@pytest.mark.parametrize("kwargs, match", [
    ({"port": 70000}, "--port 70000 is not a TCP port"),
    ({"port": -1}, "--port -1"),
    ({"host": "my host"}, "--host 'my host'"),
    ({"host": ""}, "--host ''"),
    ({"cache_mb": 0}, "--cache-mb 0"),
    ({"workers": 0}, "--workers 0"),
])
def test_bad_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ViewConfig(slides=Path("s"), **kwargs)


def test_missing_inputs_and_busy_port(view_world: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--slides .*nope does not exist"):
        make_server(ViewConfig(slides=tmp_path / "nope", port=0))
    with pytest.raises(ConfigError, match="--predictions .*nope is not a folder"):
        make_server(ViewConfig(slides=view_world / "slides", predictions=tmp_path / "nope",
                               port=0))
    srv = make_server(ViewConfig(slides=view_world / "slides", port=0))
    try:
        port = srv.httpd.server_address[1]
        with pytest.raises(ConfigError, match=f"--port {port} on 127.0.0.1 is in use"):
            make_server(ViewConfig(slides=view_world / "slides", port=port))
    finally:
        srv.close()


def test_export_is_a_complete_static_site(view_world: Path, tmp_path: Path) -> None:
    from lymph.model.view.export import export_site

    out = tmp_path / "site"
    summary = export_site(ViewConfig(slides=view_world / "slides",
                                     predictions=view_world / "maps", export=out, quiet=True))
    dz, mz = DeepZoom(4096, 3072), DeepZoom(256, 192)
    assert summary["tiles"] == 2 * dz.n_tiles() + 10 * mz.n_tiles() and not summary["errors"]
    for rel in ("index.html", "static/viewer.js", "static/openseadragon.min.js",
                "static/images/home_rest.png", "static/OPENSEADRAGON-LICENSE.txt",
                "data/site.js", "data/slides/tumor_001.js", "data/slides/broken.js",
                "tiles/tumor_001/slide.dzi", "tiles/tumor_001/slide_files/12/15_11.jpeg",
                "tiles/tumor_001/map_t00_files/8/0_0.png", "tiles/tumor_001/map_t90.dzi",
                "tiles/normal_001/slide_files/0/0_0.jpeg", "lymph_view.json"):
        assert (out / rel).is_file(), rel
    assert not (out / "tiles" / "broken").exists() and not (out / "tiles/normal_001/map_t50.dzi"
                                                            ).exists()
    site = _data((out / "data" / "site.js").read_bytes())
    assert site["mode"] == "export"
    assert {s["id"]: s["froc"] for s in site["slides"]}["tumor_001"]["lesions_hit"] == 1
    written = {p for p in out.rglob("*") if p.is_file()}
    assert all(out in p.parents for p in written)
    again = export_site(ViewConfig(slides=view_world / "slides", export=out, quiet=True))
    assert again["tiles"] == 2 * dz.n_tiles()  # a lymph view export is rewritten in place


def test_export_refuses_a_foreign_folder(view_world: Path, tmp_path: Path) -> None:
    from lymph.model.view.export import export_site

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="non-empty folder that lymph view did not write"):
        export_site(ViewConfig(slides=view_world / "slides", export=tmp_path, quiet=True))
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_cli_view_help_and_export(view_world: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lymph.cli import main

    result = CliRunner().invoke(main, ["view", "--help"])
    assert result.exit_code == 0 and "ssh -L 8000:127.0.0.1:8000" in result.output
    result = CliRunner().invoke(main, ["view", "--slides", str(view_world / "slides"),
                                       "--port", "99999"])
    assert result.exit_code == 2 and "--port 99999 is not a TCP port" in result.output
    out = tmp_path / "site"
    result = CliRunner().invoke(main, ["view", "--slides", str(view_world / "slides" /
                                                               "normal_001.tif"),
                                       "--export", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "index.html" in result.output and (out / "tiles/normal_001/slide.dzi").is_file()


def test_corrupt_side_files_are_reported_not_fatal(view_world: Path, tmp_path: Path) -> None:
    """A damaged map, detection file, suggestions file and scores.csv: each shows as an error
    where it belongs; the slide itself is still served."""
    import shutil

    maps = tmp_path / "maps"
    shutil.copytree(view_world / "maps", maps)
    (maps / "tumor_001_tumor_map.tif").write_bytes(b"II*\x00garbage")
    (maps / "tumor_001.csv").write_text("0.9,12,not-a-number\n")
    (maps / "tumor_001_suggestions.geojson").write_text('{"type": "Nope"}')
    (maps / "scores.csv").write_bytes(b"\xff\xfe\x00s\x00l")
    srv = make_server(ViewConfig(slides=view_world / "slides", predictions=maps, port=0))
    srv.start()
    try:
        srv.site.catalog.froc_done.wait(60)
        site = json.loads(_get(srv.url, "/api/slides.json")[2])
        assert any("scores.csv" in p for p in site["problems"])
        row = {s["id"]: s for s in site["slides"]}["tumor_001"]
        assert not row["has_map"] and "not-a-number" in row["froc"]["error"]
        data = json.loads(_get(srv.url, "/api/slides/tumor_001.json")[2])
        assert "tumor_001_tumor_map.tif" in data["info"]["map_error"]
        assert "line 1" in data["detections"]["error"]
        assert "not GeoJSON" in data["suggestions"]["error"]
        status, _, body = _get(srv.url, "/tiles/tumor_001/map_t50_files/0/0_0.png")
        assert status == 404 and b"tumor_001_tumor_map.tif" in body
        assert _get(srv.url, "/tiles/tumor_001/slide_files/12/0_0.jpeg")[0] == 200
    finally:
        srv.close()


def test_unicode_and_spaced_names_are_served_by_id(view_world: Path, tmp_path: Path) -> None:
    from urllib.parse import quote

    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / "腫瘍 1.tif").symlink_to((view_world / "slides" / "normal_001.tif").resolve())
    srv = make_server(ViewConfig(slides=slides, port=0))
    srv.start()
    try:
        (row,) = json.loads(_get(srv.url, "/api/slides.json")[2])["slides"]
        assert row["id"] == "腫瘍_1" and row["name"] == "腫瘍 1.tif"
        assert _get(srv.url, f"/api/slides/{quote(row['id'])}.json")[0] == 200
        assert _get(srv.url, f"/tiles/{quote(row['id'])}/slide_files/0/0_0.jpeg")[0] == 200
        assert _get(srv.url, f"/tiles/{quote('腫瘍 1')}/slide_files/0/0_0.jpeg")[0] == 404
    finally:
        srv.close()


def test_deep_zoom_geometry_and_tile_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    from lymph.data.slides import ArraySlide
    from lymph.model.view import tiles
    from lymph.model.view.tiles import TileError, read_tile_pixels

    assert DeepZoom(1, 1).max_level == 0 and DeepZoom(1, 1).grid(0) == (1, 1)
    dz = DeepZoom(1000, 3)
    assert dz.max_level == 10 and dz.level_size(10) == (1000, 3) and dz.level_size(0) == (1, 1)
    assert dz.grid(10) == (4, 1) and dz.region(10, 3, 0) == (768, 0, 1000, 3, 232, 3)
    with pytest.raises(TileError, match="level 11 is outside 0..10"):
        dz.check(11, 0, 0)
    with pytest.raises(TileError, match="tile 4_0 is outside the 4x1 tiles of level 10"):
        dz.check(10, 4, 0)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (600, 1000, 3), dtype=np.uint8)
    slide = ArraySlide(rgb, downsamples=(1, 2, 4))
    dz = DeepZoom(1000, 600)
    assert np.array_equal(read_tile_pixels(slide, dz, 10, 1, 2), rgb[512:600, 256:512])
    half = read_tile_pixels(slide, dz, 9, 1, 0)  # level 1 of the slide, 500 x 300
    assert half.shape == (256, 244, 3)
    assert np.array_equal(half, slide.read_region((512, 0), 1, (244, 256)))
    eighth = read_tile_pixels(slide, dz, 7, 0, 0)  # 125 x 75 from level 2 (250 x 150)
    assert eighth.shape == (75, 125, 3)
    monkeypatch.setattr(tiles, "MAX_READ_PIXELS", 100 * 100)  # a slide without levels
    with pytest.raises(TileError, match="no pyramid level near downsample 8; zoom in"):
        read_tile_pixels(slide, dz, 7, 0, 0)


def test_suggestions_from_lymph_suggest_show_only_boxes_still_suggested(
        view_world: Path, tmp_path: Path) -> None:
    """`lymph suggest --out next/` writes S_suggestions.geojson with the slide's own outlines and
    reviewed boxes beside the `Suggested` ones; `--suggestions next/` shows only the latter."""
    from lymph.data.annotations import read_annotations
    from lymph.data.suggestions import suggestions_geojson
    from lymph.model.suggest import Suggestion
    from lymph.model.view.catalog import Catalog

    boxes = [Suggestion(slide="tumor_001", kind="uncertain", score=0.9 - 0.1 * r, x0=100 * r,
                        y0=50, x1=100 * r + 80, y1=130, mean_probability=0.5,
                        uncertainty=0.9, rank=r) for r in (1, 2)]
    existing = read_annotations(view_world / "slides" / "tumor_001.xml")
    assert existing.tumor  # carried into the file as Tumor outlines
    nxt = tmp_path / "next"
    nxt.mkdir()
    (nxt / "tumor_001_suggestions.geojson").write_text(json.dumps(
        suggestions_geojson(boxes, existing=existing, slide="tumor_001")))
    catalog = Catalog(ViewConfig(slides=view_world / "slides", suggestions=nxt, port=0))
    shown = catalog.suggestions(catalog.entries["tumor_001"])
    assert [s["score"] for s in shown] == [0.8, 0.7]
    assert shown[0]["name"].startswith("Suggested 1")


def test_suggestions_folder_must_exist(view_world: Path, tmp_path: Path) -> None:
    config = ViewConfig(slides=view_world / "slides", suggestions=tmp_path / "nope", port=0)
    with pytest.raises(ConfigError, match="--suggestions .*nope is not a folder"):
        config.check_paths()


@pytest.mark.parametrize("text, match", [
    ('{"settings": {"map_downsample": 16', "cannot be read"),
    ('{"settings": {}}', "has no settings.map_downsample"),
    ('{"settings": {"map_downsample": -3}}', "map_downsample -3.0 is not a positive number"),
])
def test_damaged_predict_json_is_a_warning_not_a_silent_fallback(
        view_world: Path, tmp_path: Path, text: str, match: str) -> None:
    """The map's downsample comes from S_predict.json; when that file is damaged the map is
    still placed (at the nominal ratio), and the page and stderr both say which file and why."""
    import shutil

    from click.testing import CliRunner

    from lymph.cli import main
    from lymph.model.view.catalog import Catalog

    maps = tmp_path / "maps"
    shutil.copytree(view_world / "maps", maps)
    (maps / "tumor_001_predict.json").write_text(text)
    catalog = Catalog(ViewConfig(slides=view_world / "slides", predictions=maps))
    try:
        entry = catalog.entries["tumor_001"]
        assert entry.info["map_downsample"] == 16
        problem = next(p for p in catalog.problems if "tumor_001_predict.json" in p)
        assert match in problem and "rerun `lymph predict`" in problem
    finally:
        catalog.close()
    result = CliRunner().invoke(main, ["view", "--slides", str(view_world / "slides"),
                                       "--predictions", str(maps), "--export",
                                       str(tmp_path / "site"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert re.search(r"warning: .*tumor_001_predict\.json: " + re.escape(match), result.output)
