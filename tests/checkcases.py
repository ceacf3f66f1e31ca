"""Data-driven check cases: a node served from text (FixtureHost), and the case directories that edit it.

tests/fixtures/checks/_base/node.json is the lab's w1 as captured (tests/fixtures/drift/) and clean: the
command outputs and files `netmend.facts.gather` reads, exactly the state tests/unit/test_audit.py's Raw
builds. Each tests/fixtures/checks/<check>/<case>/ directory holds a case.json that changes the base the
way a fault changes the node (tests/fixtures/checks/README.md has the format) and an expected.json with
the findings, the plan and the skipped checks; tests/unit/test_check_cases.py runs every one of them.

Stdlib, pytest (through test_audit) and netmend only: the core's Python 3.9 run runs the cases too.
"""

import copy
import json
import posixpath
from pathlib import Path

from netmend import checks, facts
from netmend.iptables import BUILTIN_CHAINS, parse_save
from tests.unit.test_audit import Raw, lab_want, restore_noflush, same_tables

__all__ = ["BASE", "CASES", "Case", "FixtureHost", "Raw", "base_tables", "discover", "lab_want", "node_host",
           "replay_iptables", "run", "same_tables", "with_policies_of"]

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "tests" / "fixtures" / "checks"
BASE = CASES / "_base"
TOOL_DIR = "/usr/sbin"
CASE_KEYS = {"description", "node", "want", "commands", "files", "links", "dns", "installed", "checks"}
EXPECTED_KEYS = {"findings", "actions", "skipped", "after_replay_clean"}
FINDING_KEYS = {"id", "actual", "evidence_contains"}


class CaseError(Exception):
    """A case directory that does not follow the format; the message names the directory and the key."""


class FixtureHost:
    """A node served from text, as netmend.facts.gather reads one.

    commands: {command line as the core runs it, without the tool's directory ("ip -j -d link show"):
    (rc, stdout, stderr)}; files: {absolute path: text}, every directory above a file exists; links:
    {path: the symlink's target}; dns: {nameserver: whether it answers} (a server not named is not
    probed, as when the probe could not run); installed: tool names present with no command served.
    A command the case does not serve is an AssertionError naming it, not a quiet failure."""

    def __init__(self, commands, files, links=None, dns=None, installed=()):
        self.commands, self.files = dict(commands), dict(files)
        self.links, self.dns, self.ran = dict(links or {}), dict(dns or {}), []
        self.tools = {line.split()[0] for line in self.commands} | set(installed)
        self.dirs = set()
        for path in self.files:
            parent = posixpath.dirname(path)
            while parent not in self.dirs and parent != "/":
                self.dirs.add(parent)
                parent = posixpath.dirname(parent)
        self.dirs.add("/")

    def tool(self, name):
        return f"{TOOL_DIR}/{name}" if name in self.tools else None

    def run(self, argv, data=None):
        assert data is None, f"the audit fed {argv} standard input"
        assert posixpath.dirname(argv[0]) == TOOL_DIR, f"{argv[0]} is not a path host.tool() gave"
        line = " ".join([posixpath.basename(argv[0]), *argv[1:]])
        self.ran.append(line)
        assert line in self.commands, f"the case serves no output for `{line}`"
        return self.commands[line]

    def read(self, path):
        return self.files.get(path)

    def isdir(self, path):
        return path.rstrip("/") in self.dirs or path == "/"

    def listdir(self, path):
        prefix = path.rstrip("/") + "/"
        return sorted({p[len(prefix):].split("/")[0] for p in (*self.files, *self.dirs) if p.startswith(prefix)})

    def isfile(self, path):
        return path in self.files

    def link_target(self, path):
        return self.links.get(path)

    def dns_answers(self, servers, timeout):
        assert timeout > 0
        return {server: self.dns[server] for server in servers if server in self.dns}


def _load_json(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CaseError(f"{path}: {exc}") from exc


def _text(directory, name, what):
    path = directory / name
    if not path.is_file():
        raise CaseError(f"{directory}: {what} names {name}, which is not a file there")
    return path.read_text(encoding="utf-8")


def _commands(directory, spec):
    """{command line: (rc, stdout, stderr) or None (the command is gone from the base)}."""
    out = {}
    for line, value in (spec.get("commands") or {}).items():
        if value is None:
            out[line] = None
        elif isinstance(value, str):
            out[line] = (0, _text(directory, value, f"command `{line}`"), "")
        elif isinstance(value, dict) and set(value) <= {"file", "rc", "stderr"}:
            text = _text(directory, value["file"], f"command `{line}`") if value.get("file") else ""
            out[line] = (int(value.get("rc", 0)), text, value.get("stderr", ""))
        else:
            raise CaseError(f"{directory}: command `{line}`: a file name, null or {{file, rc, stderr}}")
    return out


def _files(directory, spec):
    out = {}
    for path, name in (spec.get("files") or {}).items():
        if not path.startswith("/"):
            raise CaseError(f"{directory}: files: {path} is not an absolute path")
        out[path] = None if name is None else _text(directory, name, f"file {path}")
    return out


def merge(base, over):
    """`over` deep-merged onto a copy of `base`: mappings merge key by key, null deletes the key, anything
    else (lists too) replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _apply(base, changes):
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def _referenced(spec):
    names = set()
    for value in (spec.get("commands") or {}).values():
        if isinstance(value, str):
            names.add(value)
        elif isinstance(value, dict) and value.get("file"):
            names.add(value["file"])
    names |= {v for v in (spec.get("files") or {}).values() if v}
    return names


class Case:
    """One case directory: the node (base + case), the want, the checks, what is expected."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.name = self.dir.relative_to(CASES).as_posix()
        self.check = self.dir.parent.name
        self.spec = _load_json(self.dir / "case.json")
        self.expected = _load_json(self.dir / "expected.json")
        unknown = (set(self.spec) - CASE_KEYS) | (set(self.expected) - EXPECTED_KEYS)
        unknown |= {k for f in self.expected.get("findings", []) for k in f if k not in FINDING_KEYS}
        if unknown:
            raise CaseError(f"{self.name}: unknown keys {sorted(unknown)}")
        if not self.spec.get("description"):
            raise CaseError(f"{self.name}: case.json has no description")
        self.node = self.spec.get("node", "w1")
        self.want = merge(lab_want(self.node), self.spec.get("want") or {})
        names = self.spec.get("checks", [self.check])
        self.checks = None if names == "all" else list(names)
        bad = [c for c in (self.checks or []) if c not in checks.CHECKS]
        if bad or self.check not in checks.CHECKS:
            raise CaseError(f"{self.name}: not a check: {bad or self.check}")

    def referenced(self):
        """The file names case.json names (every other file in the directory is a leftover)."""
        return _referenced(self.spec)

    def host(self):
        return node_host(self.spec, self.dir)

    def run(self):
        """(facts, result) of gather then audit, as netmend_node runs them."""
        return run(self.host(), self.want, self.checks)


def node_host(spec=None, directory=None):
    """The FixtureHost of the base with the changes of `spec` (a case.json) whose files are in `directory`."""
    spec = spec or {}
    base = _load_json(BASE / "node.json")
    commands = _apply(_commands(BASE, base), _commands(directory, spec) if spec else {})
    files = _apply(_files(BASE, base), _files(directory, spec) if spec else {})
    links = _apply(base.get("links") or {}, spec.get("links") or {})
    dns = {**(base.get("dns") or {}), **(spec.get("dns") or {})}
    installed = [*(base.get("installed") or []), *(spec.get("installed") or [])]
    return FixtureHost(commands, files, links, dns, installed)


def run(host, want, names=None):
    """(facts, result): netmend.facts.gather through `host`, then netmend.checks.audit (names None: all)."""
    gathered = facts.gather(host, want, names if names is not None else list(checks.CHECKS))
    return gathered, checks.audit(gathered, want, names)


def discover():
    """Every case directory, sorted: tests/fixtures/checks/<check>/<case>/ with a case.json."""
    return sorted(p.parent for p in CASES.glob("*/*/case.json") if not p.parent.parent.name.startswith("_"))


def base_tables():
    base = _load_json(BASE / "node.json")
    return parse_save(_commands(BASE, base)["iptables-save"][1])


def replay_iptables(tables, actions):
    """The tables after every IPv4 iptables action's payload, with iptables-restore --noflush semantics."""
    for action in actions:
        if action.kind == "iptables" and action.family == "ipv4":
            tables = restore_noflush(tables, action.payload)
    return tables


def with_policies_of(tables, source):
    """`tables` with the built-in chains' policies of `source`: a --noflush payload never sets those (the
    host's FORWARD policy stays the host's), so a replay is compared with the base on everything else."""
    out = copy.deepcopy(tables)
    for name, table in out.items():
        for chain in BUILTIN_CHAINS.get(name, ()):
            if chain in table.policies and name in source and chain in source[name].policies:
                table.policies[chain] = source[name].policies[chain]
    return out
