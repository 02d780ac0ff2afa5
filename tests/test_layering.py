"""The core (`dropship/`) is plain Python: no module imports Prefect or the Prefect layer."""

from __future__ import annotations

import ast
from pathlib import Path

import dropship

CORE = Path(dropship.__file__).parent
# Prefect itself and the packages that are built on it (each imports prefect at import time).
PREFECT_LAYER = {"prefect", "flows", "tasks", "blocks", "deployments", "cli"}


def _imported(tree: ast.AST) -> list[tuple[int, str]]:
    names: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.lineno, node.module))
    return names


def _offenders(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for line, name in _imported(ast.parse(path.read_text(), str(path))):
            top = name.split(".")[0]
            if top in PREFECT_LAYER or top.startswith("prefect_"):
                found.append(f"{path.relative_to(root.parent)}:{line} imports {name}")
    return found


def test_no_core_module_imports_prefect() -> None:
    """Every import, also those inside functions: the core must stay importable and testable without Prefect."""
    assert _offenders(CORE) == []


def test_the_scan_sees_imports_inside_functions(tmp_path: Path) -> None:
    core = tmp_path / "dropship"
    core.mkdir()
    (core / "ok.py").write_text("import json\nfrom dropship.errors import DropshipError\n")
    (core / "bad.py").write_text("def f():\n    from prefect.blocks.core import Block\n    import flows.release\n")
    assert _offenders(core) == [
        "dropship/bad.py:2 imports prefect.blocks.core",
        "dropship/bad.py:3 imports flows.release",
    ]
