"""The lab's stand-in for kube-proxy (iptables mode) and flannel's masquerade rules.

kube-proxy cannot run in the lab, so this renders the rules it would write, in its own format
(as `iptables-save` prints them on a real node), as input for `iptables-restore --noflush`:

- every KUBE-* chain is declared with `:NAME - [0:0]`, which under --noflush flushes it, so a
  re-apply replaces those chains wholesale;
- the jumps from the built-in chains are appended only when `existing_save` (the node's current
  `iptables-save`) lacks that exact line, so re-applying never duplicates them;
- KUBE-SVC/KUBE-SEP chains present in `existing_save` but no longer wanted are declared (flushed)
  and deleted with -X, so a re-apply leaves no orphan.

It models the seeds' era: no KUBE-FORWARD chain (netmend's FORWARD role adds the accept rules).
"""

from netmend.flannel import MASQ_CHAIN, MASQ_JUMP, masquerade_rules
from netmend.kubeproxy import (
    MARK_DROP,
    POSTROUTING_JUMP,
    endpoint_chain,
    endpoint_rules,
    masq_chain_rules,
    service_chain,
    service_port_name,
    statistic,
)

PORTALS = '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
FILTER_JUMPS = [f"-A {chain} -m conntrack --ctstate NEW {PORTALS}" for chain in ("INPUT", "FORWARD", "OUTPUT")]
NAT_JUMPS = [
    f"-A PREROUTING {PORTALS}",
    f"-A OUTPUT {PORTALS}",
    POSTROUTING_JUMP,
]
NAT_CHAINS = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", "KUBE-MARK-DROP"]


def saved_rules(existing_save):
    """{table: {line}} of an `iptables-save` text (several saves may be concatenated)."""
    tables, table = {}, None
    for line in map(str.strip, existing_save.splitlines()):
        if line.startswith("*"):
            table = tables.setdefault(line[1:], set())
        elif table is not None and line and not line.startswith("#"):
            table.add(line)
    return tables


def _missing(lines, existing, table):
    present = saved_rules(existing).get(table, set())
    return [line for line in lines if line not in present]


def _saved_chains(existing, table, prefixes):
    return {line[1:].split()[0] for line in saved_rules(existing).get(table, ())
            if line.startswith(":") and line[1:].startswith(prefixes)}


def _service_rules(cluster, svc, port):
    """One service port's rules: (filter rules, {nat part: rules}, the KUBE-SVC/KUBE-SEP chains it declares)."""
    spn = service_port_name(svc.namespace, svc.name, port.name)
    proto = port.protocol.lower()
    match = f"-p {proto} -m comment --comment \"{spn} cluster IP\" -m {proto} --dport {port.port}"
    endpoints = [f"{ip}:{target}" for ip, target in cluster.endpoints(svc, port)]
    if not endpoints:
        reject = (f"-A KUBE-SERVICES -d {svc.cluster_ip}/32 -p {proto} -m comment --comment "
                  f"\"{spn} has no endpoints\" -m {proto} --dport {port.port} "
                  "-j REJECT --reject-with icmp-port-unreachable")
        return [reject], {}, []
    svc_chain = service_chain(svc.namespace, svc.name, port.name, port.protocol)
    chains = [svc_chain]
    nat = {"KUBE-SERVICES": [
        f"-A KUBE-SERVICES ! -s {cluster.pod_cidr} -d {svc.cluster_ip}/32 {match} -j KUBE-MARK-MASQ",
        f"-A KUBE-SERVICES -d {svc.cluster_ip}/32 {match} -j {svc_chain}",
    ], "KUBE-NODEPORTS": [], "KUBE-SVC": [], "KUBE-SEP": []}
    if port.node_port:
        node_match = f"-p {proto} -m comment --comment \"{spn}\" -m {proto} --dport {port.node_port}"
        nat["KUBE-NODEPORTS"] += [f"-A KUBE-NODEPORTS {node_match} -j KUBE-MARK-MASQ",
                                  f"-A KUBE-NODEPORTS {node_match} -j {svc_chain}"]
    for i, endpoint in enumerate(endpoints):
        sep = endpoint_chain(svc.namespace, svc.name, port.name, port.protocol, endpoint)
        chains.append(sep)
        nat["KUBE-SVC"].append(f"-A {svc_chain} {statistic(i, len(endpoints))}-j {sep}")
        nat["KUBE-SEP"] += endpoint_rules(sep, endpoint, port.protocol)
    return [], nat, chains


def render_rules(cluster, node, existing_save=""):
    """kube-proxy's filter and nat rules for `node`, as iptables-restore --noflush input."""
    nat = {"KUBE-SERVICES": [], "KUBE-NODEPORTS": [], "KUBE-SVC": [], "KUBE-SEP": []}
    chains, filter_rules = [], []
    for svc in cluster.services:
        for port in svc.ports:
            port_filter, port_nat, port_chains = _service_rules(cluster, svc, port)
            filter_rules += port_filter
            chains += port_chains
            for part, rules in port_nat.items():
                nat[part] += rules
    nat["KUBE-SERVICES"].append(
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule '
        'in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS')
    orphans = sorted(_saved_chains(existing_save, "nat", ("KUBE-SVC-", "KUBE-SEP-")) - set(chains))

    lines = [f"# kube-proxy rules for {node.name}, rendered by the netmend lab",
             "*filter", ":KUBE-SERVICES - [0:0]", *_missing(FILTER_JUMPS, existing_save, "filter"),
             *filter_rules, "COMMIT", "*nat"]
    lines += [f":{chain} - [0:0]" for chain in NAT_CHAINS + chains + orphans]
    lines += _missing(NAT_JUMPS, existing_save, "nat")
    lines += [
        *(rule for rules in masq_chain_rules().values() for rule in rules),
        f"-A KUBE-MARK-DROP -j MARK --set-xmark {MARK_DROP}/{MARK_DROP}",
        *nat["KUBE-SERVICES"], *nat["KUBE-NODEPORTS"], *nat["KUBE-SVC"], *nat["KUBE-SEP"],
        *(f"-X {chain}" for chain in orphans),
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"


def render_flannel_masq(cluster, node, existing_save=""):
    """Flannel's MASQUERADE rules for the pod network (modern flannel, no FLANNEL-FWD), nat only, as
    netmend's core renders them (netmend.flannel.masquerade_rules, which the audit restores too).

    `node` is needed for its own subnet: traffic from outside the pod network to it is not masqueraded.
    """
    lines = [
        f"# flannel masquerade rules for {node.name}, rendered by the netmend lab",
        "*nat", f":{MASQ_CHAIN} - [0:0]", *_missing([MASQ_JUMP], existing_save, "nat"),
        *masquerade_rules(cluster.pod_cidr, node.subnet),
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"
