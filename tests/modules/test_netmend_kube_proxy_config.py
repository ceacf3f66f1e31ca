"""netmend_kube_proxy_config run by ansible on this machine, writing into a temporary directory (it changes
no kernel state): the kubeadm fragment and the ConfigMap, check mode, idempotence, backups, bad input."""

import subprocess

import kubernetes_validate
import pytest
import yaml

from tests.modules.sandbox import ansible_env, module_cmd, results

K8S_VERSION = "1.33.0"
KUBEADM = """\
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
networking:
  podSubnet: 10.244.0.0/16
  serviceSubnet: 10.96.0.0/12
"""


def run(*commands):
    proc = subprocess.run(["sh", "-c", "\n".join(commands)], capture_output=True, text=True, env=ansible_env(),
                          timeout=300, check=False)
    return results(proc.stdout)


def test_writes_the_fragment_and_the_configmap_once(tmp_path):
    dest = tmp_path / "netmend"
    args = {"mode": "ipvs", "ipvs_scheduler": "lc", "ipvs_strict_arp": True, "cluster_cidr": "10.244.0.0/16",
            "dest": str(dest)}
    check, first, second = run(module_cmd("netmend_kube_proxy_config", args, check=True, diff=True),
                               module_cmd("netmend_kube_proxy_config", args),
                               module_cmd("netmend_kube_proxy_config", args))
    assert check["changed"] and first["changed"] and not second["changed"]
    assert check["diff"][0]["before"] == "" and "mode: ipvs" in check["diff"][0]["after"]
    assert first["files"] == [str(dest / "kube-proxy-config.yaml"), str(dest / "kube-proxy-configmap.yaml")]
    fragment = (dest / "kube-proxy-config.yaml").read_text()
    assert fragment == check["diff"][0]["after"]
    config = yaml.safe_load(fragment)
    assert config == first["config"]
    assert config["ipvs"] == {"scheduler": "lc", "strictARP": True} and config["clusterCIDR"] == "10.244.0.0/16"
    cm = yaml.safe_load((dest / "kube-proxy-configmap.yaml").read_text())
    assert cm == first["configmap"]
    assert kubernetes_validate.validate(cm, K8S_VERSION, strict=True) == "1.33"
    assert yaml.safe_load(cm["data"]["config.conf"]) == config
    assert (dest / "kube-proxy-config.yaml").stat().st_mode & 0o777 == 0o644
    assert first["backup_files"] == [] and len(first["config_sha256"]) == 64


def test_the_fragment_appends_to_a_kubeadm_configuration(tmp_path):
    (result,) = run(module_cmd("netmend_kube_proxy_config", {"dest": str(tmp_path), "mode": "nftables"}))
    combined = KUBEADM + (tmp_path / "kube-proxy-config.yaml").read_text()
    docs = list(yaml.safe_load_all(combined))
    assert [d["kind"] for d in docs] == ["ClusterConfiguration", "KubeProxyConfiguration"]
    assert docs[1] == result["config"] and docs[1]["mode"] == "nftables"


def test_check_mode_writes_nothing_and_a_change_keeps_a_backup(tmp_path):
    args = {"dest": str(tmp_path)}
    run(module_cmd("netmend_kube_proxy_config", args))
    before = (tmp_path / "kube-proxy-configmap.yaml").read_text()
    check, changed, again = run(module_cmd("netmend_kube_proxy_config", {**args, "mode": "nftables"}, check=True),
                                module_cmd("netmend_kube_proxy_config", {**args, "mode": "nftables"}),
                                module_cmd("netmend_kube_proxy_config", {**args, "mode": "nftables"}))
    assert check["changed"] and changed["changed"] and not again["changed"]
    assert check["config_sha256"] == changed["config_sha256"] == again["config_sha256"]
    backups = sorted(p for p in tmp_path.iterdir() if p.name.endswith("~"))
    assert len(backups) == 2 and backups[1].read_text() == before
    assert "mode: nftables" in (tmp_path / "kube-proxy-configmap.yaml").read_text()


@pytest.mark.parametrize(("args", "words"), [
    ({"cluster_cidr": "10.244.0.1/16"}, "cluster_cidr: '10.244.0.1/16' is not a network"),
    ({"metrics_bind_address": "localhost:10249"}, "metrics_bind_address"),
    ({"conntrack_min": -1}, "conntrack_min"),
    ({"conntrack_tcp_established_timeout": "1 day"}, "conntrack_tcp_established_timeout"),
    ({"config_extra": {"masqueradeAll": True}}, "config_extra.masqueradeAll"),
    ({"config_extra": {"mode": "ipvs"}}, "config_extra.mode: is not accepted here; set it with mode"),
    ({"mode": "userspace"}, "mode"),
    ({"ipvs_scheduler": "mh"}, "ipvs_scheduler"),
    ({"node_port_addresses": ["eth0"]}, "node_port_addresses"),
])
def test_bad_arguments_fail_naming_the_option_and_write_nothing(tmp_path, args, words):
    dest = tmp_path / "netmend"
    (result,) = run(module_cmd("netmend_kube_proxy_config", {**args, "dest": str(dest)}))
    assert result.get("failed") and words in result["msg"], result
    assert not dest.exists()


def test_dest_must_be_absolute(tmp_path):
    (result,) = run(f"cd {tmp_path} && " + module_cmd("netmend_kube_proxy_config", {"dest": "relative/dir"}))
    assert result.get("failed") and "dest" in result["msg"]
    assert not (tmp_path / "relative").exists()
