"""flannel: net-conf.json, the CNI conflist, the kube-flannel manifests, and flannel's own files parsed back.

Stdlib only (Python 3.9+): it runs inside Ansible modules on the nodes, in the lab and in the audit.
Formats follow upstream flannel (Documentation/configuration.md, backends.md, kube-flannel.yml):

- net-conf.json (and the etcd key <prefix>/config, seed 003): {"Network", "SubnetLen", "Backend": {...}}.
- flannel's vxlan Backend.MTU is the *underlay* MTU; flannel.<VNI> gets Backend.MTU minus 50
  (pkg/backend/vxlan). An explicit pod MTU m is therefore written as Backend.MTU = m + 50.
- /run/flannel/subnet.env: FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ.

Every check raises FlannelError (a ProblemsError): all problems at once, each naming the inventory
variable or the file field, and what is accepted.
"""

import base64
import binascii
import hashlib
import ipaddress
import json
import re

from .errors import ProblemsError

BACKENDS = ("vxlan", "host-gw")
STORES = ("kube", "etcd")
# Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers.
OVERHEAD = {"vxlan": 50, "host-gw": 0}
MIN_MTU = 576  # the smallest datagram every IPv4 host must accept (RFC 791)
MAX_MTU = 65535
DEFAULT_VNI = 1
DEFAULT_PORT = 8472  # the Linux kernel's VXLAN port, flannel's default on Linux
VNI_RANGE = (1, 16777215)
PORT_RANGE = (1, 65535)
MAX_SUBNET_LEN = 28  # netmend's bound (module_utils/netmend/cluster.py): room for a node's pods
MAX_FLANNEL_SUBNET_LEN = 30  # flanneld's own bound

NET_CONF_PATH = "/etc/kube-flannel/net-conf.json"
CNI_CONF_PATH = "/etc/cni/net.d/10-flannel.conflist"
SUBNET_ENV_PATH = "/run/flannel/subnet.env"
ETCD_PREFIX = "/coreos.com/network"
NAMESPACE = "kube-flannel"
IMAGE = "ghcr.io/flannel-io/flannel"
IMAGE_TAG = "v0.27.4"
CNI_PLUGIN_IMAGE = "ghcr.io/flannel-io/flannel-cni-plugin"
CNI_PLUGIN_IMAGE_TAG = "v1.8.0-flannel1"
CNI_NAME = "cbr0"
CNI_VERSION = "0.3.1"
CONFIG_HASH_ANNOTATION = "netmend/config-sha256"
LABELS = {"tier": "node", "app": "flannel", "k8s-app": "flannel"}

_IFACE = re.compile(r"^[^\s/,=]{1,253}$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*[a-z0-9]$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$|^sha256:[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_ENDPOINT = re.compile(r"^https?://[^\s,/]+(:[0-9]{1,5})?/?$")
_PREFIX = re.compile(r"^(/[A-Za-z0-9._-]+)+$")


class FlannelError(ProblemsError):
    """Bad flannel settings or a malformed flannel file. `problems` is a list of (field, message)."""


class _Checker:
    def __init__(self):
        self.problems = []

    def fail(self, field, message):
        self.problems.append((field, message))

    def integer(self, field, value, low, high, what=""):
        if isinstance(value, bool):
            self.fail(field, f"{value!r} is a boolean; accepted: an integer {low}-{high}{what}")
            return None
        if not isinstance(value, int):
            text = str(value).strip()
            if not re.match(r"^[0-9]+$", text):
                self.fail(field, f"{value!r} is not an integer; accepted: {low}-{high}{what}")
                return None
            value = int(text)
        if not low <= value <= high:
            self.fail(field, f"{value} is out of range; accepted: {low}-{high}{what}")
            return None
        return value

    def raise_if_any(self):
        if self.problems:
            raise FlannelError(self.problems)


def _ipv4_network(checker, field, value):
    try:
        if "/" not in str(value):
            raise ValueError(value)
        net = ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        checker.fail(field, f"{value!r} is not a network in CIDR form such as 10.244.0.0/16")
        return None
    if net.version != 4:  # noqa: PLR2004 - the IP version
        checker.fail(field, f"{value} is IPv6; an IPv4 network is accepted")
        return None
    return net


def mtu_for(backend, mtu_setting, underlay_mtu, underlay_name="netmend_underlay_mtu"):
    """The pod MTU (flannel.<VNI>, cni0 and pod interfaces, FLANNEL_MTU) for a flannel_mtu setting.

    "auto": the underlay MTU minus the backend's overhead (50 for vxlan, 0 for host-gw), as flanneld
    computes it. An integer must fit: 576 <= mtu <= underlay - overhead. Raises FlannelError (a
    ValueError) naming flannel_mtu, or netmend_underlay_mtu / flannel_backend_type, and what is accepted.
    """
    c = _Checker()
    if backend not in BACKENDS:
        c.fail("flannel_backend_type", f"{backend!r} is not accepted; choose one of: {', '.join(BACKENDS)}")
        c.raise_if_any()
    overhead = OVERHEAD[backend]
    underlay = c.integer(underlay_name, underlay_mtu, MIN_MTU + overhead, MAX_MTU,
                         f" (the MTU of the interface flannel uses; {backend} needs {overhead} bytes of it)")
    c.raise_if_any()
    high = underlay - overhead
    accepted = (f"'auto' or an integer {MIN_MTU}-{high} (the underlay MTU {underlay} minus {overhead} "
                f"for the {backend} encapsulation)" if overhead else
                f"'auto' or an integer {MIN_MTU}-{high} (at most the underlay MTU {underlay}; host-gw adds no header)")
    if isinstance(mtu_setting, str) and mtu_setting.strip().lower() == "auto":
        return high
    if isinstance(mtu_setting, bool) or not isinstance(mtu_setting, (int, str)) or (
            isinstance(mtu_setting, str) and not re.match(r"^\s*[0-9]+\s*$", mtu_setting)):
        c.fail("flannel_mtu", f"{mtu_setting!r} is not accepted; accepted: {accepted}")
        c.raise_if_any()
    mtu = int(mtu_setting)
    if not MIN_MTU <= mtu <= high:
        c.fail("flannel_mtu", f"{mtu} does not fit; accepted: {accepted}")
        c.raise_if_any()
    return mtu


# The positional signature is the one the lab calls (lab/dataplane.py writes its etcd key through it).
def net_conf(pod_cidr, subnet_len=24, backend="vxlan", vni=DEFAULT_VNI, port=DEFAULT_PORT,  # noqa: PLR0913, PLR0917
             direct_routing=False, *, mtu=None):
    """flannel's network config (net-conf.json and the etcd key <prefix>/config), with a minimal, stable key set.

    vxlan: {"Network", "SubnetLen", "Backend": {"Type": "vxlan", "VNI", "Port"}} plus "DirectRouting": true
    only when set, and "MTU" (the underlay MTU, mtu + 50) only for an explicit pod MTU. host-gw:
    {"Backend": {"Type": "host-gw"}}. Arguments are not validated here: see settings().
    """
    if backend == "vxlan":
        back = {"Type": "vxlan", "VNI": int(vni), "Port": int(port)}
        if direct_routing:
            back["DirectRouting"] = True
        if mtu is not None:
            back["MTU"] = int(mtu) + OVERHEAD["vxlan"]
    else:
        back = {"Type": backend}
    return {"Network": str(pod_cidr), "SubnetLen": int(subnet_len), "Backend": back}


def cni_conflist(mtu=None):
    """The CNI network list: the flannel plugin (delegating to bridge with hairpin mode and the default route)
    and portmap. An explicit pod MTU goes into the delegate; without it the plugin uses FLANNEL_MTU."""
    delegate = {"hairpinMode": True, "isDefaultGateway": True}
    if mtu is not None:
        delegate["mtu"] = int(mtu)
    return {"name": CNI_NAME, "cniVersion": CNI_VERSION,
            "plugins": [{"type": "flannel", "delegate": delegate},
                        {"type": "portmap", "capabilities": {"portMappings": True}}]}


def render_json(doc):
    """The text netmend writes for a JSON file: two-space indent, keys in the given order, one final newline."""
    return json.dumps(doc, indent=2) + "\n"


# The role's variables and their defaults (besides the pod CIDR, which has none).
DEFAULTS = {
    "flannel_subnet_len": 24, "flannel_backend_type": "vxlan", "flannel_vxlan_vni": DEFAULT_VNI,
    "flannel_vxlan_port": DEFAULT_PORT, "flannel_vxlan_direct_routing": False, "flannel_mtu": "auto",
    "flannel_underlay_mtu": 1500, "flannel_iface": [], "flannel_iface_regex": [], "flannel_ip_masq": True,
    "flannel_store": "kube", "flannel_etcd_endpoints": ["http://127.0.0.1:2379"], "flannel_etcd_prefix": ETCD_PREFIX,
    "flannel_etcd_cafile": "", "flannel_etcd_certfile": "", "flannel_etcd_keyfile": "",
    "flannel_namespace": NAMESPACE, "flannel_image": IMAGE, "flannel_image_tag": IMAGE_TAG,
    "flannel_cni_plugin_image": CNI_PLUGIN_IMAGE, "flannel_cni_plugin_image_tag": CNI_PLUGIN_IMAGE_TAG,
    "flannel_cni_conf_path": CNI_CONF_PATH,
}


def settings(variables):
    """Validate the flannel variables (the role's names; flannel_pod_cidr falls back to netmend_pod_cidr and
    flannel_underlay_mtu to netmend_underlay_mtu) and return them normalised, or raise FlannelError naming
    every bad variable and what it accepts.

    The result has pod_cidr, subnet_len, backend, vni, port, direct_routing, mtu (the pod MTU),
    explicit_mtu (that MTU, or None for "auto"), iface, iface_regex, ip_masq, store, etcd_endpoints,
    etcd_prefix, etcd_cafile, etcd_certfile, etcd_keyfile, namespace, image, image_tag,
    cni_plugin_image, cni_plugin_image_tag and cni_conf_path.
    """
    c = _Checker()
    v = dict(DEFAULTS)
    if "netmend_underlay_mtu" in variables and "flannel_underlay_mtu" not in variables:
        v["flannel_underlay_mtu"] = variables["netmend_underlay_mtu"]
    v.update(variables)
    cidr_name = "flannel_pod_cidr" if "flannel_pod_cidr" in variables else "netmend_pod_cidr"
    net = None
    if cidr_name not in variables:
        c.fail("flannel_pod_cidr", "is missing; the pod network in CIDR form (netmend_pod_cidr) is required")
    else:
        net = _ipv4_network(c, cidr_name, variables[cidr_name])
    low = net.prefixlen + 2 if net is not None else 1
    out = {"pod_cidr": str(net) if net else None,
           "subnet_len": c.integer("flannel_subnet_len", v["flannel_subnet_len"], low, MAX_SUBNET_LEN,
                                   f" (flannel needs at least four subnets of {net})" if net else ""),
           "backend": _choice(c, "flannel_backend_type", v["flannel_backend_type"], BACKENDS),
           "vni": c.integer("flannel_vxlan_vni", v["flannel_vxlan_vni"], *VNI_RANGE),
           "port": c.integer("flannel_vxlan_port", v["flannel_vxlan_port"], *PORT_RANGE),
           "direct_routing": _boolean(c, "flannel_vxlan_direct_routing", v["flannel_vxlan_direct_routing"]),
           "ip_masq": _boolean(c, "flannel_ip_masq", v["flannel_ip_masq"]),
           "mtu": None, "explicit_mtu": None}
    if out["direct_routing"] and out["backend"] == "host-gw":
        c.fail("flannel_vxlan_direct_routing", "is a vxlan option; the host-gw backend always routes directly")
    if out["backend"] is not None:
        underlay_name = "flannel_underlay_mtu" if "flannel_underlay_mtu" in variables else "netmend_underlay_mtu"
        try:
            out["mtu"] = mtu_for(out["backend"], v["flannel_mtu"], v["flannel_underlay_mtu"], underlay_name)
        except FlannelError as exc:
            c.problems.extend(exc.problems)
        else:
            out["explicit_mtu"] = None if _is_auto(v["flannel_mtu"]) else out["mtu"]
    _check_interfaces(c, v, out)
    _check_deployment(c, v, out)
    c.raise_if_any()
    return out


def _is_auto(value):
    return isinstance(value, str) and value.strip().lower() == "auto"


def _choice(c, field, value, choices):
    if value not in choices:
        c.fail(field, f"{value!r} is not accepted; choose one of: {', '.join(choices)}")
        return None
    return value


def _boolean(c, field, value):
    if not isinstance(value, bool):
        c.fail(field, f"{value!r} is not a boolean (true or false)")
        return False
    return value


def _string_list(c, field, value):
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        c.fail(field, f"{value!r} is not accepted; accepted: a list of non-empty strings")
        return []
    return list(value)


def _check_interfaces(c, v, out):
    iface = out["iface"] = _string_list(c, "flannel_iface", v["flannel_iface"])
    regexes = out["iface_regex"] = _string_list(c, "flannel_iface_regex", v["flannel_iface_regex"])
    for i, name in enumerate(iface):
        if not _IFACE.match(name):
            c.fail(f"flannel_iface[{i}]", f"{name!r} is not an interface name or IP address")
    for i, pattern in enumerate(regexes):
        try:
            re.compile(pattern)
        except re.error as exc:
            c.fail(f"flannel_iface_regex[{i}]", f"{pattern!r} is not a valid regular expression ({exc}; checked "
                   "with Python's re, flanneld uses Go's RE2)")
    if iface and regexes:
        c.fail("flannel_iface", "set flannel_iface or flannel_iface_regex, not both (flanneld ignores the regex "
               "once an interface name matches, which hides mistakes)")


def _check_deployment(c, v, out):
    """The manifest and etcd store variables."""
    namespace = v["flannel_namespace"]
    if not isinstance(namespace, str) or not _NAME.match(namespace):
        c.fail("flannel_namespace", f"{namespace!r} is not a namespace name (lower-case letters, digits, dashes)")
    out["namespace"] = namespace
    for field, pattern, what in (
            ("flannel_image", _IMAGE, "an image name such as ghcr.io/flannel-io/flannel"),
            ("flannel_image_tag", _TAG, "a tag such as v0.27.4 or a sha256: digest"),
            ("flannel_cni_plugin_image", _IMAGE, "an image name such as ghcr.io/flannel-io/flannel-cni-plugin"),
            ("flannel_cni_plugin_image_tag", _TAG, "a tag such as v1.8.0-flannel1 or a sha256: digest")):
        value = v[field]
        if not isinstance(value, str) or not pattern.match(value):
            c.fail(field, f"{value!r} is not accepted; accepted: {what}")
        out[field[len("flannel_"):]] = value
    path = v["flannel_cni_conf_path"]
    if not (isinstance(path, str) and _abs_file(path) and path.endswith(".conflist")):
        c.fail("flannel_cni_conf_path", f"{path!r} is not accepted; accepted: an absolute path ending in "
               ".conflist, such as " + CNI_CONF_PATH)
    out["cni_conf_path"] = path
    _check_etcd(c, v, out)


def _check_etcd(c, v, out):
    """The etcd store variables; checked only with flannel_store etcd."""
    store = out["store"] = _choice(c, "flannel_store", v["flannel_store"], STORES)
    out["etcd_endpoints"] = _string_list(c, "flannel_etcd_endpoints", v["flannel_etcd_endpoints"])
    out["etcd_prefix"] = v["flannel_etcd_prefix"]
    for name in ("cafile", "certfile", "keyfile"):
        out[f"etcd_{name}"] = v[f"flannel_etcd_{name}"] or ""
    if store != "etcd":
        return
    if not out["etcd_endpoints"]:
        c.fail("flannel_etcd_endpoints", "is empty; accepted: a list of URLs such as http://127.0.0.1:2379")
    for i, url in enumerate(out["etcd_endpoints"]):
        if not _ENDPOINT.match(url):
            c.fail(f"flannel_etcd_endpoints[{i}]", f"{url!r} is not accepted; accepted: http(s)://host:port")
    if not isinstance(out["etcd_prefix"], str) or not _PREFIX.match(out["etcd_prefix"]):
        c.fail("flannel_etcd_prefix", f"{out['etcd_prefix']!r} is not accepted; accepted: an absolute key prefix "
               "without a trailing slash, such as " + ETCD_PREFIX)
    for name in ("cafile", "certfile", "keyfile"):
        path = out[f"etcd_{name}"]
        if path and not (isinstance(path, str) and _abs_file(path)):
            c.fail(f"flannel_etcd_{name}", f"{path!r} is not an absolute file path")
    if bool(out["etcd_certfile"]) != bool(out["etcd_keyfile"]):
        c.fail("flannel_etcd_certfile", "flannel_etcd_certfile and flannel_etcd_keyfile go together; set both or "
               "neither")


def _abs_file(path):
    return path.startswith("/") and not path.endswith("/") and bool(path.rsplit("/", 1)[0])


# The manifests.

def image_ref(image, tag):
    """image:tag, or image@sha256:... when the tag is a digest."""
    return f"{image}@{tag}" if tag.startswith("sha256:") else f"{image}:{tag}"


def config_hash(net_conf_text, cni_conf_text):
    """sha256 of the ConfigMap data, put on the pod template so that a config change rolls the DaemonSet."""
    return hashlib.sha256((net_conf_text + "\0" + cni_conf_text).encode()).hexdigest()


def flanneld_args(s):
    """flanneld's command-line arguments for settings s (see settings())."""
    args = ["--ip-masq"] if s["ip_masq"] else []
    if s["store"] == "kube":
        args.append("--kube-subnet-mgr")
    else:
        args += [f"--etcd-endpoints={','.join(s['etcd_endpoints'])}", f"--etcd-prefix={s['etcd_prefix']}"]
        args += [f"--etcd-{name}={s['etcd_' + name]}" for name in ("cafile", "certfile", "keyfile")
                 if s["etcd_" + name]]
    args += [f"--iface={name}" for name in s["iface"]]
    args += [f"--iface-regex={pattern}" for pattern in s["iface_regex"]]
    return args


def _meta(name, namespace=None, labels=None):
    meta = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = dict(labels)
    return meta


def manifests(net_conf_text, cni_conf_text, s):
    """The kube-flannel objects for settings s (see settings()), as upstream's kube-flannel.yml has them:
    Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding, ConfigMap kube-flannel-cfg (cni-conf.json
    and net-conf.json, byte for byte the node files) and DaemonSet kube-flannel-ds."""
    namespace = s["namespace"]
    flannel = image_ref(s["image"], s["image_tag"])
    cni_dir, cni_file = s["cni_conf_path"].rsplit("/", 1)
    args = flanneld_args(s)
    mounts = [{"name": "run", "mountPath": "/run/flannel"},
              {"name": "flannel-cfg", "mountPath": "/etc/kube-flannel/"},
              {"name": "xtables-lock", "mountPath": "/run/xtables.lock"}]
    volumes = [{"name": "run", "hostPath": {"path": "/run/flannel"}},
               {"name": "cni-plugin", "hostPath": {"path": "/opt/cni/bin"}},
               {"name": "cni", "hostPath": {"path": cni_dir}},
               {"name": "flannel-cfg", "configMap": {"name": "kube-flannel-cfg"}},
               {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}}]
    if s["store"] == "etcd":
        files = (s["etcd_cafile"], s["etcd_certfile"], s["etcd_keyfile"])
        tls_dirs = sorted({p.rsplit("/", 1)[0] for p in files if p})
        for i, directory in enumerate(tls_dirs):
            mounts.append({"name": f"etcd-tls-{i}", "mountPath": directory, "readOnly": True})
            volumes.append({"name": f"etcd-tls-{i}", "hostPath": {"path": directory, "type": "Directory"}})
    daemonset = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": _meta("kube-flannel-ds", namespace, LABELS),
        "spec": {
            "selector": {"matchLabels": {"app": "flannel"}},
            "template": {
                "metadata": {"labels": dict(LABELS),
                             "annotations": {CONFIG_HASH_ANNOTATION: config_hash(net_conf_text, cni_conf_text)}},
                "spec": {
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}},
                    "hostNetwork": True,
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                    "serviceAccountName": "flannel",
                    "initContainers": [
                        {"name": "install-cni-plugin",
                         "image": image_ref(s["cni_plugin_image"], s["cni_plugin_image_tag"]),
                         "command": ["cp"], "args": ["-f", "/flannel", "/opt/cni/bin/flannel"],
                         "volumeMounts": [{"name": "cni-plugin", "mountPath": "/opt/cni/bin"}]},
                        {"name": "install-cni", "image": flannel, "command": ["cp"],
                         "args": ["-f", "/etc/kube-flannel/cni-conf.json", f"/etc/cni/net.d/{cni_file}"],
                         "volumeMounts": [{"name": "cni", "mountPath": "/etc/cni/net.d"},
                                          {"name": "flannel-cfg", "mountPath": "/etc/kube-flannel/"}]},
                    ],
                    "containers": [{
                        "name": "kube-flannel", "image": flannel, "command": ["/opt/bin/flanneld"], "args": args,
                        "resources": {"requests": {"cpu": "100m", "memory": "50Mi"}},
                        "securityContext": {"privileged": False,
                                            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
                        "env": [
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                            {"name": "EVENT_QUEUE_DEPTH", "value": "5000"},
                            {"name": "CONT_WHEN_CACHE_NOT_READY", "value": "false"},
                        ],
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    }
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": _meta(namespace, labels={"k8s-app": "flannel",
                                              "pod-security.kubernetes.io/enforce": "privileged"})},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta("flannel", namespace, {"k8s-app": "flannel"})},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": _meta("flannel", labels={"k8s-app": "flannel"}),
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                   {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
                   {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": _meta("flannel", labels={"k8s-app": "flannel"}),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "flannel"},
         "subjects": [{"kind": "ServiceAccount", "name": "flannel", "namespace": namespace}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("kube-flannel-cfg", namespace, LABELS),
         "data": {"cni-conf.json": cni_conf_text, "net-conf.json": net_conf_text}},
        daemonset,
    ]


# A small YAML emitter (PyYAML is not on every node): block style, plain scalars only where they cannot be
# read as anything but the same string, JSON-quoted strings otherwise, literal blocks for multi-line text.

_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./:=-]*$")
_RESERVED = {"y", "yes", "n", "no", "true", "false", "on", "off", "null", "~"}


def _scalar(value):
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if _PLAIN.match(value) and value.lower() not in _RESERVED and not value.endswith(":"):
            return value
        return json.dumps(value)
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as YAML")


def _literal(value):
    """Whether a string is written as a literal block: several lines, no line starting with blanks first."""
    return (isinstance(value, str) and "\n" in value.rstrip("\n") and not value[:1].isspace()
            and "\r" not in value and "\t" not in value and not any(line.rstrip(" ") != line
                                                                    for line in value.split("\n")))


def _block(value, pad):
    chomp = "|" if value.endswith("\n") and not value.endswith("\n\n") else ("|-" if not value.endswith("\n") else None)
    if chomp is None:
        return None
    body = value[:-1] if value.endswith("\n") else value
    return [chomp] + [(pad + line) if line else "" for line in body.split("\n")]


def _emit(value, indent):
    pad = " " * indent
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            head = f"{pad}{_scalar(str(key))}:"
            lines += _after(head, item, indent)
    else:
        for item in value:
            lines += _after(f"{pad}-", item, indent, in_list=True)
    return lines


def _after(head, item, indent, in_list=False):
    """head ("key:" or "-") followed by item, inline when it is a scalar, below it otherwise."""
    if isinstance(item, (dict, list, tuple)) and item:
        nested = _emit(item if isinstance(item, dict) else list(item), indent + 2)
        if in_list and isinstance(item, dict):  # "- key: value", the other keys below it
            return [f"{head} {nested[0].lstrip(' ')}", *nested[1:]]
        return [head, *nested]
    if isinstance(item, (dict, list, tuple)):
        return [head + (" {}" if isinstance(item, dict) else " []")]
    block = _block(item, " " * (indent + 2)) if _literal(item) else None
    if block is not None:
        return [f"{head} {block[0]}", *block[1:]]
    return [f"{head} {_scalar(item)}"]


def to_yaml(doc):
    """One YAML document (dicts, lists, str, int, bool, None) in block style, ending with a newline."""
    if not isinstance(doc, dict):
        raise TypeError("a YAML document here is a mapping")
    return "\n".join(_emit(doc, 0)) + "\n"


def render_manifests(docs):
    """The kube-flannel.yml text: a header comment and one `---` document per object."""
    head = "# Managed by netmend (roles/flannel); local changes are overwritten.\n"
    return head + "".join("---\n" + to_yaml(doc) for doc in docs)


# Parsing flannel's files back (the audit compares them with the inventory).

def _field(doc, name, default=None):
    """doc[name] the way Go's encoding/json finds it: the exact key first, else one differing only in case."""
    if name in doc:
        return doc[name]
    for key, value in doc.items():
        if isinstance(key, str) and key.casefold() == name.casefold():
            return value
    return default


def default_subnet_len(prefixlen):
    """flannel's SubnetLen when none is set: 24 for networks up to /22, else the prefix plus 2 (four subnets)."""
    return 24 if prefixlen <= 22 else prefixlen + 2  # noqa: PLR2004 - flannel's rule (pkg/subnet/config.go)


def parse_net_conf(text, source="net-conf.json"):
    """net-conf.json (or the etcd key's value) -> normalised settings; FlannelError on anything malformed.

    Keys are matched as flanneld's Go decoder does (exact, else case-insensitive). Returns network,
    subnet_len (flannel's default when absent), backend (flannel's default "udp" when Backend is
    absent), vni, port, direct_routing and backend_mtu for vxlan (flannel's defaults filled in: VNI 1,
    Port 8472, the kernel's port that flannel's Port 0 means on Linux), and raw, the document as read.
    SubnetLen is checked as flannel checks it: at most 30 and at least the Network prefix plus 2.
    """
    c = _Checker()
    if not isinstance(text, str) or not text.strip():
        raise FlannelError([(source, "is empty; a JSON object with at least Network is expected")])
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise FlannelError([(source, f"is not valid JSON: {exc}")]) from None
    if not isinstance(doc, dict):
        raise FlannelError([(source, f"is a JSON {type(doc).__name__}, not an object")])
    network = _field(doc, "Network")
    net = None
    if network is None:
        c.fail(f"{source}: Network", "is missing; flannel needs the pod network in CIDR form")
    else:
        net = _ipv4_network(c, f"{source}: Network", network)
    subnet_len = _field(doc, "SubnetLen")
    if subnet_len is None and net is not None:
        subnet_len = default_subnet_len(net.prefixlen)
    if isinstance(subnet_len, bool) or not isinstance(subnet_len, (int, type(None))):
        c.fail(f"{source}: SubnetLen", f"{subnet_len!r} is not an integer")
        subnet_len = None
    elif net is not None and not net.prefixlen + 2 <= subnet_len <= MAX_FLANNEL_SUBNET_LEN:
        c.fail(f"{source}: SubnetLen", f"{subnet_len} is not accepted; flannel accepts {net.prefixlen + 2}-"
               f"{MAX_FLANNEL_SUBNET_LEN} for Network {net} (at least four subnets, at most /30)")
    backend = _field(doc, "Backend", {"Type": "udp"})
    result = {"network": str(net) if net else None, "subnet_len": subnet_len, "backend": None, "vni": None,
              "port": None, "direct_routing": False, "backend_mtu": None, "raw": doc}
    kind = _field(backend, "Type") if isinstance(backend, dict) else None
    if not isinstance(backend, dict):
        c.fail(f"{source}: Backend", f"{backend!r} is not an object with a Type")
    elif not isinstance(kind, str) or not kind:
        c.fail(f"{source}: Backend.Type", f"{kind!r} is not a backend name such as vxlan")
    else:
        result["backend"] = kind
        if kind == "vxlan":
            _vxlan_fields(c, source, backend, result)
    c.raise_if_any()
    return result


def _vxlan_fields(c, source, backend, result):
    for key, field, default, low, high in (("VNI", "vni", DEFAULT_VNI, 0, VNI_RANGE[1]),
                                           ("Port", "port", 0, 0, PORT_RANGE[1]),
                                           ("MTU", "backend_mtu", None, MIN_MTU, MAX_MTU)):
        value = _field(backend, key, default)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            c.fail(f"{source}: Backend.{key}", f"{value!r} is not an integer {low}-{high}")
            continue
        result[field] = value
    if result["port"] == 0:
        result["port"] = DEFAULT_PORT
    direct = _field(backend, "DirectRouting", False)
    if not isinstance(direct, bool):
        c.fail(f"{source}: Backend.DirectRouting", f"{direct!r} is not a boolean")
    else:
        result["direct_routing"] = direct


_ENV_LINE = re.compile(r"^([A-Z_][A-Z0-9_]*)=(.*)$")
SUBNET_ENV_KEYS = ("FLANNEL_NETWORK", "FLANNEL_SUBNET", "FLANNEL_MTU", "FLANNEL_IPMASQ")


def parse_subnet_env(text, source=SUBNET_ENV_PATH):
    """flanneld's subnet.env -> {network, subnet, gateway, mtu, ipmasq, ipv6_network, ipv6_subnet, extra}.

    subnet is the node's subnet in CIDR form (10.244.1.0/24) and gateway the address flanneld gives cni0
    (FLANNEL_SUBNET=10.244.1.1/24). Every malformed line, missing or duplicate key and inconsistent
    value raises FlannelError naming the line or the key; nothing is guessed.
    """
    if not isinstance(text, str) or not text.strip():
        raise FlannelError([(source, "is empty; flanneld writes FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU "
                                     "and FLANNEL_IPMASQ")])
    c = _Checker()
    values, lines = {}, {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if not match:
            c.fail(f"{source}: line {number}", f"{raw!r} is not a KEY=VALUE line")
            continue
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":  # noqa: PLR2004 - two quotes
            value = value[1:-1]
        if key in values:
            c.fail(f"{source}: {key}", f"is set twice (lines {lines[key]} and {number})")
            continue
        values[key], lines[key] = value, number
    for key in SUBNET_ENV_KEYS:
        if key not in values:
            c.fail(f"{source}: {key}", "is missing")
    c.raise_if_any()
    network = _ipv4_network(c, f"{source}: FLANNEL_NETWORK", values["FLANNEL_NETWORK"])
    subnet = gateway = None
    try:
        iface = ipaddress.ip_interface(values["FLANNEL_SUBNET"])
        if "/" not in values["FLANNEL_SUBNET"] or iface.version != 4:  # noqa: PLR2004 - the IP version
            raise ValueError(values["FLANNEL_SUBNET"])
        subnet, gateway = str(iface.network), str(iface.ip)
        if network is not None and not iface.network.subnet_of(network):
            c.fail(f"{source}: FLANNEL_SUBNET", f"{iface.network} is outside FLANNEL_NETWORK {network}")
    except ValueError:
        c.fail(f"{source}: FLANNEL_SUBNET", f"{values['FLANNEL_SUBNET']!r} is not an IPv4 address with a prefix "
               "such as 10.244.1.1/24")
    mtu = c.integer(f"{source}: FLANNEL_MTU", values["FLANNEL_MTU"], 68, MAX_MTU)
    ipmasq = values["FLANNEL_IPMASQ"]
    if ipmasq not in ("true", "false"):
        c.fail(f"{source}: FLANNEL_IPMASQ", f"{ipmasq!r} is not true or false")
    c.raise_if_any()
    known = (*SUBNET_ENV_KEYS, "FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET")
    return {"network": str(network), "subnet": subnet, "gateway": gateway, "mtu": mtu, "ipmasq": ipmasq == "true",
            "ipv6_network": values.get("FLANNEL_IPV6_NETWORK"), "ipv6_subnet": values.get("FLANNEL_IPV6_SUBNET"),
            "extra": {k: v for k, v in values.items() if k not in known}}


def _etcdctl_json(text, source):
    """The object `etcdctl ... -w json` prints; FlannelError when it is not that."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise FlannelError([(source, f"output is not JSON (etcdctl -w json prints one object): {text[:200]!r}")]) \
            from None
    if not isinstance(doc, dict) or "header" not in doc:
        raise FlannelError([(source, "output has no header; it is not etcdctl's -w json output")])
    return doc


def parse_etcdctl_get(text, key):
    """The value of key from `etcdctl get KEY -w json` (v3 API), or None when the key does not exist.

    Raises FlannelError when the output is not etcdctl's JSON, or holds another key or several.
    """
    source = f"etcdctl get {key}"
    doc = _etcdctl_json(text, source)
    kvs = doc.get("kvs") or []
    if not kvs:
        return None
    if not isinstance(kvs, list) or len(kvs) != 1 or not isinstance(kvs[0], dict):
        raise FlannelError([(source, f"returned {len(kvs) if isinstance(kvs, list) else kvs!r} entries, not one")])
    try:
        got = base64.b64decode(kvs[0].get("key", ""), validate=True).decode("utf-8")
        value = base64.b64decode(kvs[0].get("value", ""), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, TypeError) as exc:
        raise FlannelError([(source, f"key or value is not base64 UTF-8 text: {exc}")]) from None
    if got != key:
        raise FlannelError([(source, f"returned key {got!r}, not {key!r}")])
    return value


def render_subnet_env(network, gateway_cidr, mtu, ipmasq=True):
    """/run/flannel/subnet.env as flanneld writes it (gateway_cidr: cni0's address, 10.244.1.1/24)."""
    return (f"FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={gateway_cidr}\nFLANNEL_MTU={mtu}\n"
            f"FLANNEL_IPMASQ={'true' if ipmasq else 'false'}\n")


MASQ_CHAIN = "FLANNEL-POSTRTG"
MASQ_COMMENT = '-m comment --comment "flanneld masq"'
MASQ_JUMP = f"-A POSTROUTING {MASQ_COMMENT} -j {MASQ_CHAIN}"


def masquerade_rules(network, subnet):
    """flanneld's (v0.15+) nat rules in FLANNEL-POSTRTG for the pod network and the node's subnet:
    pod to pod is not translated, pod to outside is masqueraded (multicast excepted), and traffic from
    outside the pod network to another node's pods is masqueraded so that replies come back here."""
    c = MASQ_COMMENT
    return [f"-A {MASQ_CHAIN} -s {network} -d {network} {c} -j RETURN",
            f"-A {MASQ_CHAIN} -s {network} ! -d 224.0.0.0/4 {c} -j MASQUERADE --random-fully",
            f"-A {MASQ_CHAIN} ! -s {network} -d {subnet} {c} -j RETURN",
            f"-A {MASQ_CHAIN} ! -s {network} -d {network} {c} -j MASQUERADE --random-fully"]


def parse_etcd_leases(text, prefix=ETCD_PREFIX):
    """flannel's subnet leases from `etcdctl get --prefix <prefix>/subnets/ -w json`:
    [{subnet, public_ip, backend, vtep_mac, vni}] sorted by subnet. Raises FlannelError naming the key."""
    source = f"etcdctl get --prefix {prefix}/subnets/"
    doc = _etcdctl_json(text, source)
    leases, problems = [], []
    for kv in doc.get("kvs") or []:
        try:
            key = base64.b64decode(kv.get("key", ""), validate=True).decode("utf-8")
            value = json.loads(base64.b64decode(kv.get("value", ""), validate=True).decode("utf-8"))
        except (AttributeError, binascii.Error, UnicodeDecodeError, TypeError, ValueError) as exc:
            problems.append((source, f"an entry is not a base64 key and JSON value: {exc}"))
            continue
        name = key.rsplit("/", 1)[-1]
        try:
            if name.count("-") != 1:
                raise ValueError(name)
            subnet = str(ipaddress.ip_network(name.replace("-", "/"), strict=True))
        except ValueError:
            problems.append((key, "is not a lease key <prefix>/subnets/<network>-<prefixlen>"))
            continue
        if not isinstance(value, dict) or not isinstance(value.get("PublicIP"), str):
            problems.append((key, "has no PublicIP; a flannel lease is {\"PublicIP\": ..., \"BackendType\": ...}"))
            continue
        data = value.get("BackendData") or {}
        leases.append({"subnet": subnet, "public_ip": value["PublicIP"], "backend": value.get("BackendType"),
                       "vtep_mac": data.get("VtepMAC") if isinstance(data, dict) else None,
                       "vni": data.get("VNI") if isinstance(data, dict) else None})
    if problems:
        raise FlannelError(problems)
    return sorted(leases, key=lambda lease: ipaddress.ip_network(lease["subnet"]))


def etcdctl_argv(binary, endpoints, timeout=5, ca_file=None, cert_file=None, key_file=None):  # noqa: PLR0913, PLR0917
    """The etcdctl (v3) command line before the subcommand: endpoints, timeouts and TLS files."""
    argv = [binary, f"--endpoints={','.join(endpoints)}", f"--dial-timeout={timeout}s",
            f"--command-timeout={timeout}s"]
    for flag, path in (("--cacert", ca_file), ("--cert", cert_file), ("--key", key_file)):
        if path:
            argv.append(f"{flag}={path}")
    return argv
