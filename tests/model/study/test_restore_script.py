"""bench/restore_study.py: a study folder lost with its machine is rebuilt from its saved rows
and resumes (nothing reruns, the same table); rows that the rebuilt plan or protocol does not
match are refused, with nothing written."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from lymph.model.study import run
from lymph.model.study.protocol import build_protocol, protocol_sha256
from lymph.model.study.run import study_context
from tests.model.study.test_run import _cfg, _tiny_world


def _script() -> ModuleType:
    path = Path(__file__).resolve().parents[3] / "bench" / "restore_study.py"
    spec = importlib.util.spec_from_file_location("restore_study", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # a tiny study twice (make test-all runs it)
def test_a_lost_study_folder_is_restored_from_its_saved_rows_and_resumes(tmp_path,
                                                                       monkeypatch) -> None:
    script = _script()
    store, pretrained = _tiny_world(tmp_path)
    run(_cfg(store, [f"identity={pretrained}"], tmp_path / "lost"))
    saved = tmp_path / "runs.csv"
    assert script.save(tmp_path / "lost", saved) == 6
    config = _cfg(store, [f"identity={pretrained}"], tmp_path / "again")
    plan, _ = study_context(config)
    sha = protocol_sha256(build_protocol(config, plan))
    assert script.restore(saved, sha, config) == 6
    again = run(config)
    assert (again.ran, again.skipped) == (0, 6)  # every run reused, none rerun
    assert (tmp_path / "again" / "table.md").read_text() == \
        (tmp_path / "lost" / "table.md").read_text()  # byte for byte
    with pytest.raises(SystemExit, match="already holds a study; restore only into a new"):
        script.restore(saved, sha, config)
    _a_full_disk_stops_the_restore_with_one_line(script, saved, sha, config, monkeypatch)


def _a_full_disk_stops_the_restore_with_one_line(script, saved, sha, config, monkeypatch) -> None:
    import dataclasses

    from lymph.data import io
    from lymph.data.errors import OutputError

    real, calls = io.atomic_write_json, []

    def fills_up(path: Path, data: object) -> None:
        calls.append(path)
        if len(calls) > 2:
            raise OutputError(f"cannot write {path}: the disk is full")
        real(path, data)

    monkeypatch.setattr(io, "atomic_write_json", fills_up)
    full = dataclasses.replace(config, out=config.out.parent / "full")
    with pytest.raises(SystemExit, match=r"full: restore stopped after 2 of 6 runs \(cannot "
                                         r"write .*the disk is full\); remove .*full \(partly"):
        script.restore(saved, sha, full)


def test_rows_the_rebuilt_plan_does_not_match_are_refused(tmp_path) -> None:
    script = _script()
    store, pretrained = _tiny_world(tmp_path)
    config = _cfg(store, [f"identity={pretrained}"], tmp_path / "out")
    plan, ctx = study_context(config)
    sha = protocol_sha256(build_protocol(config, plan))
    with pytest.raises(SystemExit, match="sha256 is .*, not 0+: these options or this code do"):
        script.restore(tmp_path / "none.csv", "0" * 64, config)
    spec = plan.runs[0]
    row = {k: "" for k in ("run_id", "size", "fold", "repeat", "condition", "precision",
                           "recall", "f1", "ap", "dice", "iou", "tp", "fp", "fn", "tn",
                           "threshold", "best_step", "best_val_f1", "stopped_step",
                           "steps_cap", "n_test_patches", "train_seconds", "eval_seconds",
                           "cpu_seconds", "recon_weight")}  # fmt: skip
    row.update({k: str(v) for k, v in script.plan_row(ctx, spec).items()})
    row.update(run_id=spec.run_id, size=str(spec.size), fold=str(spec.fold),
               repeat=str(spec.repeat), condition=spec.condition, f1="0.5",
               subset_sha="0123abcd")  # a subset this plan does not draw
    rows = tmp_path / "rows.csv"
    with rows.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        writer.writeheader()
        writer.writerow(row)
    with pytest.raises(SystemExit, match=rf"{spec.run_id} differs from the rebuilt plan: "
                                         r"\{'subset_sha': \('0123abcd', .*nothing written"):
        script.restore(rows, sha, config)
    assert not (tmp_path / "out").exists()


def test_save_of_a_damaged_record_is_one_line_and_writes_nothing(tmp_path, monkeypatch) -> None:
    script = _script()
    done = tmp_path / "study" / "runs" / "n0040_f0_r0_scratch" / "done.json"
    done.parent.mkdir(parents=True)
    done.write_text('{"row": {"run_id"')  # cut off mid-write by hand
    monkeypatch.setattr("sys.argv", ["restore_study.py", "--save", str(tmp_path / "study"),
                                     "--csv", str(tmp_path / "rows.csv")])
    with pytest.raises(SystemExit, match=r"--save .*study: .*; nothing saved to .*rows.csv"):
        script.main()
    assert not (tmp_path / "rows.csv").exists()
