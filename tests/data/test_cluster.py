from __future__ import annotations

from pathlib import Path

import pytest

from lymph.data.cluster import TaskResult, describe_error, map_slides
from lymph.data.errors import ConfigError, SlideError


def _work(path: Path) -> int:
    if path.name.startswith("bad"):
        raise SlideError(f"{path}: corrupt pixels")
    if path.name.startswith("boom"):
        raise ZeroDivisionError("division by zero")
    return len(path.name)


ITEMS = [Path("a.svs"), Path("bad.svs"), Path("ccc.svs"), Path("boom.tif")]


def _check(results: list[TaskResult]) -> None:
    assert [r.item for r in results] == ITEMS  # input order, whatever the completion order
    assert [r.value for r in results] == [5, None, 7, None]
    assert results[0].ok and results[2].ok
    assert results[1].error == "bad.svs: corrupt pixels"  # lymph errors already name the file
    assert results[3].error == "boom.tif: ZeroDivisionError: division by zero"


def test_in_process_failures_do_not_stop_the_batch():
    _check(map_slides(_work, ITEMS, progress=False))


def test_existing_scheduler():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster:
        _check(map_slides(_work, ITEMS, scheduler=cluster.scheduler_address, progress=False))


def test_bad_arguments():
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        map_slides(_work, ITEMS, workers=0)
    with pytest.raises(ConfigError, match="cannot reach the dask scheduler"):
        map_slides(_work, ITEMS, scheduler="tcp://127.0.0.1:9", progress=False,
                   connect_timeout=1)


def test_describe_error():
    assert describe_error("x.svs", SlideError("x.svs: broken")) == "x.svs: broken"
    assert describe_error("x.svs", SlideError("broken")) == "x.svs: broken"
    assert describe_error("x.svs", KeyError()) == "x.svs: KeyError: KeyError"


def test_local_clusters_start_workers_without_dasks_malloc_trim_threshold() -> None:
    """distributed sets MALLOC_TRIM_THRESHOLD_=65536 on workers (1.55x slower extraction,
    measured); lymph's own clusters must not."""
    import dask

    from lymph.data.cluster import NO_TRIM, local_cluster

    seen = {}

    def factory(**kwargs):
        seen.update(kwargs)
        key = "distributed.nanny.pre-spawn-environ"
        seen["environ"] = dict(dask.config.get(key))
        return "cluster"

    assert local_cluster(factory, 2) == "cluster"
    assert seen["n_workers"] == 2 and seen["threads_per_worker"] == 1
    assert seen["environ"]["MALLOC_TRIM_THRESHOLD_"] is None  # skipped by the nanny
    assert list(NO_TRIM.values()) == [None]
    assert dask.config.get("distributed.nanny.pre-spawn-environ")["MALLOC_TRIM_THRESHOLD_"] \
        == 65536  # only while the cluster starts
