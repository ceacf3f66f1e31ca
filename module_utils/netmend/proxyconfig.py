"""kube-proxy's configuration: validated settings, the KubeProxyConfiguration document and its ConfigMap.

Stdlib only (it runs on nodes, where no YAML library can be assumed): `validate` checks the settings
netmend exposes and reports every problem at once, naming the field; `build_config` turns them into a
KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1) as a dict; `configmap` wraps its text the
way kubeadm does (ConfigMap kube-system/kube-proxy, key config.conf); `to_yaml` writes both as YAML
that any YAML 1.1 or 1.2 reader loads back to the same values.

`FIELDS` lists every v1alpha1 field with the kind of value it takes. tests/fixtures/kube-proxy/
v1alpha1-fields.txt is the upstream list it is checked against; `config_extra` may set any field there
that netmend does not set itself.
"""

import hashlib
import ipaddress
import json
import re

from .errors import ProblemsError
from .kmod import IPVS_SCHEDULERS, PROXY_MODES

API_VERSION = "kubeproxy.config.k8s.io/v1alpha1"
KIND = "KubeProxyConfiguration"
# kubeadm's default for clientConnection.kubeconfig (cmd/kubeadm/app/componentconfigs/kubeproxy.go); its
# kube-proxy DaemonSet mounts the ConfigMap's kubeconfig.conf key there.
KUBECONFIG = "/var/lib/kube-proxy/kubeconfig.conf"
CONFIGMAP_NAME = "kube-proxy"
CONFIGMAP_NAMESPACE = "kube-system"
CONFIGMAP_KEY = "config.conf"
CONFIGMAP_LABELS = {"app": "kube-proxy"}
CONFIG_FILE = "kube-proxy-config.yaml"
CONFIGMAP_FILE = "kube-proxy-configmap.yaml"
NODE_PORT_KEYWORD = "primary"  # kube-proxy >= 1.29: the node's primary IPs
INT32_MAX = 2**31 - 1
PORT_RANGE = (1, 65535)
DUAL_STACK = 2  # clusterCIDR holds at most one CIDR per IP family
IPV6 = 6

# Every v1alpha1 field (JSON path) and the kind of value it takes.
STRING, BOOL, INT32, FLOAT, DURATION, STRINGS, BOOL_MAP, OBJECT = (
    "string", "bool", "int32", "float", "duration", "list of strings", "map of string to bool", "object")
FIELDS = {
    "apiVersion": STRING, "kind": STRING, "featureGates": BOOL_MAP,
    "clientConnection.kubeconfig": STRING, "clientConnection.acceptContentTypes": STRING,
    "clientConnection.contentType": STRING, "clientConnection.qps": FLOAT, "clientConnection.burst": INT32,
    "logging": OBJECT,
    "hostnameOverride": STRING, "bindAddress": STRING, "healthzBindAddress": STRING, "metricsBindAddress": STRING,
    "bindAddressHardFail": BOOL, "enableProfiling": BOOL, "showHiddenMetricsForVersion": STRING,
    "mode": STRING,
    "iptables.masqueradeBit": INT32, "iptables.masqueradeAll": BOOL, "iptables.localhostNodePorts": BOOL,
    "iptables.snatNodeInternalIP": BOOL, "iptables.syncPeriod": DURATION, "iptables.minSyncPeriod": DURATION,
    "ipvs.syncPeriod": DURATION, "ipvs.minSyncPeriod": DURATION, "ipvs.scheduler": STRING,
    "ipvs.excludeCIDRs": STRINGS, "ipvs.strictARP": BOOL, "ipvs.tcpTimeout": DURATION,
    "ipvs.tcpFinTimeout": DURATION, "ipvs.udpTimeout": DURATION,
    "nftables.masqueradeBit": INT32, "nftables.masqueradeAll": BOOL, "nftables.syncPeriod": DURATION,
    "nftables.minSyncPeriod": DURATION,
    "winkernel.networkName": STRING, "winkernel.sourceVip": STRING, "winkernel.enableDSR": BOOL,
    "winkernel.rootHnsEndpointName": STRING, "winkernel.forwardHealthCheckVip": BOOL,
    "detectLocalMode": STRING, "detectLocal.bridgeInterface": STRING, "detectLocal.interfaceNamePrefix": STRING,
    "clusterCIDR": STRING, "nodePortAddresses": STRINGS, "oomScoreAdj": INT32,
    "conntrack.maxPerCore": INT32, "conntrack.min": INT32, "conntrack.tcpEstablishedTimeout": DURATION,
    "conntrack.tcpCloseWaitTimeout": DURATION, "conntrack.tcpBeLiberal": BOOL, "conntrack.udpTimeout": DURATION,
    "conntrack.udpStreamTimeout": DURATION,
    "configSyncPeriod": DURATION, "portRange": STRING, "windowsRunAsService": BOOL,
}
_GROUPS = {path.split(".", 1)[0] for path in FIELDS if "." in path}

# The settings netmend exposes (module options; role variables add the kube_proxy_ prefix), their
# defaults (kube-proxy's and kubeadm's own) and the field each one sets.
DEFAULTS = {
    "mode": "iptables",
    "ipvs_scheduler": "rr",
    "ipvs_strict_arp": False,
    "cluster_cidr": "",
    "node_port_addresses": [],
    "conntrack_max_per_core": 32768,
    "conntrack_min": 131072,
    "conntrack_tcp_established_timeout": "24h0m0s",
    "conntrack_tcp_close_wait_timeout": "1h0m0s",
    "metrics_bind_address": "127.0.0.1:10249",
    "healthz_bind_address": "0.0.0.0:10256",
    "config_extra": {},
}
SETS = {
    "mode": "mode", "ipvs_scheduler": "ipvs.scheduler", "ipvs_strict_arp": "ipvs.strictARP",
    "cluster_cidr": "clusterCIDR", "node_port_addresses": "nodePortAddresses",
    "conntrack_max_per_core": "conntrack.maxPerCore", "conntrack_min": "conntrack.min",
    "conntrack_tcp_established_timeout": "conntrack.tcpEstablishedTimeout",
    "conntrack_tcp_close_wait_timeout": "conntrack.tcpCloseWaitTimeout",
    "metrics_bind_address": "metricsBindAddress", "healthz_bind_address": "healthzBindAddress",
}
# Fields config_extra may not set: the document's identity, and what a setting above owns.
RESERVED = {"apiVersion", "kind", "clientConnection.kubeconfig", *SETS.values()}

# A Go time.Duration as metav1.Duration parses it: "0", or one or more <number><unit>, no sign.
_DURATION = re.compile(r"^(0|([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|\u00b5s|ms|s|m|h))+$")
DURATION_ACCEPTED = "a Go duration such as 24h0m0s, 1h, 90s or 0"


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
    def __init__(self, prefix):
        self.prefix = prefix
        self.problems = []

    def fail(self, name, message):
        self.problems.append((f"{self.prefix}{name}", message))

    def choice(self, name, value, choices):
        if value not in choices:
            self.fail(name, f"{value!r} is not accepted; choose one of {', '.join(choices)}")

    def boolean(self, name, value):
        if not isinstance(value, bool):
            self.fail(name, f"{value!r} is not accepted; expected true or false")

    def int32(self, name, value):
        if not _is_int(value) or not 0 <= value <= INT32_MAX:
            self.fail(name, f"{value!r} is not accepted; expected a whole number from 0 to {INT32_MAX}")

    def duration(self, name, value):
        if not isinstance(value, str) or not _DURATION.match(value):
            self.fail(name, f"{value!r} is not accepted; expected {DURATION_ACCEPTED}")

    def cluster_cidr(self, name, value):
        if not isinstance(value, str):
            self.fail(name, f"{value!r} is not accepted; expected a CIDR such as 10.244.0.0/16")
            return
        if value == "":
            return
        parts = value.split(",")
        nets = []
        for part in parts:
            try:
                nets.append(ipaddress.ip_network(part.strip(), strict=True))
            except ValueError:
                self.fail(name, f"{part.strip()!r} is not a network in CIDR form such as 10.244.0.0/16 "
                                "(host bits must be zero)")
                return
        if len(nets) > DUAL_STACK or (len(nets) == DUAL_STACK and nets[0].version == nets[1].version):
            self.fail(name, f"{value!r} is not accepted; give one CIDR, or an IPv4 and an IPv6 CIDR "
                            "separated by a comma (10.244.0.0/16,fd00:10:244::/56)")

    def node_port_addresses(self, name, value):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(name, f"{value!r} is not accepted; expected a list of CIDRs such as [198.51.100.0/24], "
                            f"or [{NODE_PORT_KEYWORD}]")
            return
        if NODE_PORT_KEYWORD in value and len(value) > 1:
            self.fail(name, f"{NODE_PORT_KEYWORD!r} cannot be combined with CIDRs; use [{NODE_PORT_KEYWORD}] alone")
        for item in value:
            if item == NODE_PORT_KEYWORD:
                continue
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                self.fail(name, f"{item!r} is not a CIDR such as 198.51.100.0/24 (or the keyword "
                                f"{NODE_PORT_KEYWORD!r})")

    def host_port(self, name, value, allow_empty=False):
        accepted = "IP:port such as 0.0.0.0:10256 or [::]:10256" + (", or '' to disable" if allow_empty else "")
        if allow_empty and value == "":
            return
        if not isinstance(value, str):
            self.fail(name, f"{value!r} is not accepted; expected {accepted}")
            return
        match = re.match(r"^(?:\[([^\]]+)\]|([^:\[\]]+)):([0-9]+)$", value)
        host = match and (match.group(1) or match.group(2))
        try:
            address = ipaddress.ip_address(host) if host else None
        except ValueError:
            address = None
        if address is None or (match.group(1) and address.version != IPV6) or \
                not PORT_RANGE[0] <= int(match.group(3)) <= PORT_RANGE[1]:
            self.fail(name, f"{value!r} is not accepted; expected {accepted}")


def _flatten(extra, path=""):
    """{dotted path: value} of a nested dict, stopping at fields that take a whole object or map."""
    out = {}
    for key, value in extra.items():
        full = f"{path}{key}"
        if isinstance(value, dict) and full in _GROUPS:
            if not value:
                out[full] = value
            out.update(_flatten(value, full + "."))
        else:
            out[full] = value
    return out


def _check_extra(c, name, extra):
    if not isinstance(extra, dict):
        c.fail(name, f"{extra!r} is not accepted; expected a mapping of KubeProxyConfiguration fields")
        return
    for path, value in sorted(_flatten(extra).items(), key=lambda kv: str(kv[0])):
        where = f"{name}.{path}"
        if path in RESERVED:
            owner = next((k for k, v in SETS.items() if v == path), None)
            how = f"set it with {c.prefix}{owner}" if owner else "netmend sets it"
            c.fail(where, f"is not accepted here; {how}")
        elif path in _GROUPS:
            if value != {}:
                c.fail(where, f"{value!r} is not accepted; expected a mapping of its fields")
        elif path not in FIELDS:
            c.fail(where, "is not a KubeProxyConfiguration (v1alpha1) field; known fields: "
                          + ", ".join(sorted(p for p in FIELDS if p not in RESERVED)))
        else:
            _check_kind(c, where, FIELDS[path], value)


def _check_kind(c, where, kind, value):
    ok = {
        STRING: isinstance(value, str),
        BOOL: isinstance(value, bool),
        INT32: _is_int(value) and -INT32_MAX - 1 <= value <= INT32_MAX,
        FLOAT: (_is_int(value) or isinstance(value, float)),
        DURATION: isinstance(value, str) and bool(_DURATION.match(value)),
        STRINGS: isinstance(value, list) and all(isinstance(v, str) for v in value),
        BOOL_MAP: isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, bool)
                                                   for k, v in value.items()),
        OBJECT: isinstance(value, dict),
    }[kind]
    if not ok:
        hint = f" ({DURATION_ACCEPTED})" if kind == DURATION else ""
        c.fail(where, f"{value!r} is not accepted; expected a {kind}{hint}")


def validate(settings, prefix=""):
    """Check settings (missing keys take DEFAULTS) and return them complete; raise ProblemsError with
    every problem, each naming `prefix` + the setting, otherwise."""
    c = _Checker(prefix)
    unknown = sorted(str(k) for k in settings if k not in DEFAULTS)
    for key in unknown:
        c.fail(key, f"is not a setting; known: {', '.join(DEFAULTS)}")
    s = {**DEFAULTS, **{k: v for k, v in settings.items() if k in DEFAULTS}}
    c.choice("mode", s["mode"], PROXY_MODES)
    c.choice("ipvs_scheduler", s["ipvs_scheduler"], IPVS_SCHEDULERS)
    c.boolean("ipvs_strict_arp", s["ipvs_strict_arp"])
    c.cluster_cidr("cluster_cidr", s["cluster_cidr"])
    c.node_port_addresses("node_port_addresses", s["node_port_addresses"])
    c.int32("conntrack_max_per_core", s["conntrack_max_per_core"])
    c.int32("conntrack_min", s["conntrack_min"])
    c.duration("conntrack_tcp_established_timeout", s["conntrack_tcp_established_timeout"])
    c.duration("conntrack_tcp_close_wait_timeout", s["conntrack_tcp_close_wait_timeout"])
    c.host_port("metrics_bind_address", s["metrics_bind_address"])
    c.host_port("healthz_bind_address", s["healthz_bind_address"], allow_empty=True)
    _check_extra(c, "config_extra", s["config_extra"])
    if c.problems:
        raise ProblemsError(c.problems)
    return s


def _set(doc, path, value):
    *groups, leaf = path.split(".")
    for group in groups:
        doc = doc.setdefault(group, {})
    doc[leaf] = value


def _merge(base, extra):
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _sorted(value):
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def build_config(settings):
    """The KubeProxyConfiguration for validated settings (see `validate`), as a dict: apiVersion and
    kind first, then the fields in name order, as kubeadm prints them."""
    doc = {"clientConnection": {"kubeconfig": KUBECONFIG}}
    for key, path in SETS.items():
        value = settings[key]
        if key == "cluster_cidr" and value == "":
            continue
        if key == "node_port_addresses" and not value:
            continue  # unset: kube-proxy's default (all addresses; primary in nftables mode)
        _set(doc, path, list(value) if isinstance(value, list) else value)
    _merge(doc, json.loads(json.dumps(settings["config_extra"])))
    return {"apiVersion": API_VERSION, "kind": KIND, **_sorted(doc)}


def configmap(config_text):
    """ConfigMap kube-system/kube-proxy holding the configuration under config.conf, as kubeadm creates it
    (kubeadm also writes kubeconfig.conf, the in-cluster kubeconfig; applying this one keeps that key)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": CONFIGMAP_NAME, "namespace": CONFIGMAP_NAMESPACE, "labels": dict(CONFIGMAP_LABELS)},
            "data": {CONFIGMAP_KEY: config_text}}


def render(settings):
    """{file name: text} of both files for validated settings, plus the config and ConfigMap dicts."""
    config = build_config(settings)
    config_text = to_yaml(config)
    cm = configmap(config_text)
    fragment = ("---\n# Managed by netmend (netmend_kube_proxy_config); local edits are overwritten.\n"
                "# The KubeProxyConfiguration document to append to the kubeadm configuration given to\n"
                f"# `kubeadm init --config` (kube-proxy mode {settings['mode']}).\n" + config_text)
    cm_text = ("---\n# Managed by netmend (netmend_kube_proxy_config); local edits are overwritten.\n"
               "# kube-proxy's ConfigMap as kubeadm creates it; applying it merges config.conf into kubeadm's\n"
               "# ConfigMap and keeps its kubeconfig.conf. Restart the kube-proxy DaemonSet to use it.\n"
               + to_yaml(cm))
    return {"files": {CONFIG_FILE: fragment, CONFIGMAP_FILE: cm_text}, "config": config, "configmap": cm,
            "config_sha256": hashlib.sha256(config_text.encode()).hexdigest()}


# YAML output. Strings are written plain only when every YAML 1.1 and 1.2 reader reads them back as the
# same string; otherwise double-quoted with JSON escapes (a subset of YAML's). Multi-line strings use a
# literal block.
_PLAIN = re.compile(r"^[A-Za-z0-9/][A-Za-z0-9_./-]*$")
_NOT_PLAIN = re.compile(
    r"^([-+]?(0b[01_]+|0x[0-9a-fA-F_]+|0o?[0-7_]+|[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?|\.[0-9_]+)"
    r"|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}.*"
    r"|y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF"
    r"|null|Null|NULL|~|\.inf|\.Inf|\.INF|\.nan|\.NaN|\.NAN)$")


def _float(value):
    if value != value:  # noqa: PLR0124 - NaN is the one float unequal to itself
        return ".nan"
    if value in (float("inf"), float("-inf")):
        return ".inf" if value > 0 else "-.inf"
    return repr(value)


def _string(value):
    if _PLAIN.match(value) and not _NOT_PLAIN.match(value):
        return value
    return json.dumps(value, ensure_ascii=False)


def _scalar(value):
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if _is_int(value):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _string(value)
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as YAML")


def _block(value):
    """Whether a string is written as a literal block: several lines, none of them that a block changes."""
    lines = value.split("\n")
    return (len(lines) > 1 and value.endswith("\n") and not value.endswith("\n\n")
            and not value.startswith((" ", "\n")) and all(line == line.rstrip() for line in lines)
            and "\t" not in value and "\r" not in value)


def _lines(value, indent):
    pad = " " * indent
    if isinstance(value, dict):
        out = []
        for key, item in value.items():
            out += _entry(f"{pad}{_scalar(str(key))}:", item, indent)
        return out
    out = []
    for item in value:
        if isinstance(item, dict) and item:
            inner = _lines(item, indent + 2)
            out.append(f"{pad}- {inner[0].lstrip()}")
            out += inner[1:]
        elif isinstance(item, list) and item:
            inner = _lines(item, indent + 2)
            out.append(f"{pad}- {inner[0].lstrip()}")
            out += inner[1:]
        else:
            out += _entry(f"{pad}-", item, indent)
    return out


def _entry(head, value, indent):
    if isinstance(value, dict):
        return [f"{head} {{}}"] if not value else [head, *_lines(value, indent + 2)]
    if isinstance(value, list):
        return [f"{head} []"] if not value else [head, *_lines(value, indent)]
    if isinstance(value, str) and _block(value):
        pad = " " * (indent + 2)
        return [f"{head} |", *(f"{pad}{line}" if line else "" for line in value[:-1].split("\n"))]
    return [f"{head} {_scalar(value)}"]


def to_yaml(doc):
    """A mapping as a block-style YAML document (no `---`), keys in the mapping's order."""
    if not isinstance(doc, dict):
        raise TypeError("to_yaml writes a mapping")
    return "\n".join(_lines(doc, 0)) + "\n"
