"""The house rules, checked: every module imports on its own, stays one concept long, and says
what its public names promise; tests share helpers through helper modules, not test files."""

from __future__ import annotations

import ast
import importlib
import json
import os
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


# Run as `python -c` in a fresh interpreter, given JSON {"warm": [...], "modules": [...]}: import
# what the modules import from outside their package (the slow part, done once), then import
# each module in a child forked from that state, where no module of the package is loaded yet,
# so each import starts as `python -c "import module"` would, whatever order the list is in.
# Children run a few at a time; each leaves its traceback in a file of its own. Prints
# {module: traceback} for the modules that failed.
IMPORT_EACH_ALONE = """
import importlib, json, os, sys, tempfile, traceback
job = json.loads(sys.argv[1])
for name in job["warm"]:
    try:
        importlib.import_module(name)
    except Exception:
        pass  # the child that needs it will say why
folder = tempfile.mkdtemp()
running = {}
def reap():
    pid, status = os.wait()
    module = running.pop(pid)
    if os.waitstatus_to_exitcode(status) != 0:
        failed[module] = open(os.path.join(folder, module)).read() or "no traceback"
failed = {}
for module in job["modules"]:
    while len(running) >= (os.cpu_count() or 1):
        reap()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        with open(os.path.join(folder, module), "w") as out:
            try:
                importlib.import_module(module)
            except BaseException:
                traceback.print_exc(file=out)
                code = 1
        os._exit(code)
    running[pid] = module
while running:
    reap()
print(json.dumps(failed))
"""


def _outside_imports(top: str, paths: list[Path]) -> list[str]:
    """The absolute imports in `paths` of modules outside the package `top`."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    return sorted(name for name in names if name.split(".")[0] != top)


def _import_each_alone(top: str, modules: list[str], root: Path) -> dict[str, str]:
    """{module: traceback} for the modules of package `top` that fail to import on their own."""
    job = {"warm": _outside_imports(top, sorted((root / top).rglob("*.py"))), "modules": modules}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_ALONE, json.dumps(job)],
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    failed: dict[str, str] = json.loads(result.stdout.splitlines()[-1])
    return failed


def _package_of(module: str) -> str:
    is_package = (ROOT / module.replace(".", "/")).is_dir()
    return module if is_package else module.rpartition(".")[0]


PACKAGES = sorted({_package_of(module) for module in MODULES})
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a child per module")


@pytest.fixture(scope="module")
def import_failures() -> dict[str, str]:
    """Every module of sidecar imported alone: one fresh interpreter for all, one fork each."""
    return _import_each_alone("sidecar", MODULES, ROOT)


@needs_fork
@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_imports_on_its_own(package: str, import_failures: dict[str, str]) -> None:
    """An import cycle shows up as an ImportError here, whatever order the test run happened
    to import things in: each module is imported with no module of sidecar loaded yet, in a
    fresh interpreter apart from this test session."""
    failed = {
        module: trace for module, trace in import_failures.items() if _package_of(module) == package
    }
    assert failed == {}, "\n".join(f"--- import {m}\n{t[-2000:]}" for m, t in failed.items())


@needs_fork
def test_the_import_check_catches_a_cycle_that_only_one_entry_point_trips(tmp_path: Path) -> None:
    """`cyc.a` imports fine (it defines `f` before importing `cyc.b`); `cyc.b` does not, as
    importing it first finds `cyc.b.g` undefined. Importing both in one interpreter, `a` first,
    would pass: the check must fail `cyc.b` alone."""
    package = tmp_path / "cyc"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f() -> None: ...\n\nfrom cyc.b import g\n")
    (package / "b.py").write_text("from cyc.a import f\n\ndef g() -> None: ...\n")
    failed = _import_each_alone("cyc", ["cyc", "cyc.a", "cyc.b"], tmp_path)
    assert list(failed) == ["cyc.b"], failed
    assert "ImportError" in failed["cyc.b"]


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
