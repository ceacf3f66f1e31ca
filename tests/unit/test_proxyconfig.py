"""KubeProxyConfiguration settings, rendering and ConfigMap (netmend.proxyconfig), against upstream's fields."""

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from netmend.errors import ProblemsError
from netmend.proxyconfig import (
    CONFIG_FILE,
    CONFIGMAP_FILE,
    DEFAULTS,
    FIELDS,
    build_config,
    render,
    to_yaml,
    validate,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kube-proxy"
K8S_VERSION = "1.33.0"
GO_DURATION = re.compile(r"^(0|([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))+$")
# How each Go type of the upstream struct serialises: the kind netmend.proxyconfig.FIELDS must name.
GO_KINDS = {
    "string": "string", "ProxyMode": "string", "LocalMode": "string",
    "bool": "bool", "*bool": "bool",
    "int32": "int32", "*int32": "int32", "float32": "float",
    "metav1.Duration": "duration", "*metav1.Duration": "duration",
    "[]string": "list of strings", "map[string]bool": "map of string to bool",
    "logsapi.LoggingConfiguration": "object",
}


def upstream_fields():
    """{JSON path: Go type} from the fixture written from kube-proxy's v1alpha1 types.go."""
    fields = {}
    for line in (FIXTURES / "v1alpha1-fields.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            path, go_type = line.split()
            fields[path] = go_type
    return fields


def leaves(doc, path=""):
    """{dotted path: value}, stopping at maps and opaque objects the way the fixture lists them."""
    out = {}
    for key, value in doc.items():
        full = f"{path}{key}"
        if isinstance(value, dict) and full not in ("featureGates", "logging"):
            out.update(leaves(value, full + "."))
        else:
            out[full] = value
    return out


def matches_go_type(value, go_type):
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {
        "string": lambda: isinstance(value, str),
        "bool": lambda: isinstance(value, bool),
        "int32": lambda: number and isinstance(value, int) and -2**31 <= value < 2**31,
        "float": lambda: number,
        "duration": lambda: isinstance(value, str) and bool(GO_DURATION.match(value)),
        "list of strings": lambda: isinstance(value, list) and all(isinstance(v, str) for v in value),
    }.get(GO_KINDS[go_type], lambda: isinstance(value, dict))()


FULL = {
    "mode": "ipvs", "ipvs_scheduler": "wlc", "ipvs_strict_arp": True, "cluster_cidr": "10.244.0.0/16,fd00:10:244::/56",
    "node_port_addresses": ["198.51.100.0/24", "fd00::/64"], "conntrack_max_per_core": 0, "conntrack_min": 0,
    "conntrack_tcp_established_timeout": "2h30m", "conntrack_tcp_close_wait_timeout": "0s",
    "metrics_bind_address": "0.0.0.0:10249", "healthz_bind_address": "[::]:10256",
    "config_extra": {"iptables": {"masqueradeAll": True, "masqueradeBit": 14, "syncPeriod": "30s"},
                     "featureGates": {"NFTablesProxyMode": True}, "clientConnection": {"qps": 5.5, "burst": 10},
                     "conntrack": {"udpTimeout": "30s"}, "logging": {"format": "json"}, "oomScoreAdj": -999},
}


def test_fields_are_upstream_v1alpha1_fields_with_their_types():
    upstream = upstream_fields()
    assert len(upstream) == 56
    assert {path: GO_KINDS[go_type] for path, go_type in upstream.items()} == FIELDS


@pytest.mark.parametrize("settings", [{"cluster_cidr": "10.244.0.0/16"}, FULL], ids=["defaults", "everything"])
def test_rendered_config_has_only_upstream_fields_and_types(settings):
    upstream = upstream_fields()
    config = build_config(validate(settings))
    for path, value in leaves(config).items():
        assert path in upstream, f"{path} is not a v1alpha1 field"
        assert matches_go_type(value, upstream[path]), f"{path}={value!r} does not fit {upstream[path]}"
    assert config["apiVersion"] == "kubeproxy.config.k8s.io/v1alpha1"
    assert config["kind"] == "KubeProxyConfiguration"


def test_defaults_render_kubeadm_style_yaml():
    files = render(validate({"cluster_cidr": "10.244.0.0/16"}))["files"]
    body = files[CONFIG_FILE].split("\n", 4)[4]  # after "---" and the three comment lines
    assert body == """\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
clusterCIDR: 10.244.0.0/16
conntrack:
  maxPerCore: 32768
  min: 131072
  tcpCloseWaitTimeout: 1h0m0s
  tcpEstablishedTimeout: 24h0m0s
healthzBindAddress: "0.0.0.0:10256"
ipvs:
  scheduler: rr
  strictARP: false
metricsBindAddress: "127.0.0.1:10249"
mode: iptables
"""
    assert files[CONFIG_FILE].startswith("---\n# Managed by netmend")


def test_everything_lands_in_its_field():
    config = build_config(validate(FULL))
    assert config["mode"] == "ipvs"
    assert config["ipvs"] == {"scheduler": "wlc", "strictARP": True}
    assert config["clusterCIDR"] == "10.244.0.0/16,fd00:10:244::/56"
    assert config["nodePortAddresses"] == ["198.51.100.0/24", "fd00::/64"]
    assert config["conntrack"] == {"maxPerCore": 0, "min": 0, "tcpCloseWaitTimeout": "0s",
                                   "tcpEstablishedTimeout": "2h30m", "udpTimeout": "30s"}
    assert config["healthzBindAddress"] == "[::]:10256"
    assert config["iptables"] == {"masqueradeAll": True, "masqueradeBit": 14, "syncPeriod": "30s"}
    assert config["clientConnection"] == {"burst": 10, "kubeconfig": "/var/lib/kube-proxy/kubeconfig.conf", "qps": 5.5}
    assert config["oomScoreAdj"] == -999


def test_unset_cluster_cidr_and_node_port_addresses_are_left_to_kube_proxy():
    config = build_config(validate({}))
    assert "clusterCIDR" not in config and "nodePortAddresses" not in config
    assert build_config(validate({"node_port_addresses": ["primary"]}))["nodePortAddresses"] == ["primary"]


@pytest.mark.parametrize("settings", [{"cluster_cidr": "10.244.0.0/16"}, FULL], ids=["defaults", "everything"])
def test_yaml_reads_back_as_the_same_documents(settings):
    out = render(validate(settings))
    config = yaml.safe_load(out["files"][CONFIG_FILE])
    assert config == out["config"]
    cm = yaml.safe_load(out["files"][CONFIGMAP_FILE])
    assert cm == out["configmap"]
    assert yaml.safe_load(cm["data"]["config.conf"]) == out["config"]


@pytest.mark.parametrize("value", [
    "yes", "no", "on", "off", "y", "n", "true", "False", "null", "~", "", " lead", "trail ", "a: b", "#c", "- x",
    "1:20", "0x1F", "0o17", "017", "1e3", "1_000", ".5", "+1", "2001-12-14", "10.244.0.0/16", "0.0.0.0:10256",
    "[::]:10256", "*", "&a", "!tag", "%x", "@x", "`x", "{a}", "[a]", "'q'", '"q"', "a\\b", "tab\there", "ünï",
    "multi\nline\n", "multi\nline", "two\n\nparas\n", "\nlead\n", "end\n\n", "crlf\r\n", ".inf", ".NaN", "=",
])
def test_any_string_reads_back_unchanged(value):
    doc = {"key": value, "list": [value], "nested": {value or "empty": value}}
    assert yaml.safe_load(to_yaml(doc)) == doc


def test_scalars_and_containers_read_back():
    doc = {"t": True, "f": False, "n": None, "i": -7, "x": 2.5, "inf": float("inf"), "empty": {}, "none": [],
           "lod": [{"a": 1, "b": [1, 2]}, {"c": {}}], "lol": [[1, 2], []]}
    assert yaml.safe_load(to_yaml(doc)) == doc
    with pytest.raises(TypeError, match="mapping"):
        to_yaml(["not", "a", "mapping"])


def test_configmap_is_a_valid_kubernetes_configmap():
    cm = yaml.safe_load(render(validate(FULL))["files"][CONFIGMAP_FILE])
    assert kubernetes_validate.validate(cm, K8S_VERSION, strict=True) == "1.33"
    assert cm["metadata"] == {"name": "kube-proxy", "namespace": "kube-system", "labels": {"app": "kube-proxy"}}
    assert list(cm["data"]) == ["config.conf"]


@pytest.mark.parametrize("breakage", [
    lambda cm: cm["data"].update({"config.conf": 5}),
    lambda cm: cm.update({"spec": {}}),
    lambda cm: cm["metadata"].update({"labels": {"app": ["kube-proxy"]}}),
])
def test_kubernetes_validate_rejects_a_broken_configmap(breakage):
    cm = yaml.safe_load(render(validate({}))["files"][CONFIGMAP_FILE])
    breakage(cm)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(cm, K8S_VERSION, strict=True)


@pytest.mark.parametrize(("settings", "field", "words"), [
    ({"mode": "userspace"}, "kube_proxy_mode", "iptables, ipvs, nftables"),
    ({"ipvs_scheduler": "mh"}, "kube_proxy_ipvs_scheduler", "rr, lc, dh, sh, sed, nq, wrr, wlc"),
    ({"ipvs_strict_arp": "yes"}, "kube_proxy_ipvs_strict_arp", "true or false"),
    ({"cluster_cidr": "10.244.0.1/16"}, "kube_proxy_cluster_cidr", "host bits must be zero"),
    ({"cluster_cidr": "pods"}, "kube_proxy_cluster_cidr", "CIDR form"),
    ({"cluster_cidr": "10.244.0.0/16,10.245.0.0/16"}, "kube_proxy_cluster_cidr", "an IPv4 and an IPv6"),
    ({"cluster_cidr": 16}, "kube_proxy_cluster_cidr", "10.244.0.0/16"),
    ({"node_port_addresses": ["primary", "10.0.0.0/8"]}, "kube_proxy_node_port_addresses", "cannot be combined"),
    ({"node_port_addresses": ["eth0"]}, "kube_proxy_node_port_addresses", "not a CIDR"),
    ({"node_port_addresses": "10.0.0.0/8"}, "kube_proxy_node_port_addresses", "list of CIDRs"),
    ({"conntrack_max_per_core": -1}, "kube_proxy_conntrack_max_per_core", "0 to 2147483647"),
    ({"conntrack_min": 2**31}, "kube_proxy_conntrack_min", "0 to 2147483647"),
    ({"conntrack_min": True}, "kube_proxy_conntrack_min", "whole number"),
    ({"conntrack_tcp_established_timeout": "1 day"}, "kube_proxy_conntrack_tcp_established_timeout", "Go duration"),
    ({"conntrack_tcp_close_wait_timeout": "-1h"}, "kube_proxy_conntrack_tcp_close_wait_timeout", "Go duration"),
    ({"metrics_bind_address": "localhost:10249"}, "kube_proxy_metrics_bind_address", "IP:port"),
    ({"metrics_bind_address": ""}, "kube_proxy_metrics_bind_address", "IP:port"),
    ({"healthz_bind_address": "0.0.0.0:70000"}, "kube_proxy_healthz_bind_address", "IP:port"),
    ({"healthz_bind_address": "[10.0.0.1]:10256"}, "kube_proxy_healthz_bind_address", "IP:port"),
    ({"healthz_bind_address": "::1:10256"}, "kube_proxy_healthz_bind_address", "[::]:10256"),
    ({"config_extra": {"mode": "ipvs"}}, "kube_proxy_config_extra.mode", "set it with kube_proxy_mode"),
    ({"config_extra": {"ipvs": {"scheduler": "rr"}}}, "kube_proxy_config_extra.ipvs.scheduler", "kube_proxy_ipvs"),
    ({"config_extra": {"clientConnection": {"kubeconfig": "/x"}}},
     "kube_proxy_config_extra.clientConnection.kubeconfig", "netmend sets it"),
    ({"config_extra": {"masqueradeAll": True}}, "kube_proxy_config_extra.masqueradeAll", "not a KubeProxyConfig"),
    ({"config_extra": {"iptables": {"syncPeriod": 30}}}, "kube_proxy_config_extra.iptables.syncPeriod",
     "Go duration"),
    ({"config_extra": {"iptables": "fast"}}, "kube_proxy_config_extra.iptables", "mapping of its fields"),
    ({"config_extra": {"featureGates": {"A": "yes"}}}, "kube_proxy_config_extra.featureGates", "string to bool"),
    ({"config_extra": {"oomScoreAdj": 1.5}}, "kube_proxy_config_extra.oomScoreAdj", "int32"),
    ({"config_extra": ["x"]}, "kube_proxy_config_extra", "mapping of KubeProxyConfiguration fields"),
    ({"bogus": 1}, "kube_proxy_bogus", "not a setting"),
])
def test_bad_settings_fail_naming_the_variable(settings, field, words):
    with pytest.raises(ProblemsError) as info:
        validate(settings, prefix="kube_proxy_")
    messages = {name: message for name, message in info.value.problems}
    assert field in messages, info.value.problems
    assert words in messages[field]


def test_every_problem_is_reported_at_once():
    with pytest.raises(ProblemsError) as info:
        validate({"mode": "x", "cluster_cidr": "y", "conntrack_min": -5, "metrics_bind_address": "z"})
    assert [name for name, _ in info.value.problems] == ["mode", "cluster_cidr", "conntrack_min",
                                                         "metrics_bind_address"]
    assert str(info.value).splitlines()[0].startswith("mode: 'x' is not accepted")


@pytest.mark.parametrize("value", ["0", "24h0m0s", "1h", "90s", "1.5h", "300ms", "2h45m", "1µs", "10us", "5ns"])
def test_go_durations_are_accepted(value):
    assert validate({"conntrack_tcp_established_timeout": value})["conntrack_tcp_established_timeout"] == value


def test_validate_fills_in_defaults_and_keeps_values():
    assert validate({}) == DEFAULTS
    assert validate({"healthz_bind_address": ""})["healthz_bind_address"] == ""
