"""The labels CSV (`reference.csv` or `slide,label` rows): the one reader of slide-level
tumor/normal labels (`read_labels_csv`), as a case-insensitive `SlideLabels` mapping."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from pathlib import Path

from lymph.data.errors import AnnotationError, ConfigError, SlideError
from lymph.data.io import decode_text
from lymph.data.slides import slide_id

TUMOR_LABELS = frozenset({"tumor", "tumour", "1", "true", "positive", "metastasis"})
NORMAL_LABELS = frozenset({"normal", "0", "false", "negative"})
MAX_LABELS_BYTES = 64 << 20


class LabelsError(AnnotationError, ConfigError):
    """A labels CSV is unreadable or says something impossible (an AnnotationError, and a
    ConfigError since it is given as a setting)."""


class SlideLabels(Mapping[str, bool]):
    """{slide id: is tumor} from a labels CSV. Keys are `slide_id`s as the CSV spells them;
    lookups go through `slide_id` and ignore case, so `labels["tumor_001.tif"]`,
    `labels["Tumor_001"]` and `labels["tumor_001"]` are the same entry (CAMELYON16 ships
    `Test_001` in reference.csv beside `test_001.tif`)."""

    def __init__(self, items: Mapping[str, bool], *, source: Path | None = None) -> None:
        self.source = source
        self._ids = {slide_id(k).casefold(): slide_id(k) for k in items}
        self._flags = {slide_id(k).casefold(): bool(v) for k, v in items.items()}

    def __getitem__(self, name: str) -> bool:
        try:
            return self._flags[slide_id(name).casefold()]
        except SlideError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids.values())

    def __len__(self) -> int:
        return len(self._flags)

    def __repr__(self) -> str:
        return f"SlideLabels({dict(self.items())!r})"


def _labels_text(path: Path) -> str:
    """The CSV's text; LabelsError naming the file and the fix when it is not UTF-8 text."""
    fix = "save it as a UTF-8 (or ASCII) CSV of `slide,label` rows"
    try:
        size = path.stat().st_size
        if size > MAX_LABELS_BYTES:
            raise LabelsError(f"{path}: {size} bytes is not a labels CSV (over "
                              f"{MAX_LABELS_BYTES >> 20} MiB); {fix}")
        data = path.read_bytes()
    except OSError as exc:
        raise LabelsError(f"{path}: cannot read the labels CSV ({exc.strerror or exc}); "
                          "check the path and its permissions") from exc
    return decode_text(data, path, what="labels CSV", fix=fix, error=LabelsError)


def _label_flag(value: str) -> bool | None:
    low = value.strip().lower()
    return True if low in TUMOR_LABELS else False if low in NORMAL_LABELS else None


def _check_name_agrees(path: Path, line: int, name: str, flag: bool) -> None:
    """`normal_*` labelled tumor, or `tumor_*` labelled normal: one of the two is wrong."""
    low = slide_id(name).lower()
    named = "normal" if low.startswith("normal") else "tumor" if low.startswith("tumor") else None
    said = "tumor" if flag else "normal"
    if named is not None and named != said:
        raise LabelsError(f"{path}, line {line}: slide {name!r} is labelled {said} but its name "
                          f"says {named}; fix the label (1/tumor/true means tumor) or rename "
                          "the slide")


def read_labels_csv(path: str | Path) -> SlideLabels:
    """The one labels CSV reader (extract, eval): {slide id: is tumor} as a `SlideLabels`.

    Rows are `slide,label[,more columns...]`: the CAMELYON16 `reference.csv` layout
    (`Test_001,Tumor,Macro,...`) or a plain `slide,label`. Labels, case-insensitively: tumor /
    tumour / 1 / true / positive / metastasis, and normal / 0 / false / negative. Slide names may
    carry their suffix (`tumor_001.tif`) and match through `slide_id`, ignoring case. The first
    row is skipped as a header when its label is none of these; blank rows are skipped.

    The rule for names: a slide called `normal_*` labelled tumor (or `tumor_*` labelled normal)
    is an error, since lymph also reads status from those names when no CSV is given; so is one
    slide listed twice with different labels. LabelsError (an AnnotationError and a ConfigError)
    names the file, the line and the fix, also for a missing, binary, UTF-16 or non-UTF-8 file.
    """
    path = Path(path)
    if not path.is_file():
        raise LabelsError(f"{path}: no such labels CSV; pass a reference.csv with --labels")
    rows = _labels_rows(path, _labels_text(path))
    if not rows:
        raise LabelsError(f"{path}: no `slide,label` rows in the labels CSV; write one row per "
                          "slide, e.g. `tumor_001,Tumor`")
    out: dict[str, bool] = {}
    seen: dict[str, tuple[int, str, bool]] = {}
    for line, name, flag in rows:
        key = slide_id(name).casefold()
        if key in seen and seen[key][2] != flag:
            first = seen[key]
            raise LabelsError(f"{path}, lines {first[0]} and {line}: slide {first[1]!r} is "
                              f"labelled both {'tumor' if first[2] else 'normal'} and "
                              f"{'tumor' if flag else 'normal'}; keep one row per slide")
        seen.setdefault(key, (line, name, flag))
        out[name] = flag
    return SlideLabels(out, source=path)


def _labels_rows(path: Path, text: str) -> list[tuple[int, str, bool]]:
    """(line, slide name, is tumor) of every label row of the CSV `text`."""
    rows: list[tuple[int, str, bool]] = []
    header_allowed = True
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            line = reader.line_num
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise LabelsError(f"{path}, line {line}: expected `slide,label`, got "
                                  f"{','.join(row)[:60]!r}")
            name, flag = row[0].strip(), _label_flag(row[1])
            if flag is None and header_allowed:
                header_allowed = False
                continue  # a header row
            header_allowed = False
            if flag is None:
                raise LabelsError(f"{path}, line {line}: label {row[1].strip()[:40]!r} is not "
                                  "tumor/normal, 1/0 or true/false")
            if not name:
                raise LabelsError(f"{path}, line {line}: empty slide name; give each row the "
                                  "slide's name, e.g. `tumor_001,Tumor`")
            try:
                slide_id(name)
            except SlideError as exc:
                raise LabelsError(f"{path}, line {line}: {exc}") from None
            _check_name_agrees(path, line, name, flag)
            rows.append((line, name, flag))
    except csv.Error as exc:
        raise LabelsError(f"{path}, line {reader.line_num}: not a readable CSV ({exc}); save it "
                          "as a plain UTF-8 CSV of `slide,label` rows") from None
    return rows
