"""iptables-save text: parsing, ownership, and --noflush restore payloads that touch only owned chains.

Stdlib only. netmend changes iptables atomically with `iptables-restore -w --noflush`, and only
chains that Kubernetes or netmend own (KUBE-*, FLANNEL-*, CNI-*, NETMEND-*) plus jump rules into
them: never the host's own chains or rules.
"""

import re
from dataclasses import dataclass, field

OWNED_PREFIXES = ("KUBE-", "FLANNEL-", "CNI-", "NETMEND-")
BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
_CHAIN_LINE = re.compile(r"^:(\S+) (\S+)(?: \[\d+:\d+\])?$")
_COUNTERS = re.compile(r"^\[\d+:\d+\] (?=-A )")  # `iptables-save -c`: "[packets:bytes] -A CHAIN ..."
_VERSION = re.compile(r"^ip6?tables(?:-\S+)? v(\d+(?:\.\d+)*)(?: \((legacy|nf_tables)\))?")


class IptablesSaveError(ValueError):
    """Malformed iptables-save output; names the line and what was expected."""


@dataclass
class Table:
    name: str
    policies: dict = field(default_factory=dict)  # chain -> policy ("-" for user chains)
    rules: list = field(default_factory=list)  # (chain, full "-A CHAIN ..." line)

    def chain_rules(self, chain):
        """The rules of one chain: one pass over the table. For many lookups, index() once."""
        return [line for c, line in self.rules if c == chain]

    def index(self):
        """{chain: [its rule lines, in order]} in one pass over the table, for checks that look up many
        chains (one per service): each lookup is then a dict access, not a pass over every rule."""
        by_chain = {chain: [] for chain in self.policies}
        for chain, line in self.rules:
            by_chain.setdefault(chain, []).append(line)
        return by_chain


def parse_save(text):
    """Parse `iptables-save` output into {table name: Table}.

    text is a string or an iterable of lines (a file or a pipe read line by line, so a dump is never held
    twice). `-c`'s rule counters are dropped. What `iptables-restore` takes and kube-proxy writes is read
    too: ":CHAIN - [0:0]" declares a chain and, in restore input, flushes it; "-N CHAIN" creates one;
    "-X CHAIN" deletes a user chain that has no rules. The rules come out chain by chain, in the order the
    chains were declared, as iptables-save prints them. Any other line is an IptablesSaveError naming its
    number, and so is a table without COMMIT (a truncated dump).
    """
    lines = text.splitlines() if isinstance(text, str) else text
    tables, current, by_chain = {}, None, {}
    for number, raw in enumerate(lines, 1):
        line = _COUNTERS.sub("", raw.strip(), count=1)
        if not line or line[0] == "#":
            continue
        head = line[:3]
        if current is not None and head in ("-A ", "-N ", "-X "):
            _chain_line(current, by_chain, line, number)
        elif line[0] == "*":
            if current is not None:
                raise IptablesSaveError(f"line {number}: table {line[1:]} starts before {current.name} has COMMIT")
            current, by_chain = Table(line[1:]), {}
        elif current is None:
            raise IptablesSaveError(f"line {number}: {line[:60]!r} is outside a table; expected '*<table>'")
        elif line == "COMMIT":
            current.rules = [(chain, rule) for chain in current.policies for rule in by_chain[chain]]
            tables[current.name] = current
            current = None
        elif line[0] == ":":
            match = _CHAIN_LINE.match(line)
            if not match:
                raise IptablesSaveError(f"line {number}: {line[:60]!r} is not a chain line ':NAME POLICY [p:b]'")
            current.policies[match.group(1)] = match.group(2)
            by_chain[match.group(1)] = []
        else:
            raise IptablesSaveError(f"line {number}: {line[:60]!r} is not a table, chain, rule or COMMIT line")
    if current is not None:
        raise IptablesSaveError(f"table {current.name} has no COMMIT: the output is truncated")
    return tables


def _chain_line(table, by_chain, line, number):
    """-A (a rule), -N (a new chain) or -X (delete a user chain without rules)."""
    chain = line[3:].split(None, 1)[0]
    if line[:3] == "-A ":
        if chain not in table.policies:
            raise IptablesSaveError(f"line {number}: rule for undeclared chain in {line[:60]!r}")
        by_chain[chain].append(line)
    elif line[:3] == "-N ":
        if chain in table.policies:
            raise IptablesSaveError(f"line {number}: -N {chain}: chain {chain} already exists")
        table.policies[chain], by_chain[chain] = "-", []
    elif chain in BUILTIN_CHAINS.get(table.name, ()) or chain not in table.policies:
        raise IptablesSaveError(f"line {number}: -X {chain}: no user chain {chain} in table {table.name}")
    elif by_chain[chain]:
        raise IptablesSaveError(f"line {number}: -X {chain}: the chain still has {len(by_chain[chain])} rules")
    else:
        del table.policies[chain], by_chain[chain]


def owned(chain):
    return chain.startswith(OWNED_PREFIXES)


def parse_version(text):
    """`iptables -V` -> (version, backend) with backend "nf_tables" or "legacy"."""
    match = _VERSION.match(text.strip())
    if not match:
        raise IptablesSaveError(f"{text.strip()[:60]!r} is not `iptables -V` output such as "
                                "'iptables v1.8.9 (nf_tables)'")
    return match.group(1), match.group(2) or "legacy"


def restore_payload(table, chains=None, jumps=(), current=None, delete=()):
    """Text for `iptables-restore --noflush` that replaces owned chains wholesale and inserts jumps.

    chains: {owned chain: [rule lines "-A CHAIN ..."]}; declaring a chain under --noflush flushes it.
    jumps: rule lines into built-in chains ("-A FORWARD ..."), inserted at the top when missing from
    current (a Table or None). delete: owned chains flushed and then deleted (-X) in the same
    transaction; nothing may still jump to them.
    """
    chains = chains or {}
    for chain in [*chains, *delete]:
        if not owned(chain):
            raise ValueError(f"{chain} is not a chain netmend may replace; owned prefixes: {', '.join(OWNED_PREFIXES)}")
    for chain, rules in chains.items():
        for rule in rules:
            if rule.split()[:2] != ["-A", chain]:
                raise ValueError(f"rule {rule!r} does not belong to chain {chain}")
    existing = {line for _, line in current.rules} if current else set()
    lines = [f"*{table}"]
    lines += [f":{chain} - [0:0]" for chain in [*chains, *delete]]
    for rules in chains.values():
        lines += rules
    for jump in jumps:
        if jump not in existing:
            lines.append("-I " + jump[3:])
    lines += [f"-X {chain}" for chain in delete]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


FORWARD_COMMENT = "netmend: pod CIDR forwarding"
FORWARD_CHAIN = "NETMEND-FORWARD"
MASQ_MARK = "0x4000"  # kube-proxy's KUBE-MARK-MASQ mark


def forward_accept_rules(chain, cidr):
    """netmend's FORWARD accept chain and the jump into it: (rules, jump). It accepts what kube-proxy's
    KUBE-FORWARD and flannel's FLANNEL-FWD accept: pod CIDR traffic, packets kube-proxy marked for
    masquerade (NodePort traffic to an endpoint on another node, hostNetwork ones included: seed 000
    section 4) and their replies."""
    tag = f'-m comment --comment "{FORWARD_COMMENT}"'
    rules = [f"-A {chain} -s {cidr} {tag} -j ACCEPT", f"-A {chain} -d {cidr} {tag} -j ACCEPT",
             f"-A {chain} -m mark --mark {MASQ_MARK}/{MASQ_MARK} {tag} -j ACCEPT",
             f"-A {chain} -m conntrack --ctstate RELATED,ESTABLISHED {tag} -j ACCEPT"]
    return rules, f"-A FORWARD {tag} -j {chain}"


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')
_TARGET = re.compile(r"(?:^|\s)(?:-j|--jump|-g|--goto)\s+(\S+)")


def rule_target(line):
    """The chain or target a rule line jumps (-j) or goes (-g) to, or None for a rule without one.

    Quoted words (comments, log prefixes) are blanked first, so "-j" inside them does not count.
    """
    bare = _QUOTED.sub('""', line)
    if bare.count('"') % 2:
        raise IptablesSaveError(f"{line[:60]!r} is not a rule line iptables-save prints: a quote is not closed")
    match = _TARGET.search(bare)
    return match.group(1) if match else None


def jumps_into(table, chains):
    """The rules of the built-in chains of `table` (a Table) that jump or go to one of `chains`."""
    builtin = BUILTIN_CHAINS.get(table.name, ())
    return [line for chain, line in table.rules if chain in builtin and rule_target(line) in chains]


def delete_payload(table, chains):
    """Text for `iptables-restore --noflush` that deletes owned `chains` of `table` (a Table) and the
    jump rules into them from the built-in chains, in one transaction; "" when none of them exists.

    Each chain is declared (which flushes it under --noflush), each jump is deleted with -D (once per
    copy), then the chains are deleted with -X. Rules of other chains that still refer to one of them
    would make the restore fail, so they are an error here, before anything runs.
    """
    doomed = [chain for chain in sorted(chains) if chain in table.policies]
    for chain in doomed:
        if not owned(chain) or chain in BUILTIN_CHAINS.get(table.name, ()):
            raise ValueError(f"{chain} is not a chain netmend may delete; owned prefixes: {', '.join(OWNED_PREFIXES)}")
    if not doomed:
        return ""
    doomed_set, jumps = set(doomed), jumps_into(table, set(doomed))
    jump_set = set(jumps)
    for chain, line in table.rules:
        if chain in doomed_set or line in jump_set:
            continue
        if rule_target(line) in doomed_set:
            raise ValueError(f"{table.name}: {line!r} refers to {rule_target(line)}, which would be deleted")
    lines = [f"*{table.name}"]
    lines += [f":{chain} - [0:0]" for chain in doomed]
    lines += ["-D " + jump[3:] for jump in jumps]
    lines += [f"-X {chain}" for chain in doomed]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"
