"""The house rules of DEVELOPERS.md that a machine can check (issue 19).

- Stage boundary: model/ reads only the store, never imports pipeline/; data/ imports neither
  stage; only the store package (data/store*) imports zarr, so the on-disk layout has one owner.
- Size: no module over 600 lines, no function over 60 lines (the UNet definition excepted).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data", "model", "pipeline", "cli")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60
# The UNet is one readable definition (segmentation_models_pytorch style), kept whole on purpose.
FUNCTION_EXCEPTIONS = {"model/unet.py"}


def _modules() -> list[Path]:
    files = [ROOT / "cli.py"] if (ROOT / "cli.py").exists() else []
    for pkg in PACKAGES:
        if (ROOT / pkg).is_dir():
            files += sorted((ROOT / pkg).rglob("*.py"))
    return files


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _imports(path: Path, rel: str | None = None) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against the package)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = ["lymph", *(rel or _rel(path)).split("/")[:-1]]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def test_the_house_walks_every_package() -> None:
    rels = {_rel(p) for p in _modules()}
    assert any(r.startswith("model/") for r in rels) and any(r.startswith("data/") for r in rels)
    assert any(r.startswith("pipeline/") for r in rels)


@pytest.mark.parametrize("path", [p for p in _modules() if _rel(p).startswith("model/")],
                         ids=_rel)
def test_model_never_imports_the_extraction_stage(path: Path) -> None:
    bad = sorted(n for n in _imports(path) if n.startswith("lymph.pipeline"))
    assert not bad, f"{_rel(path)} imports {bad}: model/ reads only the store (stage 2)"


@pytest.mark.parametrize("path", [p for p in _modules() if _rel(p).startswith("data/")], ids=_rel)
def test_data_imports_neither_stage(path: Path) -> None:
    bad = sorted(n for n in _imports(path)
                 if n.startswith(("lymph.pipeline", "lymph.model", "lymph.cli")))
    assert not bad, f"{_rel(path)} imports {bad}: data/ is what both stages share"


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_only_the_store_imports_zarr(path: Path) -> None:
    if _rel(path).startswith(("data/store/", "data/store.py")):
        return
    bad = sorted(n for n in _imports(path) if n == "zarr" or n.startswith("zarr."))
    assert not bad, f"{_rel(path)} imports {bad}: only data/store owns the Zarr layout"


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_modules_stay_small(path: Path) -> None:
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_MODULE_LINES, f"{_rel(path)} has {n} lines (max {MAX_MODULE_LINES}): split it"


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_functions_stay_short(path: Path) -> None:
    if _rel(path) in FUNCTION_EXCEPTIONS:
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{_rel(path)}: {', '.join(long)} over {MAX_FUNCTION_LINES} lines"


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    """The checks can fail: a module that imports pipeline and zarr is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("import zarr\nfrom lymph.pipeline import extract\nfrom ..pipeline import x\n",
                   encoding="utf-8")
    got = _imports(bad, rel="model/bad.py")
    assert {"zarr", "lymph.pipeline.extract", "lymph.pipeline.x"} <= got


def _readme_map() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Where things are", 1)[1]
    return {m for m in __import__("re").findall(r"^\| `([^`]+\.py)` \|", section, flags=8)}


def test_the_readme_map_lists_every_module_and_only_real_ones() -> None:
    """README "Where things are" is the map: one row per module (package markers with no code
    excepted), and no row for a module that is gone."""
    listed = _readme_map()
    present = {_rel(p) for p in _modules() if len(p.read_text(encoding="utf-8").splitlines()) > 2}
    assert not present - listed, f"modules missing from README's map: {sorted(present - listed)}"
    assert not listed - present, f"README's map names modules that do not exist: "\
        f"{sorted(listed - present)}"


def test_every_path_the_readme_names_exists() -> None:
    import re

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"(?<![\w.-])(?:lymph/)?((?:data|model|pipeline|cli|bench|tests)/[\w/]+"
                           r"\.py)\b", text))
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"README names files that do not exist: {missing}"
