"""kube-proxy's iptables naming, computed exactly as kube-proxy does (pkg/proxy/iptables/proxier.go).

Stdlib only: used by the audit, the roles and the lab, which emulates kube-proxy.
"""

import base64
import hashlib
import ipaddress
import re

# The statistic match keeps the probability as a 31-bit fixed-point number (libxt_statistic:
# lround(0x80000000 * p)) and iptables-save prints it back with "%.11f".
_STATISTIC_SCALE = 0x80000000


def service_port_name(namespace, name, port_name):
    """"namespace/name:portname", as kube-proxy names a service port (the port name may be empty)."""
    return f"{namespace}/{name}:{port_name}"


def _hash16(text):
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def port_proto_hash(spn, protocol):
    """base32(sha256(service port name + lower-case protocol))[:16]."""
    return _hash16(spn + protocol.lower())


def service_chain(namespace, name, port_name, protocol):
    """KUBE-SVC-<hash>: the load-balancing chain of one service port."""
    return "KUBE-SVC-" + port_proto_hash(service_port_name(namespace, name, port_name), protocol)


def local_chain(namespace, name, port_name, protocol):
    """KUBE-SVL-<hash>: the chain of a service port's node-local endpoints (externalTrafficPolicy: Local), the
    same hash as its KUBE-SVC chain (servicePortPolicyLocalChainName)."""
    return "KUBE-SVL-" + port_proto_hash(service_port_name(namespace, name, port_name), protocol)


def endpoint_chain(namespace, name, port_name, protocol, endpoint):
    """KUBE-SEP-<hash>: the DNAT chain of one endpoint; endpoint is "ip:port"."""
    return "KUBE-SEP-" + _hash16(service_port_name(namespace, name, port_name) + protocol.lower() + endpoint)


def written_probability(remaining):
    """The --probability argument kube-proxy passes when `remaining` endpoints are left (computeProbability)."""
    return "%0.10f" % (1.0 / remaining)


def probability(i, n):
    """The --probability of the i-th (0-based) of n endpoints as iptables-save prints it, or None for the
    last endpoint, which kube-proxy jumps to without a statistic match.

    kube-proxy writes "%0.10f" of 1/(n-i); the kernel keeps round(p * 2**31), so 1/3 comes back as
    0.33333333349 and 1/5 as 0.20000000019.
    """
    if not 0 <= i < n:
        raise ValueError(f"endpoint {i} is not one of {n}")
    if i == n - 1:
        return None
    fixed = int(_STATISTIC_SCALE * float(written_probability(n - i)) + 0.5)  # C lround, half away from zero
    return "%.11f" % (fixed / _STATISTIC_SCALE)


# What each kube-proxy mode creates on a node, and what `kube-proxy --cleanup` removes, as upstream
# names it (kubernetes/kubernetes pkg/proxy/{iptables,ipvs,nftables}/proxier.go, CleanupLeftovers).
# The same chains exist in the IPv4 and IPv6 tables.

# iptables mode: cleanupLeftoversForFamily flushes and deletes these chains (and the jumps into them
# from the built-in chains), plus every nat chain with a service chain prefix.
IPTABLES_MODE_CHAINS = {
    "filter": ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS",
               "KUBE-PROXY-FIREWALL", "KUBE-PROXY-CANARY"),
    "nat": ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", "KUBE-PROXY-CANARY"),
    "mangle": ("KUBE-PROXY-CANARY",),
}
# isServiceChainName: per-service and per-endpoint nat chains (KUBE-SVC-<hash> and friends).
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-SEP-", "KUBE-FW-", "KUBE-EXT-")
# ipvs mode: iptablesCleanupChains, the kube-ipvs0 dummy device, its ipsets and the ipvs virtual servers.
IPVS_MODE_CHAINS = {
    "filter": ("KUBE-FORWARD", "KUBE-NODE-PORT", "KUBE-PROXY-FIREWALL", "KUBE-SOURCE-RANGES-FIREWALL",
               "KUBE-IPVS-FILTER", "KUBE-IPVS-OUT-FILTER"),
    "nat": ("KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-NODE-PORT", "KUBE-LOAD-BALANCER", "KUBE-MARK-MASQ"),
}
IPVS_DUMMY_DEVICE = "kube-ipvs0"
IPVS_DEVICE_KIND = "dummy"  # DeleteDummyDevice refuses any other kind of link with that name
IPSET_PREFIX = "KUBE-"  # ipsetInfo: KUBE-CLUSTER-IP, KUBE-LOOP-BACK, ... and KUBE-6-* for IPv6
# nftables mode: one table per family, deleted whole.
NFTABLES_TABLE = "kube-proxy"
NFTABLES_FAMILIES = ("ip", "ip6")
# Chains kubelet creates (pkg/kubelet/kubelet_network_linux.go) that kube-proxy's cleanup leaves alone.
KUBELET_CHAINS = {
    "filter": ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY"),
    "nat": ("KUBE-MARK-DROP", "KUBE-KUBELET-CANARY"),
    "mangle": ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"),
}


def is_service_chain(chain):
    """Whether `chain` is one of kube-proxy's per-service or per-endpoint chains (iptables mode, nat)."""
    return chain.startswith(SERVICE_CHAIN_PREFIXES)


def mode_chains(mode, table, existing=()):
    """The chains of `table` that kube-proxy in `mode` owns, among `existing` for the prefixed ones."""
    if mode == "iptables":
        named = set(IPTABLES_MODE_CHAINS.get(table, ()))
        if table == "nat":
            named |= {chain for chain in existing if is_service_chain(chain)}
        return named
    if mode == "ipvs":
        return set(IPVS_MODE_CHAINS.get(table, ()))
    return set()


# kube-proxy's iptables-mode rule grammar: the lines it writes, as `iptables-save` prints them back.
# The audit parses and repairs with these; the lab's kube-proxy stand-in and its faults write with them.

MARK_MASQ = "0x4000"  # masqueradeBit 14, kube-proxy's default
MARK_DROP = "0x8000"
POSTROUTING_JUMP = '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING'
_DNAT = re.compile(r"(?:^|\s)--to-destination\s+(\S+)")
_STATISTIC = re.compile(r" -m statistic --mode random --probability \S+")


def masq_chain_rules():
    """{chain: rules} of KUBE-MARK-MASQ and KUBE-POSTROUTING as kube-proxy writes them (syncProxyRules):
    services mark packets that need SNAT, and POSTROUTING masquerades exactly the marked ones."""
    return {
        "KUBE-POSTROUTING": [
            f"-A KUBE-POSTROUTING -m mark ! --mark {MARK_MASQ}/{MARK_MASQ} -j RETURN",
            f"-A KUBE-POSTROUTING -j MARK --set-xmark {MARK_MASQ}/0x0",
            ('-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
             "-j MASQUERADE --random-fully"),
        ],
        "KUBE-MARK-MASQ": [f"-A KUBE-MARK-MASQ -j MARK --set-xmark {MARK_MASQ}/{MARK_MASQ}"],
    }


def statistic(i, n):
    """The statistic match of the i-th of n endpoint jumps ("" for the last one)."""
    p = probability(i, n)
    return f"-m statistic --mode random --probability {p} " if p else ""


def endpoint_rules(sep, endpoint, protocol):
    """A KUBE-SEP chain's rules: hairpin traffic from the endpoint itself is masqueraded, then DNAT."""
    proto = protocol.lower()
    return [f"-A {sep} -s {endpoint.rpartition(':')[0]}/32 -j KUBE-MARK-MASQ",
            f"-A {sep} -p {proto} -m {proto} -j DNAT --to-destination {endpoint}"]


def dnat_destination(line):
    """The `--to-destination` of a rule line, as written (possibly corrupt), or None."""
    match = _DNAT.search(line)
    return match.group(1) if match else None


def split_endpoint(destination):
    """"ip:port" (or "[v6]:port") -> (ip, port); ValueError naming the text when it is not one, such as
    the ":0" kube-proxy wrote in kubernetes issue 114537."""
    host, sep, port = destination.rpartition(":")
    host = host.strip("[]")
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        ip = None
    if not sep or ip is None or not port.isdigit() or not 0 < int(port) < 65536:  # noqa: PLR2004
        raise ValueError(f"{destination!r} is not a DNAT destination ip:port")
    return ip, int(port)


def without_statistic(line):
    return _STATISTIC.sub("", line)
