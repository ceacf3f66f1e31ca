"""iproute2 output as data: links, addresses, routes, neighbours and bridge fdb entries.

Stdlib only (Python 3.9+): it runs on the nodes, inside Ansible modules and the audit. Parsing only;
deciding what a node should hold is the audit's business.

The JSON forms are the ones to collect: `ip -j -d link show`, `ip -j addr show`, `ip -j route show`
(any table), `ip -j neigh show`, `bridge -j fdb show`. The text forms of links (`ip -d link show`),
routes, neighbours and fdb entries are parsed as well, for the output that runbooks and the seeds show
(seed 000's and seed 001's `ip route`, seed 003's flannel node, printed by iproute2 versions old enough
to separate words with two spaces).

iproute2 leaves defaults out, and these parsers put them back: a route's type "unicast", protocol
"boot", scope "global" and metric 0 (IPv4 routes with metric 0 carry none), and the table: the one
the command listed, "main" unless `table=` names another (`ip route show table 100` prints no table;
`table all` names the table of every route outside main). A command filtered on a device (`ip neigh show dev X`,
`bridge fdb show dev X`) prints no device: pass it as `dev=`.

Output that is empty, truncated, not a list, or has an entry without a required field or with a
field of the wrong type raises IprouteError, a ProblemsError whose field is the command, listing
every problem at once; never a partial or guessed result. Empty output is an error because the JSON
forms print `[]` when there is nothing to show, and the text forms cannot tell "nothing" from lost
output. Link parsers need the details (`-d`): without them a vxlan link is indistinguishable from a
physical one. The text forms have one blind spot: output cut right after a whole word (a route line that
lost its trailing "onlink", an fdb line its "permanent") still reads as a valid line, so audits collect
the JSON forms, where a cut is always a JSON error.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass

from .errors import ProblemsError

LINK_COMMAND = "ip -j -d link show"
ADDR_COMMAND = "ip -j addr show"
ROUTE_COMMAND = "ip -j route show"
NEIGH_COMMAND = "ip -j neigh show"
FDB_COMMAND = "bridge -j fdb show"
LINK_TEXT_COMMAND = "ip -d link show"
ROUTE_TEXT_COMMAND = "ip route show"
NEIGH_TEXT_COMMAND = "ip neigh show"
FDB_TEXT_COMMAND = "bridge fdb show"

# What iproute2 leaves out (ip/iproute.c print_route prints these only when they differ, or with -d).
DEFAULT_ROUTE_TYPE = "unicast"
DEFAULT_PROTOCOL = "boot"
DEFAULT_SCOPE = "global"
DEFAULT_TABLE = "main"
DEFAULT_METRIC = 0

ROUTE_TYPES = ("unicast", "local", "broadcast", "anycast", "multicast", "blackhole", "unreachable",
               "prohibit", "throw", "nat", "xresolve")
# Route words followed by a value (ip/iproute.c print_route, print_rta_metrics, print_rta_multipath).
_ROUTE_VALUE_WORDS = {
    "from", "tos", "dsfield", "via", "dev", "table", "proto", "scope", "src", "metric", "pref", "mtu", "advmss",
    "rtt", "rttvar", "reordering", "window", "cwnd", "initcwnd", "initrwnd", "ssthresh", "realm", "realms",
    "hoplimit", "expires", "nhid", "features", "congctl", "quickack", "fastopen_no_cookie", "rto_min", "error",
    "weight", "ttl-propagate", "as",
}
_ROUTE_METRIC_LOCKABLE = {"mtu", "advmss", "rtt", "rttvar", "reordering", "window", "cwnd", "initcwnd",
                          "initrwnd", "ssthresh", "hoplimit", "rto_min"}
ROUTE_FLAGS = ("dead", "onlink", "pervasive", "offload", "trap", "notify", "linkdown", "unresolved",
               "rt_offload", "rt_trap", "rt_offload_failed")
NEIGH_STATES = ("PERMANENT", "NOARP", "REACHABLE", "STALE", "NONE", "INCOMPLETE", "DELAY", "PROBE", "FAILED")
NEIGH_FLAGS = ("router", "proxy", "extern_learn", "offload", "managed", "extern_valid")
_NEIGH_VALUE_WORDS = {"dev", "lladdr", "used", "probes", "protocol", "vrf"}
FDB_FLAGS = ("self", "router", "extern_learn", "offloaded", "sticky", "locked", "blocked_ucast")
_FDB_VALUE_WORDS = {"dev", "dst", "master", "vlan", "port", "vni", "src_vni", "via", "nhid", "link-netnsid", "used"}
FDB_STATES = ("permanent", "static", "stale")
ADDR_FLAGS = ("secondary", "temporary", "tentative", "deprecated", "dadfailed", "home", "nodad", "optimistic",
              "mngtmpaddr", "noprefixroute", "autojoin", "stable-privacy", "dynamic")
# Words that can open a detail line of `ip -d link show` without being the link's kind.
_NOT_A_KIND = {"addrgenmode", "altname", "alias", "vf", "RX:", "TX:", "prop", "link-netnsid"}
_KIND = re.compile(r"^[a-z][a-z0-9_]*$")
_LINK_HEADER = re.compile(r"^(\d+):\s+([^\s@:]+)(?:@(\S+?))?:\s+<([^>]*)>(.*)$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class IprouteError(ProblemsError):
    """Output of ip or bridge that is not what the command prints. `problems`: [(command, message)]."""


# --- the data ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vxlan:
    """A vxlan link's settings (linkinfo.info_data of `ip -j -d link show`, the kind line of the text)."""

    id: int  # the VNI
    local: str | None  # the local (source) address of the tunnel
    port: int | None  # the UDP destination port; None when the output does not show it (old iproute2)
    dev: str | None  # the underlay device (`dev eth0`; "link" in JSON)
    learning: bool | None  # None when the output does not say


@dataclass(frozen=True)
class Link:
    """One link of `ip -d link show`: kind is None for a link without linkinfo (a NIC, lo)."""

    name: str
    index: int
    kind: str | None  # linkinfo.info_kind: vxlan, bridge, veth, dummy, ...
    mtu: int
    operstate: str  # UP, DOWN, UNKNOWN, ...
    flags: tuple  # ("BROADCAST", "MULTICAST", "UP", "LOWER_UP")
    master: str | None  # the bridge or bond it is a port of
    address: str | None  # the link-layer address
    link: str | None  # after '@': a veth's peer, a vlan's parent; "if<N>" when in another namespace
    slave_kind: str | None = None  # linkinfo.info_slave_kind: "bridge" for a bridge port
    vxlan: Vxlan | None = None

    @property
    def up(self):
        """Administratively up (the UP flag); `lower_up` says whether it has a carrier."""
        return "UP" in self.flags

    @property
    def lower_up(self):
        return "LOWER_UP" in self.flags


@dataclass(frozen=True)
class Addr:
    """One address of `ip -j addr show`."""

    ifname: str
    family: str  # "inet" or "inet6"
    local: str
    prefixlen: int
    scope: str  # global, link, host
    broadcast: str | None = None
    label: str | None = None
    flags: tuple = ()  # set ones of ADDR_FLAGS: ("tentative",), ("dynamic", "noprefixroute")

    @property
    def cidr(self):
        return f"{self.local}/{self.prefixlen}"


@dataclass(frozen=True)
class Nexthop:
    """One path of a multipath route."""

    gateway: str | None
    dev: str | None
    weight: int
    flags: tuple = ()


@dataclass(frozen=True)
class Route:
    """One route. dst is "default" or the prefix as printed ("10.244.0.0/24", a host: "10.96.0.10")."""

    dst: str
    gateway: str | None
    dev: str | None  # None for blackhole/unreachable/prohibit routes and multipath ones (see nexthops)
    type: str = DEFAULT_ROUTE_TYPE
    protocol: str = DEFAULT_PROTOCOL
    scope: str = DEFAULT_SCOPE
    table: str = DEFAULT_TABLE
    prefsrc: str | None = None
    metric: int = DEFAULT_METRIC
    flags: tuple = ()  # ("onlink",), ("linkdown",)
    nexthops: tuple = ()  # Nexthop, for multipath routes


@dataclass(frozen=True)
class Neigh:
    """One neighbour (ARP/NDP) entry."""

    dst: str
    dev: str
    lladdr: str | None  # None while unresolved (FAILED, INCOMPLETE)
    state: tuple  # ("PERMANENT",), ("REACHABLE",)
    flags: tuple = ()  # ("router",), ("proxy",)

    @property
    def permanent(self):
        return "PERMANENT" in self.state


@dataclass(frozen=True)
class Fdb:
    """One bridge forwarding database entry (a bridge port's, or a vxlan device's own: flag "self")."""

    mac: str
    dev: str
    dst: str | None  # a vxlan entry's remote VTEP address
    flags: tuple  # ("self",), ("self", "extern_learn")
    state: str | None  # "permanent", "static", "stale"; None for a learnt (reachable) entry
    master: str | None = None
    vlan: int | None = None
    vni: int | None = None

    @property
    def permanent(self):
        return self.state == "permanent"


# --- checking what ip printed -----------------------------------------------------------------------


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", list: "a list", dict: "an object"}


class _Problems:
    def __init__(self, command):
        self.command = command
        self.problems = []

    def fail(self, message):
        self.problems.append((self.command, message))

    def raise_if_any(self):
        if self.problems:
            raise IprouteError(self.problems)


class _Entry:
    """One JSON object of the list: typed access that records what is missing or of the wrong type."""

    def __init__(self, problems, item, where):
        self.problems, self.item, self.where, self.ok = problems, item, where, True

    def fail(self, message):
        self.ok = False
        self.problems.fail(f"{self.where}: {message}")

    def get(self, key, kind, required=False, default=None):
        if key not in self.item:
            if required:
                self.fail(f"{key} is missing")
            return default
        value = self.item[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            self.fail(f"{key} is {_describe(value)}, not {' or '.join(_TYPE_NAMES[k] for k in kinds)}")
            return default
        return value

    def strings(self, key, required=False):
        value = self.get(key, list, required, default=[])
        if not all(isinstance(v, str) for v in value):
            self.fail(f"{key} is not a list of strings: {value!r}")
            return ()
        return tuple(value)

    def address(self, key, required=False, network=False):
        value = self.get(key, str, required)
        if value is not None and not _valid_address(value, network):
            self.fail(f"{key} {value!r} is not an IP {'prefix' if network else 'address'}")
            return None
        return value


def _describe(value):
    text = json.dumps(value)
    return f"{type(value).__name__} {text[:40]}"


def _valid_address(text, network=False):
    try:
        if network:
            if text != "default":
                ipaddress.ip_network(text, strict=False)
        else:
            ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _load(text, command, what):
    """The list `command` printed (-j), or IprouteError for empty, truncated or non-list output."""
    if not isinstance(text, str):
        raise IprouteError([(command, f"expected the command's output as text, got {type(text).__name__}")])
    if not text.strip():
        raise IprouteError([(command, f"the output is empty; the command prints [] when there are no {what}, "
                                      "so empty output means it did not run or its output was lost")])
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise IprouteError([(command, f"the output is not complete JSON ({exc}): it is truncated or not "
                                      f"`{command}` output")]) from None
    if not isinstance(doc, list):
        raise IprouteError([(command, f"the output is a JSON {type(doc).__name__}, not the list of {what} "
                                      "the command prints")])
    return doc


def _entries(doc, problems, what, name_key):
    """An _Entry per object of the list, named "<what> <number> (<name>)" in messages."""
    for number, item in enumerate(doc, 1):
        if not isinstance(item, dict):
            problems.fail(f"{what} {number} is {_describe(item)}, not an object")
            continue
        name = item.get(name_key)
        yield _Entry(problems, item, f"{what} {number}" + (f" ({name})" if isinstance(name, str) else ""))


# --- JSON parsers -----------------------------------------------------------------------------------


def parse_links(json_text, command=LINK_COMMAND):
    """`ip -j -d link show` (or `ip -j -d addr show`) -> [Link], in the order printed."""
    doc = _load(json_text, command, "links")
    problems, links = _Problems(command), []
    for e in _entries(doc, problems, "link", "ifname"):
        name = e.get("ifname", str, required=True)
        index = e.get("ifindex", int, required=True)
        mtu = e.get("mtu", int, required=True)
        operstate = e.get("operstate", str, required=True)
        flags = e.strings("flags", required=True)
        if "promiscuity" not in e.item:
            e.fail("has no details (no promiscuity, no linkinfo): run the command with -d, without it "
                   "a vxlan or bridge link looks like a plain one")
        info = e.get("linkinfo", dict, default={})
        kind = _info(e, info, "info_kind")
        slave_kind = _info(e, info, "info_slave_kind")
        vxlan = _vxlan_json(e, info.get("info_data")) if kind == "vxlan" else None
        link = e.get("link", str)
        peer_index = e.get("link_index", int)
        if link is None and peer_index is not None:
            link = f"if{peer_index}"
        master, address = e.get("master", str), e.get("address", str)
        if e.ok:
            links.append(Link(name, index, kind, mtu, operstate, flags, master, address, link, slave_kind, vxlan))
    problems.raise_if_any()
    return links


def _info(e, info, key):
    value = info.get(key)
    if value is not None and not isinstance(value, str):
        e.fail(f"linkinfo.{key} is {_describe(value)}, not a string")
        return None
    return value


def _vxlan_json(e, data):
    if not isinstance(data, dict):
        e.fail("is a vxlan link without linkinfo.info_data (its VNI, local address and port)")
        return None
    d = _Entry(e.problems, data, f"{e.where}: linkinfo.info_data")
    vni = d.get("id", int, required=True)
    local = d.address("local") or d.address("local6")
    port, dev, learning = d.get("port", int), d.get("link", str), d.get("learning", bool)
    if not d.ok:
        e.ok = False
        return None
    return Vxlan(vni, local, port, dev, learning)


def parse_addrs(json_text, command=ADDR_COMMAND):
    """`ip -j addr show` -> [Addr], one per address, links in the order printed."""
    doc = _load(json_text, command, "links")
    problems, addrs = _Problems(command), []
    for e in _entries(doc, problems, "link", "ifname"):
        ifname = e.get("ifname", str, required=True)
        infos = e.get("addr_info", list, default=None)
        if infos is None and "addr_info" not in e.item:
            e.fail("has no addr_info: this is not `ip addr show` output")
        for number, info in enumerate(infos or (), 1):
            if not isinstance(info, dict):
                e.fail(f"addr_info {number} is {_describe(info)}, not an object")
                continue
            a = _Entry(problems, info, f"{e.where}: addr_info {number}")
            family = a.get("family", str, required=True)
            if family not in ("inet", "inet6", None):
                continue  # other families (e.g. mpls) carry no IP address
            local = a.address("local", required=True)
            prefixlen = a.get("prefixlen", int, required=True)
            scope = a.get("scope", str, required=True)
            if local is not None and prefixlen is not None and not _valid_address(f"{local}/{prefixlen}", True):
                a.fail(f"prefixlen {prefixlen} does not fit the address {local}")
            broadcast, label = a.address("broadcast"), a.get("label", str)
            flags = tuple(f for f in ADDR_FLAGS if a.get(f, bool) is True)
            if e.ok and a.ok:
                addrs.append(Addr(ifname, family, local, prefixlen, scope, broadcast, label, flags))
    problems.raise_if_any()
    return addrs


def parse_routes(json_text, table=DEFAULT_TABLE, command=ROUTE_COMMAND):
    """`ip -j route show [table T|all]` -> [Route]. `table`: the table the command listed (see the module doc)."""
    doc = _load(json_text, command, "routes")
    problems, routes = _Problems(command), []
    for e in _entries(doc, problems, "route", "dst"):
        dst = e.address("dst", required=True, network=True)
        gateway = _gateway(e, e.item)
        dev = e.get("dev", str)
        rtype = e.get("type", str, default=DEFAULT_ROUTE_TYPE)
        if rtype not in ROUTE_TYPES:
            e.fail(f"type {rtype!r} is not a route type; accepted: {', '.join(ROUTE_TYPES)}")
        route_table = e.get("table", (str, int), default=table)
        protocol = e.get("protocol", (str, int), default=DEFAULT_PROTOCOL)
        scope = e.get("scope", (str, int), default=DEFAULT_SCOPE)
        prefsrc = e.address("prefsrc")
        metric = e.get("metric", int, default=DEFAULT_METRIC)
        flags = e.strings("flags")
        nexthops = []
        for number, hop in enumerate(e.get("nexthops", list, default=[]), 1):
            if not isinstance(hop, dict):
                e.fail(f"nexthop {number} is {_describe(hop)}, not an object")
                continue
            h = _Entry(problems, hop, f"{e.where}: nexthop {number}")
            nexthop = Nexthop(_gateway(h, hop), h.get("dev", str), h.get("weight", int, default=1), h.strings("flags"))
            e.ok = e.ok and h.ok
            nexthops.append(nexthop)
        if e.ok:
            routes.append(Route(dst, gateway, dev, rtype, str(protocol), str(scope), str(route_table), prefsrc,
                                metric, flags, tuple(nexthops)))
    problems.raise_if_any()
    return routes


def _gateway(e, item):
    """"gateway", or "via": {"family", "host"} (a gateway of another family, RTA_VIA)."""
    if "via" in item:
        via = e.get("via", dict, default={})
        host = via.get("host")
        if not isinstance(host, str) or not _valid_address(host):
            e.fail(f"via {via!r} has no host address")
            return None
        return host
    return e.address("gateway")


def parse_neighs(json_text, dev=None, command=NEIGH_COMMAND):
    """`ip -j neigh show [dev D]` -> [Neigh]. `dev`: the device the command was filtered on."""
    doc = _load(json_text, command, "neighbours")
    problems, neighs = _Problems(command), []
    for e in _entries(doc, problems, "neighbour", "dst"):
        dst = e.address("dst", required=True)
        device = _device(e, e.get("dev", str), dev)
        lladdr = e.get("lladdr", str)
        state = e.strings("state", required=True)
        unknown = [s for s in state if s not in NEIGH_STATES]
        if unknown:
            e.fail(f"state {', '.join(unknown)} is not a neighbour state; accepted: {', '.join(NEIGH_STATES)}")
        flags = tuple(f for f in NEIGH_FLAGS if f in e.item)
        if e.ok:
            neighs.append(Neigh(dst, device, lladdr, state, flags))
    problems.raise_if_any()
    return neighs


def _device(e, printed, filtered, keys=("dev",)):
    """The entry's device: the one printed (under one of `keys`), else the one the command was filtered on."""
    if not any(k in e.item for k in keys) and filtered is None:
        e.fail("has no dev; output of a command filtered on a device (`... show dev X`) needs dev=X")
    if printed is not None and filtered is not None and printed != filtered:
        e.fail(f"is on {printed}, but the command was filtered on dev {filtered}")
    return printed or filtered


def parse_fdb(json_text, dev=None, command=FDB_COMMAND):
    """`bridge -j fdb show [dev D]` -> [Fdb]. `dev`: the device the command was filtered on."""
    doc = _load(json_text, command, "fdb entries")
    problems, entries = _Problems(command), []
    for e in _entries(doc, problems, "fdb entry", "mac"):
        mac = e.get("mac", str, required=True)
        if mac is not None and not _MAC.match(mac):
            e.fail(f"mac {mac!r} is not a MAC address such as 3a:5e:8c:1d:f2:11")
        # iproute2 4.17 and later print "ifname"; older versions printed "dev".
        device = _device(e, e.get("ifname", str) or e.get("dev", str), dev, keys=("ifname", "dev"))
        dst = e.address("dst")
        flags = e.strings("flags")
        state = e.get("state", str) or None
        master, vlan, vni = e.get("master", str), e.get("vlan", int), e.get("vni", int)
        if e.ok:
            entries.append(Fdb(mac, device, dst, flags, state, master, vlan, vni))
    problems.raise_if_any()
    return entries


# --- text parsers -----------------------------------------------------------------------------------


def _lines(text, command, what):
    if not isinstance(text, str):
        raise IprouteError([(command, f"expected the command's output as text, got {type(text).__name__}")])
    lines = [(n, line.rstrip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise IprouteError([(command, f"the output is empty: no {what} cannot be told from lost output in the text "
                                      f"form; collect `{command.replace(' ', ' -j ', 1)}`, which prints []")])
    return lines


class _Words:
    """The words of one text line, consumed left to right."""

    def __init__(self, problems, number, line):
        self.problems, self.number, self.line = problems, number, line
        self.words, self.i, self.ok = line.split(), 0, True

    def fail(self, message):
        if self.ok:
            self.problems.fail(f"line {self.number}: {message} in {self.line.strip()[:100]!r}")
        self.ok = False

    def more(self):
        return self.ok and self.i < len(self.words)

    def next(self, what="a value"):
        if self.i >= len(self.words):
            self.fail(f"{what} is missing at the end")
            return None
        self.i += 1
        return self.words[self.i - 1]

    def address(self, what, network=False):
        value = self.next(what)
        if value is not None and not _valid_address(value, network):
            self.fail(f"{what} {value!r} is not an IP {'prefix' if network else 'address'}")
            return None
        return value

    def integer(self, what):
        value = self.next(what)
        if value is not None and not value.isdigit():
            self.fail(f"{what} {value!r} is not a number")
            return None
        return int(value) if value is not None else None


def parse_routes_text(text, table=DEFAULT_TABLE, command=ROUTE_TEXT_COMMAND):
    """`ip route show [table T|all]` text -> [Route]; a multipath route's `nexthop` lines follow it."""
    problems, routes = _Problems(command), []
    current = None
    for number, line in _lines(text, command, "routes"):
        w = _Words(problems, number, line)
        if line[:1].isspace():
            if w.words[0] != "nexthop" or current is None:
                w.fail("an indented line is not a 'nexthop' line of a multipath route")
                continue
            w.i = 1
            hop = _route_words(w, {})
            if w.ok and current.get("ok"):
                current["nexthops"].append(Nexthop(hop.get("via"), hop.get("dev"), hop.get("weight", 1),
                                                   tuple(hop.get("flags", ()))))
            else:
                current["ok"] = False
            continue
        if current is not None:
            routes.append(current)
        rtype = DEFAULT_ROUTE_TYPE
        if w.words[0] in ROUTE_TYPES:
            rtype = w.next()
        dst = w.address("the destination", network=True)
        fields = _route_words(w, {})
        current = {"ok": w.ok, "type": rtype, "dst": dst, "fields": fields, "nexthops": []}
    if current is not None:
        routes.append(current)
    problems.raise_if_any()
    return [Route(r["dst"], r["fields"].get("via"), r["fields"].get("dev"), r["type"],
                  r["fields"].get("proto", DEFAULT_PROTOCOL), r["fields"].get("scope", DEFAULT_SCOPE),
                  r["fields"].get("table", table), r["fields"].get("src"),
                  r["fields"].get("metric", DEFAULT_METRIC), tuple(r["fields"].get("flags", ())),
                  tuple(r["nexthops"])) for r in routes]


def _route_words(w, fields):
    while w.more():
        word = w.next()
        if word in ROUTE_FLAGS:
            fields.setdefault("flags", []).append(word)
        elif word == "via":
            if w.i < len(w.words) and w.words[w.i] in ("inet", "inet6"):
                w.next()
            fields["via"] = w.address("the gateway (via)")
        elif word in ("src", "from"):
            fields[word] = w.address(f"the {word} address", network=word == "from")
        elif word in ("metric", "weight"):
            fields[word] = w.integer(f"the {word}")
        elif word in _ROUTE_VALUE_WORDS:
            if word in _ROUTE_METRIC_LOCKABLE and w.i < len(w.words) and w.words[w.i] == "lock":
                w.next()
            if word == "as" and w.i < len(w.words) and w.words[w.i] == "to":
                w.next()
            fields[word] = w.next(f"the value of {word}")
        else:
            w.fail(f"{word!r} is not a word `ip route` prints")
    return fields


def parse_neighs_text(text, dev=None, command=NEIGH_TEXT_COMMAND):
    """`ip neigh show [dev D]` text -> [Neigh]. `dev`: the device the command was filtered on."""
    problems, neighs = _Problems(command), []
    for number, line in _lines(text, command, "neighbours"):
        w = _Words(problems, number, line)
        dst = w.address("the neighbour address")
        fields, flags, state = {}, [], []
        while w.more():
            word = w.next()
            if word in NEIGH_STATES:
                state.append(word)
            elif word in NEIGH_FLAGS:
                flags.append(word)
            elif word in _NEIGH_VALUE_WORDS:
                fields[word] = w.next(f"the value of {word}")
            else:
                w.fail(f"{word!r} is not a word `ip neigh` prints")
        if w.ok and not state:
            w.fail(f"the state is missing (one of {', '.join(NEIGH_STATES)})")
        device = fields.get("dev") or dev
        if w.ok and device is None:
            w.fail("there is no dev; output of `ip neigh show dev X` needs dev=X")
        if w.ok:
            neighs.append(Neigh(dst, device, fields.get("lladdr"), tuple(state), tuple(flags)))
    problems.raise_if_any()
    return neighs


def parse_fdb_text(text, dev=None, command=FDB_TEXT_COMMAND):
    """`bridge fdb show [dev D]` text -> [Fdb]. `dev`: the device the command was filtered on."""
    problems, entries = _Problems(command), []
    for number, line in _lines(text, command, "fdb entries"):
        w = _Words(problems, number, line)
        mac = w.next("the MAC address")
        if mac is not None and not _MAC.match(mac):
            w.fail(f"{mac!r} is not a MAC address such as 3a:5e:8c:1d:f2:11")
        fields, flags, state = {}, [], None
        while w.more():
            word = w.next()
            if word in FDB_FLAGS:
                flags.append(word)
            elif word in FDB_STATES or word.startswith("state="):
                if w.i != len(w.words):
                    w.fail(f"the state {word!r} is not the last word")
                state = word
            elif word in ("vlan", "vni"):
                fields[word] = w.integer(f"the {word}")
            elif word == "dst":
                fields[word] = w.address("the dst address")
            elif word in _FDB_VALUE_WORDS:
                fields[word] = w.next(f"the value of {word}")
            else:
                w.fail(f"{word!r} is not a word `bridge fdb` prints")
        device = fields.get("dev") or dev
        if w.ok and device is None:
            w.fail("there is no dev; output of `bridge fdb show dev X` needs dev=X")
        if w.ok:
            entries.append(Fdb(mac, device, fields.get("dst"), tuple(flags), state, fields.get("master"),
                               fields.get("vlan"), fields.get("vni")))
    problems.raise_if_any()
    return entries


def parse_links_text(text, command=LINK_TEXT_COMMAND):
    """`ip -d link show` text -> [Link]. Each link is a header line ("7: flannel.1: <FLAGS> mtu 1450 ..."),
    a "link/<type>" line and, with -d, detail lines: the first names the kind ("vxlan id 1 ...")."""
    problems, blocks = _Problems(command), []
    for number, line in _lines(text, command, "links"):
        if not line[:1].isspace():
            blocks.append([(number, line)])
        elif blocks:
            blocks[-1].append((number, line))
        else:
            problems.fail(f"line {number}: {line.strip()[:60]!r} comes before any '<index>: <name>: <FLAGS>' line")
    links = [_link_text(problems, block) for block in blocks]
    problems.raise_if_any()
    return links


def _link_text(problems, block):
    number, header = block[0]
    match = _LINK_HEADER.match(header)
    if not match:
        problems.fail(f"line {number}: {header[:60]!r} is not a link header '<index>: <name>: <FLAGS> mtu ...'")
        return None
    index, name, link, flags, rest = match.groups()
    words = rest.split()
    where = f"line {number} ({name})"
    values = {}
    for key in ("mtu", "master", "state"):
        if key in words[:-1]:
            values[key] = words[words.index(key) + 1]
    if "mtu" not in values or not values["mtu"].isdigit() or "state" not in values:
        problems.fail(f"{where}: the header has no 'mtu <number>' or no 'state <state>'")
        return None
    if len(block) < 2 or not block[1][1].split()[0].startswith("link/"):  # noqa: PLR2004 - header and link/ line
        problems.fail(f"{where}: the 'link/<type>' line is missing: the output is truncated")
        return None
    linkline = block[1][1].split()
    address = linkline[1] if len(linkline) > 1 and linkline[1] not in _LINK_LINE_WORDS else None
    if "promiscuity" not in linkline:
        problems.fail(f"{where}: has no details (no promiscuity): run `ip -d link show`; without -d a vxlan or "
                      "bridge link looks like a plain one")
        return None
    kind = slave_kind = vxlan = None
    details = [line.split() for _, line in block[2:]]
    if details and details[0][0] not in _NOT_A_KIND and _KIND.match(details[0][0]) \
            and not details[0][0].endswith("_slave"):
        kind = details[0][0]
    for words_ in details:
        if words_[0].endswith("_slave"):
            slave_kind = words_[0][: -len("_slave")]
    if kind == "vxlan":
        vxlan = _vxlan_text(problems, where, details[0])
        if vxlan is None:
            return None
    return Link(name, int(index), kind, int(values["mtu"]), values["state"], tuple(f for f in flags.split(",") if f),
                values.get("master"), address, link, slave_kind, vxlan)


_LINK_LINE_WORDS = {"brd", "peer", "link-netnsid", "link-netns", "promiscuity", "permaddr", "allmulti", "minmtu",
                    "maxmtu"}


def _vxlan_text(problems, where, words):
    """The kind line of a vxlan link: "vxlan id 1 local 198.51.100.12 dev eth0 srcport 0 0 dstport 8472
    nolearning ...". iproute2 before the srcport/dstport split printed "port <low> <high>" (the source
    port range) and no dstport: port is then None."""
    values = {}
    for key in ("id", "local", "dev", "dstport"):
        if key in words[:-1]:
            values[key] = words[words.index(key) + 1]
    vni, port = values.get("id", ""), values.get("dstport")
    if not vni.isdigit() or (port is not None and not port.isdigit()):
        problems.fail(f"{where}: the vxlan line has no 'id <VNI>' or a dstport that is not a number")
        return None
    local = values.get("local")
    if local is not None and not _valid_address(local):
        problems.fail(f"{where}: the vxlan local address {local!r} is not an IP address")
        return None
    return Vxlan(int(vni), local, int(port) if port else None, values.get("dev"), "nolearning" not in words)
