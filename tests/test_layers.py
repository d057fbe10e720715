"""Imports run one way: model <- training, model <- serving <- ui, and deploy on top of them all;
testkit (support code) below reliability, bench and tests, and none of those import tests.

Read from the source (every `import` and `from ... import`, also inside functions), so a lazy
import that climbs a floor fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "training", "serving", "ui", "deploy", "testkit", "reliability", "bench")
PRODUCT = {"model", "training", "serving", "ui", "deploy"}
# what each package may import from this repository (besides itself)
ALLOWED = {
    "model": set(),
    "training": {"model"},
    "serving": {"model"},
    "ui": {"model", "serving"},
    "deploy": {"model", "serving", "ui"},
    "testkit": PRODUCT,
    "reliability": PRODUCT | {"testkit", "bench"},
    "bench": PRODUCT | {"testkit"},
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level package of this repository, line) for every import in a file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top in PACKAGES or top == "tests":
                found.add((top, node.lineno))
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_the_floors_below(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {top}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for top, line in imported_packages(path)
        if top not in allowed
    ]
    assert not wrong, "\n".join(wrong)


MAX_FUNCTION_LINES = 80


def test_no_function_outside_tests_is_over_80_lines() -> None:
    """Long functions are where copy-shaped blocks hide (issue 16): split them instead."""
    long = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long
