"""What ``lymph eval slides`` is asked to do: ``SlideEvalConfig`` (folders, the headline rule
set, exclusions, what a slide without detections means) and the rule sets' names and notes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from lymph.data.errors import ConfigError
from lymph.data.io import as_paths
from lymph.model.camelyon.truth import EVAL_DOWNSAMPLE

RULES = ("official", "lymph")
CAMELYON16_TEST_EXCLUDED = ("Test_049", "Test_114")  # left out of the CAMELYON16 test scoring
MISSING = ("error", "missed")
RULE_NOTES = {
    "official": "froc = the official CAMELYON16 Evaluation_FROC.py rules, quirks included "
    "(mask level 5 red == 255, 0.243 um/px, float32 lesion probabilities, lowest threshold "
    "dropped), scored as NCRF/MONAI complete it: mean np.interp at 1/4..8 FP per slide",
    "lymph": "froc = lymph's rules: the slide's own mpp, tumor > 0 at 1/32, every threshold "
    "kept, float64; mean sensitivity at 1/4..8 FP per slide by linear interpolation "
    "(froc_stepwise: the last operating point at or below each rate)",
}


@dataclass(frozen=True)
class SlideEvalConfig:
    """Settings of one slide-mode evaluation (`lymph eval slides`), all recorded in the output.

    ``slides``: a folder (searched recursively, as extract and predict do) or one slide;
    ``predictions``: the ``--out`` of ``lymph predict`` (``S.csv`` detections, ``scores.csv``);
    ``annotations``: ground truth (default beside each slide); ``labels``: a reference CSV
    (CAMELYON16 ``reference.csv``) that says tumor or normal; ``rules``: which rule set gives
    the headline ``froc`` (both are computed); ``exclude``: slide ids left out;
    ``missing``: a slide without a detection file is an error ("error") or scored as all-missed
    with a warning ("missed").
    """

    slides: Path
    predictions: Path
    annotations: Path | None = None
    labels: Path | None = None
    out: Path | None = None
    rules: str = "official"
    exclude: tuple[str, ...] = ()
    missing: str = "error"
    downsample: float = EVAL_DOWNSAMPLE

    def __post_init__(self) -> None:
        as_paths(self, ("slides", "predictions", "annotations", "labels", "out"))
        if isinstance(self.exclude, str):
            raise ConfigError("exclude must be a sequence of slide ids, not a string")
        object.__setattr__(self, "exclude", tuple(sorted({str(v) for v in self.exclude})))
        if self.rules not in RULES:
            raise ConfigError(f"rules must be one of {RULES}, got {self.rules!r}")
        if self.missing not in MISSING:
            raise ConfigError(f"missing must be one of {MISSING}, got {self.missing!r}")
        if not self.downsample > 0:
            raise ConfigError(f"downsample must be > 0, got {self.downsample}")

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = asdict(self)
        for key in ("slides", "predictions", "annotations", "labels", "out"):
            d[key] = None if d[key] is None else str(d[key])
        d["exclude"] = list(self.exclude)
        return d


def check_paths(config: SlideEvalConfig) -> None:
    """ConfigError naming the option for a folder or file of ``config`` that is not there (or
    an ``out`` that is a file); ``run`` checks before reading anything, the config never
    touches the filesystem."""
    if not (config.slides.is_dir() or config.slides.is_file()):
        raise ConfigError(
            f"slides {config.slides} do not exist; pass the slides folder or a slide"
        )
    if not config.predictions.is_dir():
        raise ConfigError(
            f"predictions folder {config.predictions} does not exist; pass the --out of "
            "lymph predict"
        )
    if config.annotations is not None and not config.annotations.is_dir():
        raise ConfigError(f"annotations folder {config.annotations} does not exist")
    if config.labels is not None and not config.labels.is_file():
        raise ConfigError(f"labels CSV {config.labels} does not exist")
    if config.out is not None and config.out.exists() and not config.out.is_dir():
        raise ConfigError(f"--out {config.out} is a file, not a folder; choose a folder")
