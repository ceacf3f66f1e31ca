"""resolv.conf(5) and the kubelet's DNS settings: parse, render, and pick the file pods are given.

Pure and stdlib-only: imported by the netmend_dns module (as ansible.module_utils.netmend.resolvconf),
by the lab and the audit, and by the unit tests (as netmend.resolvconf). Everything here works on
text and data; reading files and /proc is the caller's business.

The format is the one glibc's resolver reads: one keyword per line at the start of the line
(`nameserver`, `domain`, `search`, `sortlist`, `options`), comment lines starting with `#` or `;`.
The resolver silently ignores what it does not understand; netmend reports it instead, with the
line number, because a line the resolver skips is almost never what its author meant.

Why the choice of file matters (seed 000 section 5.1.4, FIELD-GUIDE failure mode 6): the kubelet
copies its `resolvConf` into every pod with `dnsPolicy: Default`, CoreDNS included, and CoreDNS's
`forward . /etc/resolv.conf` sends every non-cluster name to the nameservers in that copy. A
loopback nameserver there (systemd-resolved's stub 127.0.0.53) is, inside the CoreDNS pod, CoreDNS
itself: the query comes back, the `loop` plugin sees it and halts CoreDNS (CrashLoopBackOff).
"""

import ipaddress
import itertools
import os
import posixpath
import re
import socket
import struct
import time
from dataclasses import dataclass, field

from .errors import ProblemsError

ETC_RESOLV_CONF = "/etc/resolv.conf"
# systemd-resolved's file with the uplink servers; /etc/resolv.conf is usually its stub file.
RESOLVED_RESOLV_CONF = "/run/systemd/resolve/resolv.conf"
RESOLVED_STUB_RESOLV_CONF = "/run/systemd/resolve/stub-resolv.conf"
KEYWORDS = ("nameserver", "domain", "search", "sortlist", "options")
COMMENT_CHARS = "#;"
# glibc's caps (resolv/resolv.h): larger values are clamped, not rejected.
MAX_NDOTS = 15
MAX_TIMEOUT = 30
MAX_ATTEMPTS = 5
NUMERIC_OPTIONS = {"ndots": MAX_NDOTS, "timeout": MAX_TIMEOUT, "attempts": MAX_ATTEMPTS}
DEFAULT_NDOTS = 1  # the resolver's default without an ndots option
# The kubelet writes `options ndots:5` into every ClusterFirst pod and has no setting to change it;
# a pod's spec.dnsConfig.options can.
KUBELET_NDOTS = 5
# glibc uses the first three nameserver lines (MAXNS); CoreDNS's forward reads them all.
MAXNS = 3
DNS_PORT = 53

KUBELET_API_VERSION = "kubelet.config.k8s.io/v1beta1"
KUBELET_DROPIN_DIR = "/etc/kubernetes/kubelet.conf.d"
KUBELET_DROPIN = KUBELET_DROPIN_DIR + "/50-netmend-dns.conf"
KUBELET_HEADER = ("Managed by netmend (roles/dns): the kubelet's cluster DNS, cluster domain and the",
                  "resolv.conf it gives pods. Local edits are overwritten; set dns_* variables instead.")

MAX_NAME = 253  # characters in a domain name without its trailing dot
LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


class ResolvConfError(ValueError):
    """A bad line of a resolv.conf: `source`, `line` (1-based) and `reason`."""

    def __init__(self, source, line, reason):
        self.source, self.line, self.reason = source, line, reason
        super().__init__(f"{source}, line {line}: {reason}")


class ResolvChoiceError(ProblemsError):
    """No usable resolv.conf for the kubelet. `problems` is a list of (field, message)."""


@dataclass(frozen=True)
class Nameserver:
    address: str
    line: int

    @property
    def local(self):
        return is_local(self.address)


@dataclass
class ResolvConf:
    """A parsed resolv.conf. `search` is the effective list: the last `search` or `domain` line wins."""

    source: str = "resolv.conf"
    nameservers: list = field(default_factory=list)  # of Nameserver, in file order
    search: list = field(default_factory=list)
    domain: str = ""
    sortlist: list = field(default_factory=list)
    options: list = field(default_factory=list)  # the option words as written, in order

    @property
    def addresses(self):
        return [ns.address for ns in self.nameservers]

    @property
    def local_addresses(self):
        """Nameservers that are this host (loopback or unspecified): a loop when CoreDNS forwards to them."""
        return [ns.address for ns in self.nameservers if ns.local]

    @property
    def upstream_addresses(self):
        return [ns.address for ns in self.nameservers if not ns.local]

    @property
    def search_domains(self):
        """The search list as the kubelet takes it from the host: without systemd-resolved's `.`
        (the root, meaning "no search domain") and without trailing dots."""
        return [d.rstrip(".") for d in self.search if d.rstrip(".")]

    def option(self, name):
        """The last value of a numeric option (clamped like glibc), or None when it is absent."""
        value = None
        for word in self.options:
            key, sep, raw = word.partition(":")
            if key == name and sep:
                value = min(int(raw), NUMERIC_OPTIONS.get(name, int(raw)))
        return value

    @property
    def ndots(self):
        found = self.option("ndots")
        return DEFAULT_NDOTS if found is None else found

    def as_dict(self):
        return {"nameservers": self.addresses, "search": list(self.search), "domain": self.domain,
                "sortlist": list(self.sortlist), "options": list(self.options), "ndots": self.ndots}


def is_local(address):
    """True for addresses that are this host: 127.0.0.0/8, ::1 and the unspecified 0.0.0.0 and ::."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return ip.is_loopback or ip.is_unspecified


def _address(text):
    """The nameserver address in canonical form, or None when it is not an IP address."""
    addr, _, scope = text.partition("%")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    if scope:
        if not isinstance(ip, ipaddress.IPv6Address) or not re.match(r"^[A-Za-z0-9_.-]+$", scope):
            return None
        return f"{ip}%{scope}"
    return str(ip)


def _rest(words, number, source, what):
    """Words after the arguments must be a trailing comment (glibc ignores them)."""
    if words and words[0][0] not in COMMENT_CHARS:
        raise ResolvConfError(source, number, f"unexpected {' '.join(words)!r} after {what}; "
                              "a trailing comment must start with # or ;")


def _option(word, number, source):
    key, sep, raw = word.partition(":")
    if key in NUMERIC_OPTIONS:
        if not sep or not raw.isdigit():
            raise ResolvConfError(source, number, f"option {word!r}: {key} takes a non-negative integer, "
                                  f"such as {key}:{KUBELET_NDOTS if key == 'ndots' else 2}")
    elif not key or (sep and not raw):
        raise ResolvConfError(source, number, f"option {word!r} is malformed; options are words such as "
                              "ndots:5, timeout:2, attempts:2, rotate, edns0, trust-ad, single-request")


def _option_ok(word):
    if not isinstance(word, str) or not word or any(c.isspace() for c in word) or word[0] in COMMENT_CHARS:
        return False
    try:
        _option(word, 0, "options")
    except ResolvConfError:
        return False
    return True


def parse(text, source="resolv.conf"):
    """Parse resolv.conf text; raises ResolvConfError naming the line for anything malformed.

    Empty text is valid (the resolver then asks 127.0.0.1); callers decide whether that is usable.
    """
    if not isinstance(text, str):
        raise ResolvConfError(source, 0, "is not text")
    conf = ResolvConf(source=source)
    for number, raw in enumerate(text.splitlines(), 1):
        _parse_line(conf, raw, number, source)
    return conf


def _nameserver(words, number, source):
    if not words or words[0][0] in COMMENT_CHARS:
        raise ResolvConfError(source, number, "nameserver without an address")
    address = _address(words[0])
    if address is None:
        raise ResolvConfError(source, number, f"nameserver {words[0]!r} is not an IPv4 or IPv6 address "
                              "(names and ports are not accepted)")
    _rest(words[1:], number, source, "the address")
    return Nameserver(address, number)


def _parse_line(conf, raw, number, source):
    if "\0" in raw:
        raise ResolvConfError(source, number, "contains a NUL byte; this is not a resolv.conf")
    line = raw.rstrip()
    if not line or line.lstrip()[0] in COMMENT_CHARS:
        return
    if line[0].isspace():
        raise ResolvConfError(source, number, f"{line.strip()!r} starts with whitespace; the resolver only "
                              "reads keywords at the start of a line, so it ignores this line")
    keyword, *words = line.split()
    if keyword not in KEYWORDS:
        raise ResolvConfError(source, number, f"unknown keyword {keyword!r}; accepted: {', '.join(KEYWORDS)} "
                              "and comment lines starting with # or ;")
    if keyword == "nameserver":
        conf.nameservers.append(_nameserver(words, number, source))
        return
    args = list(itertools.takewhile(lambda word: word[0] not in COMMENT_CHARS, words))
    if not args:
        raise ResolvConfError(source, number, f"{keyword} without a value")
    if keyword == "domain":
        _rest(words[1:], number, source, "the domain")
        conf.domain, conf.search = args[0], [args[0]]
    elif keyword == "search":
        conf.search = args
    elif keyword == "sortlist":
        conf.sortlist = args
    else:
        for word in args:
            _option(word, number, source)
        conf.options.extend(args)


def render(nameservers=(), search=(), options=(), header=()):
    """resolv.conf text in the kubelet's order: nameserver lines, the search line, the options line."""
    lines = [f"# {h}" if h else "#" for h in header]
    problems = []
    for i, ns in enumerate(nameservers):
        if not isinstance(ns, str) or _address(ns) is None:
            problems.append((f"nameservers[{i}]", f"{ns!r} is not an IPv4 or IPv6 address"))
        else:
            lines.append(f"nameserver {_address(ns)}")
    for i, name in enumerate(search):
        if not _domain_ok(name, allow_root=True):
            problems.append((f"search[{i}]", f"{name!r} is not a DNS domain such as svc.cluster.local"))
    for i, word in enumerate(options):
        if not _option_ok(word):
            problems.append((f"options[{i}]", f"{word!r} is not a resolver option such as ndots:5 or edns0"))
    if problems:
        raise ProblemsError(problems)
    if search:
        lines.append("search " + " ".join(search))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n" if lines else ""


def _domain_ok(name, allow_root=False):
    if not isinstance(name, str) or not name:
        return False
    if name == ".":
        return allow_root
    stripped = name[:-1] if name.endswith(".") else name
    return len(stripped) <= MAX_NAME and all(LABEL.match(label) for label in stripped.split("."))


def check_domain(fieldname, name):
    """[(field, message)] when name is not a DNS domain such as cluster.local."""
    if not _domain_ok(name) or name.endswith("."):
        return [(fieldname, f"{name!r} is not a DNS domain such as cluster.local (labels of letters, digits "
                            "and inner dashes, separated by dots, no trailing dot)")]
    return []


def check_addresses(fieldname, values):
    """[(field, message)] for values that are not a non-empty list of IP addresses."""
    if not isinstance(values, (list, tuple)) or not values:
        return [(fieldname, "must be a non-empty list of IP addresses, such as [10.96.0.10]")]
    problems = []
    for i, value in enumerate(values):
        if not isinstance(value, str) or _address(value) is None or "%" in value:
            problems.append((f"{fieldname}[{i}]", f"{value!r} is not an IPv4 or IPv6 address"))
    return problems


def check_in_service_cidr(fieldname, servers, service_cidr):
    """[(field, message)] for cluster DNS addresses outside the service CIDR ("10.96.0.0/12", or an IPv4
    and an IPv6 CIDR separated by a comma); an empty service_cidr checks nothing."""
    if not service_cidr:
        return []
    try:
        nets = [ipaddress.ip_network(c.strip(), strict=True) for c in str(service_cidr).split(",")]
    except ValueError:
        return [("service_cidr", f"{service_cidr!r} is not a CIDR such as 10.96.0.0/12 (or an IPv4 and an IPv6 "
                                 "CIDR separated by a comma)")]
    problems = []
    for i, server in enumerate(servers):
        address = _address(server) if isinstance(server, str) else None
        if address is None or "%" in address:
            continue  # reported by check_addresses
        ip = ipaddress.ip_address(address)
        if not any(ip.version == net.version and ip in net for net in nets):
            problems.append((f"{fieldname}[{i}]", f"{ip} is outside the service CIDR {service_cidr}: the kube-dns "
                                                  "ClusterIP is an address of the Service network"))
    return problems


# What pods get.


def pod_search(namespace, domain, host_search=()):
    """The search list the kubelet gives a ClusterFirst pod: <ns>.svc.<domain>, svc.<domain>, <domain>,
    then the host's search domains (systemd-resolved's `.` and trailing dots dropped), duplicates removed."""
    names = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain]
    names += [d.rstrip(".") for d in host_search if d.rstrip(".")]
    return list(dict.fromkeys(names))


def pod_resolv_conf(cluster_dns, namespace, domain, host_search=(), ndots=KUBELET_NDOTS):
    """The /etc/resolv.conf of a pod with dnsPolicy ClusterFirst (or a hostNetwork pod with
    ClusterFirstWithHostNet): the cluster DNS, the cluster search list plus the host's, `options ndots:N`.

    ndots other than 5 is what a pod gets with spec.dnsConfig.options [{name: ndots, value: "N"}].
    Seed 000 section 3: (10.96.0.10, default, cluster.local, [hz.ali.com]) gives its pod's file.
    """
    servers = [cluster_dns] if isinstance(cluster_dns, str) else list(cluster_dns)
    problems = check_addresses("cluster_dns", servers) + check_domain("domain", domain)
    if not isinstance(namespace, str) or not LABEL.match(namespace) or namespace != namespace.lower():
        problems.append(("namespace", f"{namespace!r} is not a Kubernetes namespace name"))
    if isinstance(ndots, bool) or not isinstance(ndots, int) or not 0 <= ndots <= MAX_NDOTS:
        problems.append(("ndots", f"{ndots!r} is not accepted; an integer 0-{MAX_NDOTS}"))
    if isinstance(host_search, str):
        problems.append(("host_search", "must be a list of domains, not a string"))
    if problems:
        raise ProblemsError(problems)
    return render(servers, pod_search(namespace, domain, host_search), [f"ndots:{ndots}"])


# The kubelet's resolvConf.


@dataclass(frozen=True)
class Choice:
    """The resolv.conf the kubelet should use, why, and its parsed content."""

    path: str
    reason: str
    conf: ResolvConf


def _usable(conf):
    """Why a resolv.conf cannot feed CoreDNS, or "" when it can."""
    if not conf.nameservers:
        return "lists no nameserver (the resolver would then ask 127.0.0.1)"
    if conf.local_addresses:
        stub = " (systemd-resolved's stub)" if any(a.startswith("127.0.0.5") for a in conf.local_addresses) else ""
        return f"lists loopback nameservers {', '.join(conf.local_addresses)}{stub}"
    return ""


LOOP_WHY = ("the kubelet copies its resolvConf into the CoreDNS pod, where a loopback nameserver is CoreDNS "
            "itself: `forward . /etc/resolv.conf` would loop and the loop plugin halts CoreDNS")


def choose_resolv_conf(etc_text, resolved_text, etc_path=ETC_RESOLV_CONF, resolved_path=RESOLVED_RESOLV_CONF):
    """Pick the kubelet's resolvConf ("auto"): etc_path when every nameserver in it is an upstream;
    else resolved_path (systemd-resolved's list of uplink servers) when it has upstreams and no
    loopback; else raise ResolvChoiceError. A text of None means the file does not exist.
    Malformed files raise ResolvConfError."""
    etc = parse(etc_text, etc_path) if etc_text is not None else None
    etc_why = "does not exist (the resolver would then ask 127.0.0.1)" if etc is None else _usable(etc)
    if not etc_why:
        return Choice(etc_path, f"{etc_path} lists upstream nameservers {', '.join(etc.addresses)}", etc)
    if resolved_text is None:
        resolved_why = "does not exist (systemd-resolved is not running)"
        resolved = None
    else:
        resolved = parse(resolved_text, resolved_path)
        resolved_why = _usable(resolved)
    if not resolved_why:
        return Choice(resolved_path, f"{etc_path} {etc_why}; {resolved_path} lists the upstream nameservers "
                      f"{', '.join(resolved.addresses)}", resolved)
    raise ResolvChoiceError([("resolv_conf", f"no resolv.conf without loopback nameservers: {etc_path} {etc_why} "
                              f"and {resolved_path} {resolved_why}; {LOOP_WHY}. Give the node a resolv.conf that "
                              "lists the upstream DNS servers and set dns_kubelet_resolv_conf to its path")])


def check_resolv_conf(path, text):
    """An operator-chosen resolvConf: it must exist and list only upstream nameservers."""
    if text is None:
        raise ResolvChoiceError([("resolv_conf", f"{path} does not exist; set dns_kubelet_resolv_conf to auto "
                                  "or to an existing resolv.conf that lists the upstream DNS servers")])
    conf = parse(text, path)
    why = _usable(conf)
    if why:
        raise ResolvChoiceError([("resolv_conf", f"{path} {why}; {LOOP_WHY}. Set dns_kubelet_resolv_conf to a "
                                  "resolv.conf that lists the upstream DNS servers")])
    return Choice(path, f"{path} was chosen (dns_kubelet_resolv_conf) and lists upstream nameservers "
                  f"{', '.join(conf.addresses)}", conf)


def kubelet_dns_settings(cluster_dns, cluster_domain, resolv_conf):
    """The KubeletConfiguration fields netmend owns, validated. Raises ProblemsError."""
    servers = list(cluster_dns) if isinstance(cluster_dns, (list, tuple)) else cluster_dns
    problems = check_addresses("cluster_dns", servers) + check_domain("cluster_domain", cluster_domain)
    if not isinstance(resolv_conf, str) or not posixpath.isabs(resolv_conf):
        problems.append(("resolv_conf", f"{resolv_conf!r} is not an absolute path"))
    if problems:
        raise ProblemsError(problems)
    return {"clusterDNS": [_address(s) for s in servers], "clusterDomain": cluster_domain,
            "resolvConf": resolv_conf}


def _yaml_str(value):
    # JSON string syntax is valid YAML and quotes everything that needs it.
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_kubelet_config(settings, header=KUBELET_HEADER):
    """A KubeletConfiguration document with the fields of kubelet_dns_settings: a drop-in for the
    kubelet's --config-dir (merged over its main config; lists replace lists) or a kubeadm fragment."""
    lines = [f"# {h}" for h in header]
    lines += [f"apiVersion: {KUBELET_API_VERSION}", "kind: KubeletConfiguration", "clusterDNS:"]
    lines += [f"  - {_yaml_str(s)}" for s in settings["clusterDNS"]]
    lines += [f"clusterDomain: {_yaml_str(settings['clusterDomain'])}",
              f"resolvConf: {_yaml_str(settings['resolvConf'])}"]
    return "\n".join(lines) + "\n"


def _kubelet_sources(kubelet):
    """The resolv.conf files the kubelet's resolvConf is chosen from (want.dns.kubelet)."""
    if kubelet.get("resolv_conf", "auto") != "auto":
        return [kubelet["resolv_conf"]]
    return [kubelet.get("host_resolv_conf") or ETC_RESOLV_CONF,
            kubelet.get("resolved_resolv_conf") or RESOLVED_RESOLV_CONF]


def kubelet_paths(kubelet):
    """Every file the kubelet's DNS settings are judged from: the drop-in (and the kubeadm fragment)
    netmend writes, then the resolv.conf files the resolvConf is chosen from."""
    paths = [kubelet["path"], *([kubelet["kubeadm_path"]] if kubelet.get("kubeadm_path") else [])]
    return list(dict.fromkeys(paths + _kubelet_sources(kubelet)))


def kubelet_choice(kubelet, files):
    """The Choice of the kubelet's resolvConf for want.dns.kubelet ("auto" or a path), from {path: text or
    None} (kubelet_paths' files). Raises ResolvChoiceError or ResolvConfError."""
    sources = _kubelet_sources(kubelet)
    if kubelet.get("resolv_conf", "auto") == "auto":
        return choose_resolv_conf(files.get(sources[0]), files.get(sources[1]), *sources)
    return check_resolv_conf(sources[0], files.get(sources[0]))


def kubelet_config_dir(argv):
    """The --config-dir of a kubelet command line (argv list), "" when it has none, None when argv
    is not a kubelet's."""
    if not argv or posixpath.basename(argv[0]) != "kubelet":
        return None
    found = ""
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith("--config-dir="):
            found = arg.split("=", 1)[1]
        elif arg == "--config-dir" and i + 1 < len(argv):
            found = argv[i + 1]
    return posixpath.normpath(found) if found else ""


def systemd_unit(cgroup_text):
    """The systemd service a process runs in, from its /proc/PID/cgroup ("" when none): the last
    component of the systemd hierarchy's path (cgroup v2 `0::/system.slice/kubelet.service`, v1
    `1:name=systemd:/system.slice/kubelet.service`) when it ends in .service."""
    for line in cgroup_text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, sep, path = rest.partition(":")
        if sep and ((hierarchy == "0" and not controllers) or controllers == "name=systemd"):
            last = path.rstrip("/").rsplit("/", 1)[-1]
            if last.endswith(".service"):
                return last
    return ""


def nameserver_answers(address, port=DNS_PORT, timeout=1.0, attempts=2):
    """Whether a DNS server answers at all: a query for the root's NS records, any well-formed reply
    with our ID counts (REFUSED and SERVFAIL too: the server is there). False after `attempts` timeouts."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    for _ in range(attempts):
        qid = int.from_bytes(os.urandom(2), "big")
        query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + b"\x00" + struct.pack(">HH", 2, 1)
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect((address, port))  # connected: an ICMP port unreachable fails fast
                sock.send(query)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    data = sock.recv(4096)
                    if len(data) >= 12 and struct.unpack(">H", data[:2])[0] == qid and data[2] & 0x80:  # noqa: PLR2004
                        return True
            except ConnectionRefusedError:  # nothing listens there: no server, no need to ask again
                return False
            except OSError:  # timeout, unreachable
                continue
    return False
