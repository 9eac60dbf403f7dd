"""Which outlines are tumor, holes, reviewed regions or `Suggested` boxes: the ASAP group
names, the QuPath class rule, and the warning that counts skipped suggestions."""

from __future__ import annotations

import warnings
from pathlib import Path

TUMOR_GROUPS = frozenset({"_0", "_1", "tumor", "metastases"})
HOLE_GROUPS = frozenset({"_2", "exclusion"})
AREA_TYPES = frozenset({"polygon", "rectangle", "spline"})


def warn_suggested(n: int, source: Path | None) -> None:
    if n:
        warnings.warn(f"{source}: {n} `Suggested` box(es) skipped (not yet reviewed); once a box "
                      "is annotated, change its class (QuPath) or group (ASAP) to `Reviewed`",
                      stacklevel=3)


def class_role(cls: str | None) -> str | None:
    """'tumor', 'hole', 'reviewed', 'suggested' or None (ignored) for a QuPath class name."""
    from lymph.data.partial import region_role  # partial builds on this module

    low = (cls or "").lower()
    region = region_role(cls)
    if region is not None:
        return region
    if cls is None or "tumor" in low or "tumour" in low or "metasta" in low:
        return "tumor"
    return "hole" if "exclusion" in low else None
