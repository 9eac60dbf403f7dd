"""`lymph view` in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`,
installed by `make test` when missing and run as root) loads the viewer for a synthetic slide,
zooms in with the mouse wheel over the tumor, toggles the tumor map off and on, and the
screenshots show the map's colour over the tumor and the slide elsewhere.

Skips (with the reason) only where no browser can be had; under CI=true it fails instead.
About 6-8 s on this 2-core machine: kept in the default run, since CI must exercise it."""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lymph.model.view.catalog import ViewConfig
from lymph.model.view.server import make_server
from lymph.model.view.tiles import colormap_lut

WINDOW = (1280, 800)


def _no_browser(reason: str) -> None:
    message = (f"{reason}; install them with `apt-get install -y chromium chromium-driver` "
               "(`make test` does it when run as root)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the browser test cannot run: {message}")
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _no_browser("selenium is not installed (pip install -e '.[dev]')")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        _no_browser("no chromium / chromedriver on PATH")
    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--force-device-scale-factor=1", f"--window-size={WINDOW[0]},{WINDOW[1]}",
                "--hide-scrollbars", "--no-first-run"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=driver_path))
    driver.set_window_size(*WINDOW)
    yield driver
    driver.quit()


def _wait(driver: object, script: str, *, timeout: float = 30.0) -> object:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(script)  # type: ignore[attr-defined]
        if value:
            return value
        time.sleep(0.05)
    logs = driver.execute_script("return document.body.innerText")  # type: ignore
    raise AssertionError(f"timed out waiting for {script!r}; page text: {logs[:500]!r}")


def _ready(driver: object) -> None:
    _wait(driver, "return window.lymphView && window.lymphView.ready()")
    time.sleep(0.2)  # one more frame drawn after the last tile
    _wait(driver, "return window.lymphView.ready()")


def _shot(driver: object) -> np.ndarray:
    png = driver.get_screenshot_as_png()  # type: ignore[attr-defined]
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _at(driver: object, xy: list[int]) -> tuple[int, int]:
    x, y = driver.execute_script("return window.lymphView.toScreen(arguments[0], arguments[1])",
                                 *xy)  # type: ignore[attr-defined]
    return round(x), round(y)


def _patch(img: np.ndarray, xy: tuple[int, int]) -> np.ndarray:
    x, y = xy
    return img[y - 2:y + 3, x - 2:x + 3].reshape(-1, 3).mean(axis=0)


def _wheel_zoom(driver: Any, at: list[int], *, clicks: int) -> float:
    """Turn the mouse wheel `clicks` times over the level-0 point `at`, as a user zooms in; the
    viewer's zoom after / before."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.support.ui import WebDriverWait

    zoom = "return window.lymphView.state.viewer.viewport.getZoom()"
    zoom0 = driver.execute_script(zoom)
    for _ in range(clicks):
        before = driver.execute_script(zoom)
        ActionChains(driver).scroll_from_origin(ScrollOrigin.from_viewport(*_at(driver, at)),
                                                0, -120).perform()
        # each click handled before the next, and 60 ms after it: OpenSeadragon drops a wheel
        # event within minScrollDeltaTime (50 ms) of the last, as a busy browser can deliver
        WebDriverWait(driver, 10).until(lambda d, b=before: d.execute_script(zoom) != b)
        time.sleep(0.06)
    _ready(driver)
    return float(driver.execute_script(zoom)) / float(zoom0)


def test_viewer_shows_the_map_over_the_tumor(browser: object, view_world: Path,
                                             tmp_path: Path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver = browser
    truth = json.loads((view_world / "truth.json").read_text())
    srv = make_server(ViewConfig(slides=view_world / "slides", predictions=view_world / "maps",
                                 port=0))
    srv.start()
    try:
        driver.get(srv.url + "#slide=tumor_001")
        _ready(driver)
        rows = driver.find_elements(By.CSS_SELECTOR, "#slides tbody tr")
        assert [r.get_attribute("data-id") for r in rows] == ["broken", "normal_001",
                                                              "tumor_001"]
        assert "error" in rows[0].text and "broken.tif" in rows[0].text
        # opacity 100%: the map's own colours, so that pixels can be compared with its LUT
        driver.execute_script("const o = document.getElementById('opacity'); o.value = 100;"
                              "o.dispatchEvent(new Event('input'));")
        mid = [(a + b) // 2 for a, b in zip(truth["tumor"], truth["near"], strict=True)]
        assert _wheel_zoom(driver, mid, clicks=6) > 2.5
        tumor, near = _at(driver, truth["tumor"]), _at(driver, truth["near"])
        main = driver.find_element(By.ID, "osd").rect
        for x, y in (tumor, near):
            assert main["x"] + 5 < x < main["x"] + main["width"] - 5
            assert main["y"] + 5 < y < main["y"] + main["height"] - 5
        on = _shot(driver)
        driver.find_element(By.ID, "show-map").click()
        _ready(driver)
        off = _shot(driver)
        driver.find_element(By.ID, "show-map").click()
        _ready(driver)
        on_again = _shot(driver)
        Image.fromarray(on.astype(np.uint8)).save(tmp_path / "map_on.png")
        Image.fromarray(off.astype(np.uint8)).save(tmp_path / "map_off.png")
        lut_top = colormap_lut()[255, :3].astype(int)
        assert np.abs(_patch(on, tumor) - lut_top).max() < 12, (_patch(on, tumor), lut_top)
        assert np.abs(_patch(on_again, tumor) - lut_top).max() < 12
        assert np.abs(_patch(off, tumor) - lut_top).max() > 40  # the slide's own H&E
        assert np.abs(_patch(on, near) - _patch(off, near)).max() < 6  # no map outside
        assert (off[near[1], near[0]] < 235).any()  # tissue there, not glass
        changed = (np.abs(on - off).sum(axis=2) > 30).mean()
        assert 0.001 < changed < 0.8
        cursor = driver.find_element(By.ID, "cursor")
        ActionChains(driver).move_to_element_with_offset(
            driver.find_element(By.ID, "osd"), tumor[0] - main["x"] - main["width"] // 2,
            tumor[1] - main["y"] - main["height"] // 2).perform()
        text = cursor.text
        x, y = (int(v) for v in text.replace(",", "").split()[1:4:2])
        assert abs(x - truth["tumor"][0]) < 8 and abs(y - truth["tumor"][1]) < 8, text
        assert driver.find_element(By.ID, "scalebar-label").text.endswith(("µm", "mm"))
    finally:
        srv.close()


def test_static_export_opens_from_file_urls(browser: object, view_world: Path,
                                            tmp_path: Path) -> None:
    """The export works without a server: data scripts and tiles load from file://."""
    from selenium.webdriver.common.by import By

    from lymph.model.view.export import export_site

    driver = browser
    truth = json.loads((view_world / "truth.json").read_text())
    out = tmp_path / "site"
    export_site(ViewConfig(slides=view_world / "slides", predictions=view_world / "maps",
                           export=out, quiet=True))
    driver.get((out / "index.html").as_uri() + "#slide=tumor_001")
    _ready(driver)
    assert "static export" in driver.find_element(By.ID, "mode").text
    assert "1/2, 1 FP" in driver.find_element(By.CSS_SELECTOR, "#slides tbody tr.current").text
    driver.execute_script("const o = document.getElementById('opacity'); o.value = 100;"
                          "o.dispatchEvent(new Event('input'));"
                          "window.lymphView.zoomTo(arguments[0], arguments[1]);", *truth["tumor"])
    _ready(driver)
    lut_top = colormap_lut()[255, :3].astype(int)
    assert np.abs(_patch(_shot(driver), _at(driver, truth["tumor"])) - lut_top).max() < 12
