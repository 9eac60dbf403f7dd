"""table.md's number formatting (model/study/report.py)."""

from __future__ import annotations

from lymph.model.study.report import _pp


def test_pp_keeps_the_sign_of_a_ci_bound_that_rounds_to_zero() -> None:
    # [-0.04, +1.33] pp with "no detectable effect" must not read as [+0.0, +1.3]
    assert _pp(-0.0004) == "-0.04" and _pp(0.0004, signed=False) == "0.04"
    assert _pp(0.0) == _pp(-0.0) == "+0.0" and _pp(0.0133) == "+1.3" and _pp(-0.02) == "-2.0"
    assert _pp(float("nan")) == "n/a"


def test_compute_line_sums_the_runs_own_time() -> None:
    from lymph.model.study.report import compute_line

    rows = [{"train_seconds": "3000", "eval_seconds": "600", "cpu_seconds": "3500"},
            {"train_seconds": 1800.0, "eval_seconds": 0.0, "cpu_seconds": 1700.0},
            {"train_seconds": "", "eval_seconds": None}]  # a row without times counts no time
    line = compute_line(rows, jobs=2)
    assert line.startswith("Compute: 3 runs, 1.50 h of run time summed over runs (1.44 CPU-h)")
    assert "2 at a time makes about 0.75 h of wall time" in line


def test_the_compute_line_names_the_cpus_when_runs_crossed_machines() -> None:
    from lymph.model.study.report import compute_line

    one = [{"train_seconds": 10, "cpu": "AMD EPYC (avx512_bf16)"}] * 3
    assert "CPUs" not in compute_line(one, jobs=2)  # one machine: nothing to say
    mixed = one + [{"train_seconds": 10, "cpu": "Intel Xeon (avx512_bf16)"},
                   {"train_seconds": 10}]  # a row from before the CPU was recorded
    line = compute_line(mixed, jobs=2)
    assert "**Runs on 3 CPUs** (3 on AMD EPYC (avx512_bf16); 1 on Intel Xeon" in line
    assert "1 on not recorded" in line and "reproduces to the bit on its own CPU only" in line


def test_cpu_name_names_the_model_and_its_bf16_flags() -> None:
    from lymph.model.precision import cpu_features, cpu_name

    name = cpu_name()
    flags = ", ".join(sorted(cpu_features())) or "no bf16"
    assert name.endswith(f" ({flags})") and name[: -len(flags) - 3].strip()


def test_a_power_line_beyond_f1s_range_says_the_design_detects_nothing(tmp_path) -> None:
    from lymph.model.study.protocol import build_protocol
    from lymph.model.study.report import protocol_markdown
    from lymph.model.study.run import study_context
    from tests.model.study.test_run import _cfg, _tiny_world

    store, pretrained = _tiny_world(tmp_path)
    lines = {}
    for sd in (0.109, 0.001):  # the default pilot sd on 2 pairs; a tiny one
        config = _cfg(store, [f"identity={pretrained}"], tmp_path / "out", pilot_sd=sd)
        plan, _ = study_context(config)
        protocol = build_protocol(config, plan)
        lines[sd] = next(x for x in protocol_markdown(protocol).splitlines() if "Power:" in x)
    assert "2 pairs and a pilot sd of 10.9 pp" in lines[0.109]
    assert lines[0.109].endswith("That is more than F1's whole 100 pp range: this design can "
                                 "detect no effect; it only illustrates.")
    assert "100 pp range" not in lines[0.001]
