"""kube-proxy's iptables naming, computed exactly as kube-proxy does (pkg/proxy/iptables/proxier.go).

Stdlib only: used by the audit, the roles and the lab, which emulates kube-proxy.
"""

import base64
import hashlib

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
