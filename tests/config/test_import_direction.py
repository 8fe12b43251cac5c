"""Imports point one way (DESIGN.md): crm imports no other app; policies and
scripting build on crm and never on agents, which composes the screen from all
of them. Checked on the source, so a new import against the grain fails here
before it makes a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = ("crm", "agents", "policies", "scripting", "selfservice")
# What each app may import of the others.
ALLOWED = {
    "selfservice": {"crm", "policies"},
    "crm": set(),
    "policies": {"crm"},
    "scripting": {"crm", "policies"},
    "agents": {"crm", "policies", "scripting"},
}


def _imported_apps(path: Path) -> set[tuple[str, int]]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {(name.split(".")[0], node.lineno) for name in names if name.split(".")[0] in APPS}
    return found


@pytest.mark.parametrize("app", APPS)
def test_an_app_imports_only_the_apps_below_it(app: str) -> None:
    wrong = sorted(
        f"{path.relative_to(ROOT)}:{line} imports {other}"
        for path in (ROOT / app).rglob("*.py")
        for other, line in _imported_apps(path)
        if other != app and other not in ALLOWED[app]
    )
    assert wrong == []


def test_the_check_sees_an_import_against_the_grain(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom agents.views.common import staff_required\n")
    assert _imported_apps(module) == {("agents", 2)}
