"""testinfra on the lab after converge: what site.yml promises on every node, then the lab probes."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
CONTROL_PLANE = ("cp1",)


def test_node_has_underlay_and_flannel_devices(host):
    links = {link["ifname"] for link in json.loads(host.check_output("ip -j link"))}
    assert {"eth0", "cni0", "flannel.1"} <= links
    assert host.file("/run/flannel/subnet.env").contains("FLANNEL_MTU=1450")


def test_sysctls_are_live_and_persisted(host):
    for key in ("net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding", "net.bridge.bridge-nf-call-iptables",
                "net.bridge.bridge-nf-call-ip6tables", "net.ipv6.conf.all.forwarding"):
        assert host.sysctl(key) == 1, key
        assert host.file("/etc/sysctl.d/90-netmend.conf").contains(f"^{key} = 1$"), key


def test_kernel_modules_are_persisted(host):
    modules = host.file("/etc/modules-load.d/netmend.conf").content_string.split()
    assert {"br_netfilter", "overlay", "nf_conntrack"} <= set(modules)


def test_firewalld_runs_with_the_nodes_ports_and_a_trusted_pod_network(host):
    assert host.check_output("firewall-cmd --state") == "running"
    ports = set(host.check_output("firewall-cmd --zone=public --list-ports").split())
    assert {"10250/tcp", "10256/tcp", "30000-32767/tcp", "30000-32767/udp", "8472/udp"} <= ports
    control_plane = {"6443/tcp", "2379-2380/tcp", "10257/tcp", "10259/tcp"}
    if host.backend.get_hostname() in CONTROL_PLANE:
        assert control_plane <= ports
    else:
        assert not control_plane & ports
    trusted = host.check_output("firewall-cmd --permanent --zone=trusted --list-all")
    assert "interfaces: cni0 flannel.1" in trusted and "sources: 10.244.0.0/16 10.96.0.0/12" in trusted


def test_forward_accepts_pod_traffic_whatever_the_policy(host):
    rules = host.check_output("iptables -S NETMEND-FORWARD")
    assert "-A NETMEND-FORWARD -s 10.244.0.0/16" in rules
    assert "-j NETMEND-FORWARD" in host.check_output("iptables -S FORWARD").splitlines()[1]


def test_flannel_files_and_the_etcd_key(host):
    conf = json.loads(host.file("/etc/kube-flannel/net-conf.json").content_string)
    assert conf["Network"] == "10.244.0.0/16" and conf["Backend"] == {"Type": "vxlan", "VNI": 1, "Port": 8472}
    assert json.loads(host.file("/etc/cni/net.d/10-flannel.conflist").content_string)["name"] == "cbr0"
    if host.backend.get_hostname() in CONTROL_PLANE:
        key = host.check_output("etcdctl --endpoints=http://198.51.100.11:2379 get --print-value-only "
                                "/coreos.com/network/config")
        assert json.loads(key) == conf
        docs = list(yaml.safe_load_all(host.file("/etc/kubernetes/netmend/kube-flannel.yml").content_string))
        assert {d["kind"] for d in docs} >= {"Namespace", "ConfigMap", "DaemonSet"}


def test_kubelet_dns_and_the_corefile(host):
    kubelet = yaml.safe_load(host.file("/etc/kubernetes/kubelet.conf.d/50-netmend-dns.conf").content_string)
    assert kubelet["clusterDNS"] == ["10.96.0.10"] and kubelet["resolvConf"] == "/etc/resolv.conf"
    if host.backend.get_hostname() in CONTROL_PLANE:
        corefile = host.file("/etc/kubernetes/netmend/coredns/Corefile").content_string
        assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in corefile
        assert "forward . /etc/resolv.conf {" in corefile and "loop" in corefile


def test_every_lab_probe_passes():
    proc = subprocess.run([sys.executable, "-m", "lab", "probe", "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    failed = [r for r in json.loads(proc.stdout)["results"] if not r["pass"]]
    assert not failed


def test_kube_proxy_configuration_and_recorded_mode(host):
    assert host.file("/var/lib/netmend/kube-proxy-mode").content_string.splitlines()[-1] == "iptables"
    if host.backend.get_hostname() in CONTROL_PLANE:
        config = yaml.safe_load(host.file("/etc/kubernetes/netmend/kube-proxy-config.yaml").content_string)
        assert (config["kind"], config["mode"], config["clusterCIDR"]) == (
            "KubeProxyConfiguration", "iptables", "10.244.0.0/16")
        configmap = yaml.safe_load(host.file("/etc/kubernetes/netmend/kube-proxy-configmap.yaml").content_string)
        assert yaml.safe_load(configmap["data"]["config.conf"]) == config
