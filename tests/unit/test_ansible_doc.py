"""ansible-doc reads every module, action plugin and filter netmend ships, and each module's documented options
are the options its argument_spec declares, with the same type, elements, choices, default and required.

One ansible-doc call for the modules and one for the filters, with the playbook project's ansible.cfg. The
argument_spec is read from the module's source without importing Ansible: the dict literal passed to
AnsibleModule, its names (PROXY_MODES, DEFAULTS["mode"], ...) taken from the core, imported as `netmend`.
`tools/sanity.py` (ansible-test validate-modules) checks the same in the collection, and more.
"""

import ast
import importlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_DOC = ROOT / ".venv" / "bin" / "ansible-doc"
MODULES = sorted(p.stem for p in (ROOT / "library").glob("netmend_*.py"))
ACTIONS = sorted(p.stem for p in (ROOT / "action_plugins").glob("*.py") if not p.stem.startswith("_"))
FILTER_FILES = sorted(p for p in (ROOT / "filter_plugins").glob("*.py") if not p.stem.startswith("_"))
CORE_IMPORT = re.compile(r"^(?:.*\.)?module_utils\.(netmend(?:\..+)?)$")


def ansible_doc(*args):
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([str(ANSIBLE_DOC), "-j", *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def module_docs():
    return ansible_doc("-t", "module", *MODULES)


def filter_names(path):
    """The filter names FilterModule.filters() returns (a dict literal), read without importing Ansible."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef) and node.name == "filters":
            returned = [n.value for n in ast.walk(node) if isinstance(n, ast.Return)]
            return [k.value for r in returned if isinstance(r, ast.Dict) for k in r.keys]
    return []


FILTERS = sorted(name for path in FILTER_FILES for name in filter_names(path))


def _core_names(tree):
    """The names the module imports from the core, imported from `netmend` (tests/conftest.py's sys.path)."""
    names = {}
    for node in tree.body:
        if not isinstance(node, ast.ImportFrom) or not CORE_IMPORT.match(node.module or ""):
            continue
        package = CORE_IMPORT.match(node.module).group(1)
        mod = importlib.import_module(package)
        for alias in node.names:
            value = getattr(mod, alias.name, None)
            names[alias.asname or alias.name] = value if value is not None else importlib.import_module(
                f"{package}.{alias.name}")
    return names


def argument_spec(name):
    """The module's argument_spec: the dict given to AnsibleModule (or the variable holding it), evaluated
    with the module's own top-level constants and what it imports from the core."""
    tree = ast.parse((ROOT / "library" / f"{name}.py").read_text(encoding="utf-8"))
    namespace = {"__builtins__": {"list": list, "tuple": tuple, "dict": dict, "sorted": sorted}, **_core_names(tree)}
    for node in tree.body:
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets):
            try:
                value = eval(compile(ast.Expression(node.value), name, "eval"), namespace)
            except Exception:  # only constants matter; anything else is not one
                continue
            namespace.update({t.id: value for t in node.targets})
    assigned = {t.id: n.value for n in ast.walk(tree) if isinstance(n, ast.Assign)
                for t in n.targets if isinstance(t, ast.Name)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "AnsibleModule":
            spec = next(k.value for k in node.keywords if k.arg == "argument_spec")
            spec = assigned[spec.id] if isinstance(spec, ast.Name) else spec
            return eval(compile(ast.Expression(spec), name, "eval"), namespace)
    return None


def test_every_module_and_action_plugin_has_its_documentation(module_docs):
    assert sorted(module_docs) == MODULES
    for name, entry in module_docs.items():
        doc = entry["doc"]
        assert doc["module"] == name and doc["short_description"] and doc["description"], name
        assert isinstance(entry["return"], dict) and entry["return"], f"{name}: no RETURN"
        examples = yaml.safe_load(entry["examples"])
        assert isinstance(examples, list) and all(name in task for task in examples), f"{name}: EXAMPLES"
    # An action plugin's documentation is a documentation-only module of the same name (library/).
    assert set(ACTIONS) <= set(MODULES), f"action plugins without a module file: {set(ACTIONS) - set(MODULES)}"
    for name in ACTIONS:
        assert module_docs[name]["doc"].get("has_action"), name


def test_every_filter_has_its_documentation():
    assert len(FILTERS) >= 3
    docs = ansible_doc("-t", "filter", *FILTERS)
    assert sorted(docs) == FILTERS
    for name, entry in docs.items():
        doc = entry["doc"]
        assert doc["name"] == name and doc["short_description"] and "_input" in doc["options"], name
        assert "_value" in entry["return"], name
        assert name in entry["examples"], name


@pytest.mark.parametrize("name", [m for m in MODULES if m not in ACTIONS])
def test_documented_options_are_the_argument_spec(module_docs, name):
    spec = argument_spec(name)
    assert spec, f"{name}: no AnsibleModule(argument_spec=...) found"
    options = module_docs[name]["doc"].get("options") or {}
    assert sorted(options) == sorted(spec), f"{name}: documented options differ from the argument_spec"
    wrong = []
    for option, want in spec.items():
        doc = options[option]
        pairs = {"type": (want.get("type", "str"), doc.get("type", "str")),
                 "elements": (want.get("elements"), doc.get("elements")),
                 "choices": (sorted(map(str, want.get("choices") or [])), sorted(map(str, doc.get("choices") or []))),
                 "default": (want.get("default"), doc.get("default")),
                 "required": (bool(want.get("required")), bool(doc.get("required")))}
        wrong += [f"{option}.{key}: argument_spec {a!r}, documented {b!r}" for key, (a, b) in pairs.items() if a != b]
    assert not wrong, f"{name}:\n" + "\n".join(wrong)
