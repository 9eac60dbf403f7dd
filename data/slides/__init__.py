"""Slide access: one small protocol (`SlideReader`) over OpenSlide (any vendor format, DICOM
folders) and an in-memory `ArraySlide` for tests, slide identity and slide discovery. Nothing
here ever holds a whole slide: regions are read on demand and thumbnails are built band by band
from the smallest level that is large enough.

Modules, one job each:
- `reader`: the `SlideReader` protocol, thumbnails from levels, microns per pixel, `ArraySlide`.
- `openslide_reader`: `open_slide`, `OpenSlideReader` and its direct TIFF tile decoder.
- `names`: which files are slides and what each is called (`slide_id`, `safe_id`).
- `discovery`: `discover_slides`, unique ids and the problems of a slide folder.

The names below are the package's API (what other modules use); import them from
`lymph.data.slides`. Everything else is reached through its module.
"""

from lymph.data.slides.discovery import Discovery, FoundSlide, discover_slides
from lymph.data.slides.names import safe_id, slide_id, strip_slide_suffix
from lymph.data.slides.openslide_reader import OpenSlideReader, open_slide
from lymph.data.slides.reader import (
    ArraySlide,
    SlideReader,
    best_level,
    plausible_mpp,
    thumbnail_from_levels,
)

__all__ = [
    "ArraySlide", "Discovery", "FoundSlide", "OpenSlideReader", "SlideReader", "best_level",
    "discover_slides", "open_slide", "plausible_mpp", "safe_id", "slide_id",
    "strip_slide_suffix", "thumbnail_from_levels",
]
