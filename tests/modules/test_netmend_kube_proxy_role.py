"""roles/kube_proxy run by ansible-playbook against localhost inside a throwaway network namespace loaded
with the lab's kube-proxy and flannel rules for cp1 (lab.kubeproxy, the same text the lab loads): with
default settings the role changes no rule; switched to nftables it removes exactly kube-proxy's rules."""

import json
import re
import shutil

import pytest
import yaml

from lab.inventory import load_cluster
from lab.kubeproxy import render_flannel_masq, render_rules
from tests.modules.sandbox import ROOT, can_sandbox, json_docs, run_in_sandbox

pytestmark = pytest.mark.skipif(not can_sandbox(), reason="needs root and unshare --net")

PLAYBOOK = """\
- name: Kube-proxy role
  hosts: k8s_cluster
  gather_facts: false
  roles:
    - role: kube_proxy
"""
# kube-proxy's canary chain, which the lab adds to the rules it loads (lab/dataplane.py).
CANARY = "*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n"
HOST = 'iptables -I INPUT -p icmp -j LOG --log-prefix "liuye-input: "\n'


@pytest.fixture(scope="module")
def lab_rules():
    cluster, _ = load_cluster(ROOT / "inventory" / "lab")
    node = cluster.node("cp1")
    return render_rules(cluster, node, "") + render_flannel_masq(cluster, node, "") + CANARY


def project(tmp_path, **variables):
    """An inventory with localhost as the control plane, and the playbook; returns the command prefix."""
    groups = {"control_plane": {"hosts": {"localhost": {"ansible_connection": "local"}}}, "workers": {"hosts": {}}}
    group_vars = {"netmend_pod_cidr": "10.244.0.0/16", "netmend_manifest_dir": str(tmp_path / "manifests"),
                  "kube_proxy_state_file": str(tmp_path / "state" / "kube-proxy-mode"), **variables}
    inventory = {"all": {"children": {"k8s_cluster": {"children": groups, "vars": group_vars}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "site.yml").write_text(PLAYBOOK)
    (tmp_path / "rules.txt").write_text("")
    playbook = shutil.which("ansible-playbook", path=str(ROOT / ".venv" / "bin"))
    return (f"ANSIBLE_ROLES_PATH={ROOT / 'roles'} ANSIBLE_LIBRARY={ROOT / 'library'} "
            f"{playbook} -i {tmp_path / 'hosts.yml'} {tmp_path / 'site.yml'}")


def play(tmp_path, rules, runs, extra=""):
    """Load `rules` (+ `extra` shell), then for each run: the playbook with its flags, then iptables-save."""
    (tmp_path / "rules.txt").write_text(rules)
    script = f"iptables-restore -w 5 --noflush {tmp_path / 'rules.txt'}\n{extra}"
    script += "echo '@@save'; iptables-save | grep -v '^#'; echo '@@end'\n"
    for command in runs:
        script += f"{command} || true\necho '@@save'; iptables-save | grep -v '^#'; echo '@@end'\n"
    proc = run_in_sandbox(script, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saves = re.findall(r"^@@save\n(.*?)^@@end$", proc.stdout, re.S | re.M)
    stats = [doc for doc in json_docs(proc.stdout) if "stats" in doc]
    return saves, stats



def task_name(task):
    return task["task"]["name"].removeprefix("kube_proxy : ")


def changed_tasks(run):
    return [task_name(t) for t in run["plays"][0]["tasks"] if t["hosts"]["localhost"].get("changed")]


def test_defaults_change_no_rule_of_the_lab(tmp_path, lab_rules):
    cmd = project(tmp_path)
    saves, (check, first, second) = play(tmp_path, lab_rules, [f"{cmd} --check --diff", cmd, cmd])
    assert saves[0] == saves[1] == saves[2] == saves[3]
    assert "-A KUBE-SVC-5MRENC7Q6ZQR6GKR" in saves[0] and "FLANNEL-POSTRTG" in saves[0]
    for run in (check, first, second):
        assert run["stats"]["localhost"]["failures"] == 0, run
    assert changed_tasks(first) == ["Kube-proxy | Write the KubeProxyConfiguration (kubeadm fragment and ConfigMap)",
                                    "Kube-proxy | Remove the leftovers of modes other than iptables"]
    assert second["stats"]["localhost"]["changed"] == 0
    config = yaml.safe_load((tmp_path / "manifests" / "kube-proxy-config.yaml").read_text())
    assert config["mode"] == "iptables" and config["clusterCIDR"] == "10.244.0.0/16"
    cm = yaml.safe_load((tmp_path / "manifests" / "kube-proxy-configmap.yaml").read_text())
    assert yaml.safe_load(cm["data"]["config.conf"]) == config
    assert (tmp_path / "state" / "kube-proxy-mode").read_text().endswith("\niptables\n")


def test_switching_the_lab_to_nftables_removes_kube_proxy_rules_only(tmp_path, lab_rules):
    cmd = project(tmp_path, kube_proxy_mode="nftables")
    saves, (check, first, second) = play(tmp_path, lab_rules, [f"{cmd} --check --diff", cmd, cmd], extra=HOST)
    before, after_check, after, again = saves
    assert after_check == before
    assert check["stats"]["localhost"]["failures"] == 0 and first["stats"]["localhost"]["failures"] == 0
    assert second["stats"]["localhost"]["changed"] == 0 and again == after
    kept = [line for line in before.splitlines() if "KUBE-" not in line or "KUBE-MARK-DROP" in line]
    assert after.splitlines() == kept
    assert '-A INPUT -p icmp -j LOG --log-prefix "liuye-input: "' in after and "-A FLANNEL-POSTRTG" in after
    assert ":KUBE-MARK-DROP -" in after  # kubelet's chain
    assert "mode: nftables" in (tmp_path / "manifests" / "kube-proxy-config.yaml").read_text()


def test_bad_variables_stop_the_play_before_anything_changes(tmp_path, lab_rules):
    cmd = project(tmp_path, kube_proxy_cluster_cidr="10.244.0.1/16", kube_proxy_mode="nftables")
    saves, (run,) = play(tmp_path, lab_rules, [cmd])
    assert saves[0] == saves[1]
    assert run["stats"]["localhost"]["failures"] == 1
    failed = [t for t in run["plays"][0]["tasks"] if t["hosts"]["localhost"].get("failed")]
    assert task_name(failed[0]) == "Kube-proxy | Check the KubeProxyConfiguration settings"
    assert "kube_proxy_cluster_cidr: '10.244.0.1/16' is not a network" in failed[0]["hosts"]["localhost"]["msg"]
    assert not (tmp_path / "manifests").exists() and not (tmp_path / "state").exists()


def test_ipvs_without_ipvsadm_stops_at_the_binary_check(tmp_path, lab_rules):
    if shutil.which("ipvsadm") or not shutil.which("ipset"):
        pytest.skip("needs ipset installed and ipvsadm missing")
    cmd = project(tmp_path, kube_proxy_mode="ipvs", kube_proxy_manage_packages=False)
    saves, (run,) = play(tmp_path, lab_rules, [cmd])
    assert saves[0] == saves[1]
    failed = [t for t in run["plays"][0]["tasks"] if t["hosts"]["localhost"].get("failed")]
    assert task_name(failed[0]) == "Kube-proxy | Check the binaries of the mode ipvs"
    assert "ipvsadm" in json.dumps(failed[0]["hosts"]["localhost"])
    assert not (tmp_path / "manifests").exists() and not (tmp_path / "state").exists()
