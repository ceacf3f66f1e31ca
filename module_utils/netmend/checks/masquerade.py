"""Masquerade: traffic from the pod CIDR to the outside is masqueraded (flannel's FLANNEL-POSTRTG).

Field guide failure mode 8.
"""

from .. import flannel
from ..findings import Spec
from ..iptables import restore_payload, rule_target
from ..plan import Action
from .base import Check, matches, own_lease, reachable


def run(a):
    fl = a.want.get("flannel") or {}
    lease = own_lease(a.want)
    if not fl.get("ip_masq", True) or lease is None:
        return
    nat = a.facts["iptables"].get("nat")
    cidr = a.want["pod_cidr"]
    rules = reachable(nat, "POSTROUTING") if nat else []
    if any(matches(r, "-s", cidr) and not matches(r, "-d", cidr) and rule_target(r) == "MASQUERADE"
           for r in rules):
        return
    chain_rules = flannel.masquerade_rules(cidr, lease["subnet"])
    payload = restore_payload("nat", {flannel.MASQ_CHAIN: chain_rules}, [flannel.MASQ_JUMP], nat)
    before = "".join(f"{r}\n" for r in (nat.chain_rules("POSTROUTING") + nat.chain_rules(flannel.MASQ_CHAIN)
                                        if nat else []))
    a.find("MASQUERADE-MISSING", f"nothing masquerades traffic from the pod CIDR {cidr} to the outside",
           f"a MASQUERADE rule for -s {cidr} reachable from nat POSTROUTING (flannel's {flannel.MASQ_CHAIN})",
           "none", f"restore flannel's {flannel.MASQ_CHAIN} chain and its POSTROUTING jump",
           ["iptables -t nat -S POSTROUTING: " + " | ".join(nat.chain_rules("POSTROUTING")) if nat else "no nat table"],
           [Action("MASQUERADE-MISSING", "iptables", "nat", payload, before, payload)])


CHECKS = (Check("masquerade", ("iptables",), (Spec("MASQUERADE-MISSING", "error", "flannel"),), run),)
