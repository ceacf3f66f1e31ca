"""kube-proxy mode switches: which mode's leftovers a node holds, and the plan that removes them.

Stdlib only. A `Snapshot` is what a node shows (iptables-save per IP family, `nft list tables`,
`ipset save`, the kube-ipvs0 link as `ip -d -j addr show` prints it, /proc/net/ip_vs); every parser
here turns one of those texts into data and rejects anything else with a message naming the line.
`plan` decides, from the configured mode and the one netmend recorded last, what to remove: exactly
what `kube-proxy --cleanup` removes for the previous mode (pkg/proxy/{iptables,ipvs,nftables}/proxier.go,
CleanupLeftovers), and nothing else:

- iptables and ipvs modes: kube-proxy's own KUBE-* chains in filter/nat/mangle (never kubelet's
  KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-MARK-DROP, KUBE-IPTABLES-HINT) and the rules of the built-in
  chains that jump into them, in one `iptables-restore --noflush` per IP family;
- ipvs mode, also: the kube-ipvs0 dummy link, the KUBE-* ipsets, and the ipvs virtual servers whose
  address is on kube-ipvs0 or whose port is a NodePort in kube-proxy's KUBE-NODE-PORT-* sets;
- nftables mode: the tables `ip kube-proxy` and `ip6 kube-proxy`.

iptables and ipvs modes share five chain names (nat KUBE-SERVICES, KUBE-POSTROUTING, KUBE-MARK-MASQ;
filter KUBE-FORWARD, KUBE-PROXY-FIREWALL). When switching between those two modes the shared chains are
removed only while the new mode shows no sign of running; once it runs they are its own. A chain
something else still refers to, and an ipset a remaining rule matches, is kept and reported.
"""

import ipaddress
import json
import re
from dataclasses import dataclass, field

from .iptables import BUILTIN_CHAINS, delete_payload, jumps_into, parse_save, rule_target
from .kmod import PROXY_MODES
from .kubeproxy import (
    IPSET_PREFIX,
    IPVS_DEVICE_KIND,
    IPVS_DUMMY_DEVICE,
    NFTABLES_FAMILIES,
    NFTABLES_TABLE,
    mode_chains,
)

IPTABLES_BASED = ("iptables", "ipvs")
FAMILIES = ("ipv4", "ipv6")
PROC_IP_VS = "/proc/net/ip_vs"
# family -> (the iptables binary, its save and its restore)
TOOLS = {"ipv4": ("iptables", "iptables-save", "iptables-restore"),
         "ipv6": ("ip6tables", "ip6tables-save", "ip6tables-restore")}
TABLES = ("filter", "nat", "mangle")
_IPSET_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,31}$")
_NODE_PORT_SET = re.compile(r"^KUBE-(?:6-)?NODE-PORT-(?:LOCAL-)?(TCP|UDP|SCTP)(?:-HASH)?$")
_NFT_TABLE = re.compile(r"^table (ip|ip6|inet|arp|bridge|netdev) (\S+)$")
IPVS_PROTOCOLS = {"TCP": "-t", "UDP": "-u", "SCTP": "--sctp-service"}
IPSET_LINE_WORDS = 3  # "create <set> <type>", "add <set> <entry>"
IP_VS_HEADER_LINES = 3
IP_VS_SERVICE_WORDS = 3  # "<proto> <address>:<port> <scheduler>", "FWM <mark> <scheduler>"


class StateError(ValueError):
    """Output a node printed is not what the parser expected; names the line and what was expected."""


@dataclass(frozen=True)
class VirtualServer:
    """One ipvs virtual service as /proc/net/ip_vs lists it (fwmark services: protocol "FWM")."""

    protocol: str
    address: str
    port: int
    scheduler: str

    def text(self):
        if self.protocol == "FWM":
            return f"FWM {self.address} {self.scheduler}"
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.protocol} {host}:{self.port} {self.scheduler}"

    def ipvsadm_delete(self):
        """The ipvsadm arguments that delete this service."""
        if self.protocol == "FWM":
            return ["-D", "-f", str(int(self.address, 16))]
        host = f"[{self.address}]" if ":" in self.address else self.address
        return ["-D", IPVS_PROTOCOLS[self.protocol], f"{host}:{self.port}"]


@dataclass
class Link:
    name: str
    kind: str
    addresses: list = field(default_factory=list)  # "10.96.0.1/32"

    def text(self):
        return f"link {self.name} ({self.kind or 'unknown kind'}): {', '.join(self.addresses) or 'no addresses'}"


@dataclass
class Snapshot:
    """What one node shows. None for a source that could not be read (tool missing, file absent)."""

    iptables: dict = field(default_factory=dict)  # family -> {table name: Table}; a family absent: unread
    nft_tables: list = None  # [(family, name)]
    ipsets: dict = None  # name -> {"type": str, "members": [str]}
    link: Link = None  # kube-ipvs0, or None when the node has no such link
    ipvs: list = None  # [VirtualServer]; None when /proc/net/ip_vs does not exist
    notes: list = field(default_factory=list)  # what could not be read, and why


# Parsers of what a node prints.

def parse_nft_tables(text):
    """`nft list tables` -> [(family, name)]."""
    tables = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        match = _NFT_TABLE.match(line)
        if not match:
            raise StateError(f"nft list tables, line {number}: {line[:60]!r} is not 'table <family> <name>'")
        tables.append((match.group(1), match.group(2)))
    return tables


def parse_ipset_save(text):
    """`ipset save` -> {set name: {"type": set type, "members": [entries]}}."""
    sets = {}
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split()
        if not words:
            continue
        if words[0] == "create" and len(words) >= IPSET_LINE_WORDS and _IPSET_NAME.match(words[1]):
            sets[words[1]] = {"type": words[2], "members": []}
        elif words[0] == "add" and len(words) >= IPSET_LINE_WORDS and words[1] in sets:
            sets[words[1]]["members"].append(words[2])
        else:
            raise StateError(f"ipset save, line {number}: {raw[:60]!r} is not 'create <set> <type> ...' or "
                             "'add <set> <entry>' for a set created above")
    return sets


def parse_link(text, name=IPVS_DUMMY_DEVICE):
    """`ip -d -j addr show` (every link) -> the Link called `name`, or None when there is none."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StateError(f"ip -d -j addr show: not JSON ({exc})") from None
    if not isinstance(data, list) or not all(isinstance(item, dict) and "ifname" in item for item in data):
        raise StateError("ip -d -j addr show: expected a list of links, each with an ifname")
    found = [item for item in data if item["ifname"] == name]
    if not found:
        return None
    link = found[0]
    kind = (link.get("linkinfo") or {}).get("info_kind", "")
    addresses = [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                 if isinstance(a, dict) and a.get("family") in ("inet", "inet6") and "local" in a]
    return Link(name, kind, addresses)


def _hex_address(text, number):
    try:
        if text.startswith("["):
            return str(ipaddress.IPv6Address(text.strip("[]")))
        return str(ipaddress.IPv4Address(int(text, 16)))
    except ValueError:
        raise StateError(f"/proc/net/ip_vs, line {number}: {text!r} is not an address as ip_vs prints it "
                         "(8 hex digits, or an IPv6 address in brackets)") from None


def parse_ip_vs(text):
    """/proc/net/ip_vs (net/netfilter/ipvs/ip_vs_ctl.c, ip_vs_info_seq_show) -> [VirtualServer].

    Service lines are "TCP  0A600001:01BB rr ", "TCP  [fd00:...]:01BB rr", "FWM  00000001 rr"; real
    server lines start with "->"; the first three lines are the header.
    """
    lines = text.splitlines()
    if len(lines) < IP_VS_HEADER_LINES or not lines[0].startswith("IP Virtual Server version") \
            or not lines[1].startswith("Prot LocalAddress:Port"):
        raise StateError("/proc/net/ip_vs does not start with the 'IP Virtual Server version' header")
    services = []
    for number, line in enumerate(lines[IP_VS_HEADER_LINES:], IP_VS_HEADER_LINES + 1):
        words = line.split()
        if not words or words[0] == "->":
            continue
        enough = len(words) >= IP_VS_SERVICE_WORDS
        if words[0] == "FWM" and enough and re.fullmatch(r"[0-9A-F]{8}", words[1]):
            services.append(VirtualServer("FWM", hex(int(words[1], 16)), 0, words[2]))
            continue
        match = enough and re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[0-9A-F]{8}):([0-9A-F]{4})", words[1])
        if words[0] not in IPVS_PROTOCOLS or not match:
            raise StateError(f"/proc/net/ip_vs, line {number}: {line[:60]!r} is not a service line such as "
                             "'TCP  0A600001:01BB rr'")
        services.append(VirtualServer(words[0], _hex_address(match.group(1), number), int(match.group(2), 16),
                                      words[2]))
    return services


# Reading a node. The modules hand in their own command runner; nothing here starts a process itself.

def _read_local(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def read_snapshot(run, find_tool, ipv4=None, read=_read_local):
    """Read everything `plan` looks at. run(argv) -> (rc, stdout, stderr); find_tool(name) -> a path or
    None; ipv4: the node's IPv4 tables (parse_save) when the caller has read them already; read(path) ->
    a file's text or None (the host adapter's, so /proc/net/ip_vs is the node's). A tool that is
    missing or fails leaves its part None with a note; output that cannot be read raises StateError (or
    IptablesSaveError), so nothing is planned from a misreading."""
    snap = Snapshot()
    for family in FAMILIES:
        if family == "ipv4" and ipv4 is not None:
            snap.iptables[family] = ipv4
            continue
        save = TOOLS[family][1]
        binary = find_tool(save)
        rc, out, err = run([binary]) if binary else (None, "", "")
        if rc == 0:
            snap.iptables[family] = parse_save(out)
        else:
            why = f"failed ({err.strip()[:120] or rc})" if binary else "is not installed"
            snap.notes.append(f"{save} {why}: {family} rules not read")
    for tool, argv, parser, attr in (("nft", ["list", "tables"], parse_nft_tables, "nft_tables"),
                                     ("ipset", ["save"], parse_ipset_save, "ipsets")):
        binary = find_tool(tool)
        rc, out, err = run([binary, *argv]) if binary else (None, "", "")
        if rc == 0:
            setattr(snap, attr, parser(out))
        elif binary:
            snap.notes.append(f"{tool} {' '.join(argv)} failed: {err.strip()[:120]}")
    binary = find_tool("ip")
    if not binary:
        snap.notes.append("ip is not installed: the kube-ipvs0 link cannot be read")
    else:
        rc, out, err = run([binary, "-d", "-j", "addr", "show"])
        if rc != 0:
            raise StateError(f"ip -d -j addr show failed: {err.strip()[:120]}")
        snap.link = parse_link(out)
    ip_vs = read(PROC_IP_VS)
    if ip_vs is not None:
        snap.ipvs = parse_ip_vs(ip_vs)
    return snap


# What the node shows of each mode.

def _owned_anywhere(table, existing):
    return mode_chains("iptables", table, existing) | mode_chains("ipvs", table, existing)


def _specific(mode, table, existing):
    """Chains only `mode` creates (iptables or ipvs): proof that it ran."""
    other = "ipvs" if mode == "iptables" else "iptables"
    return mode_chains(mode, table, existing) - mode_chains(other, table, existing)


def _shared(table, existing):
    return mode_chains("iptables", table, existing) & mode_chains("ipvs", table, existing)


def evidence(snap):
    """{mode: [what shows it]} for each mode whose own state the node holds."""
    found = {mode: [] for mode in PROXY_MODES}
    for family, tables in sorted(snap.iptables.items()):
        for name, table in sorted(tables.items()):
            for mode in IPTABLES_BASED:
                chains = sorted(_specific(mode, name, table.policies) & set(table.policies))
                found[mode] += [f"{family} {name} chain {chain}" for chain in chains]
    if snap.link is not None and snap.link.kind == IPVS_DEVICE_KIND:
        found["ipvs"].append(f"{snap.link.kind} link {snap.link.name}")
    found["ipvs"] += [f"ipset {name}" for name in sorted(snap.ipsets or {}) if name.startswith(IPSET_PREFIX)]
    found["nftables"] += [f"nft table {fam} {name}" for fam, name in snap.nft_tables or []
                          if name == NFTABLES_TABLE and fam in NFTABLES_FAMILIES]
    return {mode: reasons for mode, reasons in found.items() if reasons}


def _has_shared(snap):
    return any(_shared(name, table.policies) & set(table.policies)
               for tables in snap.iptables.values() for name, table in tables.items())


# The plan.

@dataclass
class Plan:
    configured: str
    recorded: str
    evident: dict
    previous: list = field(default_factory=list)  # the modes whose leftovers are removed
    chains: dict = field(default_factory=dict)  # family -> {table: [chains]}
    jumps: dict = field(default_factory=dict)  # family -> {table: [rule lines]}
    payloads: dict = field(default_factory=dict)  # family -> iptables-restore --noflush text
    ipsets: list = field(default_factory=list)
    link: str = None
    virtual_servers: list = field(default_factory=list)
    nft_tables: list = field(default_factory=list)
    kept: list = field(default_factory=list)  # (what, why)
    notes: list = field(default_factory=list)
    leftovers: dict = field(default_factory=dict)  # modes left alone: {mode: [what shows it]}

    @property
    def removes(self):
        return bool(self.payloads or self.ipsets or self.link or self.virtual_servers or self.nft_tables)

    def steps(self, restore="iptables-restore -w 5 --noflush"):
        """The commands in the order the module runs them, as text a person can read."""
        out = [f"ipvsadm {' '.join(vs.ipvsadm_delete())}" for vs in self.virtual_servers]
        if self.link:
            out.append(f"ip link delete {self.link}")
        for family in FAMILIES:
            if family in self.payloads:
                tool = restore.replace("iptables", "ip6tables", 1) if family == "ipv6" else restore
                out.append(f"{tool} <<EOF\n{self.payloads[family]}EOF")
        out += [f"ipset destroy {name}" for name in self.ipsets]
        if self.nft_tables:
            out.append("nft -f - <<EOF\n" + nft_delete_script(self.nft_tables) + "EOF")
        return out


def nft_delete_script(tables):
    return "".join(f"delete table {family} {name}\n" for family, name in tables)


def previous_modes(configured, recorded, evident):
    """The modes to clean up: the recorded one when it is not the configured one, plus, unless the record
    says the configured mode was already cleaned up for, every other mode the node shows."""
    if recorded == configured:
        return []
    others = {mode for mode in evident if mode != configured}
    if recorded is not None:
        others.add(recorded)
    return sorted(others)


def _match_sets(line):
    words = line.split()
    return {words[i + 1] for i, word in enumerate(words[:-1]) if word == "--match-set"}


def plan(snap, configured, recorded=None):
    """What to remove from the node described by `snap` for kube-proxy to run in `configured` mode."""
    if configured not in PROXY_MODES:
        raise ValueError(f"mode {configured!r} is not one of {', '.join(PROXY_MODES)}")
    if recorded is not None and recorded not in PROXY_MODES:
        raise ValueError(f"recorded mode {recorded!r} is not one of {', '.join(PROXY_MODES)}")
    evident = evidence(snap)
    if configured == "nftables" and _has_shared(snap) and not set(evident) & set(IPTABLES_BASED):
        evident["iptables"] = ["shared kube-proxy chains (KUBE-SERVICES, KUBE-POSTROUTING, ...)"]
    p = Plan(configured, recorded, evident)
    p.previous = previous_modes(configured, recorded, evident)
    p.leftovers = {m: r for m, r in evident.items() if m != configured and m not in p.previous}
    surviving_rules = _plan_iptables(p, snap)
    if "ipvs" in p.previous:
        _plan_ipvs(p, snap, surviving_rules)
    if "nftables" in p.previous:
        if snap.nft_tables is None:
            p.notes.append("nft is not installed: nftables leftovers cannot be read; none removed")
        p.nft_tables = [(fam, name) for fam, name in snap.nft_tables or []
                        if name == NFTABLES_TABLE and fam in NFTABLES_FAMILIES]
    return p


def _plan_iptables(p, snap):
    """Plan the chains and jumps to remove; return the rules that stay."""
    old_iptables = [m for m in p.previous if m in IPTABLES_BASED]
    keep_shared = p.configured in IPTABLES_BASED and p.configured in p.evident
    surviving_rules = []
    for family in FAMILIES:
        tables = snap.iptables.get(family)
        if tables is None:
            if old_iptables:
                p.notes.append(f"{family}: iptables rules could not be read; none removed there")
            continue
        for name in TABLES:
            table = tables.get(name)
            if table is None:
                continue
            doomed = _doomed(p, family, table, old_iptables, keep_shared)
            jumps = jumps_into(table, doomed)
            if doomed:
                p.chains.setdefault(family, {})[name] = sorted(doomed)
                p.jumps.setdefault(family, {})[name] = jumps
            jump_set = set(jumps)
            surviving_rules += [line for chain, line in table.rules if chain not in doomed and line not in jump_set]
        payload = "".join(delete_payload(tables[n], p.chains.get(family, {}).get(n, ()))
                          for n in TABLES if n in tables)
        if payload:
            p.payloads[family] = payload
    return surviving_rules


def _doomed(p, family, table, old_modes, keep_shared):
    existing = set(table.policies)
    doomed = set()
    for mode in old_modes:
        doomed |= mode_chains(mode, table.name, existing) & existing
    if keep_shared:
        for chain in sorted(doomed & _shared(table.name, existing)):
            doomed.discard(chain)
            runs = f"{p.configured} mode runs (it shows: {p.evident[p.configured][0]})"
            p.kept.append((f"{family} {table.name} chain {chain}", f"{runs} and owns this chain now"))
    builtin = set(BUILTIN_CHAINS.get(table.name, ()))
    for _ in range(len(doomed) + 1):  # each pass keeps at least one more chain, or stops
        referred = {}
        for chain, line in table.rules:
            target = rule_target(line)
            if chain not in doomed and chain not in builtin and target in doomed:
                referred.setdefault(target, line)
        if not referred:
            break
        for chain, line in sorted(referred.items()):
            doomed.discard(chain)
            p.kept.append((f"{family} {table.name} chain {chain}", f"still referred to by {line!r}"))
    return doomed


def _node_ports(sets):
    """{(protocol, port)} of kube-proxy's NodePorts, from its KUBE-NODE-PORT-* ipsets."""
    ports = set()
    for name, info in sets.items():
        match = _NODE_PORT_SET.match(name)
        if not match:
            continue
        for member in info["members"]:
            port = member.rsplit(":", 1)[-1]
            if port.isdigit():
                ports.add((match.group(1), int(port)))
    return ports


def _plan_ipvs(p, snap, surviving_rules):
    link = snap.link
    if link is not None:
        if link.kind == IPVS_DEVICE_KIND:
            p.link = link.name
        else:
            p.kept.append((f"link {link.name}", f"it is a {link.kind or 'link of unknown kind'}, not the "
                                                f"{IPVS_DEVICE_KIND} kube-proxy creates"))
    if snap.ipsets is None:
        p.notes.append("ipset is not installed: kube-proxy's ipsets cannot be read; none removed")
    referenced = set()
    for line in surviving_rules:
        referenced |= _match_sets(line)
    for name in sorted(snap.ipsets or {}):
        if not name.startswith(IPSET_PREFIX):
            continue
        if name in referenced:
            p.kept.append((f"ipset {name}", "a remaining iptables rule matches it"))
        else:
            p.ipsets.append(name)
    _plan_virtual_servers(p, snap)


def _plan_virtual_servers(p, snap):
    if snap.ipvs is None:
        p.notes.append("/proc/net/ip_vs does not exist (ip_vs is not loaded): there are no ipvs virtual servers")
        return
    link = snap.link
    bound = {a.split("/")[0] for a in link.addresses} if link is not None and link.kind == IPVS_DEVICE_KIND else set()
    node_ports = _node_ports(snap.ipsets or {})
    not_ours = f"its address is not on {IPVS_DUMMY_DEVICE} and its port is not one of kube-proxy's NodePorts"
    for vs in snap.ipvs:
        if vs.address in bound or (vs.protocol, vs.port) in node_ports:
            p.virtual_servers.append(vs)
        else:
            p.kept.append((f"ipvs virtual server {vs.text()}", not_ours))


# What a person compares: kube-proxy's state before and after.

def view(snap, p=None):
    """kube-proxy's state on the node as text; with a plan, the state the plan leaves."""
    out = []
    for family in FAMILIES:
        for name, table in sorted(snap.iptables.get(family, {}).items()):
            chains = _owned_anywhere(name, table.policies) & set(table.policies)
            doomed = set(p.chains.get(family, {}).get(name, ())) if p else set()
            removed_jumps = list(p.jumps.get(family, {}).get(name, ())) if p else []
            shown = chains - doomed
            lines = [f":{c} -" for c in sorted(shown)]
            for line in jumps_into(table, chains):
                if line in removed_jumps:
                    removed_jumps.remove(line)
                else:
                    lines.append(line)
            lines += [line for chain, line in table.rules if chain in shown]
            if lines:
                out += [f"# iptables {family} {name}", *lines]
    nft = [t for t in snap.nft_tables or [] if t[1] == NFTABLES_TABLE and not (p and t in p.nft_tables)]
    out += [f"table {fam} {name}" for fam, name in nft]
    sets = [n for n in sorted(snap.ipsets or {}) if n.startswith(IPSET_PREFIX) and not (p and n in p.ipsets)]
    out += [f"ipset {n} {snap.ipsets[n]['type']} ({len(snap.ipsets[n]['members'])} entries)" for n in sets]
    if snap.link is not None and not (p and p.link == snap.link.name):
        out.append(snap.link.text())
    out += [f"ipvs {vs.text()}" for vs in snap.ipvs or [] if not (p and vs in p.virtual_servers)]
    return "\n".join(out) + "\n" if out else ""
