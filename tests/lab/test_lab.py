"""The embedded lab on real kernel state: up, probes, ssh isolation, services, teardown."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from lab import dataplane, topology
from tests.labutil import LAB_INVENTORY, ROOT, SSH_CONFIG, fresh_lab, host, lab_cli, node_state, playbook

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")


def root_namespace_snapshot():
    """Everything of the machine's own network that the lab must never change."""
    def out(*argv):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        return proc.stdout if proc.returncode == 0 else f"<{argv[0]} unavailable: {proc.returncode}>"

    def links():
        data = json.loads(out("ip", "-j", "-d", "link"))
        for link in data:
            link.pop("stats64", None)
        return data

    def no_timestamps(text):
        return re.sub(r"^# (Generated|Completed) .*$", "", text, flags=re.M)

    return {
        "links": links(),
        "addresses": json.loads(out("ip", "-j", "addr")),
        "routes4": out("ip", "-4", "route", "show", "table", "all"),
        "routes6": out("ip", "-6", "route", "show", "table", "all"),
        "rules": out("ip", "rule") + out("ip", "-6", "rule"),
        "neigh": out("ip", "neigh", "show", "nud", "permanent"),
        "sysctl": out("sysctl", "-a", "-r", r"^net\."),
        "iptables-nft": no_timestamps(out("iptables-save")),
        "ip6tables-nft": no_timestamps(out("ip6tables-save")),
        "iptables-legacy": no_timestamps(out("iptables-legacy-save")),
        "nftables": out("nft", "list", "ruleset"),
        "netns": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else [],
    }


def test_root_namespace_is_identical_before_up_and_after_down(lab):
    lab_cli("down")  # the session's lab, whichever test file brought it up
    try:
        before = root_namespace_snapshot()
        lab_cli("up")
        during = root_namespace_snapshot()
        state = topology.load_state()
        lab_cli("down")
        after = root_namespace_snapshot()
        run_dir_left = topology.RUN.exists()
        pids = [info["pid"] for info in state["nodes"].values()] + [p["pid"] for p in state["processes"]]
        left_alive = [pid for pid in pids if topology.alive(pid)]
    finally:
        fresh_lab(lab)  # the session's lab is up again for the tests after this one, its state refreshed
    for key in before:
        assert after[key] == before[key], f"the root namespace's {key} changed"
    # The snapshot is sensitive: while the lab is up, its namespaces show.
    assert during["netns"] != before["netns"]
    assert not run_dir_left
    assert pids and not left_alive


def test_every_probe_passes_on_a_healthy_lab(lab):
    proc = lab_cli("probe", "--json", check=False)
    report = json.loads(proc.stdout)
    failed = [r for r in report["results"] if not r["pass"]]
    assert not failed, json.dumps(failed, indent=2)
    assert proc.returncode == 0
    paths = {r["path"] for r in report["results"]}
    for wanted in ("pod to pod, same node", "pod to pod, cross node (vxlan)", "pod to outside (MASQUERADE)",
                   "pod to ClusterIP (spread)", "outside to NodePort", "outside to NodePort (hostNetwork endpoint)",
                   "pod DNS", "pod DNS, forwarded upstream", "hostNetwork pod DNS, ClusterFirstWithHostNet",
                   "hostNetwork pod DNS, ClusterFirst"):
        assert wanted in paths
    spread = [r for r in report["results"] if r["path"] == "pod to ClusterIP (spread)"]
    assert all(r["detail"].count("=") == 3 for r in spread), "every replica answers a ClusterIP"
    # Without ClusterFirstWithHostNet a hostNetwork pod cannot resolve cluster names (seed 000 section 3).
    without = [r for r in report["results"] if r["path"] == "hostNetwork pod DNS, ClusterFirst"]
    assert without and all(r["outcome"] == "fail" and r["pass"] for r in without)


def test_probe_table_is_readable(lab):
    proc = lab_cli("probe")
    assert proc.stdout.splitlines()[0].split()[:3] == ["RESULT", "PATH", "SOURCE"]
    assert re.search(r"^probes: \d+ passed, 0 failed in [\d.]+ s$", proc.stdout, re.M)


def test_nodes_over_ssh_see_only_their_own_interfaces_sysctls_and_files(lab):
    nodes = {name: host(name) for name in lab["nodes"]}
    for name, node in nodes.items():
        assert node.check_output("hostname") == name
        links = json.loads(node.check_output("ip -j link"))
        names = {link["ifname"] for link in links}
        assert {"lo", "eth0", "cni0", "flannel.1"} <= names
        assert all(n in ("lo", "eth0", "cni0", "flannel.1") or n.startswith("veth") for n in names), names
        addrs = node.check_output("ip -4 -o addr show dev eth0")
        assert lab["nodes"][name]["address"] + "/24" in addrs
        assert node.check_output("cat /proc/1/comm") == "init"
        assert node.file("/run/flannel/subnet.env").contains("FLANNEL_NETWORK=10.244.0.0/16")
        # The lab's own state is hidden from nodes.
        assert not node.file(str(topology.RUN)).exists
    w1, w2 = nodes["w1"], nodes["w2"]
    w1.check_output("sysctl -qw net.ipv4.conf.all.accept_redirects=0")
    w2.check_output("sysctl -qw net.ipv4.conf.all.accept_redirects=1")
    assert w1.check_output("sysctl -n net.ipv4.conf.all.accept_redirects") == "0"
    assert w2.check_output("sysctl -n net.ipv4.conf.all.accept_redirects") == "1"
    marker = "/etc/netmend-isolation-test"
    w1.check_output(f"echo w1 > {marker}")
    assert w1.file(marker).content_string == "w1\n"
    assert not w2.file(marker).exists
    assert not os.path.exists(marker)
    w1.check_output(f"rm {marker}")


def test_ansible_service_module_starts_and_stops_firewalld_inside_one_node(lab):
    ansible = str(ROOT / ".venv" / "bin" / "ansible")
    w2 = host("w2")
    assert not w2.service("firewalld").is_running
    for state, running in (("started", True), ("stopped", False)):
        proc = subprocess.run([ansible, "w2", "-m", "ansible.builtin.service", "-a", f"name=firewalld state={state}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "CHANGED" in proc.stdout
        assert (w2.run("firewall-cmd --state").rc == 0) is running
        # firewalld and its private D-Bus run only inside the node, never on the machine itself.
        lab_inodes = {topology.netns_inode(info["pid"]) for info in lab["nodes"].values()}
        for pid in (p for p in os.listdir("/proc") if p.isdigit()):
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
                cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            if exe.endswith("dbus-daemon") or b"/usr/sbin/firewalld" in cmd:
                assert topology.netns_inode(pid) in lab_inodes
    assert not host("w1").service("firewalld").is_running


def test_ansible_runs_site_yml_against_the_lab(lab):
    proc = playbook()
    recap = re.findall(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", proc.stdout, re.M)
    assert sorted(h for h, *_ in recap) == sorted(lab["nodes"])
    assert all(unreach == "0" and failed == "0" for _, _, unreach, failed in recap)


def test_pyinfra_reaches_every_node(lab, tmp_path):
    inventory = tmp_path / "inventory.py"
    hosts = [(n, info["address"]) for n, info in lab["nodes"].items()]
    data = {"ssh_config_file": str(SSH_CONFIG), "ssh_known_hosts_file": str(SSH_CONFIG.parent / "known_hosts"),
            "ssh_user": "root"}
    inventory.write_text(f"nodes = {[(addr, dict(data)) for _, addr in hosts]!r}\n")
    pyinfra = str(ROOT / ".venv" / "bin" / "pyinfra")
    proc = subprocess.run([pyinfra, "-y", str(inventory), "exec", "--", "hostname"], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name, _ in hosts:
        assert re.search(rf"\]\s+{name}$", proc.stdout + proc.stderr, re.M), proc.stdout + proc.stderr


def test_etcd_holds_flannel_config_and_one_lease_per_node(lab):
    cp1 = host("cp1")
    config = json.loads(cp1.check_output("etcdctl get --print-value-only /coreos.com/network/config"))
    assert config == {"Network": "10.244.0.0/16", "SubnetLen": 24,
                      "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}}
    keys = cp1.check_output("etcdctl get --prefix --keys-only /coreos.com/network/subnets/").split()
    assert sorted(keys) == [f"/coreos.com/network/subnets/10.244.{i}.0-24" for i in range(3)]
    w1 = host("w1")
    lease = json.loads(cp1.check_output("etcdctl get --print-value-only /coreos.com/network/subnets/10.244.1.0-24"))
    assert lease["PublicIP"] == "198.51.100.12"
    assert lease["BackendData"]["VtepMAC"] == json.loads(w1.check_output("ip -j link show flannel.1"))[0]["address"]
    vx = json.loads(w1.check_output("ip -j -d link show flannel.1"))[0]
    assert vx["mtu"] == 1450
    assert vx["linkinfo"]["info_data"]["id"] == 1 and vx["linkinfo"]["info_data"]["port"] == 8472
    assert "10.244.0.0/24 via 10.244.0.0 dev flannel.1 onlink" in w1.check_output("ip route")
    assert lease["BackendData"]["VtepMAC"] not in w1.check_output("bridge fdb show dev flannel.1")
    cp1_mac = json.loads(cp1.check_output("ip -j link show flannel.1"))[0]["address"]
    assert f"{cp1_mac} dst 198.51.100.11" in w1.check_output("bridge fdb show dev flannel.1")


def test_kube_proxy_rules_are_in_kube_proxys_format(lab):
    save = host("w1").check_output("iptables-save -t nat")
    assert ('-A KUBE-NODEPORTS -p tcp -m comment --comment "default/hello-world-service:" -m tcp --dport 30001 '
            "-j KUBE-SVC-5MRENC7Q6ZQR6GKR") in save
    assert "-A KUBE-SVC-5MRENC7Q6ZQR6GKR -m statistic --mode random --probability 0.33333333349" in save
    assert save.count("-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\"") == 1
    assert "-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4" in save


def test_pods_have_their_own_resolv_conf(lab):
    w1 = host("w1")
    pod = "netcheck-w1"
    text = w1.check_output(f"ip netns exec {dataplane.POD_PREFIX}{pod} cat /etc/resolv.conf")
    assert text.splitlines() == ["nameserver 10.96.0.10",
                                 "search default.svc.cluster.local svc.cluster.local cluster.local lab.example",
                                 "options ndots:5"]
    assert w1.file("/etc/resolv.conf").content_string.startswith("nameserver 203.0.113.10")


def _edited_inventory(tmp_path, edit):
    inv = tmp_path / "inventory"
    shutil.copytree(LAB_INVENTORY, inv)
    cluster_file = inv / "group_vars" / "all" / "cluster.yml"
    hosts_file = inv / "hosts.yml"
    data = {"cluster": yaml.safe_load(cluster_file.read_text()), "hosts": yaml.safe_load(hosts_file.read_text())}
    edit(data)
    cluster_file.write_text(yaml.safe_dump(data["cluster"]))
    hosts_file.write_text(yaml.safe_dump(data["hosts"]) if not isinstance(data["hosts"], str) else data["hosts"])
    return inv


def _workers(data):
    return data["hosts"]["all"]["children"]["k8s_cluster"]["children"]["workers"]["hosts"]


BAD_INVENTORIES = [
    ("overlap", "netmend_service_cidr", lambda d: d["cluster"].update(netmend_service_cidr="10.244.128.0/17")),
    ("no-address", "hosts.w2.ansible_host", lambda d: _workers(d)["w2"].pop("ansible_host")),
    ("duplicate-address", "hosts.w2.ansible_host", lambda d: _workers(d)["w2"].update(ansible_host="198.51.100.12")),
    ("capacity", "netmend_pod_cidr", lambda d: d["cluster"].update(netmend_pod_cidr="10.244.0.0/23")),
    ("duplicate-name", "w1: duplicate key",
     lambda d: d.update(hosts=(LAB_INVENTORY / "hosts.yml").read_text().replace("w2:", "w1:"))),
]


@pytest.mark.parametrize(("case", "field", "edit"), BAD_INVENTORIES, ids=[c for c, _, _ in BAD_INVENTORIES])
def test_bad_inventory_stops_lab_up_before_anything_is_created(lab, tmp_path, case, field, edit):
    before = topology.lab_namespaces()
    state_before = topology.load_state()
    inv = _edited_inventory(tmp_path, edit)
    proc = lab_cli("up", "-i", str(inv), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert field in proc.stderr and "nothing was created" in proc.stderr
    assert topology.lab_namespaces() == before
    assert topology.load_state() == state_before


def test_up_on_a_lab_that_is_up_ends_in_a_clean_known_state(lab):
    proc = lab_cli("up")
    assert "tearing it down first" in proc.stdout
    lab.clear()
    lab.update(topology.load_state())
    assert lab_cli("status").returncode == 0
    assert json.loads(lab_cli("probe", "--json").stdout)["results"]


def test_down_cleans_a_half_built_lab(lab):
    # Half built: one node's init is gone and the state file is lost, as after a crash in `up`.
    state = topology.load_state()
    os.kill(state["nodes"]["w2"]["pid"], 9)
    topology.STATE.unlink()
    lab_cli("down")
    assert topology.lab_namespaces() == []
    assert not topology.RUN.exists()
    for info in state["nodes"].values():
        assert not topology.alive(info["pid"])
    for proc in state["processes"]:
        assert not topology.alive(proc["pid"])
    assert lab_cli("status", check=False).returncode == 1
    # Leave the lab up again for any test that follows.
    fresh_lab(lab)


def test_down_never_kills_a_process_outside_the_lab(lab):
    # The state file may name a PID that belongs to someone else by now.
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        state = topology.load_state()
        state["processes"].append({"pid": bystander.pid, "what": "a reused PID", "netns": "none"})
        topology.save_state(state)
        lab_cli("down")
        assert bystander.poll() is None
        assert topology.lab_namespaces() == []
    finally:
        bystander.kill()
        bystander.wait()
        fresh_lab(lab)


def test_lab_cli_refuses_unknown_commands():
    proc = subprocess.run([sys.executable, "-m", "lab", "explode"], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_host_gw_backend_passes_every_probe(lab, tmp_path):
    inv = _edited_inventory(tmp_path, lambda d: d["cluster"].update(flannel_backend_type="host-gw"))
    try:
        lab_cli("up", "-i", str(inv))
        w1 = host("w1")
        assert "10.244.0.0/24 via 198.51.100.11 dev eth0" in w1.check_output("ip route")
        assert w1.run("ip link show flannel.1").rc != 0
        report = json.loads(lab_cli("probe", "--json", "-i", str(inv), check=False).stdout)
        assert [r for r in report["results"] if not r["pass"]] == []
        assert any(r["path"] == "pod to pod, cross node (host-gw)" for r in report["results"])
    finally:
        fresh_lab(lab)


def test_forward_drop_breaks_pod_traffic_and_site_yml_repairs_it(lab):
    fresh_lab(lab)  # a lab that netmend has not provisioned yet
    for name in lab["nodes"]:
        host(name).check_output("iptables -P FORWARD DROP")  # what Docker does
    report = json.loads(lab_cli("probe", "--json", check=False).stdout)
    broken = {r["path"] for r in report["results"] if not r["pass"]}
    assert {"pod to pod, cross node (vxlan)", "pod to outside (MASQUERADE)",
            "outside to NodePort (hostNetwork endpoint)"} <= broken
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), "site.yml", "--tags", "forward"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(re.findall(r"changed=1 ", proc.stdout)) == len(lab["nodes"])
    report = json.loads(lab_cli("probe", "--json", check=False).stdout)
    assert [r for r in report["results"] if not r["pass"]] == []
    assert host("w1").check_output("iptables -S FORWARD").splitlines()[0] == "-P FORWARD DROP"


def test_check_mode_on_a_fresh_lab_changes_nothing(lab):
    hosts = fresh_lab(lab)
    before = {name: node_state(h) for name, h in hosts.items()}
    out = playbook("--check", "--diff").stdout
    assert re.findall(r"changed=(\d+)", out) and all(int(n) > 0 for n in re.findall(r"changed=(\d+)", out))
    assert {name: node_state(h) for name, h in hosts.items()} == before


def test_reverted_sysctls_break_traffic_and_site_yml_repairs_them(lab):
    playbook()  # a provisioned cluster, then a reboot or a hand loses two sysctls on w1
    w1 = host("w1")
    w1.check_output("sysctl -qw net.ipv4.ip_forward=0 net.bridge.bridge-nf-call-iptables=0")
    report = json.loads(lab_cli("probe", "--json", check=False).stdout)
    broken = {r["id"] for r in report["results"] if not r["pass"]}
    assert "pod-pod-cross-node:netcheck-w1->netcheck-cp1" in broken
    # Without bridge-nf-call-iptables a pod cannot reach a ClusterIP backed by a pod on its own node.
    assert "clusterip:netcheck-w1->default/hello-world-single:4000/tcp" in broken
    out = playbook("--tags", "kernel", "--limit", "w1").stdout
    assert re.search(r"w1\s+: ok=\d+\s+changed=1 ", out)
    report = json.loads(lab_cli("probe", "--json", check=False).stdout)
    assert [r for r in report["results"] if not r["pass"]] == []
    persisted = w1.file("/etc/sysctl.d/90-netmend.conf").content_string
    assert "net.ipv4.ip_forward = 1" in persisted and "net.bridge.bridge-nf-call-iptables = 1" in persisted
    assert w1.file("/etc/modules-load.d/netmend.conf").contains("^br_netfilter$")
