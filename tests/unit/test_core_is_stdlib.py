"""The core in module_utils/netmend and the modules in library/ run on nodes that have only Python, 3.9 and
later: stdlib imports, nothing newer than 3.9.

Three layers keep that true. ruff lints module_utils/ and library/ for py39 (pyproject.toml). ./dev test
runs tests/unit under a real Python 3.9 (.venv39) as well, less the controller-only files listed in
tests/conftest.py. This file imports and compiles every file under 3.9, checks that list, and looks for the
3.10+ calls that neither ruff's py39 target nor an untested path would catch.
"""

import ast
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CONTROLLER_ONLY

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "module_utils"
MODULES = sorted(".".join(p.relative_to(CORE).with_suffix("").parts).removesuffix(".__init__")
                 for p in (CORE / "netmend").rglob("*.py"))
NODE_FILES = sorted([*(CORE / "netmend").rglob("*.py"), *(ROOT / "library").glob("*.py")])
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
NO_PY39 = "Python 3.9 not found: the core's 3.9 tests did NOT run"


def find_python39():
    """Debian 11 and RHEL 9 nodes have Python 3.9. ./dev test passes the one it found (NETMEND_PY39); else
    the same search: python3.9 on the PATH (not a pyenv shim), then pyenv's 3.9 builds."""
    if sys.version_info[:2] == (3, 9):
        return sys.executable
    found = os.environ.get("NETMEND_PY39", "")
    if found:
        return found
    on_path = shutil.which("python3.9")
    candidates = [on_path] if on_path and "/shims/" not in on_path else []
    candidates += sorted(glob.glob("/root/.pyenv/versions/3.9*/bin/python3.9"), reverse=True)
    return candidates[0] if candidates else ""


@pytest.fixture(scope="module")
def python39():
    python = find_python39()
    if not python:
        if IN_CI:
            pytest.fail(f"{NO_PY39} (CI must have one: /root/.pyenv/versions/3.9*)")
        pytest.skip(NO_PY39)
    return python


def _run(python, code):
    # -S: no site-packages, so anything beyond the standard library fails to import.
    return subprocess.run([python, "-S", "-c", code], capture_output=True, text=True, timeout=60, check=False)


def _import_all(python):
    return _run(python, f"import sys; sys.path.insert(0, {str(CORE)!r})\n" + "".join(f"import {m}\n" for m in MODULES))


def test_every_core_module_imports_with_the_standard_library_only():
    assert len(MODULES) >= 10 and "netmend.checks" in MODULES
    proc = _import_all("/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable)
    assert proc.returncode == 0, proc.stderr


def test_every_core_module_imports_on_python_3_9(python39):
    version = _run(python39, "import sys; print('%d.%d' % sys.version_info[:2])")
    assert version.stdout.strip() == "3.9", (python39, version.stdout, version.stderr)
    proc = _import_all(python39)
    assert proc.returncode == 0, proc.stderr


def test_the_core_and_the_modules_compile_on_python_3_9(python39):
    """library/ imports Ansible, so it is compiled rather than imported: 3.10+ syntax fails here."""
    code = ("import sys\nfor path in sys.argv[1:]:\n"
            "    with open(path, encoding='utf-8') as fh:\n        compile(fh.read(), path, 'exec')\n")
    proc = subprocess.run([python39, "-S", "-c", code, *map(str, NODE_FILES)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


# What ruff's py39 target does not flag (it only reports 3.10+ syntax) and an untested path would hide: the
# forms ruff's py311 rules ask for elsewhere (B905 zip(strict=), RUF007 pairwise) and newer keywords.
NEW_KEYWORDS = {"zip": {"strict"}, "dataclass": {"slots", "kw_only", "match_args"}, "field": {"kw_only"}}
NEW_NAMES = {"pairwise", "batched", "bit_count", "UTC", "tomllib", "ExceptionGroup", "aiter", "anext"}


def _name(node):
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def _annotations(tree):
    """The annotation nodes: never evaluated, as `X | Y` in one needs `from __future__ import annotations`
    under py39 (ruff's FA102)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign):
            yield node.annotation
        elif isinstance(node, ast.arg) and node.annotation:
            yield node.annotation
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns:
            yield node.returns


def newer_than_3_9(text, where):
    """'where:line: what' for each 3.10+ call, name or `X | Y` of types outside annotations in `text`."""
    tree = ast.parse(text)
    in_annotation = {id(n) for a in _annotations(tree) for n in ast.walk(a)}
    found = {}
    for node in ast.walk(tree):
        what = ""
        if isinstance(node, ast.Call):
            name = _name(node.func)
            late = NEW_KEYWORDS.get(name, set()) & {k.arg for k in node.keywords}
            if late:
                what = f"{name}({', '.join(sorted(late))}=...)"
            elif name in ("isinstance", "issubclass") and len(node.args) == 2 and _has_union(node.args[1]):
                what = f"{name}() with `X | Y` (use a tuple)"
        elif isinstance(node, (ast.Name, ast.Attribute)) and _name(node) in NEW_NAMES:
            what = _name(node)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = {a.name.split(".")[0] for a in node.names} | {(getattr(node, "module", "") or "").split(".")[0]}
            what = ", ".join(sorted(names & NEW_NAMES))
        elif (isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr) and id(node) not in in_annotation
              and any(_is_type(side) for side in (node.left, node.right))):
            what = "`X | Y` of types outside an annotation"
        if what:
            found.setdefault(node.lineno, f"{where}:{node.lineno}: {what} is 3.10+")
    return [found[line] for line in sorted(found)]


def _has_union(node):
    return any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(node))


def _is_type(node):
    return ((isinstance(node, ast.Constant) and node.value is None)
            or (isinstance(node, ast.Name) and node.id in {"int", "str", "bytes", "float", "bool", "list", "tuple",
                                                            "dict", "set", "frozenset", "type", "object"}))


def test_no_3_10_calls_or_names_in_the_code_that_runs_on_nodes():
    found = [line for path in NODE_FILES
             for line in newer_than_3_9(path.read_text(encoding="utf-8"), path.relative_to(ROOT))]
    assert not found, "\n".join(found)


def test_the_3_10_checker_finds_what_it_looks_for():
    text = ("from itertools import pairwise\nx = isinstance(a, (int, str)) or isinstance(a, int | str)\n"
            "y = list(zip(a, b, strict=True))\nMaybe = int | None\nn = (5).bit_count()\n"
            "@dataclass(slots=True)\nclass C:\n    v: int | None = None\n"
            "flags = 1 | 2\ndef f(a: int | None, b=zip(a, b)) -> str | None: ...\n")
    assert [line.split(": ")[0] for line in newer_than_3_9(text, "p.py")] == [
        "p.py:1", "p.py:2", "p.py:3", "p.py:4", "p.py:5", "p.py:6"]


# The Python 3.9 run (tests/conftest.py): which unit test files it leaves out.
CORE_TEST_IMPORTS = {"pytest", "yaml", "netmend", "lab.inventory", "conftest"}


def _optional(tree):
    """The nodes inside a `try:` whose handler catches ImportError: imports the file can do without."""
    late = ("ImportError", "ModuleNotFoundError", "Exception")
    tries = [n for n in ast.walk(tree) if isinstance(n, ast.Try)
             and any(h.type is None or any(_name(t) in late for t in ast.walk(h.type)) for h in n.handlers)]
    return {id(n) for t in tries for stmt in t.body for n in ast.walk(stmt)}


def _imports(path):
    """Each module a file imports, as `module.name` for `from module import name`; optional ones left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    optional = _optional(tree)
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield from (f"{node.module}.{a.name}" for a in node.names)


def _helper(module):
    """The file of a test helper the import names (tests.x, tests.unit.x, or x beside a conftest), or None."""
    parts = module.split(".")[1:] if module.startswith("tests.") else module.split(".")
    for n in range(len(parts), 0, -1):
        for base in (ROOT / "tests", ROOT / "tests" / "unit"):
            path = base.joinpath(*parts[:n]).with_suffix(".py")
            if path.is_file():
                return path
    return None


def _lacking(path, seen):
    """What `path`, and the test helpers it imports, import that the 3.9 run (.venv39) lacks."""
    if path in seen:
        return set()
    seen.add(path)
    lacking = set()
    for module in _imports(path):
        if module.split(".")[0] in sys.stdlib_module_names or any(
                module == ok or module.startswith(f"{ok}.") for ok in CORE_TEST_IMPORTS):
            continue
        helper = _helper(module)
        if helper:
            lacking |= {f"{m} (through {helper.relative_to(ROOT)})" for m in _lacking(helper, seen)}
        else:
            lacking.add(module)
    return lacking


def test_every_controller_only_entry_names_a_unit_test_file():
    tests = ROOT / "tests"
    assert all(name.startswith("unit/test_") for name in CONTROLLER_ONLY)
    missing = sorted(name for name in CONTROLLER_ONLY if not (tests / name).is_file())
    assert not missing, f"tests/conftest.py CONTROLLER_ONLY names files that do not exist: {missing}"


@pytest.mark.skipif(sys.version_info < (3, 10), reason="needs sys.stdlib_module_names: the 3.11 run checks it")
def test_the_3_9_run_leaves_out_only_the_listed_files():
    """A unit test file off the list runs under 3.9 too, so it may import only what .venv39 has."""
    wrong = {}
    for path in sorted((ROOT / "tests" / "unit").glob("test_*.py")):
        if f"unit/{path.name}" in CONTROLLER_ONLY:
            continue
        extra = sorted(_lacking(path, set()))
        if extra:
            wrong[path.name] = extra
    assert not wrong, ("these unit test files import what the Python 3.9 run (.venv39) lacks: drop the import, "
                       f"or list the file in CONTROLLER_ONLY in tests/conftest.py with the reason: {wrong}")
