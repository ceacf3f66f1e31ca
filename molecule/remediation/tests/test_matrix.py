"""The fault matrix on the lab (issue 4), with both front ends (issue 9): the Ansible playbooks and the pyinfra
deploys (`python -m deploys`, deploys/) find and fix every fault of the catalog alike.

The lab starts clean for both: both audits report nothing and check the same finding IDs on every node, and
every probe passes. Then every fault of the catalog alone, on its default node:

inject -> exactly the probes the fault breaks fail -> `playbooks/audit.yml` and the pyinfra audit each report
exactly the fault's finding IDs on that node and nothing else, and exit non-zero exactly when one reaches the
error gate -> `playbooks/remediate.yml` -> every probe passes -> a pyinfra remediate of every node audits each
clean before it plans and changes nothing -> `lab recover`, inject again -> the pyinfra remediate of the faulty
node fixes exactly the fault's findings and its own audit after the fix finds nothing -> every probe passes.

Then several faults at once on several nodes, with the playbooks: the audit reports exactly the union, the
remediation fixes it, the audit is clean, every probe passes, a second remediate changes nothing.

After every remediation the operator's canaries (tests/remediation/canaries.yml) are byte-identical, and the
nodes without a fault are untouched by it (their whole networking state, NODE_STATE).

Run directly: .venv/bin/python -m pytest -s molecule/remediation/tests/test_matrix.py (-s prints the time each
step took).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import testinfra

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "module_utils"))

from lab import faults  # noqa: E402
from lab.inventory import load_cluster  # noqa: E402
from netmend.checks import CATALOG  # noqa: E402
from netmend.findings import rank  # noqa: E402
from tests.labutil import probe_results, settled_failures  # noqa: E402

SSH_CONFIG = "/srv/netmend-lab/run/ssh/ssh_config"
PLAYBOOK = str(ROOT / ".venv" / "bin" / "ansible-playbook")
DEPLOYS = [sys.executable, "-m", "deploys"]
CLUSTER, _VARIABLES = load_cluster(ROOT / "inventory" / "lab")
NODES = [n.name for n in CLUSTER.nodes]
# Several faults at once on several nodes, each on the node its catalog entry was measured on, and
# chosen so that no fault hides another's broken probes (a pod whose resolv.conf bypasses the cluster
# DNS would not notice the cluster DNS's loop): the probes that fail are exactly the union of each's.
COMBINATIONS = {
    "kernel+dns+masquerade": [("bridge-nf-off", "w1"), ("masquerade-missing", "w2"), ("coredns-loopback", "cp1"),
                              ("hostnet-no-clusterfirst", "w1")],
    "forward+dnat+conntrack+flannel+resolv+proxy-mode": [("forward-drop", "w1"), ("stale-dnat-hostnet", "w2"),
                                                         ("dns-conntrack-stale", "w2"), ("subnet-env-mismatch", "w2"),
                                                         ("resolv-dead-nameserver", "w2"),
                                                         ("kube-proxy-nftables-leftovers", "w1")],
}
CANARIES = ("iptables -w 5 -S INPUT | grep -e host- -e HOST-; iptables -w 5 -S FORWARD | grep host-; "
            "iptables -w 5 -S HOST-CANARY; cat /etc/sysctl.d/99-operator.conf; grep '^options' /etc/resolv.conf")
# What a fix must not touch on a node without a fault (the fault-free nodes' whole networking state).
NODE_STATE = ("iptables-save | grep -v '^#' | sed 's/\\[[0-9]*:[0-9]*\\]//'; "
              "ip -d link show | sed 's/_timer *[0-9.]*//g'; ip route show; "
              "ip neigh show dev flannel.1 nud permanent; bridge fdb show dev flannel.1; "
              "sysctl -a -r '^net\\.(ipv4\\.(ip_forward|conf\\.all\\.forwarding)|bridge)' 2>/dev/null; "
              "cat /etc/resolv.conf /run/flannel/subnet.env; ls -la --time-style=+ /etc/sysctl.d; "
              "firewall-cmd --list-all-zones 2>&1; nft list tables; ipset list -n")
MARK = "@@netmend-matrix@@"
TIMES = defaultdict(list)  # step -> seconds, one entry per call

# The playbooks run as an operator runs them, with the project's ansible.cfg and the lab inventory, not
# with the configuration molecule exports to its verifier.
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}


class timed:
    def __init__(self, step):
        self.step = step

    def __enter__(self):
        self.start = time.monotonic()

    def __exit__(self, *exc):
        TIMES[self.step].append(time.monotonic() - self.start)


def host(name):
    return testinfra.get_host(f"ssh://{name}", ssh_config=SSH_CONFIG)


def run(argv, timeout=300):
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, env=ENV)


def lab(*args):
    with timed(f"lab {args[0]}"):
        proc = run([sys.executable, "-m", "lab", *args])
    assert proc.returncode == 0, f"lab {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _audit(step, argv):
    """(process, {(node, finding id)}, report.json) of an audit writing its reports to a temporary directory."""
    with tempfile.TemporaryDirectory() as reports, timed(step):
        proc = run([a.format(reports) for a in argv])
        path = Path(reports) / "report.json"
        assert path.exists(), f"{argv[0]} wrote no report:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
        report = json.loads(path.read_text())
    assert report["run"]["complete"], proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc, {(f["node"], f["id"]) for f in report["findings"]}, report


def audit():
    return _audit("ansible audit", [PLAYBOOK, "playbooks/audit.yml", "-e", "netmend_report_dir={}"])


def pyinfra_audit():
    return _audit("pyinfra audit", [*DEPLOYS, "audit", "--report-dir", "{}"])


def remediate():
    """{node: tasks changed} of playbooks/remediate.yml."""
    with timed("ansible remediate"):
        proc = run([PLAYBOOK, "playbooks/remediate.yml"])
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.M)}


def pyinfra_remediate(limit, *more):
    """{node: outcome} of `python -m deploys remediate --limit NODES` (its --summary)."""
    with tempfile.TemporaryDirectory() as tmp, timed("pyinfra remediate"):
        summary = Path(tmp) / "summary.json"
        proc = run([*DEPLOYS, "remediate", "--limit", limit, "--summary", str(summary), *more])
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
        return json.loads(summary.read_text())["hosts"]


def probes_pass():
    with timed("probes"):
        assert settled_failures(probe_results()) == set()


def canaries():
    with timed("canaries (playbook)"):
        proc = run([PLAYBOOK, "tests/remediation/canaries.yml"])
    assert proc.returncode == 0, proc.stdout[-3000:]


def node_reads(faulty=()):
    """({node: canaries}, {fault-free node: NODE_STATE}) of every node, one ssh command each, all at once."""

    def read(name):
        state = f"{{ {NODE_STATE}; }}" if name not in faulty else "true"
        out = host(name).run(f"{{ {CANARIES}; }}; echo {MARK}; {state}").stdout
        canary, _, rest = out.partition(f"{MARK}\n")
        return canary, rest

    with timed("canaries and state"), ThreadPoolExecutor(max_workers=len(NODES)) as pool:
        reads = dict(zip(NODES, pool.map(read, NODES), strict=True))
    return {n: c for n, (c, _) in reads.items()}, {n: st for n, (_, st) in reads.items() if n not in faulty}


def installed(baseline, faulty):
    """The canaries and the fault-free nodes' state after an inject; the canaries are (re)installed only when
    the inject changed them (a firewalld restart flushes iptables): the playbook costs seconds, a read less."""
    now, state = node_reads(faulty)
    if now == baseline:
        return now, state
    print(f"\n  the inject changed the canaries of {', '.join(n for n in NODES if now[n] != baseline[n])}: "
          "tests/remediation/canaries.yml again")
    canaries()
    return node_reads(faulty)


def untouched(before_canaries, before_state, faulty):
    after_canaries, after_state = node_reads(faulty)
    assert after_canaries == before_canaries, "the operator's canaries are byte-identical"
    for n, text in before_state.items():
        assert after_state[n] == text, f"{n} had no fault but changed"


def gates(findings):
    return any(rank(CATALOG[fid].severity) >= rank("error") for fid in findings)


@pytest.fixture(scope="module")
def baseline():
    """The matrix starts from a lab where nothing is wrong for either front end and every probe passes; the
    operator's canaries are installed. Yields every node's canaries."""
    lab("recover")
    proc, found, report = pyinfra_audit()
    assert not found and proc.returncode == 0, f"the pyinfra audit of the provisioned lab: {sorted(found)}"
    a_proc, a_found, a_report = audit()
    assert not a_found and a_proc.returncode == 0, f"the Ansible audit of the provisioned lab: {sorted(a_found)}"
    assert report["checks"] == a_report["checks"], "both front ends check the same finding IDs on every node"
    assert sorted(report["checks"]) == sorted(NODES)
    probes_pass()
    canaries()
    yield node_reads()[0]
    lab("recover")
    total = sum(sum(v) for v in TIMES.values())
    print(f"\ntest_matrix: {total:.0f} s in the timed steps")
    for step, values in sorted(TIMES.items(), key=lambda kv: -sum(kv[1])):
        print(f"  {step:24} {len(values):3} x {sum(values) / len(values):5.1f} s = {sum(values):6.1f} s")


def inject(combo, baseline):
    for name, node in combo:
        lab("inject", name, "--node", node)
    return installed(baseline, {node for _, node in combo})


def only_its_probes_fail(combo):
    results = probe_results()
    broken = set()
    for name, node in combo:
        broken |= set(faults.BY_NAME[name].broken(list(results), CLUSTER, node))
    assert settled_failures(results, broken) == broken


@pytest.mark.parametrize("fault", faults.FAULTS, ids=[f.name for f in faults.FAULTS])
def test_both_front_ends_find_and_fix_the_fault(fault, baseline):
    node, combo = fault.node, [(fault.name, fault.node)]
    expected = {(node, fid) for fid in fault.findings}
    try:
        before_canaries, before_state = inject(combo, baseline)
        only_its_probes_fail(combo)

        proc, found, _ = audit()
        assert found == expected, proc.stdout[-4000:]
        assert (proc.returncode != 0) == gates(fault.findings), "the audit fails at findings of severity error"
        proc, found, _ = pyinfra_audit()
        assert found == expected, "the two front ends report the same findings:\n" + proc.stdout[-4000:]
        assert (proc.returncode != 0) == gates(fault.findings), "the pyinfra audit gates as the Ansible audit"

        changed = remediate()
        assert changed.get(node, 0) > 0, changed
        probes_pass()
        # A pyinfra remediate audits every node before it plans: the audit after the fix, and nothing to change.
        again = pyinfra_remediate(",".join(NODES), "--serial", str(len(NODES)))
        assert {n: again[n]["findings"] for n in NODES} == {n: [] for n in NODES}, f"not clean: {again}"
        assert not any(again[n]["changed"] for n in NODES), f"nothing left to change: {again}"
        untouched(before_canaries, before_state, {node})

        lab("recover")
        before_canaries, before_state = inject(combo, baseline)
        outcome = pyinfra_remediate(node)[node]
        assert sorted(outcome["findings"]) == sorted(fault.findings), outcome
        assert outcome["changed"] and outcome["done"] == outcome["planned"], outcome
        assert not outcome["stuck"] and not outcome["failed"], outcome
        assert outcome["remaining"] == [], "the pyinfra remediation's own audit after the fix"
        probes_pass()
        untouched(before_canaries, before_state, {node})
    finally:
        lab("recover")


@pytest.mark.parametrize("combo", list(COMBINATIONS.values()), ids=list(COMBINATIONS))
def test_several_faults_on_several_nodes_are_found_and_fixed(combo, baseline):
    faulty = {node for _, node in combo}
    expected = {(node, fid) for name, node in combo for fid in faults.BY_NAME[name].findings}
    try:
        before_canaries, before_state = inject(combo, baseline)
        only_its_probes_fail(combo)

        proc, found, _ = audit()
        assert found == expected, proc.stdout[-4000:]
        assert (proc.returncode != 0) == gates(fid for _, fid in expected)

        changed = remediate()
        assert all(changed.get(n, 0) > 0 for n in faulty), changed
        proc, found, _ = audit()
        assert not found and proc.returncode == 0, proc.stdout[-4000:]
        probes_pass()
        assert not any(remediate().values()), "a second remediate changes nothing"
        untouched(before_canaries, before_state, faulty)
    finally:
        lab("recover")
