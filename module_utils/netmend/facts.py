"""Facts: what a node shows, each read with a command or from a path and turned into data by a pure parser.

Stdlib only; it runs on the node. `gather(host, want, checks)` reads exactly the facts the checks need
through a host adapter, and returns them as one dict (the checks' input, netmend.checks). A fact that
cannot be read, or whose output does not parse, is recorded in facts["errors"] with the command and the
line; the checks that need it are skipped with that reason and every other check still runs.

The host adapter (the Ansible module, the pyinfra deploy's node runner, the lab and the tests):

    host.run(argv) -> (rc, stdout, stderr)      argv[0] a tool's path (from host.tool)
    host.tool(name) -> a path, or None
    host.read(path) -> text, or None when it does not exist
    host.dns_answers(servers, timeout) -> {server: bool}
    `LocalHost` below does all of it but `run` and `tool` with the standard library.
"""

import os
from concurrent.futures import ThreadPoolExecutor

from . import firewalld, iproute, kmod, resolvconf
from .conntrack import parse_conntrack
from .errors import ProblemsError
from .flannel import SUBNET_ENV_PATH
from .iptables import IptablesSaveError, parse_save
from .proxymode import StateError, read_snapshot
from .sysctl import CONF_SUFFIX, ETC_SYSCTL_CONF, SYSCTL_DIRS, proc_path

IPTABLES_CHECKS = ("forward", "masquerade", "kube-proxy", "kube-proxy-chains", "kube-proxy-mode")
DNS_CHECKS = ("node-dns", "pod-dns", "coredns")
# The facts `ip` and `bridge` print as JSON, and their parsers (netmend.iproute).
LINK_FACTS = (("links", ("ip", "-j", "-d", "link", "show"), iproute.parse_links),
              ("addrs", ("ip", "-j", "addr", "show"), iproute.parse_addrs),
              ("routes", ("ip", "-j", "route", "show"), iproute.parse_routes),
              ("neighs", ("ip", "-j", "neigh", "show"), iproute.parse_neighs),
              ("fdb", ("bridge", "-j", "fdb", "show"), iproute.parse_fdb))
READ_ERRORS = (ProblemsError, IptablesSaveError, StateError, ValueError)


class FactError(Exception):
    """A fact could not be read; the message names the command or path and, for bad output, the line."""


class LocalHost:
    """The files, directories and DNS probes of the machine this runs on; `run` and `tool` come from the
    front end (Ansible's run_command and get_bin_path, or subprocess)."""

    def read(self, path):
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def isdir(self, path):
        return os.path.isdir(path)

    def listdir(self, path):
        return sorted(os.listdir(path))

    def isfile(self, path):
        return os.path.isfile(path)

    def link_target(self, path):
        return os.path.realpath(path) if os.path.islink(path) else None

    def dns_answers(self, servers, timeout):
        if not servers:
            return {}
        with ThreadPoolExecutor(max_workers=len(servers)) as pool:
            answers = list(pool.map(lambda s: resolvconf.nameserver_answers(s, timeout=timeout), servers))
        return dict(zip(servers, answers))


def _command(host, argv):
    """Run a tool; its stdout, or FactError naming the command."""
    binary = host.tool(argv[0])
    shown = " ".join(argv)
    if not binary:
        raise FactError(f"{argv[0]} is not installed")
    rc, out, err = host.run([binary, *argv[1:]])
    if rc != 0:
        raise FactError(f"`{shown}` failed (rc {rc}): {(err or out).strip()[:200]}")
    return out


def _fact(facts, name, read, source):
    """facts[name] = read(), or the reason in facts["errors"][name], naming the command (`source`) and,
    for output netmend cannot read, the parser's line."""
    try:
        facts[name] = read()
    except FactError as exc:
        facts["errors"][name] = str(exc)
    except OSError as exc:
        facts["errors"][name] = f"cannot read {source}: {exc}"
    except READ_ERRORS as exc:
        facts["errors"][name] = f"`{source}` printed what netmend cannot read: {exc}"


def sysctl_files(host, scan=(*SYSCTL_DIRS, ETC_SYSCTL_CONF), own=None):
    """{path: text} of every sysctl.d file and /etc/sysctl.conf, as systemd-sysctl reads them (`scan`: the
    directories and files, highest precedence first; a scanned file is a key of the result), and netmend's
    own file `own` wherever it is (the check finds out whether a boot reads it)."""
    files = {}
    for entry in scan:
        if host.isdir(entry):
            for name in host.listdir(entry):
                path = os.path.join(entry, name)
                if name.endswith(CONF_SUFFIX) and not name.startswith(".") and host.isfile(path):
                    files[path] = host.read(path)
        elif host.isfile(entry):
            files[entry] = host.read(entry)
    if own and own not in files and host.isfile(own):
        files[own] = host.read(own)
    return files


def wanted_modules(want):
    """The kernel modules the want lists (its modules-load.d text), in order."""
    return kmod.parse_modules_load(want["modules_text"], "want.modules_text") if want.get("modules_text") else []


def gather(host, want, checks):
    """Every fact the named checks read, in one pass over the node."""
    facts = {"errors": {}}
    if "kernel" in checks:
        _fact(facts, "proc", lambda: {key: _stripped(host.read(proc_path(key))) for key in (want.get("sysctls") or {})},
              "/proc/sys")
        facts["bridge_nf_present"] = host.isdir("/proc/sys/net/bridge")
        scan = want.get("sysctl_scan") or (*SYSCTL_DIRS, ETC_SYSCTL_CONF)
        _fact(facts, "sysctl_files", lambda: sysctl_files(host, scan, want.get("sysctl_file")), "the sysctl.d files")
        _fact(facts, "modules_file", lambda: host.read(want["modules_file"]) if want.get("modules_file") else None,
              want.get("modules_file"))
        probe = kmod.HostProbe(host)
        _fact(facts, "modules", lambda: {name: kmod.status(name, probe) for name in wanted_modules(want)},
              kmod.PROC_MODULES)
    if any(c in checks for c in IPTABLES_CHECKS):
        _fact(facts, "iptables", lambda: parse_save(_command(host, ["iptables-save"])), "iptables-save")
    if "firewall" in checks and (want.get("firewall") or {}).get("mode", "unmanaged") != "unmanaged":
        _fact(facts, "firewalld", lambda: read_firewalld(host, want["firewall"]), "firewall-cmd --list-all-zones")
    if "flannel" in checks:
        _fact(facts, "links", lambda: _links(host, facts), "ip -j")
        facts["subnet_env"] = host.read(SUBNET_ENV_PATH)
    if any(c in checks for c in DNS_CHECKS):
        try:
            _dns(host, want, checks, facts)
        except OSError as exc:  # a resolv.conf or Corefile that cannot be read: the DNS checks say why
            for name in ("resolv", "corefile", "pod_resolv"):
                facts["errors"][name] = f"cannot read the DNS files: {exc}"
    if "conntrack" in checks:
        _fact(facts, "conntrack", lambda: read_conntrack(host, want["cluster_dns"]), "conntrack -L")
    if "kube-proxy-mode" in checks and (want.get("kube_proxy") or {}).get("mode"):
        if "iptables" in facts["errors"]:
            facts["errors"]["proxy"] = "iptables: " + facts["errors"]["iptables"]
        else:
            _fact(facts, "proxy", lambda: read_snapshot(host.run, host.tool, facts.get("iptables"), host.read),
                  "kube-proxy's state (ip6tables-save, nft, ipset, ip, /proc/net/ip_vs)")
    return facts


def _stripped(text):
    return text.strip() if text is not None else None


def _links(host, facts):
    for name, argv, parse in LINK_FACTS:
        facts[name] = parse(_command(host, list(argv)))
    return facts["links"]


def read_firewalld(host, fw):
    """None when firewalld is not installed; {"running": False}; or the default zone and every zone. With
    firewall_mode configured, also every zone of the permanent configuration (what firewalld loads at the
    next reload or start) and netmend's record of what it added (`state_file`)."""
    if not host.tool("firewall-cmd"):
        return None
    rc, _out, _err = host.run([host.tool("firewall-cmd"), "--state"])
    if rc != 0:
        return {"running": False}
    default = _command(host, ["firewall-cmd", "--get-default-zone"]).strip()
    zones = firewalld.parse_zones(_command(host, ["firewall-cmd", "--list-all-zones"]))
    state = {"running": True, "default_zone": default, "zones": zones}
    if fw.get("mode") == "configured":
        try:
            permanent = firewalld.parse_zones(_command(host, ["firewall-cmd", "--permanent", "--list-all-zones"]))
        except firewalld.FirewalldError as exc:
            raise FactError(f"`firewall-cmd --permanent --list-all-zones` printed what netmend cannot read: {exc}") \
                from None
        path = fw.get("state_file") or firewalld.STATE_FILE
        try:
            owned = firewalld.load_owned(host.read(path), path)
        except firewalld.FirewalldError as exc:
            raise FactError(str(exc)) from None
        state.update(permanent=permanent, owned=owned)
    return state


def read_conntrack(host, cluster_dns):
    argv = ["conntrack", "-L", "-p", "udp", "--orig-dst", cluster_dns]
    binary = host.tool("conntrack")
    if not binary:
        raise FactError("conntrack (conntrack-tools) is not installed")
    rc, out, err = host.run([binary, *argv[1:]])
    if rc != 0:
        raise FactError(f"conntrack -L failed: {(err or out).strip()}")
    return parse_conntrack(out, err)


def _dns(host, want, checks, facts):
    dns = want.get("dns") or {}
    text = host.read(resolvconf.ETC_RESOLV_CONF)
    facts["resolv"] = {"text": text, "link": host.link_target(resolvconf.ETC_RESOLV_CONF)}
    facts["alive"] = {}
    if "node-dns" in checks and text is not None:
        try:
            servers = [ns.address for ns in resolvconf.parse(text, resolvconf.ETC_RESOLV_CONF).nameservers]
        except resolvconf.ResolvConfError:
            servers = []  # the node-dns check reports the unreadable file itself
        facts["alive"] = host.dns_answers(servers, float(dns.get("probe_timeout", 1.0)))
    if "node-dns" in checks and dns.get("kubelet"):
        facts["kubelet"] = {path: host.read(path) for path in resolvconf.kubelet_paths(dns["kubelet"])}
    if "coredns" in checks and dns.get("corefile_path"):
        facts["corefile"] = host.read(dns["corefile_path"])
        resolved = host.read(resolvconf.RESOLVED_RESOLV_CONF)
        facts["corefile_resolv"] = {k: v for k, v in ((resolvconf.ETC_RESOLV_CONF, text),
                                                      (resolvconf.RESOLVED_RESOLV_CONF, resolved)) if v is not None}
    if "pod-dns" in checks:
        facts["pod_resolv"] = {pod["path"]: host.read(pod["path"]) for pod in dns.get("pods") or []}
