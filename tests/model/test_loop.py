"""bench/bench_loop.py, the simulated annotation loop: its statistics, and the whole loop on a
tiny world (slow). The tiny world shows the machinery is correct; its numbers mean nothing."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from lymph.data.annotations import read_annotations
from lymph.data.errors import ConfigError

PATH = Path(__file__).resolve().parents[2] / "bench" / "bench_loop.py"


@pytest.fixture(scope="module")
def loop():
    spec = importlib.util.spec_from_file_location("bench_loop", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_loop"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _rows(f1s: dict[tuple[int, str], list[float]], area: float = 1.0) -> list[dict]:
    # AP: random's F1 + 0.1 every round, uncertainty's F1 + 0.2 (it ranks better)
    return [{"seed": s, "strategy": st, "round": r, "area_mm2": area * (r + 1), "f1": f,
             "ap": f + (0.2 if st == "uncertainty" else 0.1)}
            for (s, st), vals in f1s.items() for r, f in enumerate(vals)]


def test_reach_fraction(loop):
    rnd = [{"f1": 0.2, "area_mm2": 1.0}, {"f1": 0.4, "area_mm2": 2.0},
           {"f1": 0.5, "area_mm2": 4.0}]
    unc = [{"f1": 0.2, "area_mm2": 1.0}, {"f1": 0.55, "area_mm2": 2.0},
           {"f1": 0.6, "area_mm2": 4.0}]
    assert loop.reach_fraction(unc, rnd) == (0.5, True)
    assert loop.reach_fraction(rnd, rnd) == (1.0, True)
    worse = [{"f1": 0.1, "area_mm2": a} for a in (1.0, 2.0, 4.0)]
    assert loop.reach_fraction(worse, rnd) == (1.0, False)


def test_summarize_pairs_seeds_per_round(loop):
    f1s = {}
    for s in range(6):
        f1s[(s, "random")] = [0.2, 0.3, 0.4]
        f1s[(s, "uncertainty")] = [0.2, 0.45 + 0.01 * s, 0.5]
    out = loop.summarize(_rows(f1s), tuple(range(6)), 2)
    r0, r1 = out["per_round"][0]["delta_f1"], out["per_round"][1]["delta_f1"]
    assert r0["mean"] == 0 and r0["n"] == 6
    assert r1["mean"] == pytest.approx(0.175) and r1["ci"][0] > 0 and r1["positive"] == 6
    rf = out["reach_fraction"]
    assert rf["values"] == [2 / 3] * 6 and all(rf["reached"]) and rf["mean"] == pytest.approx(2 / 3)
    assert out["per_round"][0]["delta_ap"]["mean"] == pytest.approx(0.1)
    ra = out["reach_fraction_ap"]  # uncertainty's round-1 AP 0.65+ >= random's final 0.5
    assert ra["metric"] == "ap" and ra["values"] == [2 / 3] * 6
    partial = loop.summarize(_rows({(0, "random"): [0.2, 0.3]}), (0,), 1)
    assert partial["per_round"][0]["delta_f1"] == {"n": 0}
    assert math.isnan(partial["reach_fraction"]["mean"])


@pytest.mark.filterwarnings("ignore:No artists with labels")  # errorbar is recorded, not drawn
def test_plot_means_with_intervals_and_single_seeds(loop, tmp_path, monkeypatch):
    bars = []
    monkeypatch.setattr("matplotlib.axes.Axes.errorbar",
                        lambda self, x, y, yerr, **kw: bars.append((x, y, yerr, kw["label"])))
    rows = _rows({(0, "random"): [0.2, 0.4], (1, "random"): [0.4, 0.6],
                  (0, "uncertainty"): [0.2, 0.5], (1, "uncertainty"): [0.4, math.nan]})
    for r in rows:
        r.update(annotated_patches=24 * (r["round"] + 1), froc=0.1)
    loop.plot(rows, tmp_path / "loop.png")
    assert (tmp_path / "loop.png").stat().st_size > 10_000
    f1_unc, f1_rnd = bars[0], bars[4]  # 4 panels per strategy, uncertainty first
    assert "uncertainty: mean of 2 seeds" in f1_unc[3] and "random" in f1_rnd[3]
    assert f1_rnd[1] == pytest.approx([0.3, 0.5])  # mean per round
    assert f1_rnd[2][0] == pytest.approx(12.706 * 0.1, rel=1e-3)  # t(1) 97.5% x sem
    assert f1_unc[1][1] == pytest.approx(0.5) and f1_unc[2][1] == 0  # one finite value: no bar
    assert f1_unc[0][0] < 1.0 < f1_rnd[0][0]  # dodged apart around area 1.0


def test_val_threshold_is_best_steps_validation_choice(loop, tmp_path):
    lines = [{"kind": "train", "step": 100, "loss": 1.0},
             {"kind": "val", "step": 100, "best_threshold": 0.31},
             {"kind": "val", "step": 200, "best_threshold": 0.07},
             {"kind": "val", "step": 300, "best_threshold": 0.52}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert loop.val_threshold(tmp_path, 200) == 0.07
    assert loop.val_threshold(tmp_path, None) == 0.52  # no best.pt: the last validation's


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"rounds": 0}, "need rounds >= 1"), ({"k": 0}, "need rounds >= 1"),
    ({"seeds": ()}, "need rounds >= 1"), ({"val": 3, "tumor": 3}, "val 3 must be in 1..tumor"),
])
def test_bad_loop_settings(loop, kwargs, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        loop.LoopConfig(out=tmp_path, **kwargs)


@pytest.mark.slow
def test_tiny_loop_end_to_end(loop, tmp_path):
    cfg = loop.LoopConfig(out=tmp_path / "loop", seeds=(0,), rounds=1, k=2, k0=2, size=1024,
                          tumor=3, normal=1, test_tumor=1, test_normal=1, val=1,
                          slide=(4096, 3072), steps=10, eval_every=10, patches_per_slide=16)
    result = loop.run_loop(cfg)
    rows = result["rows"]
    assert [(r["strategy"], r["round"]) for r in rows] == [
        ("uncertainty", 0), ("uncertainty", 1), ("random", 0), ("random", 1)]
    u0, u1, r0, r1 = rows
    assert u0["f1"] == r0["f1"] and u0["area_mm2"] == r0["area_mm2"]  # a paired start
    box_mm2 = 1024 ** 2 * 0.243 ** 2 / 1e6
    assert u0["area_mm2"] == pytest.approx(2 * box_mm2, rel=1e-3)
    assert u1["area_mm2"] == r1["area_mm2"] == pytest.approx(4 * box_mm2, rel=1e-3)
    assert u0["annotated_patches"] == pytest.approx(2 * 1024 ** 2 / 512 ** 2)
    # the oracle's answers: boxes as reviewed regions, tumor only inside them; the new boxes
    # overlap no earlier box by more than half
    boxes = json.loads((tmp_path / "loop" / "seed0" / "uncertainty" / "round1" / "round.json"
                        ).read_text())["boxes_after"]
    for name, bs in boxes.items():
        ann = read_annotations(tmp_path / "loop" / "seed0" / "uncertainty" / "round1" / "ann"
                               / f"{name}.xml")
        got = np.array(sorted(p.bbox_level0 for p in ann.reviewed))
        np.testing.assert_allclose(got, sorted(tuple(b) for b in bs), atol=1e-3)  # XML: 4 dp
        for p in ann.tumor:
            x0, y0, x1, y1 = p.bbox_level0
            assert any(b[0] - 1e-3 <= x0 and x1 <= b[2] + 1e-3 and b[1] - 1e-3 <= y0
                       and y1 <= b[3] + 1e-3 for b in bs)
    with open(tmp_path / "loop" / "loop.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 4
    assert (tmp_path / "loop" / "loop.png").is_file()
    assert "area uncertainty needs" in loop.report(result)
    assert all(0 < r["threshold"] < 1 and "f1_05" in r for r in rows)
    assert all(0 <= r["froc"] <= 1 for r in rows)  # one tumor test slide: FROC defined
    # a rerun resumes from round.json: same rows, nothing retrained; a round saved before the
    # validation threshold is scored again from its checkpoint
    done = tmp_path / "loop" / "seed0" / "random" / "round1" / "round.json"
    saved = json.loads(done.read_text())
    del saved["row"]["threshold"], saved["row"]["froc"]
    done.write_text(json.dumps(saved))
    again = loop.run_loop(cfg)
    assert [r["f1"] for r in again["rows"]] == [r["f1"] for r in rows]
    again_row = json.loads(done.read_text())["row"]
    assert "threshold" in again_row and again_row["froc"] == rows[3]["froc"]
    # one more round: the last round of the shorter run is given its next boxes first
    longer = loop.run_loop(dataclasses.replace(cfg, rounds=2))
    u2 = [r for r in longer["rows"] if r["strategy"] == "uncertainty"][2]
    assert u2["round"] == 2 and u2["boxes"] == 6
    assert u2["area_mm2"] == pytest.approx(6 * box_mm2, rel=1e-3)
    assert np.isfinite([r["f1"] for r in rows]).all()


@pytest.fixture(scope="module")
def partial(loop):
    spec = importlib.util.spec_from_file_location(
        "bench_partial", PATH.with_name("bench_partial.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_partial"] = module
    spec.loader.exec_module(module)
    return module


def test_reviewed_cells_avoid_dropped_lesions(partial):
    cells = partial.reviewed_cells(4000, 3000, [(1500.0, 1200.0, 1900.0, 1500.0)], 500.0)
    grid = np.zeros((6, 8), bool)
    for x0, y0, x1, y1 in cells:
        assert x1 <= 4000 and y1 <= 3000 and y1 - y0 == 500
        grid[int(y0 // 500), int(x0 // 500):int(np.ceil(x1 / 500))] = True
    # the lesion's box grown by a cell (1000..2400 x 700..2000) is left out, the rest is in
    assert not grid[1:4, 2:5].any() and grid.sum() == 48 - 9


def test_drop_half_the_lesions(partial):
    class T:
        tumor = list(range(5))

    kept, dropped = partial.drop_lesions(T(), np.random.default_rng(0))
    assert len(dropped) == 2 and sorted(kept + dropped) == list(range(5))
    T.tumor = [0]
    assert partial.drop_lesions(T(), np.random.default_rng(0)) == ([0], [])


@pytest.mark.slow
def test_tiny_partial_experiment(loop, partial, tmp_path):
    lc = loop.LoopConfig(out=tmp_path / "partial", seeds=(0,), tumor=4, normal=1, test_tumor=1,
                         test_normal=1, val=1, slide=(4096, 3072), steps=10, eval_every=10,
                         patches_per_slide=16)
    result = partial.run_partial(partial.PartialConfig(loop=lc, cell=512.0))
    ex, rv = result["rows"]
    assert (ex["condition"], rv["condition"]) == ("exhaustive", "reviewed")
    assert ex["dropped"] == rv["dropped"] >= 1 and ex["kept"] == rv["kept"]
    assert rv["normal_patches_on_tumor"] == 0 and rv["wrong_mask_pixels"] == 0
    for row in (ex, rv):  # both scored on the same lesion stores of the training slides
        assert 0 <= row["recall_dropped"] <= 1 and 0 <= row["recall_kept"] <= 1
        assert row["recall_gap"] == pytest.approx(row["recall_kept"] - row["recall_dropped"])
    from lymph.data.store import PatchStore

    dropped = PatchStore.open(tmp_path / "partial" / "seed0" / "lesions" / "dropped.zarr")
    assert sum(s.n_tumor for s in dropped.labeled_slides) >= 1
    assert "Δrecall_dropped" in partial.report(result)
    assert "on the dropped (unannotated) lesions: exhaustive" in partial.report(result)
    # a row saved before the lesion analysis existed: scored on resume, and saved
    done = tmp_path / "partial" / "seed0" / "exhaustive" / "row.json"
    old = {k: v for k, v in json.loads(done.read_text()).items() if "_dropped" not in k
           and "_kept" not in k and k != "recall_gap"}
    done.write_text(json.dumps(old))
    again = partial.run_partial(partial.PartialConfig(loop=lc, cell=512.0))
    assert json.loads(done.read_text())["recall_dropped"] == ex["recall_dropped"]
    assert again["rows"][0] == ex
