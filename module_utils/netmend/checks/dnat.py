"""kube-proxy's DNAT (iptables mode): every service's KUBE-SEP chains point at its current endpoints.

A service port's endpoint chains are reached from its KUBE-SVC chain (every endpoint) and, with
externalTrafficPolicy: Local, from its KUBE-SVL chain (the endpoints on this node: in its pod subnet, or its
own address for hostNetwork pods). Both are judged and both are rewritten, in the same transaction.

Field guide failure mode 5. The rule grammar (chain names, endpoint rules, probabilities) is
netmend.kubeproxy's, the one the lab's kube-proxy stand-in writes with.
"""

import ipaddress

from .. import kubeproxy
from ..findings import Spec
from ..iptables import restore_payload, rule_target
from ..plan import Action
from .base import Check, own_lease

WHAT = {"DNAT-STALE-POD-IP": "a pod IP that no longer serves it", "DNAT-STALE-HOST-IP": "an old host IP",
        "DNAT-CORRUPT": "a destination that is not ip:port"}


def run(a):
    nat = a.facts["iptables"].get("nat")
    if nat is None:
        return
    pod_net = ipaddress.ip_network(a.want["pod_cidr"])
    rules = nat.index()  # one pass over the table, not one per service
    chains, doomed, before, first = {}, [], [], None  # the one transaction for every stale service
    for svc in a.want.get("services") or []:
        chain = kubeproxy.service_chain(svc["namespace"], svc["name"], svc.get("port_name", ""), svc["protocol"])
        if chain not in rules or not svc.get("endpoints"):
            continue
        local = kubeproxy.local_chain(svc["namespace"], svc["name"], svc.get("port_name", ""), svc["protocol"])
        policy = [c for c in (chain, local) if c in rules]  # the chains that jump to endpoint chains
        jumps = {c: [r for r in rules[c] if (rule_target(r) or "").startswith("KUBE-SEP-")] for c in policy}
        current = {rule_target(r): _destination(rules.get(rule_target(r), [])) for c in policy for r in jumps[c]}
        wanted = list(svc["endpoints"])
        stale = {sep: dest for sep, dest in current.items() if dest is not None and dest not in wanted}
        if stale:
            svc_chains, svc_doomed, svc_before = _rewrite(rules, svc, jumps, current, stale, _is_local(a.want))
            chains.update(svc_chains)
            doomed += svc_doomed
            before.append(svc_before)
            fid = _report(a, svc, chain, pod_net, stale)
            first = first or fid
    if first:
        # Every stale service of the node in one iptables-restore --noflush: one transaction, not one per service.
        payload = restore_payload("nat", chains, delete=doomed)
        a.find_more(Action(first, "iptables", "nat", payload, "".join(before), payload))


def _report(a, svc, chain, pod_net, stale):
    """The service's findings, one per kind of stale destination; returns the first finding's ID."""
    spn = kubeproxy.service_port_name(svc["namespace"], svc["name"], svc.get("port_name", "")).rstrip(":")
    by_kind = {}
    for sep, dest in sorted(stale.items()):
        by_kind.setdefault(_kind(dest, pod_net), []).append((sep, dest))
    for fid, items in sorted(by_kind.items()):
        a.find(fid, f"service {spn} ({svc['cluster_ip']}:{svc['port']}) DNATs to {WHAT[fid]}",
               "endpoints " + ", ".join(svc["endpoints"]), "DNAT to " + ", ".join(d for _, d in items),
               f"rewrite the stale KUBE-SEP chains of {chain} and its jumps (one iptables-restore --noflush "
               "for every stale service of the node)",
               [f"{sep}: DNAT --to-destination {dest}" for sep, dest in items])
    return min(by_kind)


def _kind(dest, pod_net):
    try:
        ip, _port = kubeproxy.split_endpoint(dest)
    except ValueError:
        return "DNAT-CORRUPT"
    return "DNAT-STALE-POD-IP" if ipaddress.ip_address(ip) in pod_net else "DNAT-STALE-HOST-IP"


def _destination(rules):
    for line in rules:
        dest = kubeproxy.dnat_destination(line)
        if dest is not None:
            return dest
    return None


def _parses(dest):
    try:
        kubeproxy.split_endpoint(dest)
    except ValueError:
        return False
    return True


def _is_local(want):
    """Whether an endpoint "ip:port" is on this node: in its pod subnet, or its own address (hostNetwork)."""
    lease = own_lease(want)
    subnet = ipaddress.ip_network(lease["subnet"]) if lease else None

    def local(dest):
        ip = dest.rpartition(":")[0].strip("[]")
        return ip == want.get("address") or (subnet is not None and ipaddress.ip_address(ip) in subnet)
    return local


def _rewrite(rules, svc, jumps, current, stale, is_local):  # noqa: PLR0913, PLR0917
    """The service's part of the one --noflush transaction: (chains, doomed, before). The KUBE-SVC chain (and
    the KUBE-SVL chain, for the local endpoints) keep their other rules in place and get endpoint jumps for the
    wanted endpoints; new KUBE-SEP chains are made from a stale one's rules (kube-proxy's own grammar when every
    stale one is corrupt); stale ones are deleted."""
    ns, name, port_name, proto = svc["namespace"], svc["name"], svc.get("port_name", ""), svc["protocol"]
    wanted = list(svc["endpoints"])
    by_dest = {dest: sep for sep, dest in current.items() if sep not in stale}
    templates = sorted(sep for sep, dest in stale.items() if _parses(dest))
    sep_chains, seps = {}, {}
    for dest in wanted:
        sep = seps[dest] = by_dest.get(dest) or kubeproxy.endpoint_chain(ns, name, port_name, proto, dest)
        if sep in by_dest.values():
            continue
        if templates:
            sep_chains[sep] = [_retarget(line, templates[0], sep, stale[templates[0]], dest)
                               for line in rules[templates[0]]]
        else:
            sep_chains[sep] = kubeproxy.endpoint_rules(sep, dest, proto)
    policy = {}
    for chain, chain_jumps in jumps.items():
        dests = wanted if chain.startswith("KUBE-SVC-") else [d for d in wanted if _parses(d) and is_local(d)]
        policy[chain] = _policy_rules(rules[chain], chain_jumps, current, dests, [seps[d] for d in dests])
    doomed = sorted(s for s in stale if s not in seps.values())
    before = "".join(f"{r}\n" for c in [*jumps, *sorted(current)] for r in rules.get(c, []))
    return {**policy, **sep_chains}, doomed, before


def _policy_rules(rules, jumps, current, wanted, seps):
    """A KUBE-SVC or KUBE-SVL chain with its endpoint jumps replaced, in place, by jumps to `seps`. ClientIP
    affinity: kube-proxy writes one `-m recent --rcheck ... --name SEP -j SEP` per endpoint ahead of the
    statistic jumps; they are written again for the new endpoint chains, from the first one. A KUBE-SVL chain
    left with no local endpoint keeps no jump."""
    affinity = [r for r in jumps if " --rcheck " in r]
    spread = [r for r in jumps if " --rcheck " not in r] or jumps
    jump_template = spread[-1] if spread else None
    template_dest = current[rule_target(jump_template)] if jump_template else None
    out, placed = [], False
    for line in rules:
        if line in jumps:
            if not placed and wanted:
                if affinity:
                    out += _affinity(affinity[0], current[rule_target(affinity[0])], wanted, seps)
                out += _jumps(jump_template, template_dest if _parses(template_dest or "") else None, wanted, seps)
            placed = True
            continue
        out.append(line)
    return out


def _retarget(line, old_chain, new_chain, old_dest, new_dest):
    """An endpoint chain's rule for another endpoint: its chain, its recent list (affinity), its addresses."""
    old_ip, new_ip = old_dest.rpartition(":")[0], new_dest.rpartition(":")[0]
    line = line.replace(f"-A {old_chain} ", f"-A {new_chain} ", 1)
    line = line.replace(f"--name {old_chain} ", f"--name {new_chain} ")
    return line.replace(old_dest, new_dest).replace(f"-s {old_ip}/32", f"-s {new_ip}/32")


def _affinity(template, template_dest, wanted, seps):
    """The service chain's affinity rules for every endpoint, from one of them (its recent list and target are
    its endpoint chain, its comment may name its endpoint)."""
    sep = rule_target(template)
    out = []
    for dest, new_sep in zip(wanted, seps):
        line = template.replace(f"--name {sep} ", f"--name {new_sep} ").replace(f"-j {sep}", f"-j {new_sep}")
        out.append(line.replace(template_dest, dest) if template_dest and _parses(template_dest) else line)
    return out


def _jumps(template, template_dest, wanted, seps):
    head, _, _ = kubeproxy.without_statistic(template).rpartition(" -j ")
    if template_dest:
        return [f"{head.replace(template_dest, dest)} {kubeproxy.statistic(i, len(wanted))}-j {sep}"
                for i, (dest, sep) in enumerate(zip(wanted, seps))]
    return [f"{head} {kubeproxy.statistic(i, len(wanted))}-j {sep}" for i, sep in enumerate(seps)]


CHECKS = (Check("kube-proxy", ("iptables",), (
    Spec("DNAT-STALE-POD-IP", "error", "kube-proxy"),
    Spec("DNAT-STALE-HOST-IP", "error", "kube-proxy"),
    Spec("DNAT-CORRUPT", "error", "kube-proxy")), run),)
