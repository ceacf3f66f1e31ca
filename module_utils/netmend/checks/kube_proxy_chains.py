"""kube-proxy's masquerade chains (iptables mode): KUBE-MARK-MASQ marks, KUBE-POSTROUTING masquerades.

Every service rule that needs SNAT jumps to KUBE-MARK-MASQ, which sets the 0x4000 mark; nat POSTROUTING
jumps to KUBE-POSTROUTING, which masquerades exactly the marked packets. When either is emptied (an
operator's `iptables -t nat -F`, a tool that flushes chains it does not own, a half-applied restore),
NodePort traffic to an endpoint on another node keeps the client's source address: the endpoint's node
answers the client directly and the reply is dropped (field guide, "since the seeds"). kube-proxy writes
them back only at its next full sync, which can be an hour away.

The fix writes both chains back exactly as kube-proxy writes them (netmend.kubeproxy's grammar, the one
the lab's kube-proxy stand-in uses) and the POSTROUTING jump, in one iptables-restore --noflush.
"""

from .. import kubeproxy
from ..findings import Spec
from ..iptables import restore_payload, rule_target
from ..plan import Action
from .base import Check, matches

FID = "KUBE-PROXY-MASQ-CHAINS-BROKEN"


def _problems(nat):
    mark = f"{kubeproxy.MARK_MASQ}/{kubeproxy.MARK_MASQ}"
    marks = nat.chain_rules("KUBE-MARK-MASQ")
    post = nat.chain_rules("KUBE-POSTROUTING")
    out = []
    if "KUBE-MARK-MASQ" not in nat.policies:
        out.append("KUBE-MARK-MASQ is missing")
    elif not any(rule_target(r) == "MARK" and matches(r, "--set-xmark", mark) for r in marks):
        out.append(f"KUBE-MARK-MASQ does not set the mark {mark}")
    if "KUBE-POSTROUTING" not in nat.policies:
        out.append("KUBE-POSTROUTING is missing")
    else:
        if not any(rule_target(r) == "MASQUERADE" for r in post):
            out.append("KUBE-POSTROUTING masquerades nothing")
        if not any(rule_target(r) == "RETURN" and f"! --mark {mark}" in r for r in post):
            out.append("KUBE-POSTROUTING does not return unmarked packets (it would masquerade all of them)")
    if not any(rule_target(r) == "KUBE-POSTROUTING" for r in nat.chain_rules("POSTROUTING")):
        out.append("nat POSTROUTING does not jump to KUBE-POSTROUTING")
    return out


def run(a):
    mode = (a.want.get("kube_proxy") or {}).get("mode") or "iptables"
    if mode != "iptables":
        a.skip("kube-proxy-chains", f"kube_proxy_mode is {mode}; this check reads iptables mode's chains")
        return
    nat = a.facts["iptables"].get("nat")
    if nat is None or "KUBE-SERVICES" not in nat.policies:
        return  # kube-proxy has not synced on this node yet: nothing of it to judge
    problems = _problems(nat)
    if not problems:
        return
    chains = kubeproxy.masq_chain_rules()
    payload = restore_payload("nat", chains, [kubeproxy.POSTROUTING_JUMP], nat)
    before = "".join(f"{r}\n" for c in ("POSTROUTING", *chains) for r in nat.chain_rules(c))
    after = "".join(f"{r}\n" for r in [*([] if kubeproxy.POSTROUTING_JUMP in nat.chain_rules("POSTROUTING")
                                          else [kubeproxy.POSTROUTING_JUMP]), *nat.chain_rules("POSTROUTING"),
                                        *(r for rules in chains.values() for r in rules)])
    a.find(FID, "kube-proxy's masquerade chains are broken: NodePort traffic to endpoints on other nodes "
           "loses its SNAT", f"KUBE-MARK-MASQ sets {kubeproxy.MARK_MASQ}, KUBE-POSTROUTING masquerades marked "
           "packets, POSTROUTING jumps to it", "; ".join(problems),
           "write KUBE-MARK-MASQ and KUBE-POSTROUTING back as kube-proxy writes them, and the POSTROUTING jump "
           "(one iptables-restore --noflush)",
           problems + [f"iptables -t nat -S {c}: " + (" | ".join(nat.chain_rules(c)) or "(empty)")
                       for c in ("KUBE-MARK-MASQ", "KUBE-POSTROUTING")],
           [Action(FID, "iptables", "nat", payload, before, after, label="iptables nat")])


CHECKS = (Check("kube-proxy-chains", ("iptables",), (Spec(FID, "error", "kube-proxy"),), run),)
