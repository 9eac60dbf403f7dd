from __future__ import annotations

import io

from lymph.data.progress import LogProgress, progress_bar


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_a_line_per_interval_with_step_rate_eta_and_loss():
    out, clock = io.StringIO(), _Clock()
    bar = LogProgress(total=400, desc="pretrain", unit="step", initial=100, file=out,
                      interval=30, clock=clock)
    for _ in range(50):  # 50 steps in 25 s: under the interval, nothing printed
        clock.t += 0.5
        bar.update(1)
    assert out.getvalue() == ""
    bar.set_postfix(loss="0.0123")
    for _ in range(20):  # crosses 30 s once
        clock.t += 0.5
        bar.update(1)
    lines = out.getvalue().splitlines()
    assert lines == ["pretrain: step 160/400 (40%), 2.00 step/s, ETA 2m00s, elapsed 30s, "
                     "loss=0.0123"]
    bar.close()  # a last line at the end
    assert out.getvalue().splitlines()[-1].startswith("pretrain: step 170/400 (42%)")
    assert len(out.getvalue().splitlines()) == 2



def test_a_slow_unit_reads_as_time_per_unit_not_zero_per_second():
    out, clock = io.StringIO(), _Clock()
    bar = LogProgress(total=250, desc="study runs", unit="run", initial=23, file=out,
                      interval=30, clock=clock)
    for _ in range(3):  # a run every 125 s
        clock.t += 125
        bar.update(1)
    assert out.getvalue().splitlines()[-1] == (
        "study runs: run 26/250 (10%), 2m05s/run, ETA 7h46m, elapsed 6m15s")

def test_progress_bar_picks_a_log_line_off_a_tty_and_tqdm_on_one(monkeypatch):
    monkeypatch.setenv("LYMPH_PROGRESS_INTERVAL", "1e-9")
    out = io.StringIO()
    with progress_bar(total=3, desc="study runs", unit="run", file=out) as bar:
        assert isinstance(bar, LogProgress)
        for _ in range(3):
            bar.set_postfix_str("f0_r0_40_scratch")
            bar.update(1)
    text = out.getvalue()
    assert "study runs: run 3/3 (100%)" in text and "f0_r0_40_scratch" in text
    tty = _Tty()
    bar = progress_bar(total=3, desc="x", unit="run", file=tty)
    assert not isinstance(bar, LogProgress)  # a terminal: tqdm's bar
    bar.close()
    quiet = io.StringIO()
    bar = progress_bar(total=3, desc="x", unit="run", enabled=False, file=quiet)
    bar.update(3)
    bar.close()
    assert quiet.getvalue() == ""


def test_bad_interval_setting_falls_back_to_the_default(monkeypatch):
    from lymph.data.progress import DEFAULT_INTERVAL, log_interval

    for bad in ("soon", "0", "-5"):
        monkeypatch.setenv("LYMPH_PROGRESS_INTERVAL", bad)
        assert log_interval() == DEFAULT_INTERVAL
