"""Parity of the two front ends on the lab: the pyinfra deploys (`python -m deploys`, deploys/) and the Ansible
playbooks judge and fix every fault of the lab's catalog alike.

The lab starts clean for both: both audits report nothing and the same checks on every node. Then, for each
fault of lab.faults.FAULTS on its default node: inject -> the pyinfra audit reports exactly the fault's finding
IDs on that node and nothing else (the set the fault matrix, test_matrix.py, asserts for playbooks/audit.yml,
which NETMEND_PARITY_ANSIBLE=1 also runs here to compare directly), and exits non-zero exactly when one reaches
the error gate -> pyinfra remediate on the faulty node -> the pyinfra audit is clean on every node -> every probe
passes -> a second pyinfra remediate changes nothing. The operator's canaries (tests/remediation/canaries.yml)
are byte-identical and the fault-free nodes' networking state is unchanged, as in the fault matrix (its
CANARIES and NODE_STATE). `lab recover` after each case.

Run directly: .venv/bin/python -m pytest -s molecule/remediation/tests/test_pyinfra.py (-s prints the time
each step took).
"""

import json
import os
import sys
import tempfile
import time
from collections import defaultdict
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


def pyinfra_remediate(limit):
    """{node: outcome} of `python -m deploys remediate --limit NODES` (its --summary)."""
    with tempfile.TemporaryDirectory() as tmp, timed("pyinfra remediate"):
        summary = Path(tmp) / "summary.json"
        proc = run([*DEPLOYS, "remediate", "--limit", limit, "--summary", str(summary)])
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
        return json.loads(summary.read_text())["hosts"]


def canary_state():
    return {name: host(name).run(CANARIES).stdout for name in NODES}


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
    yield canary_state()
    lab("recover")
    total = sum(sum(v) for v in TIMES.values())
    print(f"\ntest_pyinfra: {total:.0f} s in the timed steps")
    for step, values in sorted(TIMES.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {step:24} {len(values):3} x {sum(values) / len(values):5.1f} s = {sum(values):6.1f} s")


def installed_canaries(baseline):
    """The canaries as the nodes show them, (re)installed only when the inject changed them (a firewalld
    restart flushes iptables): the playbook costs seconds, a read a fraction."""
    with timed("canaries (read)"):
        now = canary_state()
    if now == baseline:
        return now
    with timed("canaries (playbook)"):
        canaries()
    return canary_state()


@pytest.mark.parametrize("fault", faults.FAULTS, ids=[f.name for f in faults.FAULTS])
def test_the_pyinfra_front_end_finds_and_fixes_the_fault_as_ansible_does(fault, canary_baseline):
    node = fault.node
    try:
        with timed("inject"):
            lab("inject", fault.name, "--node", node)
        before_canaries = installed_canaries(canary_baseline)
        with timed("node state"):
            before_state = {n: host(n).check_output(NODE_STATE) for n in NODES if n != node}

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

        proc, found, _report = pyinfra_audit()
        assert not found and proc.returncode == 0, proc.stdout[-4000:]
        with timed("probes"):
            assert settled_failures(probe_results()) == set()
        again = pyinfra_remediate(node)[node]
        assert not again["changed"] and not again["findings"], f"a second remediate changes nothing: {again}"

        with timed("canaries and state"):
            assert canary_state() == before_canaries
            for n, text in before_state.items():
                assert host(n).check_output(NODE_STATE) == text, f"{n} had no fault but changed"
    finally:
        with timed("recover"):
            lab("recover")

