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
def test_a_lost_study_folder_is_restored_from_its_saved_rows_and_resumes(tmp_path) -> None:
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
