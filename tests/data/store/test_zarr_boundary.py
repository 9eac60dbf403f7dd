"""Only the store package touches zarr: every other module of the package reads and writes the
store through `lymph.data.store` (issue 19)."""

from __future__ import annotations

import ast
from pathlib import Path

import lymph

ROOT = Path(lymph.__file__).resolve().parent
PACKAGES = ("data", "model", "pipeline", "cli")  # bench/ and tests/ are not the package


def _imports_zarr(file: Path) -> bool:
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        if any(n == "zarr" or n.startswith("zarr.") for n in names):
            return True
    return False


def test_only_data_store_imports_zarr() -> None:
    files = [ROOT / "__init__.py", *(ROOT.glob("cli*.py"))]
    for package in PACKAGES:
        files.extend((ROOT / package).rglob("*.py"))
    store = ROOT / "data" / "store"
    assert any(_imports_zarr(f) for f in store.glob("*.py"))  # the scan sees imports
    offenders = sorted(str(f.relative_to(ROOT)) for f in files
                       if store not in f.parents and _imports_zarr(f))
    assert offenders == [], f"import zarr outside data/store/: {offenders}"
