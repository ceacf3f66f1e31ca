"""kube-proxy naming (netmend.kubeproxy) and the lab's kube-proxy/flannel rules (lab.kubeproxy)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from lab.kubeproxy import render_flannel_masq, render_rules, saved_rules
from netmend.cluster import build_cluster
from netmend.kubeproxy import endpoint_chain, port_proto_hash, probability, service_chain, written_probability

ROOT = Path(__file__).resolve().parents[2]
SEED_FIXTURE = ROOT / "tests/fixtures/iptables/seed000-nodeport-3-replicas.txt"
HOSTS = [("cp1", "control_plane", {"ansible_host": "198.51.100.11"}),
         ("w1", "workers", {"ansible_host": "198.51.100.12"}),
         ("w2", "workers", {"ansible_host": "198.51.100.13"})]
BUILTIN_JUMP = re.compile(r"^-A (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ", re.MULTILINE)

# Seed 000, lines 303-313: `iptables-save | grep KUBE-SERVICES` (nat) on k8s-n-1. Same cluster IPs as the lab.
# Kept verbatim, one rule per line as iptables-save prints it, hence longer than the line limit.
SEED_SERVICES = """\
-A KUBE-SERVICES ! -s 10.244.0.0/16 -d 10.96.103.220/32 -p tcp -m comment --comment "default/hello-world-service: cluster IP" -m tcp --dport 4000 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -d 10.96.103.220/32 -p tcp -m comment --comment "default/hello-world-service: cluster IP" -m tcp --dport 4000 -j KUBE-SVC-5MRENC7Q6ZQR6GKR
-A KUBE-SERVICES ! -s 10.244.0.0/16 -d 10.96.0.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-SVC-NPX46M4PTMTKRN6Y
-A KUBE-SERVICES ! -s 10.244.0.0/16 -d 10.96.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp --dport 53 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns cluster IP" -m udp --dport 53 -j KUBE-SVC-TCOU7JCQXEZGVUNU
-A KUBE-SERVICES ! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m comment --comment "kube-system/kube-dns:dns-tcp cluster IP" -m tcp --dport 53 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "kube-system/kube-dns:dns-tcp cluster IP" -m tcp --dport 53 -j KUBE-SVC-ERIFXISQEP7F7OF4
-A KUBE-SERVICES ! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m comment --comment "kube-system/kube-dns:metrics cluster IP" -m tcp --dport 9153 -j KUBE-MARK-MASQ
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "kube-system/kube-dns:metrics cluster IP" -m tcp --dport 9153 -j KUBE-SVC-JD5MR3NA4I4DYORP
""".splitlines()  # noqa: E501
SEED_LAST = ('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule '
             'in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
SEED_NODEPORTS = [
    ('-A KUBE-NODEPORTS -p tcp -m comment --comment "default/hello-world-service:" -m tcp --dport 30001 '
     "-j KUBE-MARK-MASQ"),
    ('-A KUBE-NODEPORTS -p tcp -m comment --comment "default/hello-world-service:" -m tcp --dport 30001 '
     "-j KUBE-SVC-5MRENC7Q6ZQR6GKR"),
]


@pytest.fixture(scope="module")
def cluster():
    variables = yaml.safe_load((ROOT / "inventory/lab/group_vars/all/cluster.yml").read_text())
    return build_cluster(HOSTS, variables)


def table_lines(text, table):
    """The lines of one table of an iptables-restore text, in order."""
    out, current = [], None
    for line in text.splitlines():
        if line.startswith("*"):
            current = line[1:]
        elif current == table and not line.startswith("#"):
            out.append(line)
    return out


@pytest.mark.parametrize("spn, protocol, expected", [
    ("default/hello-world-service:", "tcp", "5MRENC7Q6ZQR6GKR"),
    ("default/kubernetes:https", "tcp", "NPX46M4PTMTKRN6Y"),
    ("kube-system/kube-dns:dns", "udp", "TCOU7JCQXEZGVUNU"),
    ("kube-system/kube-dns:dns-tcp", "TCP", "ERIFXISQEP7F7OF4"),
    ("kube-system/kube-dns:metrics", "tcp", "JD5MR3NA4I4DYORP"),
])
def test_port_proto_hash(spn, protocol, expected):
    assert port_proto_hash(spn, protocol) == expected


def test_service_chain():
    assert service_chain("default", "hello-world-service", "", "TCP") == "KUBE-SVC-5MRENC7Q6ZQR6GKR"
    assert service_chain("kube-system", "kube-dns", "dns", "UDP") == "KUBE-SVC-TCOU7JCQXEZGVUNU"


@pytest.mark.parametrize("endpoint, expected", [
    ("10.244.1.5:8080", "KUBE-SEP-2KIVNDBOTOCNVG2U"),
    ("10.244.1.6:8080", "KUBE-SEP-NQUZNNDG4S4UQTZI"),
    ("10.244.1.7:8080", "KUBE-SEP-XYEBSHB6XMTA6LVQ"),
    ("10.244.2.2:8080", "KUBE-SEP-AFBU56PEPWZ4VPIJ"),
])
def test_endpoint_chain(endpoint, expected):
    assert endpoint_chain("default", "hello-world-service", "", "TCP", endpoint) == expected


def test_probability_matches_the_seed():
    assert [probability(i, 3) for i in range(3)] == ["0.33333333349", "0.50000000000", None]
    assert [probability(i, 2) for i in range(2)] == ["0.50000000000", None]
    assert probability(0, 1) is None


def test_probability_is_kube_proxy_string_through_the_kernel_fixed_point():
    # kube-proxy writes %0.10f; the kernel keeps round(p * 2**31); iptables-save prints %.11f.
    assert written_probability(3) == "0.3333333333"
    assert [probability(i, 5) for i in range(4)] == ["0.20000000019", "0.25000000000", "0.33333333349",
                                                     "0.50000000000"]
    assert probability(0, 7) == "0.14285714272"
    with pytest.raises(ValueError):
        probability(3, 3)


def test_seed_fixture_chain_names():
    text = SEED_FIXTURE.read_text()
    svc = service_chain("default", "hello-world-service", "", "TCP")
    seps = [endpoint_chain("default", "hello-world-service", "", "TCP", ep)
            for ep in ("10.244.1.6:8080", "10.244.1.7:8080", "10.244.2.2:8080")]
    declared = re.findall(r"^:(KUBE-S(?:VC|EP)-\S+)", text, re.MULTILINE)
    assert sorted(declared) == sorted([svc, *seps])
    # The KUBE-SVC chain balances over the endpoints in order with the computed probabilities.
    balancing = [line for line in table_lines(text, "nat") if line.startswith(f"-A {svc} ")]
    assert balancing == [
        f"-A {svc} -m statistic --mode random --probability {probability(0, 3)} -j {seps[0]}",
        f"-A {svc} -m statistic --mode random --probability {probability(1, 3)} -j {seps[1]}",
        f"-A {svc} -j {seps[2]}",
    ]
    for sep, ip in zip(seps, ("10.244.1.6", "10.244.1.7", "10.244.2.2"), strict=True):
        assert f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {ip}:8080" in text


def test_rendered_service_lines_match_the_seed(cluster):
    nat = table_lines(render_rules(cluster, cluster.node("w1")), "nat")
    for line in SEED_SERVICES + SEED_NODEPORTS:
        assert line in nat
    services = [line for line in nat if line.startswith("-A KUBE-SERVICES ")]
    assert services[-1] == SEED_LAST


def test_rendered_endpoints(cluster):
    svc = next(s for s in cluster.services if s.name == "hello-world-service")
    endpoints = [f"{ip}:{port}" for ip, port in cluster.endpoints(svc, svc.ports[0])]
    assert len(endpoints) == 3
    seps = [endpoint_chain("default", "hello-world-service", "", "TCP", ep) for ep in endpoints]
    nat = table_lines(render_rules(cluster, cluster.node("w1")), "nat")
    assert [line for line in nat if line.startswith("-A KUBE-SVC-5MRENC7Q6ZQR6GKR ")] == [
        f"-A KUBE-SVC-5MRENC7Q6ZQR6GKR -m statistic --mode random --probability 0.33333333349 -j {seps[0]}",
        f"-A KUBE-SVC-5MRENC7Q6ZQR6GKR -m statistic --mode random --probability 0.50000000000 -j {seps[1]}",
        f"-A KUBE-SVC-5MRENC7Q6ZQR6GKR -j {seps[2]}",
    ]
    for sep, ep in zip(seps, endpoints, strict=True):
        assert f"-A {sep} -s {ep.split(':')[0]}/32 -j KUBE-MARK-MASQ" in nat
        assert f"-A {sep} -p tcp -m tcp -j DNAT --to-destination {ep}" in nat
    dns_sep = endpoint_chain("kube-system", "kube-dns", "dns", "UDP", "10.244.0.3:53")  # coredns on cp1
    assert f"-A {dns_sep} -p udp -m udp -j DNAT --to-destination 10.244.0.3:53" in nat
    api_sep = endpoint_chain("default", "kubernetes", "https", "TCP", "198.51.100.11:6443")  # host network
    assert f"-A KUBE-SVC-NPX46M4PTMTKRN6Y -j {api_sep}" in nat


def test_every_chain_used_is_declared(cluster):
    text = render_rules(cluster, cluster.node("cp1"))
    for table in ("filter", "nat"):
        lines = table_lines(text, table)
        declared = {line[1:].split()[0] for line in lines if line.startswith(":")}
        targets = {m for line in lines for m in re.findall(r"-j (KUBE-\S+)", line)}
        appended = {line.split()[1] for line in lines if line.startswith("-A KUBE-")}
        assert targets | appended <= declared
    nat = table_lines(text, "nat")
    assert "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000" in nat
    assert "-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000" in nat
    assert nat[-1] == "COMMIT"
    assert "KUBE-FORWARD" not in text


def test_reapply_does_not_duplicate_builtin_jumps(cluster):
    node = cluster.node("w2")
    first = render_rules(cluster, node)
    assert len(BUILTIN_JUMP.findall(first)) == 6
    second = render_rules(cluster, node, existing_save=first)
    assert BUILTIN_JUMP.findall(second) == []
    assert "-X " not in second
    # Applying both leaves each jump once; the KUBE-* chains are declared (flushed) and rebuilt.
    assert table_lines(second, "nat")[-1] == "COMMIT"
    assert [line for line in first.splitlines() if not BUILTIN_JUMP.match(line)][1:] == second.splitlines()[1:]


def test_reapply_deletes_orphan_chains(cluster):
    node = cluster.node("w1")
    orphan_sep = endpoint_chain("default", "hello-world-service", "", "TCP", "10.244.1.99:8080")
    orphan_svc = service_chain("default", "gone", "", "TCP")
    existing = render_rules(cluster, node) + (
        f"*nat\n:{orphan_svc} - [0:0]\n:{orphan_sep} - [0:0]\n-A {orphan_svc} -j {orphan_sep}\n"
        f"-A {orphan_sep} -p tcp -m tcp -j DNAT --to-destination 10.244.1.99:8080\nCOMMIT\n")
    nat = table_lines(render_rules(cluster, node, existing), "nat")
    for chain in (orphan_sep, orphan_svc):
        assert f":{chain} - [0:0]" in nat
        assert f"-X {chain}" in nat
        assert nat.index(f":{chain} - [0:0]") < nat.index(f"-X {chain}")
    assert not [line for line in nat if line.startswith("-A ") and (orphan_sep in line or orphan_svc in line)]


def test_flannel_masq(cluster):
    node = cluster.node("w1")
    text = render_flannel_masq(cluster, node)
    assert table_lines(text, "nat") == [
        ":FLANNEL-POSTRTG - [0:0]",
        '-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG',
        '-A FLANNEL-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" -j RETURN',
        ('-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" '
         "-j MASQUERADE --random-fully"),
        '-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.1.0/24 -m comment --comment "flanneld masq" -j RETURN',
        ('-A FLANNEL-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "flanneld masq" '
         "-j MASQUERADE --random-fully"),
        "COMMIT",
    ]
    again = render_flannel_masq(cluster, node, existing_save=render_rules(cluster, node) + text)
    assert BUILTIN_JUMP.findall(again) == []
    assert "FLANNEL-FWD" not in text


def test_saved_rules_parses_tables():
    tables = saved_rules("# c\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j X\nCOMMIT\n*nat\n-A OUTPUT -j Y\nCOMMIT\n")
    assert tables == {"filter": {":INPUT ACCEPT [0:0]", "-A INPUT -j X", "COMMIT"},
                      "nat": {"-A OUTPUT -j Y", "COMMIT"}}


def _netns_restore_test(text):
    """`iptables-restore --test --noflush` inside a throwaway network namespace (never the host's rules)."""
    return subprocess.run(["unshare", "--net", "iptables-restore", "--test", "--noflush"], input=text,
                          check=False, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(not Path("/usr/sbin/iptables-restore").exists() or not shutil.which("unshare"),
                    reason="iptables-restore or unshare is not installed")
def test_iptables_restore_accepts_the_rules(cluster):
    probe = subprocess.run(["unshare", "--net", "true"], check=False, capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"cannot create a throwaway network namespace: {probe.stderr.strip()}")
    node = cluster.node("w1")
    first = render_rules(cluster, node) + render_flannel_masq(cluster, node)
    orphan = endpoint_chain("default", "hello-world-service", "", "TCP", "10.244.1.99:8080")
    existing = first + f"*nat\n:{orphan} - [0:0]\nCOMMIT\n"
    second = render_rules(cluster, node, existing) + render_flannel_masq(cluster, node, existing)
    for text in (first, second, SEED_FIXTURE.read_text()):
        result = _netns_restore_test(text)
        assert result.returncode == 0, result.stderr
