"""Bad input stops site.yml before any host changes, with a message naming the variable."""

import os
import shutil

import pytest
import yaml

from tests.labutil import LAB_INVENTORY, fresh_lab, node_state, playbook

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")

# (case, extra vars, text the failure must contain: the variable's name and what is wrong)
BAD_VARS = [
    ("service CIDR overlaps pods", {"netmend_service_cidr": "10.244.0.0/12"},
     "netmend_service_cidr: '10.244.0.0/12' is not a network"),
    ("pod CIDR overlaps services", {"netmend_pod_cidr": "10.96.0.0/16"},
     "netmend_pod_cidr: 10.96.0.0/16 overlaps netmend_service_cidr"),
    ("node CIDR overlaps pods", {"netmend_node_cidr": "10.244.0.0/24"},
     "overlaps netmend_node_cidr (10.244.0.0/24)"),
    ("pod CIDR with host bits", {"netmend_pod_cidr": "10.244.0.1/16"},
     "netmend_pod_cidr: '10.244.0.1/16' is not a network in CIDR form"),
    ("pod CIDR not a network", {"netmend_pod_cidr": "pods"}, "netmend_pod_cidr: 'pods' is not a network"),
    ("IPv6 pod CIDR", {"netmend_pod_cidr": "fd00::/48"}, "netmend_pod_cidr: fd00::/48 is IPv6"),
    ("unknown flannel backend", {"flannel_backend_type": "udp"},
     "flannel_backend_type: 'udp' is not accepted; choose one of: vxlan, host-gw"),
    ("VNI zero", {"flannel_vxlan_vni": 0}, "flannel_vxlan_vni: 0 is out of range; accepted: 1-16777215"),
    ("VXLAN port too big", {"flannel_vxlan_port": 70000}, "flannel_vxlan_port: 70000 is out of range"),
    ("subnet length shorter than the pod CIDR", {"flannel_subnet_len": 12},
     "flannel_subnet_len: 12 is out of range; accepted: 17-28"),
    ("MTU not a number", {"flannel_mtu": "big"}, "flannel_mtu: 'big'"),
    ("MTU larger than the underlay allows", {"flannel_mtu": 1480}, "flannel_mtu: 1480"),
    ("underlay too small for the MTU", {"netmend_underlay_mtu": 1400, "flannel_mtu": 1450}, "flannel_mtu: 1450"),
    ("cluster DNS outside the service CIDR", {"netmend_cluster_dns": "10.112.0.10"},
     "netmend_cluster_dns: 10.112.0.10 is outside netmend_service_cidr"),
    ("cluster domain", {"netmend_cluster_domain": "cluster local"},
     "netmend_cluster_domain: 'cluster local' is not a DNS domain"),
    ("unknown kube-proxy mode", {"kube_proxy_mode": "userspace"},
     "value of kube_proxy_mode must be one of: iptables, ipvs, nftables, got: userspace"),
    ("unknown ipvs scheduler", {"kube_proxy_ipvs_scheduler": "fifo"},
     "value of kube_proxy_ipvs_scheduler must be one of: rr, lc, dh, sh, sed, nq, wrr, wlc, got: fifo"),
    ("unknown firewall mode", {"firewall_mode": "off"},
     "value of firewall_mode must be one of: configured, disabled, unmanaged, got: off"),
    ("unknown forward mode", {"forward_mode": "open"},
     "value of forward_mode must be one of: accept_pod_cidr, policy_accept, got: open"),
    ("bad extra firewall port", {"firewall_ports_extra": ["53/icmp"]},
     "firewall_ports_extra: '53/icmp' is not a port such as 8472/udp"),
    ("extra sysctls not a mapping", {"kernel_sysctls_extra": ["net.ipv4.ip_forward=1"]}, "kernel_sysctls_extra"),
    ("replica on an unknown node", {"netmend_services": [
        {"name": "web", "cluster_ip": "10.96.0.50", "replicas": ["w9"], "ports": [{"port": 80}]}]},
     "netmend_services[0].replicas[0]: 'w9' is not a node of the inventory (cp1, w1, w2)"),
    ("NodePort out of range", {"netmend_services": [
        {"name": "web", "cluster_ip": "10.96.0.50", "type": "NodePort", "replicas": ["w1"],
         "ports": [{"port": 80, "node_port": 80}]}]},
     "netmend_services[0].ports[0].node_port: 80 is out of range; accepted: 30000-32767"),
]


@pytest.fixture(scope="module")
def nodes(lab):
    hosts = fresh_lab(lab)
    before = {name: node_state(h) for name, h in hosts.items()}
    yield hosts
    assert {name: node_state(h) for name, h in hosts.items()} == before, "a bad run changed a node"


@pytest.mark.parametrize(("case", "extra", "words"), BAD_VARS, ids=[c for c, _, _ in BAD_VARS])
def test_bad_variable_fails_before_any_host_changes(nodes, tmp_path, case, extra, words):
    extra_file = tmp_path / "bad.yml"
    extra_file.write_text(yaml.safe_dump(extra))
    proc = playbook("-e", f"@{extra_file}", check=False)
    assert proc.returncode != 0, case
    assert words in proc.stdout, proc.stdout[-3000:]
    assert "PLAY [Netmend | Node networking]" not in proc.stdout, "validation runs before the roles"


def test_a_bad_host_address_fails_naming_the_host(nodes, tmp_path):
    inventory = tmp_path / "inventory"
    shutil.copytree(LAB_INVENTORY, inventory)
    hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
    workers = hosts["all"]["children"]["k8s_cluster"]["children"]["workers"]["hosts"]
    workers["w2"]["ansible_host"] = "10.0.0.13"
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    proc = playbook("-i", str(inventory), check=False)
    assert proc.returncode != 0
    assert "hosts.w2.ansible_host: 10.0.0.13 is outside netmend_node_cidr 198.51.100.0/24" in proc.stdout
    assert "PLAY [Netmend | Node networking]" not in proc.stdout


def test_every_bad_variable_is_reported_at_once(nodes):
    proc = playbook("-e", "netmend_pod_cidr=pods", "-e", "flannel_vxlan_vni=0", "-e", "netmend_cluster_dns=x",
                    check=False)
    assert proc.returncode != 0
    for name in ("netmend_pod_cidr", "flannel_vxlan_vni", "netmend_cluster_dns"):
        assert f"  {name}: " in proc.stdout
