"""Extraction's decode threads and writer thread (pipeline/overlap.py)."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lymph.data.errors import ConfigError
from lymph.pipeline.extract import ExtractConfig, run
from lymph.pipeline.overlap import PatchPipeline, default_threads


def test_writes_run_in_order_on_one_thread_while_decoding_goes_on() -> None:
    done: list[int] = []
    writers: set[str] = set()

    def write(i: int) -> None:
        time.sleep(0.01 * (3 - i % 3))  # later writes would finish first if run in parallel
        writers.add(threading.current_thread().name)
        done.append(i)

    filled = np.zeros(40, int)
    with PatchPipeline(4, depth=2) as pipe:
        for a in range(0, 40, 8):
            pipe.fill(lambda k: filled.__setitem__(k, k + 1), range(a, a + 8))
            pipe.write(lambda a=a: write(a // 8))
    assert done == [0, 1, 2, 3, 4] and len(writers) == 1
    np.testing.assert_array_equal(filled, np.arange(1, 41))


def test_a_write_error_is_raised_and_a_decode_error_stops_the_chunk() -> None:
    def bad() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"), PatchPipeline(2) as pipe:
        pipe.write(bad)
        time.sleep(0.05)
        pipe.write(lambda: None)

    def decode(k: int) -> None:
        if k == 3:
            raise ValueError("corrupt tile 3")

    with pytest.raises(ValueError, match="corrupt tile 3"), PatchPipeline(3) as pipe:
        pipe.fill(decode, range(8))


def test_threads_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="threads must be >= 1"):
        PatchPipeline(0)
    with pytest.raises(ConfigError, match=r"threads 0 must be an integer >= 1"):
        ExtractConfig(slides=tmp_path, out=tmp_path / "o", threads=0)
    with pytest.raises(ConfigError, match=r"threads '2' must be an integer >= 1"):
        ExtractConfig(slides=tmp_path, out=tmp_path / "o", threads="2")  # type: ignore[arg-type]
    assert default_threads(1) >= 1 and default_threads(10**6) == 1


def _chunk_digest(store: Path) -> str:
    """sha256 over every chunk file of the store (paths and bytes; attrs hold timings)."""
    h = hashlib.sha256()
    files = sorted(p for p in (store / "slides").rglob("*") if p.is_file() and "/c/" in str(p))
    assert files
    for p in files:
        h.update(str(p.relative_to(store)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_store_is_identical_whatever_the_thread_count(synth_world: Path, tmp_path: Path) -> None:
    digests = {}
    for threads in (1, 3):
        out = tmp_path / f"t{threads}.zarr"
        summary = run(ExtractConfig(slides=synth_world, out=out, patches_per_slide=150,
                                        labels=synth_world / "reference.csv", progress=False,
                                        threads=threads))
        assert not summary.failed and len(summary.done) == 2
        digests[threads] = _chunk_digest(out)
    assert digests[1] == digests[3]


def test_cli_threads_option(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lymph.cli import main

    r = CliRunner().invoke(main, ["extract", "--slides", str(tmp_path), "--out",
                                  str(tmp_path / "o"), "--threads", "0"])
    assert r.exit_code == 2 and "--threads" in r.output and "Traceback" not in r.output
