"""The lab's fault catalog (lab/faults.py), its pure parts: the catalog against the shared spec, the probe
patterns against the probes the lab plans, and the text and rule rewrites the faults make."""

import re
from pathlib import Path

import pytest

from lab import faults, kubeproxy, probe
from lab.inventory import load_cluster
from lab.sh import LabError
from netmend import checks
from netmend.kubeproxy import endpoint_chain, service_chain

ROOT = Path(__file__).resolve().parents[2]
# The finding IDs of the issue 4 spec, and its "Lab faults" table: (fault, default node, finding); then the
# field guide's failure mode 9 (kube-proxy mode leftovers), which the list leaves out.
SPEC_FINDINGS = {
    "KMOD-BR-NETFILTER-MISSING", "SYSCTL-BRIDGE-NF-CALL-IPTABLES-OFF", "SYSCTL-BRIDGE-NF-CALL-IP6TABLES-OFF",
    "SYSCTL-IP-FORWARD-OFF", "SYSCTL-IPV6-FORWARDING-OFF", "SYSCTL-NOT-PERSISTED", "FIREWALLD-BLOCKING",
    "FIREWALLD-RUNNING", "FORWARD-POLICY-DROP", "MASQUERADE-MISSING", "DNAT-STALE-POD-IP", "DNAT-STALE-HOST-IP",
    "RESOLV-NAMESERVER-DEAD", "COREDNS-LOOPBACK-UPSTREAM", "POD-RESOLV-NO-CLUSTER-DNS", "HOSTNET-POD-DNS-POLICY",
    "FLANNEL-SUBNET-ENV-MISMATCH", "CNI0-ADDRESS-MISMATCH", "FLANNEL-VXLAN-MISSING", "FLANNEL-VXLAN-MTU",
    "FLANNEL-VXLAN-VNI", "FLANNEL-VXLAN-PORT", "FLANNEL-PEER-ROUTE-MISSING", "FLANNEL-PEER-NEIGH-MISSING",
    "FLANNEL-PEER-FDB-MISSING", "CONNTRACK-STALE-DNS", "KUBE-PROXY-MODE-LEFTOVERS",
}
SPEC_FAULTS = [
    ("bridge-nf-off", "w1", "SYSCTL-BRIDGE-NF-CALL-IPTABLES-OFF"),
    ("ip-forward-off", "w1", "SYSCTL-IP-FORWARD-OFF"),
    ("firewalld-default-zone", "w1", "FIREWALLD-BLOCKING"),
    ("forward-drop", "w1", "FORWARD-POLICY-DROP"),
    ("stale-dnat-pod", "w2", "DNAT-STALE-POD-IP"),
    ("stale-dnat-hostnet", "w2", "DNAT-STALE-HOST-IP"),
    ("resolv-dead-nameserver", "w2", "RESOLV-NAMESERVER-DEAD"),
    ("coredns-loopback", "cp1", "COREDNS-LOOPBACK-UPSTREAM"),
    ("pod-resolv-no-cluster-dns", "w2", "POD-RESOLV-NO-CLUSTER-DNS"),
    ("hostnet-no-clusterfirst", "w1", "HOSTNET-POD-DNS-POLICY"),
    ("subnet-env-mismatch", "w2", "FLANNEL-SUBNET-ENV-MISMATCH"),
    ("cni0-address", "w2", "CNI0-ADDRESS-MISMATCH"),
    ("flannel-mtu", "w1", "FLANNEL-VXLAN-MTU"),
    ("flannel-vni", "w1", "FLANNEL-VXLAN-VNI"),
    ("flannel-port", "w1", "FLANNEL-VXLAN-PORT"),
    ("peer-route-missing", "w1", "FLANNEL-PEER-ROUTE-MISSING"),
    ("peer-neigh-missing", "w1", "FLANNEL-PEER-NEIGH-MISSING"),
    ("peer-fdb-missing", "w1", "FLANNEL-PEER-FDB-MISSING"),
    ("masquerade-missing", "w2", "MASQUERADE-MISSING"),
    ("dns-conntrack-stale", "w2", "CONNTRACK-STALE-DNS"),
    ("kube-proxy-nftables-leftovers", "w1", "KUBE-PROXY-MODE-LEFTOVERS"),
]


@pytest.fixture(scope="module")
def lab_cluster():
    return load_cluster(ROOT / "inventory" / "lab")


@pytest.fixture(scope="module")
def probe_ids(lab_cluster):
    return [check.id for group in probe.plan(*lab_cluster).values() for check in group]


def test_catalog_is_the_spec_table():
    assert [(f.name, f.node, f.finding) for f in faults.FAULTS] == SPEC_FAULTS
    assert len(faults.BY_NAME) == len(faults.FAULTS), "names are unique"


@pytest.mark.parametrize("fault", faults.FAULTS, ids=lambda f: f.name)
def test_every_fault_is_complete(fault):
    assert fault.finding in SPEC_FINDINGS
    for fid in fault.findings:
        assert fid in checks.CATALOG
        assert (ROOT / "docs" / "findings" / f"{fid}.md").is_file()
    assert callable(fault.inject) and callable(fault.recover)
    text = fault.description
    assert "\n" not in text and ". " not in text, "one sentence"
    assert "seed 00" in text or "field guide" in text, "it cites where the failure comes from"
    assert bool(fault.breaks) != bool(fault.quiet), "it breaks probes, or says why it breaks none"


@pytest.mark.parametrize("fault", faults.FAULTS, ids=lambda f: f.name)
def test_every_probe_pattern_names_probes_the_lab_plans(fault, lab_cluster, probe_ids):
    cluster = lab_cluster[0]
    for pattern in fault.patterns(cluster, fault.node):
        assert "{" not in pattern
        assert faults.Fault("x", fault.node, "", "", None, None, (pattern.lstrip("!"),)).broken(
            probe_ids, cluster, fault.node), f"{pattern} matches no probe"
    broken = fault.broken(probe_ids, cluster, fault.node)
    assert set(broken) <= set(probe_ids) and len(broken) < len(probe_ids)


def test_negative_patterns_take_probes_out(lab_cluster):
    cluster = lab_cluster[0]
    fault = faults.Fault("x", "w1", "", "", None, None, ("clusterip:*->default/hello-world-single:*",
                                                         "!clusterip:{pod}->default/hello-world-single:*"))
    ids = [f"clusterip:netcheck-{n}->default/hello-world-single:4000/tcp" for n in ("cp1", "w1", "w2")]
    assert fault.broken(ids, cluster, "w1") == [ids[0], ids[2]]
    assert fault.patterns(cluster, "w1")[1] == "!clusterip:netcheck-w1->default/hello-world-single:*"


def test_peer_placeholders_follow_inventory_order(lab_cluster):
    cluster = lab_cluster[0]
    assert faults.BY_NAME["peer-route-missing"].broken(
        ["pod-pod-cross-node:netcheck-w2->netcheck-cp1", "pod-pod-cross-node:netcheck-cp1->netcheck-w2"],
        cluster, "w2") == ["pod-pod-cross-node:netcheck-cp1->netcheck-w2",
                           "pod-pod-cross-node:netcheck-w2->netcheck-cp1"], "w2's next peer wraps to cp1"


def test_hostnet_placeholder_is_the_probed_hostnetwork_pod_on_its_node_only(lab_cluster, probe_ids):
    cluster = lab_cluster[0]
    fault = faults.BY_NAME["kube-proxy-nftables-leftovers"]
    assert fault.broken(probe_ids, cluster, "w1") == [
        "hostnet-dns:hello-hostnet-0:ClusterFirstWithHostNet:hello-world-service",
        "hostnet-dns:hello-hostnet-0:ClusterFirstWithHostNet:kubernetes"]
    assert fault.broken(probe_ids, cluster, "w2") == [], "w2 runs no probed hostNetwork pod"


def test_the_nftables_leftover_is_kube_proxys_tables_with_the_cluster_dns_rejected(lab_cluster):
    cluster = lab_cluster[0]
    text = faults._nftables_leftover(type("Ctx", (), {"cluster": cluster})())
    assert text.startswith("table ip kube-proxy {") and "table ip6 kube-proxy {" in text
    assert f"{cluster.cluster_dns} . udp . 53 : goto reject-chain" in text
    assert "type filter hook output priority -110" in text  # before any DNAT (iptables nat OUTPUT is -100)


def test_the_probes_the_faults_need_are_planned(lab_cluster, probe_ids):
    cluster, variables = lab_cluster
    for node in cluster.nodes:
        assert f"node-dns:{node.name}" in probe_ids
        assert f"pod-dns-fixed-port:netcheck-{node.name}" in probe_ids
    fixed = next(c for g in probe.plan(cluster, variables).values() for c in g if c.id.startswith("pod-dns-fixed"))
    assert fixed.spec["sport"] == faults.FIXED_SPORT == probe.FIXED_DNS_SPORT
    assert fixed.spec["server"] == cluster.cluster_dns


def test_dead_nameserver_keeps_every_other_line():
    text = "# from DHCP\r\nsearch lab.example\nnameserver 203.0.113.10\noptions ndots:2\n nameserver 192.0.2.1\n"
    ctx = type("Ctx", (), {"name": "w2"})()
    assert faults._dead_nameserver(ctx, text) == (
        "# from DHCP\r\nsearch lab.example\nnameserver 198.51.100.53\noptions ndots:2\n")
    with pytest.raises(LabError, match=re.escape("w2: /etc/resolv.conf has no nameserver line")):
        faults._dead_nameserver(ctx, "search lab.example\n")


def test_old_endpoint_and_unused_subnet(lab_cluster):
    assert faults._old_ip("10.244.1.5") == "10.244.1.105"
    assert faults._old_ip("198.51.100.12") == "198.51.100.112"
    assert faults._old_ip("10.244.1.200") == "10.244.1.100", "stays in the same /24"
    assert str(faults._unused_subnet(lab_cluster[0])) == "10.244.200.0/24"
    ctx = type("Ctx", (), {"name": "w2", "cluster": lab_cluster[0]})()
    env = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.2.1/24\nFLANNEL_MTU=1450\n"
    assert faults._other_subnet_env(ctx, env) == env.replace("10.244.2.1/24", "10.244.200.1/24")
    with pytest.raises(LabError, match="no FLANNEL_SUBNET line"):
        faults._other_subnet_env(ctx, "FLANNEL_NETWORK=10.244.0.0/16\n")


def test_retarget_points_one_service_port_at_the_old_endpoint(lab_cluster):
    cluster = lab_cluster[0]
    w2 = next(n for n in cluster.nodes if n.name == "w2")
    rules = kubeproxy.render_rules(cluster, w2)
    args = ("default", "hello-world-single", "", "TCP")
    cur, old = "10.244.1.5:8080", "10.244.1.105:8080"
    names = (service_chain(*args), endpoint_chain(*args, cur), endpoint_chain(*args, old), cur, old, "TCP")
    svc, cur_sep, old_sep = names[:3]
    out = faults._retarget(rules.splitlines(), names)
    changed = [(a, b) for a, b in zip(rules.splitlines(), out, strict=True) if a != b]
    assert changed == [
        (f":{cur_sep} - [0:0]", f":{old_sep} - [0:0]"),
        (f"-A {svc} -j {cur_sep}", f"-A {svc} -j {old_sep}"),
        (f"-A {cur_sep} -s 10.244.1.5/32 -j KUBE-MARK-MASQ", f"-A {old_sep} -s 10.244.1.105/32 -j KUBE-MARK-MASQ"),
        (f"-A {cur_sep} -p tcp -m tcp -j DNAT --to-destination {cur}",
         f"-A {old_sep} -p tcp -m tcp -j DNAT --to-destination {old}"),
    ]
