"""The fault matrix on the lab (issue 4): every fault of the catalog alone, then several at once on
several nodes. For each case:

inject -> exactly the probes the fault breaks fail -> the audit reports exactly the expected finding
IDs on the expected nodes, nothing else -> remediate -> the audit is clean -> every probe passes ->
a second remediate changes nothing. The operator's canaries (tests/remediation/canaries.yml) are
byte-identical after the fix, and nodes without a fault are untouched by it.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
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


def _cases():
    cases = [pytest.param([(f.name, f.node)], id=f.name) for f in faults.FAULTS]
    cases += [pytest.param(combo, id=name) for name, combo in COMBINATIONS.items()]
    return cases


def host(name):
    return testinfra.get_host(f"ssh://{name}", ssh_config=SSH_CONFIG)


# The playbooks run as an operator runs them, with the project's ansible.cfg and the lab inventory, not
# with the configuration molecule exports to its verifier.
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}


def run(argv, timeout=300):
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, env=ENV)


def lab(*args):
    proc = run([sys.executable, "-m", "lab", *args])
    assert proc.returncode == 0, f"lab {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def audit():
    """(rc, {(node, finding id)}) of playbooks/audit.yml."""
    with tempfile.TemporaryDirectory() as reports:
        proc = run([PLAYBOOK, "playbooks/audit.yml", "-e", f"netmend_report_dir={reports}"])
        path = Path(reports) / "report.json"
        assert path.exists(), f"audit.yml wrote no report:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
        report = json.loads(path.read_text())
    assert report["run"]["complete"], proc.stdout[-3000:]
    return proc, {(f["node"], f["id"]) for f in report["findings"]}


def remediate():
    proc = run([PLAYBOOK, "playbooks/remediate.yml"])
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.M)}


def canaries():
    proc = run([PLAYBOOK, "tests/remediation/canaries.yml"])
    assert proc.returncode == 0, proc.stdout[-3000:]
    return {name: host(name).check_output(CANARIES) for name in NODES}


@pytest.fixture(scope="module", autouse=True)
def healthy_start():
    """The matrix starts from a lab where nothing is wrong and every probe passes."""
    lab("recover")
    _proc, found = audit()
    assert not found, f"the provisioned lab is not clean: {sorted(found)}"
    assert settled_failures(probe_results()) == set()
    yield
    lab("recover")


@pytest.mark.parametrize("combo", _cases())
def test_fault_is_found_fixed_and_proven_fixed(combo):
    try:
        for name, node in combo:
            lab("inject", name, "--node", node)
        before_canaries = canaries()  # (re)installed after the inject: a firewalld restart flushes iptables
        faulty = {node for _, node in combo}
        before_state = {n: host(n).check_output(NODE_STATE) for n in NODES if n not in faulty}

        results = probe_results()
        expected_broken = set()
        for name, node in combo:
            expected_broken |= set(faults.BY_NAME[name].broken(list(results), CLUSTER, node))
        assert settled_failures(results, expected_broken) == expected_broken

        proc, found = audit()
        expected = {(node, fid) for name, node in combo for fid in faults.BY_NAME[name].findings}
        assert found == expected, proc.stdout[-4000:]
        gates = any(rank(CATALOG[fid].severity) >= rank("error") for _, fid in expected)
        assert (proc.returncode != 0) == gates, "the audit fails at findings of severity error and above"

        changed = remediate()
        assert all(changed.get(n, 0) > 0 for n in faulty), changed

        proc, found = audit()
        assert not found and proc.returncode == 0, proc.stdout[-4000:]
        assert settled_failures(probe_results()) == set()
        assert not any(remediate().values()), "a second remediate changes nothing"

        assert {name: host(name).check_output(CANARIES) for name in NODES} == before_canaries
        for n, text in before_state.items():
            assert host(n).check_output(NODE_STATE) == text, f"{n} had no fault but changed"
    finally:
        lab("recover")

