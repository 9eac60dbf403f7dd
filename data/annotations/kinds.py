"""Which outlines are tumor, holes, reviewed regions or `Suggested` boxes: the ASAP group
names, the QuPath class rule, and `Sorted`, what both readers collect them in."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from lymph.data.annotations.polygons import Annotations, Polygon

TUMOR_GROUPS = frozenset({"_0", "_1", "tumor", "metastases"})
HOLE_GROUPS = frozenset({"_2", "exclusion"})
AREA_TYPES = frozenset({"polygon", "rectangle", "spline"})


@dataclass
class Sorted:
    """A reader's outlines by role as it finds them, the `Suggested` boxes it skipped and the
    count of everything else it ignored, by kind."""

    source: Path | None
    tumor: list[Polygon] = field(default_factory=list)
    holes: list[Polygon] = field(default_factory=list)
    reviewed: list[Polygon] = field(default_factory=list)
    suggested: int = 0
    ignored: dict[str, int] = field(default_factory=dict)

    def ignore(self, kind: str) -> None:
        self.ignored[kind] = self.ignored.get(kind, 0) + 1

    def ignored_text(self) -> str:
        """`2 Dot, 1 PointSet`: the ignored kinds with their counts, for the reader's warning."""
        return ", ".join(f"{n} {k}" for k, n in sorted(self.ignored.items()))

    def add(self, role: str, poly: Polygon) -> None:
        """Add `poly` as 'tumor', 'hole' or 'reviewed' (a `class_role`)."""
        {"tumor": self.tumor, "hole": self.holes, "reviewed": self.reviewed}[role].append(poly)

    def annotations(self) -> Annotations:
        """The Annotations found. Called by the reader itself: the warning that counts skipped
        `Suggested` boxes names the reader's caller."""
        if self.suggested:
            warnings.warn(f"{self.source}: {self.suggested} `Suggested` box(es) skipped (not yet "
                          "reviewed); once a box is annotated, change its class (QuPath) or "
                          "group (ASAP) to `Reviewed`", stacklevel=3)
        return Annotations(tumor=tuple(self.tumor), holes=tuple(self.holes), source=self.source,
                           reviewed=tuple(self.reviewed))


def class_role(cls: str | None) -> str | None:
    """'tumor', 'hole', 'reviewed', 'suggested' or None (ignored) for a QuPath class name."""
    from lymph.data.partial import region_role  # partial imports this package

    low = (cls or "").lower()
    region = region_role(cls)
    if region is not None:
        return region
    if cls is None or "tumor" in low or "tumour" in low or "metasta" in low:
        return "tumor"
    return "hole" if "exclusion" in low else None
