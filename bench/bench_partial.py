"""Partial annotations (issue 24): what the exhaustive assumption costs when half the lesions
of every tumor slide are left unannotated, and what exact reviewed regions win back.

    .venv/bin/python bench/bench_partial.py --out bench_out/partial [--seeds 0 1 2 3 4 5]
        [--tumor 20 --normal 8 --test-tumor 6 --test-normal 2 --slide 8000x6000]
        [--world camelyon --centre mixed]
        [--steps 1200] [--cell 1024]

Worlds as in bench/bench_loop.py (the study's training world, a separate test world; the first
`--val` tumor slides are exhaustive inner-validation slides). Per seed, on every other tumor
slide half of the lesions (rounded down, at least one when it has two or more) are dropped from
its annotation, drawn with the seed. Two conditions on the same slides, seed and settings:
- `exhaustive`: the kept outlines alone, read as complete (today's behaviour): tissue of the
  dropped lesions is sampled as non-tumor;
- `reviewed`: the kept outlines plus exact reviewed regions: the slide tiled in `--cell` px
  squares, every square that touches no dropped lesion (box grown by one cell) is reviewed
  (merged into row runs).
Each is extracted, fine-tuned and scored on every test-world patch at the threshold its
inner-validation slides chose (`bench_loop.train_and_score`; both conditions validate on the
same exhaustive slides) and at 0.5. Reported, paired over seeds with `lymph study`'s
statistics (reviewed - exhaustive): ΔF1, Δrecall, Δprecision, Δ average precision
(threshold-free), the test world's lesion FROC (official rules, from `lymph predict` maps),
and ΔF1 / Δrecall at 0.5 (where the false negatives the exhaustive
assumption teaches are not re-calibrated away by a lower threshold); and
the mechanism, from the exhaustive store: the fraction of its training patches labelled
non-tumor whose centre lies in ground-truth tumor, and of its non-tumor mask pixels that are
tumor (label noise; 0 in the reviewed store by construction, which the run checks).

Not run at scale on the shared 2-core CPU (hours); `tests/model/test_loop.py` runs it on a tiny
world to check the machinery.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_loop  # noqa: E402  (the loop's world, training and scoring)

CONDITIONS = ("exhaustive", "reviewed")
METRICS = ("f1", "recall", "precision", "ap", "f1_05", "recall_05", "froc", "recall_dropped",
           "recall_kept", "recall_gap")


@dataclass(frozen=True)
class PartialConfig:
    loop: bench_loop.LoopConfig  # world, training and scoring settings (rounds etc. unused)
    cell: float = 1024.0


def drop_lesions(truth: Any, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """(kept, dropped) indices of the tumor outlines: half dropped (rounded down), at least
    one when there are two or more."""
    n = len(truth.tumor)
    order = [int(i) for i in rng.permutation(n)]
    n_drop = max(1, n // 2) if n >= 2 else 0
    return sorted(order[n_drop:]), sorted(order[:n_drop])


def draws(world: Any, seed: int) -> dict[str, tuple[Any, list[int], list[int]]]:
    """Each pool slide's (ground truth, kept, dropped) for `seed`: the one draw that both
    conditions and the lesion-recall analysis use."""
    from lymph.data.annotations import read_annotations

    rng = np.random.default_rng(seed)
    out = {}
    for name in world.pool:
        truth = read_annotations(world.slides / f"{name}.xml")
        out[name] = (truth, *drop_lesions(truth, rng))
    return out


def reviewed_cells(width: int, height: int, avoid: list[tuple[float, float, float, float]],
                   cell: float) -> list[tuple[float, float, float, float]]:
    """Row runs of `cell` squares over the slide that touch no box of `avoid` grown by a cell."""
    grown = [(x0 - cell, y0 - cell, x1 + cell, y1 + cell) for x0, y0, x1, y1 in avoid]
    out = []
    ny, nx = int(np.ceil(height / cell)), int(np.ceil(width / cell))
    for j in range(ny):
        y0, y1 = j * cell, min(height, (j + 1) * cell)
        run_start = None
        for i in range(nx + 1):
            x0 = i * cell
            ok = i < nx and not any(x0 < g[2] and g[0] < x0 + cell and y0 < g[3] and g[1] < y1
                                    for g in grown)
            if ok and run_start is None:
                run_start = x0
            elif not ok and run_start is not None:
                out.append((run_start, y0, min(width, x0), y1))
                run_start = None
    return out


def write_condition(world: Any, seed: int, folder: Path, condition: str, cell: float
                    ) -> dict[str, int]:
    """Each pool slide's S.xml for `condition`; the validation slides' ground truth."""
    from lymph.data.annotations import Annotations
    from lymph.data.slides import open_slide
    from lymph.data.suggestions import write_asap_xml

    folder.mkdir(parents=True, exist_ok=True)
    for name in world.val:
        shutil.copy(world.slides / f"{name}.xml", folder / f"{name}.xml")
    counts = {"kept": 0, "dropped": 0}
    for name, (truth, kept, dropped) in draws(world, seed).items():
        counts["kept"] += len(kept)
        counts["dropped"] += len(dropped)
        regions = ()
        if condition == "reviewed":
            from lymph.data.partial import box_polygon

            with open_slide(world.slides / f"{name}.tif") as slide:
                w, h = slide.dimensions
            avoid = [truth.tumor[i].bbox_level0 for i in dropped]
            regions = tuple(box_polygon(*b) for b in reviewed_cells(w, h, avoid, cell))
        ann = Annotations(tumor=tuple(truth.tumor[i] for i in kept), holes=truth.holes,
                          reviewed=regions)
        write_asap_xml(folder / f"{name}.xml", [], existing=ann)
    return counts


def label_noise(world: Any, store: Path) -> dict[str, float]:
    """Of the pool slides' patches in `store`: the fraction labelled non-tumor whose centre is
    ground-truth tumor, and the fraction of known (0/1) mask pixels that are wrong."""
    from lymph.data.annotations import contains, rasterize, read_annotations
    from lymph.data.partial import IGNORE
    from lymph.data.store import PatchStore

    ps = PatchStore.open(store)
    wrong_patches = normal_patches = wrong_px = known_px = 0
    for info in ps.labeled_slides:
        if info.slide_id not in world.pool:
            continue
        truth = read_annotations(world.slides / f"{info.slide_id}.xml")
        batch = ps.read(info.slide_id, 0, info.n_patches)
        p = ps.patch_size
        ds = float(info.attrs["level_downsamples"][ps.settings["level"]])
        centres = batch.coords + (p // 2 + 0.5) * ds
        gt_centre = contains(truth, centres)
        normal = batch.labels == 0
        normal_patches += int(normal.sum())
        wrong_patches += int((normal & gt_centre).sum())
        for k in range(info.n_patches):
            gt = rasterize(truth, x_level0=batch.coords[k, 0], y_level0=batch.coords[k, 1],
                           width=p, height=p, downsample=ds)
            known = batch.masks[k] != IGNORE
            known_px += int(known.sum())
            wrong_px += int((known & (batch.masks[k] != gt)).sum())
    return {"normal_patches_on_tumor": wrong_patches / max(1, normal_patches),
            "wrong_mask_pixels": wrong_px / max(1, known_px)}


LESION_SETS = ("dropped", "kept")
LESION_PATCHES = 32  # per slide and lesion set: half of them tumor patches on those lesions


def lesion_stores(lc: Any, world: Any, seed: int) -> dict[str, Path]:
    """Two stores of the pool's tumor slides for `seed`: tumor patches centred on the lesions
    it dropped (its unannotated tumor) and on those it kept, masks from those outlines alone,
    so that pixel recall there is recall on those lesions (made once, reused)."""
    from lymph.data.annotations import Annotations
    from lymph.data.suggestions import write_asap_xml
    from lymph.pipeline.extract import ExtractConfig
    from lymph.pipeline.extract import run as extract

    root = lc.out / f"seed{seed}" / "lesions"
    drawn = draws(world, seed)
    stores = {}
    for which in LESION_SETS:
        slides, ann = root / f"slides_{which}", root / f"ann_{which}"
        for folder in (slides, ann):
            folder.mkdir(parents=True, exist_ok=True)
        names = []
        for name, (truth, kept, dropped) in drawn.items():
            idx = dropped if which == "dropped" else kept
            if not idx:
                continue
            names.append(name)
            link = slides / f"{name}.tif"
            if not link.is_symlink():
                link.symlink_to((world.slides / f"{name}.tif").resolve())
            write_asap_xml(ann / f"{name}.xml", [], existing=Annotations(
                tumor=tuple(truth.tumor[i] for i in idx), holes=truth.holes))
        (slides / "labels.csv").write_text("".join(f"{n},Tumor\n" for n in names))
        stores[which] = root / f"{which}.zarr"
        extract(ExtractConfig(slides=slides, out=stores[which], annotations=ann,
                              labels=slides / "labels.csv", level=lc.level,
                              patch_size=lc.patch_size, patches_per_slide=LESION_PATCHES,
                              seed=seed, progress=False))
    return stores


def lesion_recall(stores: dict[str, Path], work: Path, threshold: float) -> dict[str, float]:
    """Pixel recall of the condition's kept checkpoint, at its validation threshold, on the
    dropped and on the kept lesions of the training slides, and the gap between them (what
    the model learnt to miss of the tumor it was shown as non-tumor, or never shown)."""
    from lymph.model.evaluate import EvalConfig
    from lymph.model.evaluate import run as evaluate

    ckpt = bench_loop.kept_checkpoint(work)
    out = {f"recall_{which}": float(evaluate(EvalConfig(
        store=store, checkpoint=ckpt, threshold=threshold, batch_size=32,
        progress=False)).to_dict()["recall"]) for which, store in stores.items()}
    out["recall_gap"] = out["recall_kept"] - out["recall_dropped"]
    return out


def run_partial(config: PartialConfig) -> dict[str, Any]:
    from lymph.model.study.stats import paired_stats

    lc = config.loop
    lc.out.mkdir(parents=True, exist_ok=True)
    world = bench_loop.make_world(lc)
    rows = []
    for seed in lc.seeds:
        for condition in CONDITIONS:
            work = lc.out / f"seed{seed}" / condition
            done = work / "row.json"
            if done.is_file():
                saved = json.loads(done.read_text())
                row = bench_loop.rescore(lc, world, work, saved)  # saved by an earlier bench
                if "recall_dropped" not in row:  # a new dict: rescore may return `saved`
                    row = {**row, **lesion_recall(lesion_stores(lc, world, seed), work,
                                                  row["threshold"])}
                if row != saved:
                    done.write_text(json.dumps(row))
                rows.append(row)
                continue
            if work.exists():
                shutil.rmtree(work)
            counts = write_condition(world, seed, work / "ann", condition, config.cell)
            row, _ = bench_loop.train_and_score(lc, world, work / "ann", work, seed)
            row = {"seed": seed, "condition": condition, **counts, **row,
                   **label_noise(world, work / "store.zarr")}
            row.update(lesion_recall(lesion_stores(lc, world, seed), work, row["threshold"]))
            done.write_text(json.dumps(row))
            rows.append(row)
    with open(lc.out / "partial.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    by = {(r["seed"], r["condition"]): r for r in rows}
    rng = np.random.default_rng(0)
    summary = {}
    for metric in METRICS:
        diffs = [by[(s, "reviewed")][metric] - by[(s, "exhaustive")][metric] for s in lc.seeds]
        summary[metric] = paired_stats(diffs, rng=rng, ratio=0.0)  # independent seeds
    for cond in CONDITIONS:
        for key, name in (("normal_patches_on_tumor", "noise"), ("recall_dropped", None),
                          ("recall_kept", None)):
            summary[f"{name or key}_{cond}"] = float(np.mean([by[(s, cond)][key]
                                                              for s in lc.seeds]))
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(lc).items()}
    (lc.out / "partial.json").write_text(json.dumps(
        {"settings": settings, "cell": config.cell, "summary": summary}, indent=1,
        default=str))
    return {"rows": rows, "summary": summary}


def report(result: dict[str, Any]) -> str:
    s = result["summary"]
    lines = ["reviewed - exhaustive, paired over seeds (test-world pixels; F1, recall, precision"
             " at the validation threshold, _05 at 0.5):"]
    for metric in METRICS:
        d = s[metric]
        lo, hi = d["ci"]
        lines.append(f"  Δ{metric:<9} {d['mean']:+.3f}  95% CI [{lo:+.3f}, {hi:+.3f}]  "
                     f"Wilcoxon p {d['p_wilcoxon']:.3f}  n {d['n']}")
    lines.append(f"non-tumor training patches centred on (unannotated) tumor: exhaustive "
                 f"{s['noise_exhaustive']:.1%}, reviewed {s['noise_reviewed']:.1%}")
    lines.append("training slides' pixel recall, mean over seeds, on the dropped (unannotated) "
                 f"lesions: exhaustive {s['recall_dropped_exhaustive']:.3f}, reviewed "
                 f"{s['recall_dropped_reviewed']:.3f}; on the kept ones: exhaustive "
                 f"{s['recall_kept_exhaustive']:.3f}, reviewed {s['recall_kept_reviewed']:.3f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench_out/partial"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--slide", default="8000x6000")
    ap.add_argument("--world", default="camelyon", choices=("camelyon", "default"))
    ap.add_argument("--centre", default="mixed")
    ap.add_argument("--cell", type=float, default=1024.0)
    for name, default in (("tumor", 20), ("normal", 8), ("test-tumor", 6), ("test-normal", 2),
                          ("val", 2), ("level", 2), ("patch-size", 128),
                          ("patches-per-slide", 128), ("steps", 1200), ("eval-every", 100),
                          ("batch-size", 8), ("crop", 64), ("base-width", 8), ("threads", 1)):
        ap.add_argument(f"--{name}", type=int, default=default)
    a = ap.parse_args()
    w, h = (int(v) for v in a.slide.lower().split("x"))
    lc = bench_loop.LoopConfig(out=a.out, seeds=tuple(a.seeds), tumor=a.tumor, normal=a.normal,
                               test_tumor=a.test_tumor, test_normal=a.test_normal,
                               slide=(w, h), world=a.world, centre=a.centre, val=a.val,
                               level=a.level,
                               patch_size=a.patch_size, patches_per_slide=a.patches_per_slide,
                               steps=a.steps, eval_every=a.eval_every,
                               batch_size=a.batch_size, crop=a.crop, base_width=a.base_width,
                               threads=a.threads)
    print(report(run_partial(PartialConfig(loop=lc, cell=a.cell))))
    print(f"rows: {lc.out / 'partial.csv'}")


if __name__ == "__main__":
    main()
