"""A synthetic CAMELYON16-like slide world (`lymph synth`): pyramidal H&E-like slides of
lymph-node sections, some with metastases, plus ASAP XML annotations, mask TIFFs, reference.csv
and synth.json. Used by the tests, the demo and the benchmarks; neither stage imports it.

Every slide is described by a small plan (stain, tissue sections, lesion polygons, nucleus
sprites) drawn from the seed. Pixels are made tile by tile, and every tile depends only on the
plan and its own (tx, ty) position: the same seed gives the same bytes whatever the order, and
memory stays flat in the slide size (level 0 is streamed in tile rows to
`lymph.data.pyramid.write_pyramidal_tiff`).

Modules: config (SynthConfig, constants), plan (SlidePlan, lesions, sections), stain (per-slide
textures and lesion colours), render (tiles, nuclei), texture (noise, rasterizer, sprites),
write (slide TIFF, XML, mask, manifests), run (`run(SynthConfig) -> SynthResult`), checks
(colour separability); world/ holds the camelyon preset.
"""

from lymph.data.synth.checks import (
    best_balanced_accuracy,
    colour_separability,
    tissue_fraction,
)
from lymph.data.synth.config import TILE, SynthConfig
from lymph.data.synth.plan import Lesion, SlidePlan, lesion_kind
from lymph.data.synth.run import SynthResult, plan_slide, run
from lymph.data.synth.world.plan import make_plan
from lymph.data.synth.write import (
    SynthSlide,
    largest_kind,
    write_asap_xml,
    write_manifests,
    write_slide,
)

__all__ = [
    "TILE",
    "Lesion",
    "SlidePlan",
    "SynthConfig",
    "SynthResult",
    "SynthSlide",
    "best_balanced_accuracy",
    "colour_separability",
    "largest_kind",
    "lesion_kind",
    "make_plan",
    "plan_slide",
    "run",
    "tissue_fraction",
    "write_asap_xml",
    "write_manifests",
    "write_slide",
]
