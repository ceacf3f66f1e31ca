"""build_cluster: the lab inventory, large inventories and the validation of bad input."""

import copy
import ipaddress
from pathlib import Path

import pytest
import yaml

from netmend.cluster import SpecError, build_cluster

ROOT = Path(__file__).resolve().parents[2]
GROUP_VARS = ROOT / "inventory" / "lab" / "group_vars" / "all"

LAB_HOSTS = [
    ("cp1", "control_plane", {"ansible_host": "198.51.100.11"}),
    ("w1", "workers", {"ansible_host": "198.51.100.12"}),
    ("w2", "workers", {"ansible_host": "198.51.100.13"}),
]
LAB_EXTRA = {"lab_outside_cidr": "203.0.113.0/24"}


def _load_vars():
    variables = {}
    for name in ("cluster.yml", "lab.yml"):
        variables.update(yaml.safe_load((GROUP_VARS / name).read_text()))
    return variables


LAB_VARS = _load_vars()


def lab_vars(**overrides):
    variables = copy.deepcopy(LAB_VARS)
    variables.update(overrides)
    return variables


def lab_hosts():
    return copy.deepcopy(LAB_HOSTS)


def build_lab():
    return build_cluster(lab_hosts(), lab_vars(), dict(LAB_EXTRA))


def service(cluster, name):
    return next(s for s in cluster.services if s.name == name)


def many_hosts(count, first_address):
    """cp1, w1, w2, ... with consecutive addresses from first_address."""
    start = ipaddress.ip_address(first_address)
    return [("cp1" if i == 0 else f"w{i}", "control_plane" if i == 0 else "workers",
             {"ansible_host": str(start + i)}) for i in range(count)]


# --- the lab inventory ----------------------------------------------------------------------------


def test_lab_nodes_and_subnets():
    cluster = build_lab()
    assert [(n.name, n.index, n.address, n.role, n.subnet) for n in cluster.nodes] == [
        ("cp1", 0, "198.51.100.11", "control-plane", "10.244.0.0/24"),
        ("w1", 1, "198.51.100.12", "worker", "10.244.1.0/24"),
        ("w2", 2, "198.51.100.13", "worker", "10.244.2.0/24"),
    ]
    assert [(n.gateway, n.vtep_ip) for n in cluster.nodes] == [
        ("10.244.0.1", "10.244.0.0"), ("10.244.1.1", "10.244.1.0"), ("10.244.2.1", "10.244.2.0")]
    assert cluster.pod_cidr == "10.244.0.0/16"
    assert cluster.service_cidr == "10.96.0.0/12"
    assert cluster.node_cidr == "198.51.100.0/24"
    assert cluster.cluster_domain == "cluster.local"
    assert cluster.cluster_dns == "10.96.0.10"
    assert cluster.flannel == {"backend": "vxlan", "subnet_len": 24, "vni": 1, "port": 8472, "mtu": 1450}
    assert cluster.node("w2").address == "198.51.100.13"
    with pytest.raises(KeyError):
        cluster.node("w3")


def test_lab_netcheck_pod_at_dot_two_on_every_node():
    cluster = build_lab()
    netcheck = [p for p in cluster.pods if p.app == "netcheck"]
    assert [(p.name, p.node, p.ip, p.host_network) for p in netcheck] == [
        ("netcheck-cp1", "cp1", "10.244.0.2", False),
        ("netcheck-w1", "w1", "10.244.1.2", False),
        ("netcheck-w2", "w2", "10.244.2.2", False),
    ]


def test_lab_service_pods():
    cluster = build_lab()
    hello = service(cluster, "hello-world-service")
    assert [(p.name, p.node, p.ip) for p in cluster.service_pods(hello)] == [
        ("hello-world-service-0", "w1", "10.244.1.3"),
        ("hello-world-service-1", "w1", "10.244.1.4"),
        ("hello-world-service-2", "w2", "10.244.2.3"),
    ]
    dns = service(cluster, "kube-dns")
    assert dns.app == "coredns" and dns.namespace == "kube-system" and dns.key == "kube-system/kube-dns"
    assert [(p.name, p.node, p.ip) for p in cluster.service_pods(dns)] == [("coredns-0", "cp1", "10.244.0.3")]
    single = service(cluster, "hello-world-single")
    assert [p.ip for p in cluster.service_pods(single)] == ["10.244.1.5"]
    assert [p.ip for p in cluster.pods_on("w1") if not p.host_network] == [
        "10.244.1.2", "10.244.1.3", "10.244.1.4", "10.244.1.5"]


def test_lab_host_network_pods_carry_the_node_address():
    cluster = build_lab()
    for name, node, address in (("kubernetes", "cp1", "198.51.100.11"), ("hello-hostnet", "w1", "198.51.100.12")):
        pods = cluster.service_pods(service(cluster, name))
        assert [(p.node, p.ip, p.host_network) for p in pods] == [(node, address, True)]
        assert cluster.node(node).address == address


def test_lab_endpoints_list_ip_and_target_port():
    cluster = build_lab()
    hello = service(cluster, "hello-world-service")
    (port,) = hello.ports
    assert (port.port, port.target_port, port.node_port, port.protocol) == (4000, 8080, 30001, "TCP")
    assert cluster.endpoints(hello, port) == [("10.244.1.3", 8080), ("10.244.1.4", 8080), ("10.244.2.3", 8080)]
    api = service(cluster, "kubernetes")
    assert cluster.endpoints(api, api.ports[0]) == [("198.51.100.11", 6443)]
    hostnet = service(cluster, "hello-hostnet")
    assert cluster.endpoints(hostnet, hostnet.ports[0]) == [("198.51.100.12", 8081)]
    dns = service(cluster, "kube-dns")
    assert [(p.name, p.protocol, cluster.endpoints(dns, p)) for p in dns.ports] == [
        ("dns", "UDP", [("10.244.0.3", 53)]),
        ("dns-tcp", "TCP", [("10.244.0.3", 53)]),
        ("metrics", "TCP", [("10.244.0.3", 9153)]),
    ]


def test_lab_build_is_deterministic():
    assert build_lab().pods == build_lab().pods
    assert build_lab().nodes == build_lab().nodes
    assert build_lab().services == build_lab().services


def test_pod_placement_follows_the_docstring_rule():
    """netcheck at .2 on every node; service pods then take the next address in spec order."""
    cluster = build_lab()
    next_ip = {n.name: n.network.network_address + 2 for n in cluster.nodes}
    expected = []
    for node in cluster.nodes:
        expected.append((f"netcheck-{node.name}", node.name, str(next_ip[node.name])))
        next_ip[node.name] += 1
    for svc in cluster.services:
        for k, node_name in enumerate(svc.replicas):
            if svc.host_network:
                ip = cluster.node(node_name).address
            else:
                ip = str(next_ip[node_name])
                next_ip[node_name] += 1
            expected.append((f"{svc.app}-{k}", node_name, ip))
    assert [(p.name, p.node, p.ip) for p in cluster.pods] == expected
    for pod in cluster.pods:
        if not pod.host_network:
            assert ipaddress.ip_address(pod.ip) in cluster.node(pod.node).network


# --- large inventories ----------------------------------------------------------------------------


def test_fifty_nodes():
    cluster = build_cluster(many_hosts(50, "198.51.100.11"), lab_vars(), dict(LAB_EXTRA))
    assert len(cluster.nodes) == 50
    assert [n.subnet for n in cluster.nodes] == [f"10.244.{i}.0/24" for i in range(50)]
    assert cluster.nodes[-1].address == "198.51.100.60"
    assert len({p.ip for p in cluster.pods if not p.host_network}) == len(
        [p for p in cluster.pods if not p.host_network])


def test_256_nodes_fill_the_pod_cidr():
    hosts = many_hosts(256, "198.18.0.11")
    cluster = build_cluster(hosts, lab_vars(netmend_node_cidr="198.18.0.0/16"), dict(LAB_EXTRA))
    assert len(cluster.nodes) == 256
    assert cluster.nodes[0].subnet == "10.244.0.0/24"
    assert cluster.nodes[-1].subnet == "10.244.255.0/24"
    assert len({n.subnet for n in cluster.nodes}) == 256
    assert cluster.nodes[-1].address == "198.18.1.10"
    assert cluster.pods_on(cluster.nodes[-1].name)[0].ip == "10.244.255.2"


def test_257_nodes_exceed_the_pod_cidr():
    hosts = many_hosts(257, "198.18.0.11")
    with pytest.raises(SpecError) as err:
        build_cluster(hosts, lab_vars(netmend_node_cidr="198.18.0.0/16"), dict(LAB_EXTRA))
    assert [f for f, _ in err.value.problems] == ["netmend_pod_cidr"]
    message = err.value.problems[0][1]
    assert "holds 256 node subnets of /24" in message and "257 nodes" in message
    assert "larger pod CIDR" in message


# --- bad input ------------------------------------------------------------------------------------


def _set(path, value):
    """A mutation setting variables[path...] = value; path items are keys or indexes."""
    def mutate(variables, hosts, extra):
        target = variables
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _delete(path):
    def mutate(variables, hosts, extra):
        target = variables
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


def _host(index, name=None, address=None, drop_address=False):
    def mutate(variables, hosts, extra):
        old_name, group, hostvars = hosts[index]
        if address is not None:
            hostvars["ansible_host"] = address
        if drop_address:
            del hostvars["ansible_host"]
        hosts[index] = (name or old_name, group, hostvars)
    return mutate


def _extra(key, value):
    def mutate(variables, hosts, extra):
        extra[key] = value
    return mutate


HELLO = ("netmend_services", 2)
SINGLE = ("netmend_services", 3)

# (id, mutation, field expected among the problems, text the message for that field contains)
BAD_INPUTS = [
    ("pod-overlaps-service", _set(("netmend_pod_cidr",), "10.96.0.0/16"),
     "netmend_pod_cidr", "must be disjoint"),
    ("pod-overlaps-node", _set(("netmend_pod_cidr",), "198.51.0.0/16"),
     "netmend_pod_cidr", "overlaps netmend_node_cidr"),
    ("service-overlaps-lab-outside", _extra("lab_outside_cidr", "10.100.0.0/16"),
     "netmend_service_cidr", "overlaps lab_outside_cidr"),
    ("pod-cidr-bare-address", _set(("netmend_pod_cidr",), "10.244.0.0"),
     "netmend_pod_cidr", "CIDR form such as 10.244.0.0/16"),
    ("service-cidr-bare-address", _set(("netmend_service_cidr",), "10.96.0.10"),
     "netmend_service_cidr", "CIDR form"),
    ("node-cidr-bare-address", _set(("netmend_node_cidr",), "198.51.100.11"),
     "netmend_node_cidr", "CIDR form"),
    ("pod-cidr-host-bits", _set(("netmend_pod_cidr",), "10.244.0.1/16"),
     "netmend_pod_cidr", "CIDR form such as 10.244.0.0/16"),
    ("pod-cidr-ipv6", _set(("netmend_pod_cidr",), "fd00:10:244::/56"),
     "netmend_pod_cidr", "IPv4 networks are accepted"),
    ("pod-cidr-missing", _delete(("netmend_pod_cidr",)),
     "netmend_pod_cidr", "a network in CIDR form is required"),
    ("host-without-address", _host(2, drop_address=True),
     "hosts.w2.ansible_host", "an IPv4 address is required"),
    ("host-address-unparsable", _host(2, address="w2.lab.example"),
     "hosts.w2.ansible_host", "is not an IPv4 address"),
    ("host-address-ipv6", _host(2, address="2001:db8::13"),
     "hosts.w2.ansible_host", "IPv4 addresses are accepted"),
    ("host-address-outside-node-cidr", _host(2, address="198.51.101.13"),
     "hosts.w2.ansible_host", "outside netmend_node_cidr 198.51.100.0/24"),
    ("host-address-broadcast", _host(2, address="198.51.100.255"),
     "hosts.w2.ansible_host", "network or broadcast address"),
    ("host-address-is-gateway", _host(2, address="198.51.100.1"),
     "hosts.w2.ansible_host", "lab_gateway"),
    ("duplicate-address", _host(2, address="198.51.100.12"),
     "hosts.w2.ansible_host", "duplicate address 198.51.100.12 (also w1)"),
    ("duplicate-node-name", _host(2, name="w1"),
     "hosts.w1", "duplicate node name"),
    ("invalid-node-name", _host(2, name="w_2"),
     "hosts.w_2", "1-40 lower-case letters, digits or inner dashes"),
    ("too-many-nodes-for-pod-cidr", _set(("netmend_pod_cidr",), "10.244.0.0/23"),
     "netmend_pod_cidr", "holds 2 node subnets of /24, the inventory has 3 nodes"),
    ("flannel-backend", _set(("flannel_backend_type",), "udp"),
     "flannel_backend_type", "choose one of: vxlan, host-gw"),
    ("vni-zero", _set(("flannel_vxlan_vni",), 0),
     "flannel_vxlan_vni", "accepted: 1-16777215"),
    ("vni-2-24", _set(("flannel_vxlan_vni",), 2 ** 24),
     "flannel_vxlan_vni", "accepted: 1-16777215"),
    ("vni-not-integer", _set(("flannel_vxlan_vni",), "one"),
     "flannel_vxlan_vni", "is not an integer; accepted: 1-16777215"),
    ("vxlan-port-70000", _set(("flannel_vxlan_port",), 70000),
     "flannel_vxlan_port", "accepted: 1-65535"),
    ("service-port-70000", _set((*HELLO, "ports", 0, "port"), 70000),
     "netmend_services[2].ports[0].port", "accepted: 1-65535"),
    ("subnet-len-equal-pod-prefix", _set(("flannel_subnet_len",), 16),
     "flannel_subnet_len", "accepted: 17-28"),
    ("subnet-len-shorter-than-pod-prefix", _set(("flannel_subnet_len",), 8),
     "flannel_subnet_len", "accepted: 17-28"),
    ("subnet-len-too-long", _set(("flannel_subnet_len",), 29),
     "flannel_subnet_len", "accepted: 17-28"),
    ("mtu-100", _set(("flannel_mtu",), 100),
     "flannel_mtu", "accepted: 'auto' or an integer 576-1450"),
    ("mtu-beyond-the-underlay", _set(("flannel_mtu",), 1451),
     "flannel_mtu", "1451 does not fit; accepted: 'auto' or an integer 576-1450 (the underlay MTU 1500 minus 50"),
    ("mtu-word", _set(("flannel_mtu",), "jumbo"),
     "flannel_mtu", "'jumbo' is not accepted"),
    ("underlay-too-small", _set(("netmend_underlay_mtu",), 600),
     "netmend_underlay_mtu", "600"),
    ("cluster-domain", _set(("netmend_cluster_domain",), "cluster..local"),
     "netmend_cluster_domain", "DNS domain such as cluster.local"),
    ("cluster-dns-outside-service-cidr", _set(("netmend_cluster_dns",), "10.95.0.10"),
     "netmend_cluster_dns", "outside netmend_service_cidr 10.96.0.0/12"),
    ("kube-dns-ip-differs", _set(("netmend_services", 1, "cluster_ip"), "10.96.0.11"),
     "netmend_services[1].cluster_ip", "kube-dns must have netmend_cluster_dns (10.96.0.10)"),
    ("cluster-ip-outside-service-cidr", _set((*HELLO, "cluster_ip"), "10.200.0.1"),
     "netmend_services[2].cluster_ip", "outside netmend_service_cidr 10.96.0.0/12"),
    ("duplicate-cluster-ip", _set((*SINGLE, "cluster_ip"), "10.96.103.220"),
     "netmend_services[3].cluster_ip", "already used by hello-world-service"),
    ("node-port-80", _set((*HELLO, "ports", 0, "node_port"), 80),
     "netmend_services[2].ports[0].node_port", "accepted: 30000-32767"),
    ("node-port-on-cluster-ip", _set(("netmend_services", 1, "ports", 0, "node_port"), 30010),
     "netmend_services[1].ports[0].node_port", "only accepted for services of type NodePort"),
    ("node-port-missing", _delete((*HELLO, "ports", 0, "node_port")),
     "netmend_services[2].ports[0].node_port", "required for a NodePort service; accepted: 30000-32767"),
    ("duplicate-node-port", _set((*SINGLE, "ports", 0, "node_port"), 30001),
     "netmend_services[3].ports[0].node_port", "30001/TCP is already used by hello-world-service"),
    ("service-type", _set((*HELLO, "type"), "LoadBalancer"),
     "netmend_services[2].type", "choose one of: ClusterIP, NodePort"),
    ("protocol-icmp", _set((*HELLO, "ports", 0, "protocol"), "ICMP"),
     "netmend_services[2].ports[0].protocol", "choose one of: TCP, UDP, SCTP"),
    ("replica-unknown-node", _set((*HELLO, "replicas"), ["w1", "w9"]),
     "netmend_services[2].replicas[1]", "'w9' is not a node of the inventory (cp1, w1, w2)"),
    ("replicas-empty", _set((*HELLO, "replicas"), []),
     "netmend_services[2].replicas", "non-empty list of node names"),
    ("host-network-same-node-twice", _set(("netmend_services", 4, "replicas"), ["w1", "w1"]),
     "netmend_services[4].replicas", "one per node"),
    ("unknown-service-key", _set((*HELLO, "nodePort"), 30001),
     "netmend_services[2]", "unknown keys nodePort; accepted: name, namespace"),
    ("service-without-name", _delete((*HELLO, "name")),
     "netmend_services[2].name", "a service name is required"),
    ("duplicate-service", _set((*SINGLE, "name"), "hello-world-service"),
     "netmend_services[3].name", "duplicate service default/hello-world-service"),
    ("ports-empty", _set((*HELLO, "ports"), []),
     "netmend_services[2].ports", "non-empty list of ports"),
    ("more-pods-than-subnet", lambda v, h, e: (v.update(flannel_subnet_len=28),
                                               v["netmend_services"][3].update(replicas=["w1"] * 13)),
     "netmend_services", "node w1 has more pods than its subnet 10.244.0.16/28 holds"),
]


def test_enough_bad_inputs():
    assert len(BAD_INPUTS) >= 22
    assert len({case[0] for case in BAD_INPUTS}) == len(BAD_INPUTS)


@pytest.mark.parametrize("mutate, fieldname, text", [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input(mutate, fieldname, text):
    variables, hosts, extra = lab_vars(), lab_hosts(), dict(LAB_EXTRA)
    mutate(variables, hosts, extra)
    with pytest.raises(SpecError) as err:
        build_cluster(hosts, variables, extra)
    problems = err.value.problems
    assert fieldname in [f for f, _ in problems], problems
    messages = [m for f, m in problems if f == fieldname]
    assert any(text in m for m in messages), messages


@pytest.mark.parametrize("overrides", [
    {"flannel_vxlan_vni": 16777215},
    {"flannel_vxlan_vni": "7"},
    {"flannel_vxlan_port": 65535},
    {"flannel_subnet_len": 18},
    {"flannel_subnet_len": 28},
    {"flannel_mtu": 576},
    {"flannel_mtu": 1450},
    {"flannel_mtu": "auto", "netmend_underlay_mtu": 9000},
    {"flannel_mtu": 1500, "flannel_backend_type": "host-gw"},
    {"flannel_backend_type": "host-gw"},
], ids=str)
def test_accepted_boundaries(overrides):
    cluster = build_cluster(lab_hosts(), lab_vars(**overrides), dict(LAB_EXTRA))
    assert len(cluster.nodes) == 3


@pytest.mark.parametrize(("overrides", "mtu"), [
    ({"flannel_mtu": "auto"}, 1450),
    ({"flannel_mtu": "auto", "netmend_underlay_mtu": 9000}, 8950),
    ({"flannel_mtu": "auto", "flannel_backend_type": "host-gw"}, 1500),
    ({"flannel_mtu": 1400}, 1400),
], ids=str)
def test_mtu_auto_is_the_underlay_minus_the_encapsulation(overrides, mtu):
    assert build_cluster(lab_hosts(), lab_vars(**overrides), dict(LAB_EXTRA)).flannel["mtu"] == mtu


def test_node_port_range_bounds_are_accepted():
    variables = lab_vars()
    variables["netmend_services"][2]["ports"][0]["node_port"] = 30000
    variables["netmend_services"][3]["ports"][0]["node_port"] = 32767
    cluster = build_cluster(lab_hosts(), variables, dict(LAB_EXTRA))
    assert [service(cluster, n).ports[0].node_port for n in ("hello-world-service", "hello-world-single")] == [
        30000, 32767]


def test_twelve_pods_fit_a_slash_28():
    """A /28 holds .2 to .14: netcheck plus 12 service pods (w1 already has hello-world x2 and single)."""
    variables = lab_vars(flannel_subnet_len=28)
    variables["netmend_services"][3]["replicas"] = ["w1"] * 10
    cluster = build_cluster(lab_hosts(), variables, dict(LAB_EXTRA))
    assert [p.ip for p in cluster.pods_on("w1") if not p.host_network][-1] == "10.244.0.30"


def test_all_problems_are_reported_at_once():
    variables, hosts = lab_vars(flannel_mtu=100), lab_hosts()
    variables["netmend_services"][2]["ports"][0]["protocol"] = "ICMP"
    hosts[2][2].pop("ansible_host")
    with pytest.raises(SpecError) as err:
        build_cluster(hosts, variables, dict(LAB_EXTRA))
    problems = err.value.problems
    assert {f for f, _ in problems} == {
        "flannel_mtu", "netmend_services[2].ports[0].protocol", "hosts.w2.ansible_host"}
    lines = str(err.value).splitlines()
    assert lines == [f"{f}: {m}" for f, m in problems]
    assert any(line.startswith("flannel_mtu: 100 does not fit; accepted: 'auto' or an integer 576-1450")
               for line in lines)
    assert "hosts.w2.ansible_host: is missing; an IPv4 address is required" in lines
    assert isinstance(err.value, ValueError)
