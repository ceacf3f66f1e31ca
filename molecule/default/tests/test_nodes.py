"""testinfra on the lab after converge: every node is reachable and its network is the lab's."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_node_has_underlay_and_flannel_devices(host):
    links = {link["ifname"] for link in json.loads(host.check_output("ip -j link"))}
    assert {"eth0", "cni0", "flannel.1"} <= links
    assert host.file("/run/flannel/subnet.env").contains("FLANNEL_MTU=1450")


def test_node_forwards_ipv4(host):
    assert host.sysctl("net.ipv4.ip_forward") == 1


def test_every_lab_probe_passes():
    proc = subprocess.run([sys.executable, "-m", "lab", "probe", "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    failed = [r for r in json.loads(proc.stdout)["results"] if not r["pass"]]
    assert not failed


def test_forward_accepts_pod_traffic_whatever_the_policy(host):
    rules = host.check_output("iptables -S NETMEND-FORWARD")
    assert "-A NETMEND-FORWARD -s 10.244.0.0/16" in rules
    assert host.check_output("iptables -S FORWARD").splitlines()[1].endswith("-j NETMEND-FORWARD")
