"""`run(SynthConfig) -> SynthResult`: the one entry point of `lymph synth`. Plans each slide of
the world (default or a preset) and writes it, then the manifests."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lymph.data.errors import ConfigError
from lymph.data.io import OutputManifest, atomic_write_json
from lymph.data.progress import progress_bar
from lymph.data.synth.config import SYNTH_VERSION, SynthConfig
from lymph.data.synth.plan import SlidePlan
from lymph.data.synth.world.plan import make_plan
from lymph.data.synth.write import (
    SynthSlide,
    recorded_settings,
    slide_record,
    write_manifests,
    write_slide,
)

PROGRESS = ".lymph-synth.json"
"""The slides finished so far and the settings they were made with: a killed synth, rerun
with the same settings, keeps them (their files unchanged in the manifest) and writes the rest."""


@dataclass(frozen=True)
class SynthResult:
    """What a run wrote: the world's folder and its slides, tumor slides first."""

    out: Path
    slides: tuple[SynthSlide, ...]


def slide_jobs(cfg: SynthConfig) -> list[tuple[str, int]]:
    """(status, index) of every slide of the world, in the order they are made and listed."""
    return [("tumor", i) for i in range(1, cfg.n_tumor + 1)] + [
        ("normal", i) for i in range(1, cfg.n_normal + 1)
    ]


def plan_slide(cfg: SynthConfig, status: str, index: int) -> SlidePlan:
    """The plan of slide (status, index): it depends only on these, the seed and the world."""
    return make_plan(cfg.world, cfg.centre, name=f"{cfg.prefix}{status}_{index:03d}",
                     status=status, width=cfg.size[0], height=cfg.size[1], mpp=cfg.mpp,
                     seed=cfg.seed, index=index)


def run(cfg: SynthConfig) -> SynthResult:
    """Write `cfg.n_tumor` tumor and `cfg.n_normal` normal synthetic slides into `cfg.out`.

    Files: ``tumor_001.tif`` (+ ``tumor_001.xml``, ``tumor_001_mask.tif``), ``normal_001.tif``
    (``.svs`` for fmt="svs"), ``reference.csv`` (``tumor_001,Tumor,Macro`` / ``normal_001,Normal,``)
    and ``synth.json`` (every setting, the seed and what each slide holds). A file of these
    names that lymph did not write stops the run before any work (unless ``cfg.force``); one
    synth at a time per folder.
    """
    from lymph.data.io import MANIFEST_NAME, remove_idle_locks
    from lymph.data.lock import run_folder_lock

    _check_out(cfg.out)
    with run_folder_lock(cfg.out, what="this synth folder"):
        manifest = OutputManifest(cfg.out, force=cfg.force)
        files = {job: _files(cfg, *job) for job in slide_jobs(cfg)}
        manifest.check(*(p for paths in files.values() for p in paths), *_manifest_files(cfg.out))
        slides, plans = _write_slides(cfg, files, manifest)
        manifest.mark_pending(*_manifest_files(cfg.out))
        write_manifests(cfg.out, cfg, slides, plans)
        manifest.record(*_manifest_files(cfg.out))
        remove_idle_locks(cfg.out, (f"{MANIFEST_NAME}.lock",))  # no clutter beside the slides
    return SynthResult(out=cfg.out, slides=tuple(slides))


def _write_slides(cfg: SynthConfig, files: dict[tuple[str, int], list[Path]],
                  manifest: OutputManifest) -> tuple[list[SynthSlide], list[SlidePlan]]:
    """Each slide of `files` (its first file is the slide), claimed in the manifest before it
    is written and recorded after."""
    bar = progress_bar(total=len(files) * cfg.size[1], unit="row", desc="synth",
                       enabled=cfg.progress, unit_scale=True)
    slides: list[SynthSlide] = []
    plans: list[SlidePlan] = []
    try:
        key = _progress_key(cfg)
        done = _read_done(cfg.out, key)
        for (status, i), paths in files.items():
            plan = plan_slide(cfg, status, i)
            plans.append(plan)
            bar.set_postfix_str(plan.name)
            entries = manifest.entries()
            if plan.name in done and all(manifest.recorded(p, entries) for p in paths):
                slides.append(slide_record(plan, paths[0], kept=True))  # unchanged since
                bar.update(cfg.size[1])
                continue
            manifest.mark_pending(*paths)
            slides.append(write_slide(plan, paths[0], cfg, bar.update))
            manifest.record(*paths)
            done.add(plan.name)
            atomic_write_json(cfg.out / PROGRESS, {"key": key, "done": sorted(done)})
    finally:
        bar.close()
    return slides, plans


def _progress_key(cfg: SynthConfig) -> dict[str, object]:
    """What a written slide's bytes depend on besides its name (JSON-plain)."""
    from lymph import __version__

    key = {"synth_version": SYNTH_VERSION, "lymph_version": __version__,
           "settings": {**recorded_settings(cfg), "size": list(cfg.size)}}
    return dict(json.loads(json.dumps(key, default=str)))


def _read_done(out: Path, key: dict[str, object]) -> set[str]:
    """The slides an earlier run with these settings finished (none for other settings, or a
    progress file that cannot be read: they are written again)."""
    try:
        progress = json.loads((out / PROGRESS).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return set()
    if not isinstance(progress, dict) or progress.get("key") != key:
        return set()
    done = progress.get("done")
    return {d for d in done if isinstance(d, str)} if isinstance(done, list) else set()


def _files(cfg: SynthConfig, status: str, index: int) -> list[Path]:
    """The files slide (status, index) writes: the slide, and for a tumor slide its XML and
    mask."""
    name = f"{cfg.prefix}{status}_{index:03d}"
    ext = ".svs" if cfg.fmt == "svs" else ".tif"
    extra = [f"{name}.xml", f"{name}_mask.tif"] if status == "tumor" else []
    return [cfg.out / f"{name}{ext}", *(cfg.out / e for e in extra)]


def _manifest_files(out: Path) -> list[Path]:
    return [out / "reference.csv", out / "synth.json"]


def _check_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create output folder {out}: {exc.strerror or exc}; choose a writable path"
        ) from exc
    if not out.is_dir() or not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"output folder {out} is not writable; choose a writable path")
