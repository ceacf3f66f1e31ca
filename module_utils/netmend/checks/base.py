"""What every check shares: its declaration, the audit context it reports into, small rule helpers.

A check is pure: `run(a)` reads `a.facts` (what the node showed, netmend.facts) and `a.want` (what it
should be, netmend.want), and reports findings with the plan that fixes each (netmend.plan.Action).
"""

from dataclasses import dataclass

from ..findings import Finding
from ..iptables import rule_target
from ..plan import Result


@dataclass(frozen=True)
class Check:
    """name: what the audit and `checks:` call it; needs: the facts it reads (a fact that could not be
    read makes it a skipped check with the reason); findings: the Specs it can report; run(a)."""

    name: str
    needs: tuple
    findings: tuple
    run: object

    @property
    def ids(self):
        return tuple(spec.id for spec in self.findings)


class Audit:
    """One node's audit: the want, the facts, the result the checks report into."""

    def __init__(self, want, facts, catalog):
        self.want, self.facts, self.catalog, self.result = want, facts, catalog, Result()

    def find(self, fid, summary, expected, actual, fix, evidence=(), actions=()):  # noqa: PLR0913, PLR0917
        spec = self.catalog[fid]
        self.result.findings.append(Finding(fid, spec.severity, self.want["node"], spec.component, summary,
                                            expected, actual, fix, tuple(str(e) for e in evidence)))
        self.result.actions.extend(actions)

    def find_more(self, *actions):
        """Plan actions that fix findings already reported (one transaction for several findings)."""
        self.result.actions.extend(actions)

    def skip(self, check, why):
        self.result.skipped.append((check, why))


def lines(cmds):
    return "".join(f"{c}\n" for c in cmds)


def matches(rule, flag, value):
    """Whether the rule has `flag value` not negated (`-s 10.244.0.0/16`, not `! -s 10.244.0.0/16`)."""
    words = rule.split()
    return any(words[i] == flag and words[i + 1] == value and (i == 0 or words[i - 1] != "!")
               for i in range(len(words) - 1))


def reachable(table, start, limit=64):
    """The rules of `start` and of every chain it jumps to, transitively (bounded), in order."""
    seen, todo, rules, by_chain = set(), [start], [], table.index()
    while todo and len(seen) < limit:
        chain = todo.pop(0)
        if chain in seen:
            continue
        seen.add(chain)
        for line in by_chain.get(chain, []):
            rules.append(line)
            target = rule_target(line)
            if target in table.policies and target not in seen:
                todo.append(target)
    return rules


def own_lease(want):
    return next((lease for lease in want.get("leases") or [] if lease["node"] == want["node"]), None)
