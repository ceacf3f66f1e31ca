"""FORWARD: pod traffic is forwarded whatever the FORWARD policy is (Docker sets it to DROP).

Field guide failure mode 4. This is the one judge: the forward role's netmend_forward applies this
check's plan, and the audit reports it.

- accept_pod_cidr: netmend's chain (NETMEND-FORWARD) holds exactly its accept rules (from and to the pod
  CIDR, kube-proxy's masquerade mark, replies) and FORWARD jumps to it. When it does not and the policy
  drops what nothing else accepts, that is FORWARD-POLICY-DROP (the traffic named); otherwise nothing
  breaks yet and it is FORWARD-ACCEPTS-MISSING (a DROP policy later would break it).
- policy_accept: the FORWARD policy is ACCEPT.
"""

from ..findings import Spec
from ..iptables import FORWARD_CHAIN, MASQ_MARK, Table, forward_accept_rules, restore_payload, rule_target
from ..plan import LOCK_WAIT, Action
from .base import Check, matches, reachable

EVIDENCE_RULES = 10
DEFAULT_FILTER = {"INPUT": "ACCEPT", "FORWARD": "ACCEPT", "OUTPUT": "ACCEPT"}


def view(table, chain):
    """The text a person compares: FORWARD's policy and rules, and netmend's chain."""
    out = [f":FORWARD {table.policies.get('FORWARD', 'ACCEPT')}", *table.chain_rules("FORWARD")]
    if chain in table.policies:
        out += [f":{chain} -", *table.chain_rules(chain)]
    return "\n".join(out) + "\n"


def _accepted(rules, cidr):
    """What pod traffic the ACCEPT rules among `rules` let through, by name."""
    accepts = [r for r in rules if rule_target(r) == "ACCEPT"]
    kinds = {
        f"traffic from the pod CIDR {cidr}": any(matches(r, "-s", cidr) for r in accepts),
        f"traffic to the pod CIDR {cidr}": any(matches(r, "-d", cidr) for r in accepts),
        f"packets kube-proxy marked for masquerade ({MASQ_MARK}: NodePorts to endpoints on other nodes)":
            any(matches(r, "--mark", f"{MASQ_MARK}/{MASQ_MARK}") for r in accepts),
        "replies (RELATED,ESTABLISHED)":
            any(matches(r, "--ctstate", "RELATED,ESTABLISHED") or matches(r, "--ctstate", "ESTABLISHED,RELATED")
                for r in accepts),
    }
    return kinds


def _chain_problem(chain, rules, have):
    if have is None:
        return [f"{chain} is missing"]
    if set(rules) - set(have):
        return [f"{chain} lacks: " + "; ".join(r for r in rules if r not in have)]
    if set(have) - set(rules):
        return [f"{chain} holds rules netmend does not keep: " + "; ".join(r for r in have if r not in rules)]
    return [f"{chain}'s rules are out of order or repeated"]


def run(a):
    filt = a.facts["iptables"].get("filter") or Table("filter", dict(DEFAULT_FILTER))
    fwd = a.want.get("forward") or {}
    mode, chain, cidr = fwd.get("mode", "accept_pod_cidr"), fwd.get("chain") or FORWARD_CHAIN, a.want["pod_cidr"]
    policy = filt.policies.get("FORWARD", "ACCEPT")
    before = view(filt, chain)
    evidence = [f"iptables -S FORWARD: -P FORWARD {policy}", *filt.chain_rules("FORWARD")[:EVIDENCE_RULES]]
    if mode == "policy_accept":
        if policy != "ACCEPT":
            after = Table("filter", {**filt.policies, "FORWARD": "ACCEPT"}, list(filt.rules))
            a.find("FORWARD-POLICY-DROP", f"the FORWARD policy is {policy}; forward_mode policy_accept wants ACCEPT",
                   "FORWARD policy ACCEPT", f"policy {policy}", "set the FORWARD policy to ACCEPT", evidence,
                   [Action("FORWARD-POLICY-DROP", "command", "filter",
                           [["iptables", "-w", LOCK_WAIT, "-P", "FORWARD", "ACCEPT"]], before, view(after, chain),
                           label="iptables filter")])
        return
    rules, jump = forward_accept_rules(chain, cidr)
    have = filt.chain_rules(chain) if chain in filt.policies else None
    jump_ok = jump in filt.chain_rules("FORWARD")
    if have == rules and jump_ok:
        return
    payload = restore_payload("filter", {chain: rules}, [jump], filt)
    after = Table("filter", {**filt.policies, chain: "-"},
                  ([] if jump_ok else [("FORWARD", jump)]) + [r for r in filt.rules if r[0] != chain]
                  + [(chain, r) for r in rules])
    action = Action("", "iptables", "filter", payload, before, view(after, chain), label="iptables filter")
    lacking = [] if have == rules else _chain_problem(chain, rules, have)
    if not jump_ok:
        lacking.append(f"FORWARD does not jump to {chain}")
    dropped = [k for k, ok in _accepted(reachable(filt, "FORWARD"), cidr).items() if not ok] \
        if policy != "ACCEPT" else []
    fix = f"restore {chain} and its FORWARD jump (one iptables-restore --noflush; the policy stays)"
    if dropped:
        action.finding = "FORWARD-POLICY-DROP"
        a.find("FORWARD-POLICY-DROP", f"the FORWARD policy is {policy} and nothing accepts "
               + "; ".join(dropped), f"pod CIDR {cidr} accepted in FORWARD ({chain})",
               f"policy {policy}, dropped: " + "; ".join(dropped), fix, lacking + evidence, [action])
        return
    action.finding = "FORWARD-ACCEPTS-MISSING"
    now = ("other rules accept pod traffic today; without them the DROP policy drops it" if policy != "ACCEPT" else
           "nothing is dropped yet; a DROP policy, as Docker sets at start, would drop pod traffic")
    a.find("FORWARD-ACCEPTS-MISSING", f"netmend's FORWARD accepts are not as the forward role keeps them "
           f"(policy {policy}: {now})",
           f"{chain} with its {len(rules)} accept rules, jumped to from FORWARD", "; ".join(lacking), fix,
           lacking + evidence, [action])


CHECKS = (Check("forward", ("iptables",), (
    Spec("FORWARD-POLICY-DROP", "critical", "forward"),
    Spec("FORWARD-ACCEPTS-MISSING", "warning", "forward")), run),)
