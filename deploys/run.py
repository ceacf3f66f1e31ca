"""`python -m deploys audit|remediate`: the deploys run with pyinfra's API over the Ansible inventory.

    python -m deploys audit     [--inventory inventory/lab] [--limit w1,w2] [--report-dir DIR] [--fail-at error] [--dry]
    python -m deploys remediate [--inventory inventory/lab] [--limit w1] [--serial N] [--max-fail-percentage P]
                                [--dry] [--summary FILE]

The pyinfra inventory is built from the Ansible one (deploys.inventory): one pyinfra host per host of the
k8s_cluster group, named as in the inventory, with the Ansible groups as pyinfra groups, ssh data from the
ansible_* connection variables (an ssh_config given with -F, as the lab's, with its ProxyCommand) and the roles'
public settings as host data. Nothing else is read: no second inventory.

audit: every node audited in parallel (read-only), the reports written with the same code as the Ansible audit
(netmend.findings: report.json, junit.xml, netmend.prom, report.md), exit 1 when a finding reaches --fail-at or a
node was not audited (playbooks/audit.yml's gate). remediate: the netmend_node operation on each node,
--serial nodes at a time, stopping when more than --max-fail-percentage of a batch failed
(playbooks/remediate.yml's serial and max_fail_percentage, from the same inventory variables); exit 1 when a node
failed or a fixed finding is still there. --dry shows each node's findings and plan (the steps and their
diffs) and changes nothing. Exit 2: the inventory or the settings are not valid, nothing was checked.
"""

import argparse
import difflib
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import gevent
from pyinfra.api import Config, State
from pyinfra.api import Inventory as PyinfraInventory
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operations import run_ops
from pyinfra.context import ctx_host, ctx_state

from netmend.errors import ProblemsError
from netmend.findings import SEVERITIES, gate, to_json, to_junit, to_markdown, to_prometheus
from netmend.plan import owned_only
from netmend.want import CONTROL_PLANE_GROUP

from . import ROOT
from .inventory import Inventory
from .netmend import DATA, TruthError, netmend_audit, netmend_remediate, summary_line, truth_of

CLUSTER_GROUP = "k8s_cluster"
FILES = {"report.json": to_json, "junit.xml": to_junit, "netmend.prom": to_prometheus, "report.md": to_markdown}
FAIL_AT = (*SEVERITIES, "never")
CONNECT_TIMEOUT = 10


class Usage(Exception):
    """Bad arguments, inventory or settings: nothing was checked or changed (exit 2)."""


# --- the pyinfra inventory and state, from the Ansible inventory -----------------------------------------

def select(inventory, limit):
    """The k8s_cluster hosts, in inventory order, that `limit` (host or group names, comma-separated) names."""
    hosts = inventory.hosts(CLUSTER_GROUP)
    if not hosts:
        raise Usage(f"the inventory has no host in the group {CLUSTER_GROUP}")
    if not limit:
        return hosts
    groups = inventory.groups()
    wanted = set()
    for word in (w.strip() for w in limit.split(",") if w.strip()):
        if word in groups:
            wanted |= set(groups[word])
        elif word in hosts:
            wanted.add(word)
        else:
            raise Usage(f"--limit: {word!r} is neither a host of {CLUSTER_GROUP} nor a group")
    chosen = [h for h in hosts if h in wanted]
    if not chosen:
        raise Usage(f"--limit {limit!r} selects no host of {CLUSTER_GROUP}")
    return chosen


def host_data(inventory, hosts):
    """{host: pyinfra host data}: its ssh data and the roles' settings (the deploys' data keys)."""
    return {h: {**inventory.settings(h, DATA), **inventory.connection(h)} for h in hosts}


def pyinfra_inventory(inventory, hosts):
    """pyinfra's Inventory: the hosts with their ssh data and the roles' settings, the Ansible groups."""
    data = host_data(inventory, hosts)
    groups = {}
    for name, members in inventory.groups().items():
        mine = [m for m in members if m in data]
        if name != "all" and mine:
            groups[name] = (mine, {})
    return PyinfraInventory(([(h, data[h]) for h in hosts], {}), **groups)


def inventory_groups(source):
    """The Ansible inventory `source` as a pyinfra inventory file's groups: {group: [(host, data)]} for the
    k8s_cluster hosts (deploys/pyinfra_inventory.py), each host's data naming the inventory for truth_for."""
    inventory = Inventory(source)
    hosts = inventory.hosts(CLUSTER_GROUP)
    data = host_data(inventory, hosts)
    for entry in data.values():
        entry["netmend_inventory"] = str(Path(source).resolve())
    return {name: [(m, data[m]) for m in members if m in data]
            for name, members in inventory.groups().items() if name != "all" and any(m in data for m in members)}


def connect(inventory, targets):
    """A connected pyinfra State over every k8s_cluster host (the targets, and the first control-plane node,
    which reads etcd for all). Returns (state, {name: Host}, [names that did not connect])."""
    everyone = inventory.hosts(CLUSTER_GROUP)
    pyinv = pyinfra_inventory(inventory, everyone)
    first_cp = (inventory.groups().get(CONTROL_PLANE_GROUP) or [""])[0]
    wanted = [pyinv.get_host(h) for h in everyone if h in targets or h == first_cp]
    config = Config(CONNECT_TIMEOUT=CONNECT_TIMEOUT, PARALLEL=max(len(wanted), 1))
    state = State(pyinv, config, check_for_changes=False, initial_limit=wanted)
    try:
        connect_all(state)
    except PyinfraError:
        pass  # no host answered: every target is reported as not reached
    by_name = {h.name: h for h in pyinv}
    missing = [h for h in targets if by_name[h] not in state.active_hosts]
    return state, by_name, missing


def in_parallel(state, hosts, func, *args, **kwargs):
    """Run a deploy function on every host at once (pyinfra's add_deploy runs them one after another)."""

    def one(target):
        with ctx_state.use(state), ctx_host.use(target):
            func(*args, **kwargs)

    gevent.joinall([state.pool.spawn(one, h) for h in hosts], raise_error=True)


# --- the audit ---------------------------------------------------------------------------------------

def audit(state, hosts, truth):
    """{name: {"want", "result"} or {"error"}} of every host, audited in parallel."""
    results = {}
    in_parallel(state, hosts, netmend_audit, truth, results)
    return results


def write_reports(directory, names, results, fail_at, started):
    """The audit's four reports, as the netmend_report action writes them. Returns (paths, lines, failed)."""
    findings, checks, missing, skipped = [], {}, [], {}
    for name in names:
        result = (results.get(name) or {}).get("result")
        if result is None:
            missing.append(name)
            continue
        checks[name] = list(result.checks)
        if result.skipped:
            skipped[name] = [f"{c}: {why}" for c, why in result.skipped]
        findings += result.findings
    run = {"started": started, "finished_unix": time.time(), "complete": not missing, "unreachable": missing,
           "fail_at": fail_at, "skipped": skipped}
    os.makedirs(directory, exist_ok=True)
    written = []
    for file_name, render in FILES.items():
        path = os.path.join(directory, file_name)
        text = to_junit(findings, checks, run, skipped) if render is to_junit else render(findings, checks, run)
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(path + ".tmp", path)
        written.append(path)
    lines = [summary_line(name, results.get(name) or {}) for name in names]
    failed = bool(missing) or (fail_at != "never" and gate(findings, fail_at))
    return written, lines, failed


def show_plan(name, result):
    """--dry: the node's plan, each step with its diff (what `--check --diff` shows)."""
    if not result.actions:
        return [f"{name}: nothing to do"]
    lines = [f"{name}: {len(result.actions)} steps"]
    for action in result.actions:
        refused = "" if owned_only(action) else "  (REFUSED: it touches a chain netmend does not own)"
        lines.append(f"  - {action.describe()}{refused}")
        diff = action.diff()
        lines += ["    " + line.rstrip("\n") for line in difflib.unified_diff(
            diff["before"].splitlines(keepends=True), diff["after"].splitlines(keepends=True),
            diff["before_header"], diff["after_header"])]
    return lines


# --- the remediation ---------------------------------------------------------------------------------

def remediate(state, hosts, truth, serial, max_fail):
    """netmend_remediate on every host, `serial` hosts per batch; a batch starts only while no finished
    batch had more than max_fail percent of its hosts fail. Returns ({name: record}, error or "")."""
    results = {}

    def proceed():
        active = list(state.inventory.get_active_hosts())  # the order pyinfra batches them in
        size = serial or len(active)
        for i in range(0, len(active), size):
            metas = [results[h.name]["op"] for h in active[i:i + size] if "op" in results.get(h.name, {})]
            if metas and all(m.is_complete() for m in metas):
                failed = sum(m.did_error() for m in metas)
                if failed and 100 * failed / len(metas) > max_fail:
                    return False
        return True

    add_deploy(state, netmend_remediate, truth, results, batch=serial, proceed=proceed, host=hosts)
    error = ""
    try:
        run_ops(state)
    except (PyinfraError, ProblemsError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    return results, error


def outcome(name, entry, error):
    """(line, summary dict, ok) of one remediated host."""
    before, after = entry.get("before"), entry.get("after")
    meta = entry.get("op")
    if entry.get("error"):
        return f"{name}: NOT REMEDIATED ({entry['error']})", {"error": entry["error"]}, False
    if before is None:
        why = error or "not run: a batch before it failed"
        return f"{name}: NOT REMEDIATED ({why})", {"error": why}, False
    failed = meta is not None and meta.is_complete() and meta.did_error()
    stuck = entry.get("stuck") or []
    info = {"findings": [f.id for f in before.findings], "planned": [a.describe() for a in before.actions],
            "done": list(entry.get("done") or []), "remaining": [f.id for f in after.findings] if after else None,
            "backups": list(entry.get("backups") or []), "stuck": stuck, "failed": failed,
            "changed": bool(entry.get("done"))}
    if failed and not stuck:
        return (f"{name}: FAILED after {len(info['done'])} of {len(before.actions)} steps (nothing rolled back): "
                + "; ".join(info["done"]) + (f"; left: {', '.join(info['findings'])}"), info, False)
    line = (f"{name}: " + ("fixed " + "; ".join(info["done"]) if info["done"] else "nothing to fix")
            + (f"; still there: {', '.join(stuck)}" if stuck else "")
            + (f"; left for a person: {', '.join(info['remaining'])}" if info["remaining"] else "")
            + (f"; backups: {', '.join(info['backups'])}" if info["backups"] else ""))
    return line, info, not failed and not stuck


# --- the command line --------------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m deploys", description="netmend's pyinfra front end")
    parser.add_argument("command", choices=("audit", "remediate"))
    parser.add_argument("--inventory", "-i", default=str(ROOT / "inventory" / "lab"),
                        help="an Ansible inventory (default: inventory/lab)")
    parser.add_argument("--limit", "-l", default="", help="hosts or groups, comma-separated (default: k8s_cluster)")
    parser.add_argument("--dry", action="store_true", help="show each node's findings and plan; change nothing")
    parser.add_argument("--report-dir", default=str(ROOT / "reports" / "audit"), help="audit: where the reports go")
    parser.add_argument("--fail-at", default="error", choices=FAIL_AT, help="audit: the severity gate")
    parser.add_argument("--serial", type=int, default=None,
                        help="remediate: nodes per batch (default: netmend_remediate_serial, else 1)")
    parser.add_argument("--max-fail-percentage", type=float, default=None,
                        help="remediate: stop when more of a batch failed (default: "
                             "netmend_remediate_max_fail_percentage, else 0)")
    parser.add_argument("--summary", default="", help="remediate: also write the outcome per node as JSON here")
    parser.add_argument("--verbose", "-v", action="store_true", help="pyinfra's own log")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    started = datetime.now(UTC).isoformat()
    if args.verbose:
        import logging  # noqa: PLC0415 - only for -v

        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        inventory = Inventory(args.inventory)
        targets = select(inventory, args.limit)
        state, by_name, missing = connect(inventory, targets)
        live = [by_name[h] for h in targets if h not in missing]
        truth = truth_of(inventory, by_name, targets[0])
    except (Usage, TruthError, ProblemsError, OSError) as exc:
        print(f"netmend: nothing was checked or changed: {exc}", file=sys.stderr)
        return 2
    try:
        run = {"state": state, "live": live, "targets": targets, "missing": missing, "truth": truth}
        if args.command == "audit" or args.dry:
            return _audit(args, run, started)
        return _remediate(args, inventory, run)
    finally:
        disconnect_all(state)


def _audit(args, run, started):
    targets = run["targets"]
    results = audit(run["state"], run["live"], run["truth"])
    if args.dry:
        for name in targets:
            entry = results.get(name) or {}
            print(summary_line(name, entry))
            if entry.get("result") is not None:
                print("\n".join(show_plan(name, entry["result"])))
        return 0 if all((results.get(n) or {}).get("result") is not None for n in targets) else 1
    written, lines, failed = write_reports(args.report_dir, targets, results, args.fail_at, started)
    print("\n".join(lines))
    print(f"reports: {Path(written[0]).parent}")
    if failed:
        print(f"failing: a finding reaches {args.fail_at}, or a node was not audited", file=sys.stderr)
    return 1 if failed else 0


def _remediate(args, inventory, run):
    targets, missing = run["targets"], run["missing"]
    first = inventory.settings(targets[0], ("netmend_remediate_serial", "netmend_remediate_max_fail_percentage"))
    serial = args.serial if args.serial is not None else int(first.get("netmend_remediate_serial") or 1)
    max_fail = (args.max_fail_percentage if args.max_fail_percentage is not None
                else float(first.get("netmend_remediate_max_fail_percentage") or 0))
    results, error = remediate(run["state"], run["live"], run["truth"], serial, max_fail) if run["live"] else ({}, "")
    summary, ok = {}, not error
    for name in targets:
        if name in missing:
            line, info, good = f"{name}: NOT REMEDIATED (unreachable)", {"error": "unreachable"}, False
        else:
            line, info, good = outcome(name, results.get(name) or {}, error)
        print(line)
        summary[name] = info
        ok = ok and good
    if error:
        print(f"netmend: the run stopped: {error}", file=sys.stderr)
    if args.summary:
        Path(args.summary).write_text(json.dumps({"hosts": summary, "error": error}, indent=2, sort_keys=True) + "\n")
    return 0 if ok else 1
