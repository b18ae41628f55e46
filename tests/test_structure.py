"""The house rules, checked: every module imports on its own, stays one concept long, and says
what its public names promise; tests share helpers through helper modules, not test files."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sidecar"
MODULES = sorted(
    ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for path in PACKAGE.rglob("*.py")
    if path.name != "__main__.py"
)
MAX_LINES = 350


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports_on_its_own(module: str) -> None:
    """In a fresh interpreter: an import cycle shows up as an ImportError here, whatever
    order the test run happened to import things in."""
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("module", MODULES)
def test_no_module_is_two_concepts_long(module: str) -> None:
    source = Path(importlib.util.find_spec(module).origin or "")  # type: ignore[union-attr]
    assert len(source.read_text(encoding="utf-8").splitlines()) <= MAX_LINES


Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _public_definitions(tree: ast.AST) -> list[Definition]:
    found = []
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name.startswith("_"):
                continue
            found.append(node)
            if isinstance(node, ast.ClassDef):
                found += _public_definitions(node)
    return found


@pytest.mark.parametrize("module", MODULES)
def test_every_package_and_public_definition_says_what_it_promises(module: str) -> None:
    source = Path(importlib.util.find_spec(module).origin or "")  # type: ignore[union-attr]
    tree = ast.parse(source.read_text(encoding="utf-8"))
    assert ast.get_docstring(tree), f"{module} has no module docstring"
    undocumented = [
        f"{node.name} (line {node.lineno})"
        for node in _public_definitions(tree)
        if ast.get_docstring(node) is None
    ]
    assert undocumented == []


def _imports_of_test_files(tree: ast.AST) -> list[str]:
    """The `tests.…test_x` modules (test files, not helpers) that `tree` imports."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return [
        name
        for name in found
        if name.split(".")[0] == "tests" and name.split(".")[-1].startswith("test_")
    ]


def test_tests_share_helpers_through_helper_modules() -> None:
    """A test file importing from another couples the two (and runs the other's module-level
    code, fixtures included); shared code lives in helper modules and conftest.py."""
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for name in _imports_of_test_files(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert offenders == []
