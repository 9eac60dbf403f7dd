"""The predict tests' world: two small tiled TIFF slides (one with a lesion), their ground truth
(mask TIFF and ASAP XML) and a tiny UNet checkpoint; a perfect 'model' to patch in for
``lymph.model.infer.predict_probs``; and the slides' geometry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

MPP = 0.243
TISSUE = (200, 120, 180)  # pink
TUMOR = (90, 30, 120)  # dark purple
# level-0 geometry of the test slide (rows, cols)
H0, W0 = 2048, 3072
TISSUE_BOX = (256, 1792, 256, 2816)
TUMOR_BOX = (512, 1536, 768, 1792)  # 1,024 px = 249 um: a lesion, not an ITC


def write_slide(path: Path, rgb: np.ndarray, *, mpp: float = MPP) -> None:
    """A tiled generic TIFF with levels 1, 2, 4, 8 that OpenSlide opens, mpp recorded."""
    import tifffile

    with tifffile.TiffWriter(path) as tif:
        for i, d in enumerate((1, 2, 4, 8)):
            level = rgb[::d, ::d]
            tif.write(
                level,
                tile=(256, 256),
                compression="deflate",
                photometric="rgb",
                subfiletype=1 if i else 0,
                resolution=(1e4 / (mpp * d), 1e4 / (mpp * d)),
                resolutionunit="CENTIMETER",
            )


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """slides/tumor_t.tif (+ tumor_t_mask.tif in ann/), slides/normal_n.tif, and a tiny
    untrained UNet checkpoint trained (as it claims) at level 2 on 60 px patches."""
    from lymph.model.checkpoint import save_checkpoint
    from lymph.model.unet import UNet, UNetConfig

    root = tmp_path_factory.mktemp("predict")
    slides, ann = root / "slides", root / "ann"
    slides.mkdir()
    ann.mkdir()
    rgb = np.full((H0, W0, 3), 245, np.uint8)
    r0, r1, c0, c1 = TISSUE_BOX
    rgb[r0:r1, c0:c1] = TISSUE
    normal = rgb.copy()
    t0, t1, u0, u1 = TUMOR_BOX
    rgb[t0:t1, u0:u1] = TUMOR
    write_slide(slides / "tumor_t.tif", rgb)
    write_slide(slides / "normal_n.tif", normal)
    mask = np.zeros((H0, W0, 3), np.uint8)
    mask[t0:t1, u0:u1] = 255
    write_slide(ann / "tumor_t_mask.tif", mask)
    xml = root / "ann_xml"
    xml.mkdir()
    corners = [(u0, t0), (u1, t0), (u1, t1), (u0, t1)]
    coords = "".join(
        f'<Coordinate Order="{i}" X="{x}.0" Y="{y}.0"/>' for i, (x, y) in enumerate(corners)
    )
    (xml / "tumor_t.xml").write_text(
        '<?xml version="1.0"?><ASAP_Annotations><Annotations><Annotation Name="Annotation 0" '
        f'Type="Polygon" PartOfGroup="_0" Color="#F4FA58"><Coordinates>{coords}</Coordinates>'
        '</Annotation></Annotations><AnnotationGroups><Group Name="_0" PartOfGroup="None" '
        'Color="#ff0000"><Attributes/></Group></AnnotationGroups></ASAP_Annotations>'
    )
    torch.manual_seed(0)
    model = UNet(UNetConfig(base_width=4, depth=2, norm="group"))
    save_checkpoint(
        root / "tiny.pt",
        model=model,
        config={"store": {"patch_size": 60, "level": 2}, "stage": "finetune"},
    )
    save_checkpoint(root / "nolevel.pt", model=model,
                    config={"store": {"patch_size": 60}, "stage": "finetune"})
    return root


def _fake_probs(model: object, images: np.ndarray, **_: object) -> np.ndarray:
    """A perfect 'model': probability 1 on the tumor colour, 0 elsewhere."""
    dist = np.abs(images.astype(np.int16) - np.array(TUMOR, np.int16)).sum(-1)
    return (dist < 60).astype(np.float32)


@pytest.fixture
def fake_probs() -> Callable[..., np.ndarray]:
    """The perfect 'model', to patch in for ``lymph.model.infer.predict_probs``."""
    return _fake_probs


@pytest.fixture
def geo() -> SimpleNamespace:
    """The world's slide geometry and colours (level-0 boxes are (row0, row1, col0, col1))."""
    return SimpleNamespace(MPP=MPP, TISSUE=TISSUE, TUMOR=TUMOR, H0=H0, W0=W0,
                           TISSUE_BOX=TISSUE_BOX, TUMOR_BOX=TUMOR_BOX)
