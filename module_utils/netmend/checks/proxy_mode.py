"""kube-proxy mode leftovers: state of another proxy mode than the configured one.

Field guide failure mode 9; the fix is exactly what `kube-proxy --cleanup` removes (netmend.proxymode),
the plan the kube_proxy role runs too.
"""

from .. import proxymode
from ..findings import Spec
from ..plan import Action
from .base import Check

EVIDENCE_ITEMS = 5  # per kube-proxy mode in KUBE-PROXY-MODE-LEFTOVERS


def run(a):
    mode = (a.want.get("kube_proxy") or {}).get("mode")
    snap = a.facts.get("proxy")
    if mode is None or snap is None:
        why = "no kube-proxy mode configured" if mode is None else "kube-proxy's state was not read"
        a.skip("kube-proxy-mode", why)
        return
    try:
        p = proxymode.plan(snap, mode)
    except ValueError as exc:
        a.skip("kube-proxy-mode", f"cannot plan the cleanup: {exc}")
        return
    others = {m: why for m, why in p.evident.items() if m != mode}
    if not others:
        return
    evidence = [f"{m} mode: {', '.join(why[:EVIDENCE_ITEMS])}{' ...' if len(why) > EVIDENCE_ITEMS else ''}"
                for m, why in sorted(others.items())]
    evidence += [f"kept {what}: {why}" for what, why in p.kept] + p.notes
    old = ", ".join(sorted(others))
    actions = []
    if mode not in p.evident:
        fix = (f"none automatic: the node shows no {mode}-mode state, so kube-proxy may not run in {mode} mode "
               "here (kube_proxy_mode): netmend removes another mode's state only next to a running configured mode")
    elif not p.removes:
        fix = f"none automatic: what is left of {old} mode is still referred to (see the evidence)"
    else:
        actions = _proxy_mode_actions(p, proxymode.view(snap), proxymode.view(snap, p))
        steps = "; ".join(action.describe().split(": ", 1)[1] for action in actions)
        fix = (f"remove exactly what `kube-proxy --cleanup` removes for {old} mode ({steps}); kube-proxy's "
               f"{mode}-mode state and the host's rules stay")
    a.find("KUBE-PROXY-MODE-LEFTOVERS", f"kube-proxy is configured for {mode} mode, and the node holds the state of "
           f"{old} mode", f"only {mode}-mode kube-proxy state", f"{old} mode state as well", fix, evidence, actions)


def _proxy_mode_actions(p, before, after):
    """The cleanup plan as actions, in the order it must run: virtual servers, the dummy link, the chains
    (one --noflush transaction per family), the ipsets once nothing matches them, the nft tables."""
    fid = "KUBE-PROXY-MODE-LEFTOVERS"
    commands = [["ipvsadm", *vs.ipvsadm_delete()] for vs in p.virtual_servers]
    commands += [["ip", "link", "delete", p.link]] if p.link else []
    actions = [Action(fid, "command", "ipvs", commands)] if commands else []
    for family in proxymode.FAMILIES:
        if family in p.payloads:
            tables = ", ".join(sorted(p.chains.get(family, {})))
            actions.append(Action(fid, "iptables", tables, p.payloads[family], family=family))
    late = [["ipset", "destroy", name] for name in p.ipsets]
    late += [["nft", "delete", "table", family, name] for family, name in p.nft_tables]
    if late:
        actions.append(Action(fid, "command", "ipsets and nft tables", late))
    actions[0].before, actions[0].after, actions[0].label = before, after, "kube-proxy state"  # the whole plan's diff
    return actions


CHECKS = (Check("kube-proxy-mode", ("proxy",), (Spec("KUBE-PROXY-MODE-LEFTOVERS", "error", "kube-proxy"),), run),)
