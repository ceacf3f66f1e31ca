"""Helpers for the lab tests: paths and the lab command as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import testinfra

from lab import topology

ROOT = Path(__file__).resolve().parent.parent
LAB_INVENTORY = ROOT / "inventory" / "lab"
SSH_CONFIG = topology.RUN / "ssh" / "ssh_config"


def lab_cli(*args, check=True, timeout=300):
    """Run `python -m lab ARGS` as a user would."""
    proc = subprocess.run([sys.executable, "-m", "lab", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"lab {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def fresh_lab(lab):
    """Rebuild the lab from the inventory (a cluster netmend has not provisioned yet), refresh the session's
    `lab` state, and return a testinfra host per node."""
    lab_cli("up")
    lab.clear()
    lab.update(topology.load_state())
    return {name: host(name) for name in lab["nodes"]}


def host(name):
    """A testinfra host for a lab node, over the lab's real ssh."""
    return testinfra.get_host(f"ssh://{name}", ssh_config=str(SSH_CONFIG))


def playbook(*args, check=True, name="site.yml", timeout=300):
    """Run `ansible-playbook NAME ARGS` from the repository root; returns the completed process."""
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), name, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"ansible-playbook {name} {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _probe_records():
    """The JSON records of one run of every lab probe."""
    return json.loads(lab_cli("probe", "--json", check=False).stdout)["results"]


def failing_probes():
    """The lab probes that did not pass, as their JSON records."""
    return [r for r in _probe_records() if not r["pass"]]


def probe_results():
    """{probe id: passed} of one run of every lab probe."""
    return {r["id"]: r["pass"] for r in _probe_records()}


def settled_failures(results, expected=frozenset()):
    """The IDs of the failing probes in `results`. When a probe outside `expected` failed, the lab is probed
    once more and that run counts: on a loaded machine one lookup through the cluster DNS and its upstream
    (a pod's search list makes five) can overrun the probe's 2 s. Two runs at most; a probe in `expected`
    that passed is not probed again, so a fault that breaks less than the catalog says still fails."""
    failing = {i for i, ok in results.items() if not ok}
    if failing - set(expected) and not set(expected) - failing:
        failing = {i for i, ok in probe_results().items() if not ok}
    return failing


def node_state(h):
    """What site.yml may change on a node, read over ssh."""
    return h.check_output(
        "iptables-save | grep -v '^#'; sysctl -a -r '^net\\.(ipv4|ipv6|bridge)' 2>/dev/null | grep -v stable_secret;"
        " ls -la --time-style=+ /etc/sysctl.d /etc/modules-load.d; cat /etc/sysctl.d/* /etc/modules-load.d/*;"
        " firewall-cmd --state 2>&1; firewall-cmd --list-all-zones 2>&1; firewall-cmd --permanent --list-all-zones"
        " 2>&1; ls -laR --time-style=+ /var/lib/netmend /etc/firewalld /etc/kube-flannel /etc/cni /etc/kubernetes"
        " 2>&1; etcdctl --endpoints=http://198.51.100.11:2379 get --prefix /coreos.com/network/config 2>&1; true")
