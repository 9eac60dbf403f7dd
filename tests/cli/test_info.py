"""`lymph info` (lymph/cli/info.py): a slide listed as damaged states its fix once."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from lymph.cli import main
from lymph.data.store import create_store, write_slide


def _store(tmp_path):
    path = tmp_path / "s.zarr"
    create_store(path, {"patch_size": 8, "level": 0, "seed": 0, "patches_per_slide": 100})
    n = 4
    write_slide(path, "s1", images=np.zeros((n, 8, 8, 3), np.uint8),
                coords=np.zeros((n, 2), np.int64), labels=np.zeros(n, np.uint8),
                masks=np.zeros((n, 8, 8), np.uint8), attrs={"status": "tumor"})
    return path


def test_damaged_metadata_states_the_fix_once(tmp_path):
    """The damage read from unreadable metadata already ends with the fix (rerun `lymph
    extract`, or re-extract into a new --out): info adds no second one."""
    path = _store(tmp_path)
    (path / "slides/s1/images/zarr.json").write_text("{garbage")
    result = CliRunner().invoke(main, ["info", str(path)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("s1 "))
    assert "NO, damaged:" in row and "unreadable metadata" in row
    assert row.count("lymph extract") == 1, row
    assert row.endswith("re-extract into a new --out"), row


def test_a_missing_array_gets_the_fix(tmp_path):
    import shutil

    path = _store(tmp_path)
    shutil.rmtree(path / "slides/s1/masks")
    row = next(line for line in CliRunner().invoke(main, ["info", str(path)]).output.splitlines()
               if line.startswith("s1 "))
    assert row.endswith("NO, damaged: array 'masks' is missing (rerun lymph extract)"), row
