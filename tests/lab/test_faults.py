"""The lab's fault catalog on a provisioned lab: each fault breaks exactly the probes the catalog says, and
recovering it puts the node back as it was."""

import json
import os
import re
import time

import pytest

from lab import faults, topology
from lab.inventory import load_cluster
from tests.labutil import (
    LAB_INVENTORY,
    failing_probes,
    fresh_lab,
    lab_cli,
    node_state,
    playbook,
    probe_results,
    settled_failures,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")

# What a fault may change besides node_state(): links (without indexes and timers), addresses, routes,
# permanent neighbours, flannel's fdb, and the files the faults rewrite.
NET_STATE = ("ip route show table all | sort; ip neigh show nud permanent | sort; bridge fdb show dev flannel.1 | sort;"
             " ip -br addr | sort; sysctl net.netfilter.nf_conntrack_udp_timeout;"
             " cat /etc/resolv.conf /run/flannel/subnet.env /var/lib/netmend-lab/kube-proxy.rules"
             " /etc/netns/*/resolv.conf /var/lib/kubelet/pods/*/etc-resolv.conf"
             " /etc/kubernetes/netmend/coredns/Corefile 2>&1; true")


SEPARATOR = "----- netmend lab fault test -----"


class _OneCall:
    """node_state()'s command and ours in one ssh session."""

    def __init__(self, h):
        self.h = h

    def check_output(self, command):
        return self.h.check_output(f"{command}; echo '{SEPARATOR}'; ip -d -j link; echo '{SEPARATOR}'; {NET_STATE}")


def state(h):
    base, links, net = node_state(_OneCall(h)).split(SEPARATOR + "\n")
    links = json.loads(links)
    for link in links:
        link.pop("ifindex", None)
        link.pop("link_index", None)
    text = json.dumps(sorted(links, key=lambda link: link["ifname"]), indent=1)
    return base + re.sub(r'"[a-z_]*timer": [\d.]+', "", text) + net


def active():
    return [(f["name"], f["node"]) for f in json.loads(lab_cli("status", "--json").stdout)["faults"]]


@pytest.fixture(scope="module")
def lab_hosts(lab):
    hosts = fresh_lab(lab)
    playbook()
    deadline = time.monotonic() + 10
    while failing_probes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert failing_probes() == [], "site.yml leaves every probe passing"
    return hosts


@pytest.fixture(scope="module")
def cluster(lab_hosts):
    return load_cluster(LAB_INVENTORY)[0]


@pytest.mark.parametrize("name", list(faults.BY_NAME))
def test_fault_breaks_what_the_catalog_says_and_recovers(lab_hosts, cluster, name):
    fault = faults.BY_NAME[name]
    h = lab_hosts[fault.node]
    before = state(h)
    out = lab_cli("inject", name).stdout
    assert f"injected {name} on {fault.node}" in out and fault.finding in out
    try:
        assert active() == [(name, fault.node)]
        results = probe_results()
        expected = fault.broken(results, cluster, fault.node)
        failed = sorted(settled_failures(results, expected))
        assert failed == expected, "the catalog's `breaks` is what fails"
        assert bool(failed) != bool(fault.quiet), "a fault that breaks no probe says why"
    finally:
        lab_cli("recover", name)
    assert active() == []
    assert settled_failures(probe_results()) == set()
    assert state(h) == before, "recover puts the node back exactly"


def test_two_faults_on_two_nodes_and_the_same_fault_twice(lab_hosts, cluster):
    hosts = {n: lab_hosts[n] for n in ("w1", "w2", "cp1")}
    before = {n: state(h) for n, h in hosts.items()}
    lab_cli("inject", "resolv-dead-nameserver")
    lab_cli("inject", "resolv-dead-nameserver", "--node", "cp1")
    lab_cli("inject", "bridge-nf-off")
    again = lab_cli("inject", "resolv-dead-nameserver", "--node", "w2", check=False)
    assert again.returncode == 2
    assert "fault resolv-dead-nameserver is already active on w2" in again.stderr
    assert active() == [("resolv-dead-nameserver", "w2"), ("resolv-dead-nameserver", "cp1"), ("bridge-nf-off", "w1")]
    status = lab_cli("status").stdout
    assert re.search(r"fault resolv-dead-nameserver\s+on cp1\s+since \d{4}-", status)
    results = probe_results()
    wanted = set(faults.BY_NAME["resolv-dead-nameserver"].broken(results, cluster, "w2"))
    wanted |= set(faults.BY_NAME["resolv-dead-nameserver"].broken(results, cluster, "cp1"))
    wanted |= set(faults.BY_NAME["bridge-nf-off"].broken(results, cluster, "w1"))
    assert settled_failures(results, wanted) == wanted
    assert {"node-dns:w2", "node-dns:cp1"} <= wanted

    out = lab_cli("recover", "resolv-dead-nameserver", "--node", "cp1").stdout
    assert out.splitlines() == ["lab: recovered resolv-dead-nameserver on cp1"]
    out = lab_cli("recover").stdout
    assert out.splitlines() == ["lab: recovered bridge-nf-off on w1", "lab: recovered resolv-dead-nameserver on w2"]
    assert active() == []
    assert settled_failures(probe_results()) == set()
    assert {n: state(h) for n, h in hosts.items()} == before
    assert lab_cli("recover").stdout.strip() == "lab: no fault is active"


def test_recover_after_netmend_fixed_the_fault(lab_hosts):
    """The forward role re-adds the NETMEND-FORWARD jump (the policy stays DROP); recover neither duplicates
    the jump nor undoes the fix, and the node ends as it was."""
    w1 = lab_hosts["w1"]
    before = state(w1)
    lab_cli("inject", "forward-drop")
    assert "-j NETMEND-FORWARD" not in w1.check_output("iptables -S FORWARD")
    playbook("--tags", "forward", "--limit", "w1")
    assert "-P FORWARD DROP" in w1.check_output("iptables -S FORWARD")
    lab_cli("recover", "forward-drop")
    assert w1.check_output("iptables -S FORWARD").count("-j NETMEND-FORWARD") == 1
    assert settled_failures(probe_results()) == set()
    assert state(w1) == before


BAD = [
    (("inject", "no-such-fault"), "unknown fault 'no-such-fault'; the catalog has: bridge-nf-off, ip-forward-off"),
    (("inject", "bridge-nf-off", "--node", "w9"), "unknown node 'w9'; the lab has: cp1, w1, w2"),
    (("recover", "no-such-fault"), "unknown fault 'no-such-fault'; the catalog has: bridge-nf-off"),
    (("recover", "flannel-mtu"), "not active: flannel-mtu (active: none)"),
    (("inject",), "inject takes exactly one fault name, one of: bridge-nf-off"),
    (("probe", "bridge-nf-off"), "probe takes no fault names"),
]


def test_bad_requests_change_nothing(lab_hosts):
    before = state(lab_hosts["w1"])
    recorded = (topology.RUN / "faults.json").read_text() if (topology.RUN / "faults.json").exists() else None
    for args, needle in BAD:
        proc = lab_cli(*args, check=False)
        assert proc.returncode == 2, args
        assert needle in proc.stderr, args
    assert active() == []
    now = (topology.RUN / "faults.json").read_text() if (topology.RUN / "faults.json").exists() else None
    assert now == recorded, "nothing recorded"
    assert state(lab_hosts["w1"]) == before


def test_the_catalog_command(lab_hosts):
    rows = json.loads(lab_cli("faults", "--json").stdout)
    assert [r["name"] for r in rows] == list(faults.BY_NAME)
    stale = next(r for r in rows if r["name"] == "stale-dnat-pod")
    assert stale["breaks"] == ["clusterip:netcheck-w2->default/hello-world-single:*", "nodeport:outside->w2:30002"]
    text = lab_cli("faults").stdout
    assert "masquerade-missing  (node w2, finding MASQUERADE-MISSING)" in text
    assert "breaks: no probe: firewalld's public zone masquerades too" in text
