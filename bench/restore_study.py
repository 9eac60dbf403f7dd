"""Restore a study folder's finished runs from a committed results.csv, so a study whose folder
was lost (a machine handed back between sessions) resumes instead of starting over.

    python bench/restore_study.py --csv bench/results/study_c4.csv \\
        --protocol-sha 22398f14...  -- <the `lymph study` options of `make study`>

It rebuilds the study's plan from the same options (the store and checkpoints must exist: rerun
`make study`'s steps 1-3 first), then refuses unless (1) the protocol it would declare has the
sha256 the lost study declared, and (2) every row's plan columns (subset hash, seeds, slides,
patch counts, checkpoint) equal the rebuilt plan's; the world and the plan are then the same.
It writes protocol.json as declared before any run and one runs/<id>/done.json per row, each
marked "restored_from" (the CSV and its git commit). The numbers are the CSV's, measured by the
lost runs; `lymph study` checks each record again when it resumes.

    python bench/restore_study.py --save STUDY_OUT/study --csv bench/results/study_c4.csv

writes the rows of every finished run so far (whole sizes or not): commit it before a stop."""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path
from typing import Any

INTS = ("size", "fold", "repeat", "tp", "fp", "fn", "tn", "best_step", "stopped_step",
        "steps_cap", "n_tumor_patches", "n_normal_patches", "train_seed", "n_test_patches")
FLOATS = ("precision", "recall", "f1", "ap", "dice", "iou", "threshold", "best_val_f1",
          "recon_weight", "train_seconds", "eval_seconds", "cpu_seconds")
PLAN_COLUMNS = ("subset_sha", "train_seed", "train_slides", "val_slides", "test_slides",
                "n_tumor_patches", "n_normal_patches", "init", "pretrain_seed", "pretext")


def typed_row(raw: dict[str, str]) -> dict[str, object]:
    """A results.csv row with the types `execute.run_one` wrote ("" = None; pretrain_seed
    keeps "" for a run without a pretrained start)."""
    row: dict[str, object] = dict(raw)
    for key in INTS:
        row[key] = int(raw[key]) if raw[key] != "" else None
    for key in FLOATS:
        row[key] = float(raw[key]) if raw[key] != "" else None
    row["pretrain_seed"] = int(raw["pretrain_seed"]) if raw["pretrain_seed"] != "" else ""
    return row


def plan_row(ctx: Any, spec: Any) -> dict[str, object]:
    """The plan columns of `spec`'s row, as the rebuilt plan gives them."""
    from lymph.model.study.execute import init_for
    from lymph.model.study.plan import subset_sha

    init = init_for(ctx, spec)
    seed = ctx.pretrain_seeds.get(str(init))
    return {
        "subset_sha": subset_sha(spec.subset), "train_seed": spec.train_seed,
        "train_slides": ";".join(spec.train_slides), "val_slides": ";".join(spec.val_slides),
        "test_slides": ";".join(spec.test_slides), "n_tumor_patches": spec.n_tumor_patches,
        "n_normal_patches": spec.n_normal_patches, "init": str(init or ""),
        "pretrain_seed": "" if seed is None else seed,
        "pretext": ctx.pretexts.get(spec.condition, ""),
    }  # fmt: skip


def study_config(args: list[str]) -> Any:
    """The StudyConfig `lymph study ARGS` builds (the CLI's own parsing)."""
    from lymph.cli.study import study_cmd
    from lymph.model.study import StudyConfig, parse_pretrained

    ctx = study_cmd.make_context("study", list(args))
    o = dict(ctx.params)
    pretrained, conditions = o.pop("pretrained"), o.pop("conditions")
    margin, pilot_sd = o.pop("margin"), o.pop("pilot_sd")
    return StudyConfig(pretrained=parse_pretrained(pretrained), conditions=conditions or None,
                       margin=margin / 100, pilot_sd=pilot_sd / 100, **o)


def restore(csv_path: Path, sha: str, config: Any) -> int:
    """Write the protocol and the done.json records of `config` (a StudyConfig); the number of
    runs restored."""
    from lymph.data.errors import LymphError
    from lymph.data.io import atomic_write_json
    from lymph.model.study.execute import done_path
    from lymph.model.study.protocol import build_protocol, protocol_sha256, record_protocol
    from lymph.model.study.resume import row_problem
    from lymph.model.study.run import study_context

    plan, ctx = study_context(config)
    protocol = build_protocol(config, plan)
    if protocol_sha256(protocol) != sha:
        sys.exit(f"the rebuilt protocol's sha256 is {protocol_sha256(protocol)}, not {sha}: "
                 "these options or this code do not rebuild the lost study; nothing written")
    if (config.out / "runs").exists() or (config.out / "protocol.json").exists():
        sys.exit(f"{config.out} already holds a study; restore only into a new folder")
    specs = {s.run_id: s for s in plan.runs}
    rows = [typed_row(r) for r in csv.DictReader(csv_path.open(newline=""))]
    for row in rows:
        spec = specs.get(str(row["run_id"]))
        if spec is None:
            sys.exit(f"{csv_path}: run {row['run_id']} is not in the rebuilt plan")
        want = plan_row(ctx, spec)
        diff = {k: (row[k], want[k]) for k in PLAN_COLUMNS if row[k] != want[k]}
        problem = diff or row_problem(row, spec)
        if problem:
            sys.exit(f"{csv_path}: {spec.run_id} differs from the rebuilt plan: {problem}; "
                     "nothing written")
    commit = subprocess.run(["git", "log", "-1", "--format=%H", "--", str(csv_path)],
                            capture_output=True, text=True).stdout.strip()
    written = 0
    try:
        config.out.mkdir(parents=True, exist_ok=True)
        record_protocol(config.out / "protocol.json", protocol, n_results=0)
        for row in rows:
            spec = specs[str(row["run_id"])]
            done = done_path(config, spec)
            done.parent.mkdir(parents=True)
            atomic_write_json(done, {"spec": spec.fingerprint(), "settings": ctx.settings,
                                     "row": row, "restored_from": f"{csv_path} @ {commit}"})
            written += 1
    except (LymphError, OSError) as exc:  # a full disk: one line, and what to do
        sys.exit(f"{config.out}: restore stopped after {written} of {len(rows)} runs ({exc}); "
                 f"remove {config.out} (partly restored) and restore again")
    return written


def save(study: Path, csv_path: Path) -> int:
    """Write every finished run's row (runs/*/done.json, finished sizes or not) to `csv_path`
    in results.csv's format: what to commit so the next session can restore the study."""
    import json

    from lymph.model.study.report import write_results_csv

    rows = [json.loads(d.read_text())["row"] for d in sorted(study.glob("runs/*/done.json"))]
    write_results_csv(csv_path, rows)
    return len(rows)


def check(csv_path: Path, run_id: str, config: Any) -> bool:
    """Rerun one run of the CSV in a scratch folder (same world, plan and checkpoints) and say
    whether its counts are the CSV's: are the restored runs what this machine would measure?"""
    import dataclasses
    import tempfile
    import warnings

    from lymph.model.study.execute import run_one
    from lymph.model.study.run import study_context
    from lymph.model.threads import torch_threads

    with tempfile.TemporaryDirectory() as tmp:
        plan, ctx = study_context(dataclasses.replace(config, out=Path(tmp)))
        spec = next((s for s in plan.runs if s.run_id == run_id), None)
        if spec is None:
            sys.exit(f"--check {run_id}: not a run of this study's plan; give a run_id of --csv")
        with torch_threads(ctx.config.threads), warnings.catch_warnings():  # as execute()
            warnings.simplefilter("ignore")
            got = run_one(ctx, spec)
    want = next(typed_row(r) for r in csv.DictReader(csv_path.open(newline=""))
                if r["run_id"] == run_id)
    keys = ("tp", "fp", "fn", "tn", "f1", "threshold", "best_step", "stopped_step")
    for key in keys:
        print(f"{run_id} {key}: csv {want[key]!r}, rerun {got[key]!r}")
    return all(want[k] == got[k] for k in keys)


def main() -> None:
    from lymph.data.errors import LymphError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--protocol-sha", help="restore: the lost study's protocol sha256")
    parser.add_argument("--save", type=Path, metavar="STUDY_OUT",
                        help="instead: write the finished runs of STUDY_OUT to --csv")
    parser.add_argument("--check", metavar="RUN_ID",
                        help="instead: rerun RUN_ID of --csv in a scratch folder and compare")
    parser.add_argument("study_args", nargs=argparse.REMAINDER)
    a = parser.parse_args()
    args = a.study_args[1:] if a.study_args[:1] == ["--"] else a.study_args
    if not a.save and not a.csv.is_file():
        sys.exit(f"--csv {a.csv}: no such file; give the results.csv rows to restore from")
    if a.check:
        same = check(a.csv, a.check, study_config(args))
        print("identical" if same else "DIFFERENT: the rerun does not reproduce the CSV's run")
        sys.exit(0 if same else 1)
    if a.save:
        try:
            print(f"saved {save(a.save, a.csv)} finished run(s) to {a.csv}")
        except (LymphError, OSError, ValueError, KeyError) as exc:  # full disk, a bad done.json
            sys.exit(f"--save {a.save}: {exc}; nothing saved to {a.csv}")
        return
    if not a.protocol_sha:
        parser.error("give --protocol-sha (restore), --save STUDY_OUT or --check RUN_ID")
    n = restore(a.csv, a.protocol_sha, study_config(args))
    print(f"restored {n} finished run(s) from {a.csv}")


if __name__ == "__main__":
    main()
