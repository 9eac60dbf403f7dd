"""A rerun of ``lymph predict`` keeps the slides it already finished: after a kill, a failed
slide or a new slide in the folder, only what is missing is predicted again.

A slide's ``S_predict.json`` is written last, so it marks the slide finished. Its outputs are
reused only when all of this holds, else the slide is predicted again:

- ``resume_key``: the same checkpoint file (``file_identity``: size and content hash of its
  ends, which in torch's zip hold the CRC of every tensor; a copy counts as the same), the same
  lymph version and every setting that changes an output (level, window,
  stride, overlap, margin, trim, tta, threshold, map downsample, thumbnail size, max windows,
  mpp, precision, device);
- the slide file is the one predicted (``source_identity``; a replaced slide is predicted
  again);
- every output file (map, overlay, CSV, GeoJSON, XML) is there with the size and sha256
  recorded when it was written (``outputs``): an edited, damaged or half-rewritten file makes
  the slide run again.

``PredictConfig.redo`` (``--redo``) predicts every slide again.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from lymph import __version__
from lymph.data.io import OutputManifest
from lymph.model.predict.config import PredictConfig
from lymph.model.predict.slide import SlidePrediction

KEY_SETTINGS = ("level", "window", "stride", "overlap", "margin", "trim", "tta", "threshold",
                "map_downsample", "thumb_size", "max_windows", "mpp", "precision", "device")
"""The PredictConfig fields that change a slide's outputs (batch size, threads and workers do
not)."""

OUTPUT_FIELDS = ("map_path", "overlay_path", "csv_path", "geojson_path", "xml_path")


def resume_key(config: PredictConfig) -> dict[str, Any]:
    """What a finished slide's outputs depend on besides the slide: checkpoint, version,
    settings (JSON-plain, compared as read back from S_predict.json)."""
    from lymph.data.identity import file_identity

    settings = {k: getattr(config, k) for k in KEY_SETTINGS}
    identity = file_identity(config.checkpoint)
    if identity is not None:  # a copy or a touch is the same checkpoint (as for slides)
        identity.pop("mtime", None)
    return json.loads(json.dumps({"checkpoint": identity, "lymph": __version__,
                                  "settings": settings}))


def output_states(
    result: SlidePrediction, manifest: OutputManifest | None = None
) -> dict[str, dict[str, Any] | None]:
    """{file name: {"size", "sha256"}} of a slide's output files: as ``manifest`` recorded them
    when they were written (no second hash of a map just hashed), else as they are now."""
    from lymph.data.io import file_state

    entries = manifest.entries() if manifest is not None else {}

    def state(path: Path) -> dict[str, Any] | None:
        recorded = manifest.written(path, entries) if manifest is not None else None
        return recorded or file_state(path)

    return {p.name: state(p) for p in (Path(getattr(result, n)) for n in OUTPUT_FIELDS)}


def _prediction(data: object, folder: Path) -> SlidePrediction | None:
    """The SlidePrediction an S_predict.json's "result" records, its output files in `folder`
    (the folder may have moved since), or None when it is not one."""
    if not isinstance(data, dict):
        return None
    names = {f.name for f in fields(SlidePrediction)}
    try:
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["path"] = Path(kwargs["path"])
        for key in OUTPUT_FIELDS:
            kwargs[key] = folder / Path(kwargs[key]).name
        kwargs["map_size"] = tuple(kwargs["map_size"])
        return SlidePrediction(**kwargs)
    except (KeyError, TypeError, ValueError):
        return None


def finished(slide: Path, meta_path: Path, key: dict[str, Any]) -> SlidePrediction | None:
    """The recorded prediction of `slide` when its outputs in `meta_path`'s folder can be
    reused (see the module doc), marked ``reused``; None when the slide must be predicted."""
    from dataclasses import replace

    from lymph.data.identity import file_identity, identity_change

    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("resume_key") != key:
        return None
    recorded = meta.get("source_identity")
    if not isinstance(recorded, dict) or identity_change(recorded, file_identity(slide)):
        return None
    result = _prediction(meta.get("result"), meta_path.parent)
    if result is None:
        return None
    if meta.get("outputs") != output_states(result):
        return None
    return replace(result, reused=True)
