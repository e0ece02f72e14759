"""Library returns, CLI renders: rich is imported by ``medseg.cli`` only."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src" / "medseg"


def _imports_rich(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import) and any(
            a.name == "rich" or a.name.startswith("rich.") for a in node.names
        ):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module
            and (node.module == "rich" or node.module.startswith("rich."))
        ):
            return True
    return False


def test_no_rich_import_outside_cli() -> None:
    files = [p for p in SRC.rglob("*.py") if "cli" not in p.relative_to(SRC).parts[:1]]
    assert len(files) > 50  # the walk found the package
    offenders = [str(p.relative_to(SRC)) for p in files if _imports_rich(p)]
    assert offenders == [], f"rich imported outside medseg/cli: {offenders}"
    assert _imports_rich(SRC / "cli" / "tables.py")  # the check sees an import when there is one
