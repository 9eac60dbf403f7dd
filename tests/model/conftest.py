from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _map_from_mask(mask_path: Path, out: Path, ds: int) -> tuple[np.ndarray, np.ndarray]:
    """Write a tumor map (255 where most of a ds x ds cell is tumor) as predict writes maps;
    returns that map's tumor cells and the cells touching any tumor."""
    from lymph.data.annotations import open_mask
    from lymph.data.pyramid import write_pyramidal_tiff

    with open_mask(mask_path) as mask:
        w, h = mask.dimensions
        full = mask.read_region((0, 0), 0, (w, h))[..., 0] > 0
    mw, mh = -(-w // ds), -(-h // ds)
    padded = np.zeros((mh * ds, mw * ds), bool)
    padded[:h, :w] = full
    cells = padded.reshape(mh, ds, mw, ds)
    tumor = cells.mean(axis=(1, 3)) > 0.5
    prob = np.where(tumor, 255, 0).astype(np.uint8)
    write_pyramidal_tiff(out, lambda i: prob[i * 256:(i + 1) * 256], width=mw, height=mh,
                         channels=1, tile=256, compression="deflate", mpp=0.243 * ds,
                         min_size=512)
    return tumor, cells.any(axis=(1, 3))


@pytest.fixture(scope="session")
def view_world(synth_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `lymph view` looks at, made from `synth_world` (read-only, session-scoped):

    - ``slides/``: links to tumor_001.tif (+ .xml), normal_001.tif, and ``broken.tif`` (a
      truncated copy of tumor_001.tif's first 4 KiB: a corrupt slide);
    - ``maps/``: what `lymph predict` writes, made from the ground-truth mask instead of a model
      (the viewer is under test, not the model): ``tumor_001_tumor_map.tif`` (uint8, 255 inside
      the tumor, written as predict writes maps: 1/16, deflate, 256 px tiles), ``S.csv`` with
      one detection at the map's tumor and one false positive, ``normal_001.csv`` with one false
      positive, ``scores.csv``, and ``tumor_001_suggestions.geojson`` (one square);
    - ``truth.json``: level-0 points deep inside the tumor (``tumor``), far from it (``normal``)
      and in normal tissue 64-128 px outside it (``near``).
    """
    import json

    from scipy import ndimage

    root = tmp_path_factory.mktemp("view_world")
    slides, maps = root / "slides", root / "maps"
    slides.mkdir()
    maps.mkdir()
    for name in ("tumor_001.tif", "tumor_001.xml", "normal_001.tif", "reference.csv"):
        (slides / name).symlink_to(synth_world / name)
    (slides / "broken.tif").write_bytes((synth_world / "tumor_001.tif").read_bytes()[:4096])
    ds = 16
    tumor, anywhere = _map_from_mask(synth_world / "tumor_001_mask.tif",
                                     maps / "tumor_001_tumor_map.tif", ds)
    depth = ndimage.distance_transform_edt(tumor)
    ti, tj = np.unravel_index(int(np.argmax(depth)), depth.shape)
    outside = ndimage.distance_transform_edt(~anywhere)
    outside[:4] = outside[-4:] = 0  # not at the slide's edge
    outside[:, :4] = outside[:, -4:] = 0
    ni, nj = np.unravel_index(int(np.argmax(outside)), outside.shape)  # far from any tumor
    # normal tissue near the tumor: 4-8 map px outside it, the closest such pixel to (ti, tj)
    ring = (outside >= 4) & (outside <= 8)
    ri, rj = np.nonzero(ring)
    k = int(np.argmin((ri - ti) ** 2 + (rj - tj) ** 2))
    near = [int((rj[k] + 0.5) * ds), int((ri[k] + 0.5) * ds)]
    tx, ty = int((tj + 0.5) * ds), int((ti + 0.5) * ds)
    nx, ny = int((nj + 0.5) * ds), int((ni + 0.5) * ds)
    (maps / "tumor_001.csv").write_text(f"0.950000,{tx},{ty}\n0.600000,{nx},{ny}\n")
    (maps / "normal_001.csv").write_text("0.550000,100,100\n")
    (maps / "scores.csv").write_text("slide,probability\ntumor_001,0.97\nnormal_001,0.12\n")
    square = [[nx - 200, ny - 200], [nx + 200, ny - 200], [nx + 200, ny + 200],
              [nx - 200, ny + 200], [nx - 200, ny - 200]]
    (maps / "tumor_001_suggestions.geojson").write_text(json.dumps({
        "type": "FeatureCollection", "features": [{
            "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]},
            "properties": {"objectType": "annotation", "name": "label me", "score": 0.42}}]}))
    (root / "truth.json").write_text(json.dumps({"tumor": [tx, ty], "normal": [nx, ny],
                                                 "near": near}))
    return root
