"""The provisioning roles on the lab: firewalld kept on, and every probe passing through it."""

import json
import os
import re
import time

import pytest
import yaml

from lab import dataplane
from tests.labutil import failing_probes, fresh_lab, lab_cli, playbook

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")

KUBELET_DNS = "/etc/kubernetes/kubelet.conf.d/50-netmend-dns.conf"
# The operator's own firewalld settings on w2, made before netmend runs: they must survive every run.
OPERATOR = ("--add-service=http", "--add-port=8472/udp",
            "--add-rich-rule=rule family=ipv4 source address=192.0.2.0/24 service name=ssh accept")


def _ports(h, permanent=False):
    return set(h.check_output(f"firewall-cmd {'--permanent ' * permanent}--zone=public --list-ports").split())


def _wait_for_resync(hosts, seconds=10):
    """kube-proxy's stand-in restores its rules within a second of a flush (its canary is gone)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(h.run("iptables -t mangle -S KUBE-PROXY-CANARY").rc == 0 for h in hosts):
            return
        time.sleep(0.2)
    raise AssertionError("kube-proxy's rules were not restored in time")


@pytest.fixture(scope="module")
def fresh(lab):
    return fresh_lab(lab)


def test_default_firewalld_breaks_the_cluster_and_site_yml_configures_it(fresh):
    w2 = fresh["w2"]
    w2.check_output("service firewalld start")
    for arg in OPERATOR:
        w2.check_output(f"firewall-cmd --permanent '{arg}' && firewall-cmd '{arg}'")
    # As after a boot: no earlier flow is ESTABLISHED (an old VXLAN flow would let replies through).
    w2.check_output("conntrack -F")
    _wait_for_resync([w2])
    broken = {r["path"] for r in failing_probes()}
    assert {"pod to pod, cross node (vxlan)", "outside to NodePort"} <= broken, "the default zone blocks the cluster"

    out = playbook("--diff").stdout
    assert "+  ports: 6443/tcp 2379-2380/tcp 10250/tcp 10257/tcp 10259/tcp" in out
    _wait_for_resync(fresh.values())
    assert failing_probes() == []
    cp1, w1 = fresh["cp1"], fresh["w1"]
    for h in fresh.values():
        assert h.check_output("firewall-cmd --state") == "running"
        trusted = h.check_output("firewall-cmd --zone=trusted --list-all")
        assert re.search(r"interfaces: cni0 flannel\.1$", trusted, re.M)
        assert re.search(r"sources: 10\.244\.0\.0/16 10\.96\.0\.0/12$", trusted, re.M)
        assert _ports(h) == _ports(h, permanent=True), "runtime and permanent agree"
        assert "masquerade: yes" in h.check_output("firewall-cmd --zone=public --list-all")
    worker = {"10250/tcp", "10256/tcp", "30000-32767/tcp", "30000-32767/udp", "8472/udp", "53/udp", "53/tcp",
              "9153/tcp"}
    assert _ports(cp1) == worker | {"6443/tcp", "2379-2380/tcp", "10257/tcp", "10259/tcp"}
    assert _ports(w1) == worker | {"8081/tcp"}, "the hostNetwork endpoint's port, on its node only"
    assert _ports(w2) == worker
    public = w2.check_output("firewall-cmd --permanent --zone=public --list-all")
    assert "services: dhcpv6-client http ssh" in public
    assert 'rule family="ipv4" source address="192.0.2.0/24" service name="ssh" accept' in public

    again = playbook().stdout
    assert re.findall(r"changed=(\d+)", again) == ["0"] * len(fresh), "a second run changes nothing"


def test_pods_keep_working_through_a_firewalld_reload(fresh):
    for h in fresh.values():
        h.check_output("firewall-cmd --reload")
    # The reload flushes every iptables rule (firewalld 1.3): kube-proxy's come back from its resync,
    # netmend's FORWARD chain with the next run; firewalld's own trusted zone carries pod traffic meanwhile.
    _wait_for_resync(fresh.values())
    assert fresh["w1"].run("iptables -S NETMEND-FORWARD").rc != 0
    assert failing_probes() == []
    out = playbook("--tags", "forward").stdout
    assert re.findall(r"changed=(\d+)", out) == ["1"] * len(fresh)


def test_only_what_netmend_added_is_removed(fresh):
    out = playbook("--tags", "firewall", "-e", "flannel_backend_type=host-gw").stdout
    assert re.findall(r"changed=(\d+)", out) == ["1"] * len(fresh)
    assert "8472/udp" not in _ports(fresh["w1"]) | _ports(fresh["w1"], permanent=True)
    assert "8472/udp" in _ports(fresh["w2"]) & _ports(fresh["w2"], permanent=True), "the operator's port stays"
    for h in fresh.values():
        assert "interfaces: cni0\n" in h.check_output("firewall-cmd --permanent --zone=trusted --list-all") + "\n"
    playbook("--tags", "firewall")
    assert "8472/udp" in _ports(fresh["w1"])


def test_bad_firewall_arguments_change_nothing(fresh):
    before = fresh["w1"].check_output("firewall-cmd --zone=public --list-all")
    proc = playbook("--tags", "firewall", "-e", '{"firewall_ports_extra": ["53/icmp"]}', check=False)
    assert proc.returncode != 0
    assert "firewall_ports_extra: '53/icmp' is not a port such as 8472/udp" in proc.stdout
    assert "Firewall | Open" not in proc.stdout, "validation stopped the run before the roles"
    assert fresh["w1"].check_output("firewall-cmd --zone=public --list-all") == before


def test_disabled_mode_stops_firewalld_and_the_cluster_still_works(fresh):
    playbook("-e", "firewall_mode=disabled")
    for h in fresh.values():
        assert h.run("firewall-cmd --state").rc != 0
    _wait_for_resync(fresh.values())
    assert failing_probes() == []
    out = playbook("-e", "firewall_mode=disabled").stdout
    assert re.findall(r"changed=(\d+)", out) == ["0"] * len(fresh)


def test_flannel_files_manifests_and_the_etcd_key(fresh):
    cp1, w1 = fresh["cp1"], fresh["w1"]
    get = "etcdctl --endpoints=http://198.51.100.11:2379 get --print-value-only /coreos.com/network/config"
    playbook("--tags", "flannel")
    for h in fresh.values():
        conf = json.loads(h.file("/etc/kube-flannel/net-conf.json").content_string)
        assert conf == {"Network": "10.244.0.0/16", "SubnetLen": 24,
                        "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}}
        assert h.file("/etc/cni/net.d/10-flannel.conflist").exists
    assert cp1.file("/etc/kubernetes/netmend/kube-flannel.yml").contains("kind: DaemonSet")
    assert not w1.file("/etc/kubernetes/netmend/kube-flannel.yml").exists, "manifests go to the control plane"
    assert json.loads(cp1.check_output(get)) == json.loads(cp1.file("/etc/kube-flannel/net-conf.json").content_string)

    out = playbook("--tags", "flannel", "--diff", "-e", "flannel_vxlan_direct_routing=true").stdout
    assert '"DirectRouting": true' in out
    assert json.loads(cp1.check_output(get))["Backend"]["DirectRouting"] is True
    assert list(w1.file("/etc/kube-flannel").listdir()) != ["net-conf.json"], "the previous file is backed up"
    playbook("--tags", "flannel")
    assert "DirectRouting" not in json.loads(cp1.check_output(get))["Backend"]
    assert failing_probes() == []


def _upstream_probes():
    """The 'pod DNS, forwarded upstream' probes: (all passed, how many)."""
    report = json.loads(lab_cli("probe", "--json", check=False).stdout)
    upstream = [r for r in report["results"] if r["path"] == "pod DNS, forwarded upstream"]
    return all(r["pass"] for r in upstream), len(upstream)


def _wait_for_dns(cp1, needle, seconds=10):
    """The lab's CoreDNS stand-in reloads the Corefile within a second or two, as `reload` does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if needle in cp1.check_output("tail -n 20 /var/log/pods/coredns-0-dns.log"):
            return
        time.sleep(0.2)
    raise AssertionError(f"the cluster DNS did not reload with {needle!r}")


def test_dns_role_settings_drive_the_cluster_dns(fresh):
    cp1 = fresh["cp1"]
    playbook("--tags", "dns")
    for h in fresh.values():
        kubelet = yaml.safe_load(h.file(KUBELET_DNS).content_string)
        assert kubelet == {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
                           "clusterDNS": ["10.96.0.10"], "clusterDomain": "cluster.local",
                           "resolvConf": "/etc/resolv.conf"}
    corefile = "/etc/kubernetes/netmend/coredns/Corefile"
    assert "forward . /etc/resolv.conf" in cp1.file(corefile).content_string
    assert cp1.file("/etc/kubernetes/netmend/coredns/coredns-configmap.yaml").contains("kind: ConfigMap")

    # An upstream nobody answers on: the Corefile changes, the cluster DNS reloads, upstream names fail.
    out = playbook("--tags", "dns", "--diff", "-e", '{"dns_upstreams": ["203.0.113.99"]}').stdout
    assert "+    forward . 203.0.113.99 {" in out
    _wait_for_dns(cp1, "--server=203.0.113.99#53")
    passed, count = _upstream_probes()
    assert count == len(fresh) and not passed
    # The outside DNS server as an explicit upstream: resolved again, through the Corefile's forward.
    playbook("--tags", "dns", "-e", '{"dns_upstreams": ["203.0.113.10"]}')
    _wait_for_dns(cp1, "--server=203.0.113.10#53")
    assert _upstream_probes() == (True, len(fresh))
    playbook("--tags", "dns")
    _wait_for_dns(cp1, "--resolv-file=/etc/resolv.conf")
    assert failing_probes() == []


def test_dns_role_refuses_a_loopback_only_node_resolv_conf(fresh):
    w2 = fresh["w2"]
    before = w2.file("/etc/resolv.conf").content_string
    w2.check_output("printf 'nameserver 127.0.0.53\\noptions edns0 trust-ad\\nsearch .\\n' > /etc/resolv.conf")
    try:
        proc = playbook("--tags", "dns", "--limit", "w2", check=False)
        assert proc.returncode != 0
        assert "dns_kubelet_resolv_conf" in proc.stdout
        assert yaml.safe_load(w2.file(KUBELET_DNS).content_string)["resolvConf"] == "/etc/resolv.conf"
    finally:
        w2.check_output(f"printf '%s' '{before}' > /etc/resolv.conf")


def test_kube_proxy_mode_change_removes_only_the_old_modes_rules(fresh):
    """Last in this module: it leaves w2 without kube-proxy rules, as a switch to nftables mode would."""
    w2 = fresh["w2"]
    playbook("--tags", "kube_proxy,forward")
    assert w2.file("/var/lib/netmend/kube-proxy-mode").content_string.splitlines()[-1] == "iptables"
    cp1 = fresh["cp1"]
    config = yaml.safe_load(cp1.file("/etc/kubernetes/netmend/kube-proxy-config.yaml").content_string)
    assert config["kind"] == "KubeProxyConfiguration" and config["mode"] == "iptables"
    assert config["clusterCIDR"] == "10.244.0.0/16"
    configmap = yaml.safe_load(cp1.file("/etc/kubernetes/netmend/kube-proxy-configmap.yaml").content_string)
    assert yaml.safe_load(configmap["data"]["config.conf"]) == config

    # The old kube-proxy is gone (the lab's stand-in stops); the host has rules of its own.
    w2.check_output(f"kill $(cat {dataplane.KUBE_PROXY_PID})")
    w2.check_output('iptables -A INPUT -p icmp -j LOG --log-prefix "host-input: " && iptables -N HOST-OWN'
                    " && iptables -A HOST-OWN -s 192.0.2.0/24 -j RETURN")
    save = "iptables-save | grep -v '^#'"
    before = w2.check_output(save)
    out = playbook("--tags", "kube_proxy", "--limit", "w2", "--diff", "-e", "kube_proxy_mode=nftables").stdout
    assert re.search(r"w2\s+: ok=\d+\s+changed=[1-9]", out)
    after = w2.check_output(save)
    assert not re.search(r"KUBE-(SVC|SEP|SERVICES|NODEPORTS|POSTROUTING|PROXY-CANARY)", after)
    kept = [line for line in before.splitlines() if not re.search(r"KUBE-(SVC|SEP|SERVICES|NODEPORTS|POSTROUTING|"
                                                                   r"PROXY-CANARY|MARK-MASQ)", line)]
    assert [line for line in after.splitlines() if line in kept] == kept, "the host's, flannel's and netmend's stay"
    assert "-A HOST-OWN -s 192.0.2.0/24 -j RETURN" in after and "FLANNEL-POSTRTG" in after
    assert "NETMEND-FORWARD" in after
    again = playbook("--tags", "kube_proxy", "--limit", "w2", "-e", "kube_proxy_mode=nftables").stdout
    assert re.search(r"w2\s+: ok=\d+\s+changed=0 ", again)
