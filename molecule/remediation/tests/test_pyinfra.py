"""Parity of the two front ends on the lab: the pyinfra deploys (`python -m deploys`, deploys/) and the Ansible
playbooks judge and fix every fault of the lab's catalog alike.

The lab starts clean for both: both audits report nothing and the same checks on every node. Then, for each
fault of lab.faults.FAULTS on its default node: inject -> the pyinfra audit reports exactly the fault's finding
IDs on that node and nothing else (the set the fault matrix, test_matrix.py, asserts for playbooks/audit.yml,
which NETMEND_PARITY_ANSIBLE=1 also runs here to compare directly), and exits non-zero exactly when one reaches
the error gate -> pyinfra remediate on the faulty node, whose own audit after the fix finds nothing -> every
probe passes -> a second pyinfra remediate on every node (all at once) audits every node clean and changes
nothing (the audit a remediate runs before it plans is the audit's own code: deploys.operations.audit_node).
The operator's canaries (tests/remediation/canaries.yml) are byte-identical and the fault-free nodes' networking
state is unchanged, as in the fault matrix (its CANARIES and NODE_STATE). `lab recover` after each case.

Run directly: .venv/bin/python -m pytest -s molecule/remediation/tests/test_pyinfra.py (-s prints the time
each step took).
"""

import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_matrix import CANARIES, NODE_STATE, NODES, PLAYBOOK, canaries, host, lab, run

from lab import faults
from netmend.checks import CATALOG
from netmend.findings import rank
from tests.labutil import probe_results, settled_failures

DEPLOYS = [sys.executable, "-m", "deploys"]
COMPARE_ANSIBLE = os.environ.get("NETMEND_PARITY_ANSIBLE", "") not in ("", "0")
MARK = "@@netmend-parity@@"
TIMES = defaultdict(list)  # step -> seconds, one entry per call


class timed:
    def __init__(self, step):
        self.step = step

    def __enter__(self):
        self.start = time.monotonic()

    def __exit__(self, *exc):
        TIMES[self.step].append(time.monotonic() - self.start)


def report_of(argv):
    """(process, report.json) of an audit writing its reports to a temporary directory ({} in argv)."""
    with tempfile.TemporaryDirectory() as reports:
        proc = run([a.format(reports) for a in argv])
        path = Path(reports) / "report.json"
        assert path.exists(), f"{argv[0]} wrote no report:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
        report = json.loads(path.read_text())
    assert report["run"]["complete"], proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc, report


def pyinfra_audit():
    """(rc, {(node, finding id)}, report) of `python -m deploys audit` on every node."""
    with timed("pyinfra audit"):
        proc, report = report_of([*DEPLOYS, "audit", "--report-dir", "{}"])
    return proc, {(f["node"], f["id"]) for f in report["findings"]}, report


def ansible_audit():
    with timed("ansible audit"):
        proc, report = report_of([PLAYBOOK, "playbooks/audit.yml", "-e", "netmend_report_dir={}"])
    return proc, {(f["node"], f["id"]) for f in report["findings"]}, report


def pyinfra_remediate(limit, *more):
    """{node: outcome} of `python -m deploys remediate --limit NODES` (its --summary)."""
    with tempfile.TemporaryDirectory() as tmp, timed("pyinfra remediate"):
        summary = Path(tmp) / "summary.json"
        proc = run([*DEPLOYS, "remediate", "--limit", limit, "--summary", str(summary), *more])
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
        return json.loads(summary.read_text())["hosts"]


def node_reads(faulty=None):
    """({node: canaries}, {fault-free node: NODE_STATE}) of every node, one ssh command each, all at once."""

    def read(name):
        state = f"{{ {NODE_STATE}; }}" if name != faulty else "true"
        out = host(name).run(f"{{ {CANARIES}; }}; echo {MARK}; {state}").stdout
        canary, _, rest = out.partition(f"{MARK}\n")
        return canary, rest

    with ThreadPoolExecutor(max_workers=len(NODES)) as pool:
        reads = dict(zip(NODES, pool.map(read, NODES), strict=True))
    return {n: c for n, (c, _) in reads.items()}, {n: st for n, (_, st) in reads.items() if n != faulty}


@pytest.fixture(scope="module")
def canary_baseline():
    """The lab starts clean for both front ends, every probe passes; the canaries are installed."""
    lab("recover")
    proc, found, report = pyinfra_audit()
    assert not found and proc.returncode == 0, f"the pyinfra audit of the provisioned lab: {sorted(found)}"
    a_proc, a_found, a_report = ansible_audit()
    assert not a_found and a_proc.returncode == 0, f"the Ansible audit of the provisioned lab: {sorted(a_found)}"
    assert report["checks"] == a_report["checks"], "both front ends check the same finding IDs on every node"
    assert sorted(report["checks"]) == sorted(NODES)
    assert settled_failures(probe_results()) == set()
    with timed("canaries (playbook)"):
        canaries()
    yield node_reads()[0]
    lab("recover")
    total = sum(sum(v) for v in TIMES.values())
    print(f"\ntest_pyinfra: {total:.0f} s in the timed steps")
    for step, values in sorted(TIMES.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {step:24} {len(values):3} x {sum(values) / len(values):5.1f} s = {sum(values):6.1f} s")


def installed(baseline, faulty):
    """The canaries and the fault-free nodes' state after the inject; the canaries are (re)installed only when
    the inject changed them (a firewalld restart flushes iptables): the playbook costs seconds, a read less."""
    with timed("canaries and state"):
        now, state = node_reads(faulty)
    if now == baseline:
        return now, state
    print(f"\n  the inject changed the canaries of {', '.join(n for n in NODES if now[n] != baseline[n])}: "
          "tests/remediation/canaries.yml again")
    with timed("canaries (playbook)"):
        canaries()
    with timed("canaries and state"):
        return node_reads(faulty)


@pytest.mark.parametrize("fault", faults.FAULTS, ids=[f.name for f in faults.FAULTS])
def test_the_pyinfra_front_end_finds_and_fixes_the_fault_as_ansible_does(fault, canary_baseline):
    node = fault.node
    try:
        with timed("inject"):
            lab("inject", fault.name, "--node", node)
        before_canaries, before_state = installed(canary_baseline, node)

        expected = {(node, fid) for fid in fault.findings}
        proc, found, _report = pyinfra_audit()
        assert found == expected, proc.stdout[-4000:] + proc.stderr[-2000:]
        gates = any(rank(CATALOG[fid].severity) >= rank("error") for fid in fault.findings)
        assert (proc.returncode != 0) == gates, "the audit fails at findings of severity error and above"
        if COMPARE_ANSIBLE:
            _a_proc, a_found, _a_report = ansible_audit()
            assert a_found == found, "the two front ends report the same findings on the same nodes"

        outcome = pyinfra_remediate(node)[node]
        assert sorted(outcome["findings"]) == sorted(fault.findings), outcome
        assert outcome["changed"] and outcome["done"] == outcome["planned"], outcome
        assert not outcome["stuck"] and not outcome["failed"], outcome

        assert outcome["remaining"] == [], "the remediation's own audit after the fix"
        with timed("probes"):
            assert settled_failures(probe_results()) == set()
        # The second remediate audits every node before it plans: that audit is the clean one, and it plans nothing.
        again = pyinfra_remediate(",".join(NODES), "--serial", str(len(NODES)))
        assert {n: again[n]["findings"] for n in NODES} == {n: [] for n in NODES}, f"not clean: {again}"
        assert not any(again[n]["changed"] for n in NODES), f"a second remediate changes nothing: {again}"

        with timed("canaries and state"):
            after_canaries, after_state = node_reads(node)
        assert after_canaries == before_canaries, "the operator's canaries are byte-identical"
        for n, text in before_state.items():
            assert after_state[n] == text, f"{n} had no fault but changed"
    finally:
        with timed("recover"):
            lab("recover")

