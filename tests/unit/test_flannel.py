"""netmend.flannel: MTU, net-conf.json, the CNI conflist, the manifests (schema-validated) and the parsers."""

import base64
import copy
import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from lab.dataplane import network_config, subnet_env
from netmend.cluster import build_cluster
from netmend.errors import ProblemsError
from netmend.flannel import (
    CNI_CONF_PATH,
    FlannelError,
    cni_conflist,
    config_hash,
    default_subnet_len,
    flanneld_args,
    image_ref,
    manifests,
    mtu_for,
    net_conf,
    parse_etcdctl_get,
    parse_net_conf,
    parse_subnet_env,
    render_json,
    render_manifests,
    settings,
    to_yaml,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests/fixtures/flannel"
K8S_VERSION = "1.33.0"
HOSTS = [("cp1", "control_plane", {"ansible_host": "198.51.100.11"}),
         ("w1", "workers", {"ansible_host": "198.51.100.12"}),
         ("w2", "workers", {"ansible_host": "198.51.100.13"})]
CONFIG_KEY = "/coreos.com/network/config"


def fixture(name):
    return (FIXTURES / name).read_text()


def fields(excinfo):
    return [f for f, _ in excinfo.value.problems]


def rendered(**variables):
    """(settings, net-conf text, conflist text, manifests) for the variables, as the module renders them."""
    s = settings({"netmend_pod_cidr": "10.244.0.0/16", **variables})
    conf = render_json(net_conf(s["pod_cidr"], s["subnet_len"], s["backend"], s["vni"], s["port"],
                                s["direct_routing"], mtu=s["explicit_mtu"]))
    cni = render_json(cni_conflist(s["explicit_mtu"]))
    return s, conf, cni, manifests(conf, cni, s)


def by_kind(docs):
    return {d["kind"]: d for d in docs}


# mtu_for

@pytest.mark.parametrize(("backend", "setting", "underlay", "expected"), [
    ("vxlan", "auto", 1500, 1450),
    ("vxlan", "AUTO ", 1500, 1450),
    ("host-gw", "auto", 1500, 1500),
    ("vxlan", "auto", 9001, 8951),
    ("vxlan", 1450, 1500, 1450),
    ("vxlan", "1400", 1500, 1400),
    ("vxlan", 576, 1500, 576),
    ("host-gw", 1500, 1500, 1500),
    ("vxlan", 1450, "1500", 1450),
])
def test_mtu_for_accepts_auto_and_fitting_integers(backend, setting, underlay, expected):
    assert mtu_for(backend, setting, underlay) == expected


@pytest.mark.parametrize(("backend", "setting", "underlay", "accepted"), [
    ("vxlan", 1451, 1500, "576-1450"),
    ("vxlan", 575, 1500, "576-1450"),
    ("host-gw", 1501, 1500, "576-1500"),
    ("vxlan", 9000, 1500, "576-1450"),
    ("vxlan", True, 1500, "576-1450"),
    ("vxlan", 1400.0, 1500, "576-1450"),
    ("vxlan", "14OO", 1500, "576-1450"),
    ("vxlan", None, 1500, "576-1450"),
    ("vxlan", "", 1500, "576-1450"),
])
def test_mtu_for_rejects_what_does_not_fit_naming_flannel_mtu_and_the_range(backend, setting, underlay, accepted):
    with pytest.raises(ValueError, match="flannel_mtu") as excinfo:
        mtu_for(backend, setting, underlay)
    assert isinstance(excinfo.value, ProblemsError)
    assert fields(excinfo) == ["flannel_mtu"]
    assert accepted in str(excinfo.value) and "'auto'" in str(excinfo.value)


def test_mtu_for_rejects_a_bad_underlay_or_backend_by_their_names():
    with pytest.raises(FlannelError) as excinfo:
        mtu_for("vxlan", "auto", 600)
    assert fields(excinfo) == ["netmend_underlay_mtu"] and "626-65535" in str(excinfo.value)
    with pytest.raises(FlannelError) as excinfo:
        mtu_for("vxlan", "auto", "jumbo", "flannel_underlay_mtu")
    assert fields(excinfo) == ["flannel_underlay_mtu"]
    with pytest.raises(FlannelError) as excinfo:
        mtu_for("udp", "auto", 1500)
    assert fields(excinfo) == ["flannel_backend_type"] and "vxlan, host-gw" in str(excinfo.value)


# net_conf and the conflist

def test_net_conf_vxlan_defaults_is_the_minimal_stable_layout():
    conf = net_conf("10.244.0.0/16", 24, "vxlan", 1, 8472, False)
    assert conf == {"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}}
    assert json.dumps(conf) == ('{"Network": "10.244.0.0/16", "SubnetLen": 24, '
                                '"Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472}}')


def test_net_conf_is_what_the_lab_writes_to_etcd():
    variables = yaml.safe_load((ROOT / "inventory/lab/group_vars/all/cluster.yml").read_text())
    for backend in ("vxlan", "host-gw"):
        cluster = build_cluster(HOSTS, {**variables, "flannel_backend_type": backend})
        f = cluster.flannel
        assert net_conf(cluster.pod_cidr, f["subnet_len"], f["backend"], f["vni"], f["port"], False) \
            == network_config(cluster)


def test_net_conf_options():
    assert net_conf("10.244.0.0/16", 24, "vxlan", 4096, 4789, True)["Backend"] == \
        {"Type": "vxlan", "VNI": 4096, "Port": 4789, "DirectRouting": True}
    assert net_conf("10.244.0.0/16", 24, "host-gw", 7, 9999, False) == \
        {"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "host-gw"}}
    # flannel's Backend.MTU is the underlay MTU: the pod MTU plus the 50-byte VXLAN header.
    assert net_conf("10.244.0.0/16", mtu=1400)["Backend"]["MTU"] == 1450
    assert "MTU" not in net_conf("10.244.0.0/16", backend="host-gw", mtu=1400)["Backend"]


def test_cni_conflist_is_upstreams_with_an_explicit_mtu_only_when_set():
    # kube-flannel.yml's cni-conf.json (flannel v0.27.4).
    upstream = {"name": "cbr0", "cniVersion": "0.3.1",
                "plugins": [{"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
                            {"type": "portmap", "capabilities": {"portMappings": True}}]}
    assert cni_conflist() == upstream
    explicit = cni_conflist(1400)
    assert explicit["plugins"][0]["delegate"] == {"hairpinMode": True, "isDefaultGateway": True, "mtu": 1400}
    assert explicit["plugins"][1] == upstream["plugins"][1]


def test_render_json_is_indented_and_ends_with_one_newline():
    text = render_json(net_conf("10.244.0.0/16"))
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert '\n  "Backend": {\n    "Type": "vxlan",' in text
    assert json.loads(text) == net_conf("10.244.0.0/16")
    assert parse_net_conf(text)["backend"] == "vxlan"


# settings

def test_settings_defaults():
    s = settings({"netmend_pod_cidr": "10.244.0.0/16"})
    assert s == {"pod_cidr": "10.244.0.0/16", "subnet_len": 24, "backend": "vxlan", "vni": 1, "port": 8472,
                 "direct_routing": False, "ip_masq": True, "mtu": 1450, "explicit_mtu": None, "iface": [],
                 "iface_regex": [], "namespace": "kube-flannel", "image": "ghcr.io/flannel-io/flannel",
                 "image_tag": "v0.27.4", "cni_plugin_image": "ghcr.io/flannel-io/flannel-cni-plugin",
                 "cni_plugin_image_tag": "v1.8.0-flannel1", "cni_conf_path": CNI_CONF_PATH, "store": "kube",
                 "etcd_endpoints": ["http://127.0.0.1:2379"], "etcd_prefix": "/coreos.com/network",
                 "etcd_cafile": "", "etcd_certfile": "", "etcd_keyfile": ""}


def test_settings_reads_the_inventory_as_it_is():
    variables = yaml.safe_load((ROOT / "inventory/lab/group_vars/all/cluster.yml").read_text())
    s = settings(variables)
    assert (s["pod_cidr"], s["subnet_len"], s["vni"], s["port"]) == ("10.244.0.0/16", 24, 1, 8472)
    assert s["mtu"] == 1450
    s = settings({**variables, "flannel_mtu": "auto", "netmend_underlay_mtu": 9000})
    assert s["mtu"] == 8950 and s["explicit_mtu"] is None


def test_settings_reports_every_problem_at_once():
    with pytest.raises(FlannelError) as excinfo:
        settings({"netmend_pod_cidr": "10.244.0.1/16", "flannel_subnet_len": "x", "flannel_backend_type": "udp",
                  "flannel_vxlan_vni": 0, "flannel_vxlan_port": 70000, "flannel_mtu": "big",
                  "flannel_ip_masq": "yes", "flannel_namespace": "Kube_Flannel", "flannel_image_tag": "v1 2",
                  "flannel_cni_conf_path": "net.d/10-flannel.conf", "flannel_store": "consul"})
    assert fields(excinfo) == ["netmend_pod_cidr", "flannel_subnet_len", "flannel_backend_type",
                               "flannel_vxlan_vni", "flannel_vxlan_port", "flannel_ip_masq", "flannel_namespace",
                               "flannel_image_tag", "flannel_cni_conf_path", "flannel_store"]
    assert "CIDR form" in str(excinfo.value) and "choose one of: kube, etcd" in str(excinfo.value)


@pytest.mark.parametrize(("variables", "field", "words"), [
    ({}, "flannel_pod_cidr", "is missing"),
    ({"flannel_pod_cidr": "fd00::/48"}, "flannel_pod_cidr", "IPv6"),
    ({"flannel_pod_cidr": "10.244.0.0"}, "flannel_pod_cidr", "CIDR"),
    ({"flannel_subnet_len": 17}, "flannel_subnet_len", "18-28"),
    ({"flannel_subnet_len": 29}, "flannel_subnet_len", "18-28"),
    ({"flannel_mtu": 1451}, "flannel_mtu", "576-1450"),
    ({"flannel_mtu": 1451, "flannel_underlay_mtu": 1500}, "flannel_mtu", "576-1450"),
    ({"flannel_underlay_mtu": 100}, "flannel_underlay_mtu", "626-65535"),
    ({"netmend_underlay_mtu": 100}, "netmend_underlay_mtu", "626-65535"),
    ({"flannel_backend_type": "host-gw", "flannel_vxlan_direct_routing": True}, "flannel_vxlan_direct_routing",
     "vxlan option"),
    ({"flannel_vxlan_direct_routing": "yes"}, "flannel_vxlan_direct_routing", "boolean"),
    ({"flannel_iface": ["eth0"], "flannel_iface_regex": ["^ens"]}, "flannel_iface", "not both"),
    ({"flannel_iface": ["eth 0"]}, "flannel_iface[0]", "interface name"),
    ({"flannel_iface": [""]}, "flannel_iface", "non-empty strings"),
    ({"flannel_iface_regex": ["^eth(", "ok"]}, "flannel_iface_regex[0]", "regular expression"),
    ({"flannel_image": "Ghcr.io/Flannel"}, "flannel_image", "image name"),
    ({"flannel_cni_plugin_image_tag": ""}, "flannel_cni_plugin_image_tag", "tag"),
    ({"flannel_store": "etcd", "flannel_etcd_endpoints": []}, "flannel_etcd_endpoints", "is empty"),
    ({"flannel_store": "etcd", "flannel_etcd_endpoints": ["127.0.0.1:2379"]}, "flannel_etcd_endpoints[0]",
     "http(s)://"),
    ({"flannel_store": "etcd", "flannel_etcd_prefix": "coreos.com/network"}, "flannel_etcd_prefix", "absolute"),
    ({"flannel_store": "etcd", "flannel_etcd_prefix": "/coreos.com/network/"}, "flannel_etcd_prefix", "trailing"),
    ({"flannel_store": "etcd", "flannel_etcd_certfile": "/etc/etcd/client.crt"}, "flannel_etcd_certfile",
     "go together"),
    ({"flannel_store": "etcd", "flannel_etcd_cafile": "ca.crt"}, "flannel_etcd_cafile", "absolute"),
])
def test_settings_rejects_bad_variables_by_name(variables, field, words):
    if variables and "flannel_pod_cidr" not in variables:
        variables = {"netmend_pod_cidr": "10.244.0.0/16", **variables}
    with pytest.raises(FlannelError) as excinfo:
        settings(variables)
    assert fields(excinfo) == [field], str(excinfo.value)
    assert words in str(excinfo.value)


def test_settings_ignores_etcd_variables_with_the_kube_store():
    s = settings({"netmend_pod_cidr": "10.244.0.0/16", "flannel_etcd_endpoints": ["nonsense"],
                  "flannel_etcd_prefix": "x"})
    assert s["store"] == "kube"


def test_default_subnet_len_follows_flannel():
    assert [default_subnet_len(p) for p in (8, 16, 22, 23, 26, 28)] == [24, 24, 24, 25, 28, 30]


# The manifests

MANIFEST_CASES = {
    "vxlan-auto": {},
    "vxlan-direct-mtu-iface": {"flannel_vxlan_direct_routing": True, "flannel_mtu": 1400,
                               "flannel_iface": ["eth1", "198.51.100.11"]},
    "host-gw-regex": {"flannel_backend_type": "host-gw", "flannel_iface_regex": ["^ens[0-9]+$"],
                      "flannel_ip_masq": False},
    "etcd-tls-digest": {"flannel_store": "etcd", "flannel_etcd_endpoints": ["https://198.51.100.11:2379"],
                        "flannel_etcd_cafile": "/etc/etcd/pki/ca.crt",
                        "flannel_etcd_certfile": "/etc/flannel/pki/client.crt",
                        "flannel_etcd_keyfile": "/etc/flannel/pki/client.key",
                        "flannel_image_tag": "sha256:" + "ab" * 32, "flannel_namespace": "netmend-flannel",
                        "flannel_cni_conf_path": "/etc/cni/net.d/05-flannel.conflist"},
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_every_rendered_manifest_passes_the_kubernetes_schema(case):
    _, _, _, docs = rendered(**MANIFEST_CASES[case])
    text = render_manifests(docs)
    loaded = list(yaml.safe_load_all(text))
    assert loaded == docs  # the file holds exactly the objects
    assert [d["kind"] for d in loaded] == ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                                           "ConfigMap", "DaemonSet"]
    for doc in loaded:
        assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == "1.33"


@pytest.mark.parametrize("breakage", ["args-not-a-list", "unknown-field", "bad-toleration", "no-selector"])
def test_schema_validation_catches_a_broken_manifest(breakage):
    daemonset = copy.deepcopy(by_kind(rendered()[3])["DaemonSet"])
    pod = daemonset["spec"]["template"]["spec"]
    if breakage == "args-not-a-list":
        pod["containers"][0]["args"] = "--ip-masq --kube-subnet-mgr"
    elif breakage == "unknown-field":
        pod["hostNetwrok"] = True
    elif breakage == "bad-toleration":
        pod["tolerations"][0]["effect"] = 3
    else:
        del daemonset["spec"]["selector"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, K8S_VERSION, strict=True)


def test_manifests_hold_the_node_files_and_agree_with_each_other():
    s, conf, cni, docs = rendered(**MANIFEST_CASES["etcd-tls-digest"])
    kinds = by_kind(docs)
    ns = "netmend-flannel"
    assert kinds["Namespace"]["metadata"]["name"] == ns
    assert kinds["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert all(d["metadata"]["namespace"] == ns for d in docs if d["kind"] in ("ServiceAccount", "ConfigMap",
                                                                                "DaemonSet"))
    assert kinds["ClusterRoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": "flannel", "namespace": ns}]
    assert kinds["ClusterRoleBinding"]["roleRef"]["name"] == kinds["ClusterRole"]["metadata"]["name"]
    assert {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]} in kinds["ClusterRole"]["rules"]
    cfg = kinds["ConfigMap"]
    assert cfg["metadata"]["name"] == "kube-flannel-cfg"
    assert cfg["data"] == {"cni-conf.json": cni, "net-conf.json": conf}  # byte for byte the node files
    ds = kinds["DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    assert ds["metadata"]["name"] == "kube-flannel-ds"
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert pod["serviceAccountName"] == kinds["ServiceAccount"]["metadata"]["name"]
    assert pod["hostNetwork"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["flannel-cfg"]["configMap"]["name"] == "kube-flannel-cfg"
    assert volumes["cni"]["hostPath"]["path"] == "/etc/cni/net.d"
    install = {c["name"]: c for c in pod["initContainers"]}
    assert install["install-cni"]["args"] == ["-f", "/etc/kube-flannel/cni-conf.json",
                                              "/etc/cni/net.d/05-flannel.conflist"]
    assert install["install-cni-plugin"]["image"] == "ghcr.io/flannel-io/flannel-cni-plugin:v1.8.0-flannel1"
    flanneld = pod["containers"][0]
    assert flanneld["image"] == "ghcr.io/flannel-io/flannel@sha256:" + "ab" * 32
    assert flanneld["args"] == ["--ip-masq", "--etcd-endpoints=https://198.51.100.11:2379",
                                "--etcd-prefix=/coreos.com/network", "--etcd-cafile=/etc/etcd/pki/ca.crt",
                                "--etcd-certfile=/etc/flannel/pki/client.crt",
                                "--etcd-keyfile=/etc/flannel/pki/client.key"]
    mounted = {m["mountPath"]: volumes[m["name"]]["hostPath"]["path"] for m in flanneld["volumeMounts"]
               if m.get("readOnly")}
    assert mounted == {"/etc/etcd/pki": "/etc/etcd/pki", "/etc/flannel/pki": "/etc/flannel/pki"}
    for mount in flanneld["volumeMounts"] + [m for c in pod["initContainers"] for m in c["volumeMounts"]]:
        assert mount["name"] in volumes
    assert s["store"] == "etcd"


def test_flanneld_args_per_store_and_interface():
    base = settings({"netmend_pod_cidr": "10.244.0.0/16"})
    assert flanneld_args(base) == ["--ip-masq", "--kube-subnet-mgr"]
    assert flanneld_args({**base, "iface": ["eth1", "10.0.0.5"]})[-2:] == ["--iface=eth1", "--iface=10.0.0.5"]
    assert flanneld_args({**base, "iface_regex": ["^ens"], "ip_masq": False}) == ["--kube-subnet-mgr",
                                                                                 "--iface-regex=^ens"]
    assert image_ref("ghcr.io/flannel-io/flannel", "v0.27.4") == "ghcr.io/flannel-io/flannel:v0.27.4"


def test_a_config_change_changes_the_pod_template_hash_and_nothing_else_does():
    def annotation(docs):
        return by_kind(docs)["DaemonSet"]["spec"]["template"]["metadata"]["annotations"]["netmend/config-sha256"]

    first, again = rendered()[3], rendered()[3]
    assert render_manifests(first) == render_manifests(again)  # deterministic
    assert annotation(first) == annotation(again)
    assert annotation(rendered(flannel_vxlan_vni=2)[3]) != annotation(first)
    assert annotation(rendered(flannel_mtu=1400)[3]) != annotation(first)  # the conflist changed
    assert annotation(rendered(flannel_iface=["eth1"])[3]) == annotation(first)  # args roll the pods anyway
    assert config_hash("a", "b") != config_hash("ab", "")


def test_render_manifests_starts_with_a_header_and_separates_documents():
    text = render_manifests(rendered()[3])
    assert text.startswith("# Managed by netmend")
    assert text.count("\n---\n") == 6
    assert "  cni-conf.json: |\n    {\n" in text  # literal blocks, readable in the file


# The YAML emitter

TRICKY = ["yes", "No", "on", "OFF", "null", "Null", "~", "true", "1:30", "0x1F", "0o17", "123", "-1", "1e3", ".5",
          ".inf", "-x", "- x", "a: b", "a:b", "x:", "#c", "a #b", "", " lead", "trail ", "multi\nline\n",
          "multi\nline", "ends\n\n", " indented\nblock\n", "tab\tx", "tab\nin\tblock\n", "trailing \nspace\n",
          "ünïcode", "*ref", "&anchor", "!tag", "%p", "@x", "`x", "{x}", "[x]", "'q'", '"q"', "=", "<<", "?",
          "back\\slash", "line\r\nbreak", "/path/ok", "v0.27.4", "--iface=eth0"]


@pytest.mark.parametrize("value", TRICKY)
def test_to_yaml_round_trips_tricky_strings(value):
    doc = {"key": value, value or "empty": [value, {"nested": value}], "list": [[value]]}
    assert yaml.safe_load(to_yaml(doc)) == doc


def test_to_yaml_scalars_and_empties():
    doc = {"t": True, "f": False, "n": None, "i": 0, "neg": -5, "empty_map": {}, "empty_list": [],
           "list": [1, "two", {"a": [], "b": {}}], "deep": {"a": {"b": {"c": [{"d": 1, "e": [2]}]}}}}
    assert yaml.safe_load(to_yaml(doc)) == doc
    with pytest.raises(TypeError):
        to_yaml([1, 2])
    with pytest.raises(TypeError):
        to_yaml({"float": 1.5})


# subnet.env

@pytest.mark.parametrize(("name", "subnet", "gateway"), [
    ("seed003-subnet-master.env", "172.16.99.0/24", "172.16.99.1"),
    ("seed003-subnet-minion.env", "172.16.57.0/24", "172.16.57.1"),
])
def test_parse_subnet_env_on_seed_003(name, subnet, gateway):
    env = parse_subnet_env(fixture(name))
    assert env == {"network": "172.16.0.0/16", "subnet": subnet, "gateway": gateway, "mtu": 1450, "ipmasq": True,
                   "ipv6_network": None, "ipv6_subnet": None, "extra": {}}


def test_parse_subnet_env_on_the_labs_file():
    variables = yaml.safe_load((ROOT / "inventory/lab/group_vars/all/cluster.yml").read_text())
    cluster = build_cluster(HOSTS, variables)
    for node in cluster.nodes:
        env = parse_subnet_env(subnet_env(cluster, node))
        assert (env["network"], env["subnet"], env["gateway"]) == (cluster.pod_cidr, node.subnet, node.gateway)
        assert env["mtu"] == mtu_for("vxlan", variables["flannel_mtu"], 1500)


def test_parse_subnet_env_dual_stack_comments_quotes_and_extra_keys():
    env = parse_subnet_env("# flanneld\n\nFLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET='10.42.3.1/24'\n"
                           "FLANNEL_IPV6_NETWORK=fd00:42::/56\nFLANNEL_IPV6_SUBNET=fd00:42:0:3::1/64\n"
                           'FLANNEL_MTU="1370"\nFLANNEL_IPMASQ=false\nFLANNEL_EXTRA=1\n')
    assert env["subnet"] == "10.42.3.0/24" and env["gateway"] == "10.42.3.1"
    assert env["mtu"] == 1370 and env["ipmasq"] is False
    assert (env["ipv6_network"], env["ipv6_subnet"]) == ("fd00:42::/56", "fd00:42:0:3::1/64")
    assert env["extra"] == {"FLANNEL_EXTRA": "1"}


SEED_ENV = "FLANNEL_NETWORK=172.16.0.0/16\nFLANNEL_SUBNET=172.16.99.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"


@pytest.mark.parametrize(("text", "field", "words"), [
    ("", "/run/flannel/subnet.env", "is empty"),
    ("  \n\n", "/run/flannel/subnet.env", "is empty"),
    (SEED_ENV[:60], "/run/flannel/subnet.env: FLANNEL_MTU", "missing"),  # truncated mid-file
    (SEED_ENV + "FLANNEL_MTU=1400\n", "/run/flannel/subnet.env: FLANNEL_MTU", "set twice (lines 3 and 5)"),
    (SEED_ENV.replace("1450", "abc"), "/run/flannel/subnet.env: FLANNEL_MTU", "not an integer"),
    (SEED_ENV.replace("1450", "40"), "/run/flannel/subnet.env: FLANNEL_MTU", "68-65535"),
    (SEED_ENV.replace("172.16.99.1/24", "172.17.0.1/24"), "/run/flannel/subnet.env: FLANNEL_SUBNET", "outside"),
    (SEED_ENV.replace("172.16.99.1/24", "172.16.99.1"), "/run/flannel/subnet.env: FLANNEL_SUBNET", "prefix"),
    (SEED_ENV.replace("172.16.99.1/24", "fd00::1/64"), "/run/flannel/subnet.env: FLANNEL_SUBNET", "IPv4"),
    (SEED_ENV.replace("true", "yes"), "/run/flannel/subnet.env: FLANNEL_IPMASQ", "true or false"),
    (SEED_ENV.replace("172.16.0.0/16", "172.16.0.1/16"), "/run/flannel/subnet.env: FLANNEL_NETWORK", "CIDR"),
    ("hello\n" + SEED_ENV, "/run/flannel/subnet.env: line 1", "KEY=VALUE"),
    (SEED_ENV.replace("FLANNEL_IPMASQ=true\n", "FLANNEL_IPMASQ"), "/run/flannel/subnet.env: line 4", "KEY=VALUE"),
])
def test_parse_subnet_env_refuses_malformed_input(text, field, words):
    with pytest.raises(FlannelError) as excinfo:
        parse_subnet_env(text)
    assert field in fields(excinfo), str(excinfo.value)
    assert words in str(excinfo.value)


# net-conf.json

def test_parse_net_conf_on_seed_003s_etcd_value():
    conf = parse_net_conf(fixture("seed003-etcd-network-config.json"), source=CONFIG_KEY)
    assert {k: v for k, v in conf.items() if k != "raw"} == {
        "network": "172.16.0.0/16", "subnet_len": 24, "backend": "vxlan", "vni": 1, "port": 8472,
        "direct_routing": False, "backend_mtu": None}


def test_parse_net_conf_like_flanneld():
    # Go's JSON decoder matches keys case-insensitively; Backend defaults to udp; SubnetLen to flannel's rule.
    conf = parse_net_conf('{"network": "10.244.0.0/23", "backend": {"type": "host-gw"}}')
    assert (conf["network"], conf["subnet_len"], conf["backend"]) == ("10.244.0.0/23", 25, "host-gw")
    assert parse_net_conf('{"Network": "10.0.0.0/8"}')["backend"] == "udp"
    conf = parse_net_conf('{"Network": "10.0.0.0/8", "EnableNFTables": false, "Backend": {"Type": "vxlan", '
                          '"Port": 0, "VNI": 4096, "DirectRouting": true, "MTU": 1500}}')
    assert (conf["port"], conf["vni"], conf["direct_routing"], conf["backend_mtu"]) == (8472, 4096, True, 1500)
    assert conf["raw"]["EnableNFTables"] is False
    s = settings({"netmend_pod_cidr": "10.244.0.0/16", "flannel_mtu": 1400, "flannel_vxlan_direct_routing": True})
    text = render_json(net_conf(s["pod_cidr"], s["subnet_len"], s["backend"], s["vni"], s["port"],
                                s["direct_routing"], mtu=s["explicit_mtu"]))
    back = parse_net_conf(text)
    assert back["backend_mtu"] - 50 == s["mtu"] and back["direct_routing"] is True


@pytest.mark.parametrize(("text", "field", "words"), [
    ("", "net-conf.json", "is empty"),
    (render_json(net_conf("10.244.0.0/16"))[:40], "net-conf.json", "not valid JSON"),  # truncated
    ("[]", "net-conf.json", "not an object"),
    ('{"SubnetLen": 24}', "net-conf.json: Network", "missing"),
    ('{"Network": "10.244.0.1/16"}', "net-conf.json: Network", "CIDR"),
    ('{"Network": "fd00::/48"}', "net-conf.json: Network", "IPv6"),
    ('{"Network": "10.244.0.0/16", "SubnetLen": "24"}', "net-conf.json: SubnetLen", "not an integer"),
    ('{"Network": "10.244.0.0/16", "SubnetLen": 31}', "net-conf.json: SubnetLen", "18-30"),
    ('{"Network": "10.244.0.0/16", "SubnetLen": 17}', "net-conf.json: SubnetLen", "at least four subnets"),
    ('{"Network": "10.244.0.0/16", "Backend": "vxlan"}', "net-conf.json: Backend", "not an object"),
    ('{"Network": "10.244.0.0/16", "Backend": {}}', "net-conf.json: Backend.Type", "backend name"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": -1}}', "net-conf.json: Backend.VNI", "0-"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "Port": "8472"}}', "net-conf.json: Backend.Port",
     "integer"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "MTU": 100}}', "net-conf.json: Backend.MTU",
     "576-65535"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": "true"}}',
     "net-conf.json: Backend.DirectRouting", "boolean"),
])
def test_parse_net_conf_refuses_malformed_input(text, field, words):
    with pytest.raises(FlannelError) as excinfo:
        parse_net_conf(text)
    assert field in fields(excinfo), str(excinfo.value)
    assert words in str(excinfo.value)


# etcdctl get -w json

def test_parse_etcdctl_get_on_real_etcd_output():
    value = parse_etcdctl_get(fixture("etcd-3.4.23-get-seed003-config.json"), CONFIG_KEY)
    assert value == fixture("seed003-etcd-network-config.json").rstrip("\n")
    assert parse_net_conf(value)["network"] == "172.16.0.0/16"
    assert parse_etcdctl_get(fixture("etcd-3.4.23-get-absent.json"), CONFIG_KEY) is None


@pytest.mark.parametrize(("text", "key", "words"), [
    (fixture("etcd-3.4.23-get-prefix-subnets.json"), CONFIG_KEY, "2 entries"),
    (fixture("seed003-etcd-v2-curl-config.json"), CONFIG_KEY, "no header"),
    (fixture("etcd-3.4.23-get-seed003-config.json"), "/coreos.com/network/other", "returned key"),
    ("Error: context deadline exceeded\n", CONFIG_KEY, "not JSON"),
    ("", CONFIG_KEY, "not JSON"),
    (fixture("etcd-3.4.23-get-seed003-config.json")[:120], CONFIG_KEY, "not JSON"),  # truncated
    ('{"header": {}, "kvs": [{"key": "%%%", "value": "e30="}], "count": 1}', CONFIG_KEY, "base64"),
    (json.dumps({"header": {}, "kvs": [{"key": base64.b64encode(CONFIG_KEY.encode()).decode(),
                                        "value": base64.b64encode(b"\xff\xfe").decode()}], "count": 1}),
     CONFIG_KEY, "UTF-8"),
])
def test_parse_etcdctl_get_refuses_what_is_not_one_v3_entry(text, key, words):
    with pytest.raises(FlannelError) as excinfo:
        parse_etcdctl_get(text, key)
    assert words in str(excinfo.value)
