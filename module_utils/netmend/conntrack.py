"""The connection tracking table as data: `conntrack -L` (plain and `-o extended`) and /proc/net/nf_conntrack.

Stdlib only (Python 3.9+): it runs on the nodes. Parsing only; what a flow means for the node (a stale
DNAT to a deleted pod, an UNREPLIED DNS query) is the audit's business.

One line per flow, in the order libnetfilter_conntrack prints it (src/conntrack/snprintf_default.c; the
kernel's /proc/net/nf_conntrack, nf_conntrack_standalone.c, follows the same order):

    [<l3 name> <l3 num>] <l4 name> <l4 num> <timeout> [<state>]
    src= dst= <ports> [zone-orig=] [packets= bytes=] [[UNREPLIED]]
    src= dst= <ports> [zone-reply=] [packets= bytes=] [[ASSURED]|[OFFLOAD]|[HW_OFFLOAD]]
    [mark=] [secmark=] [secctx=] [zone=] [delta-time=] [[start=...] [stop=...]] [helper=] use= [id=] [labels=]

where <ports> is `sport= dport=` (tcp, udp, udplite, sctp, dccp), `type= code= id=` (icmp, icmpv6) or
`srckey= dstkey=` (gre). The l3 prefix comes with `-o extended` and in /proc/net/nf_conntrack (which
prints IPv6 addresses in full; they are returned compressed). `conntrack -L` ends with
"conntrack v1.4.7 (conntrack-tools): N flow entries have been shown." on stderr: pass stderr (or
output with stderr merged) and the count must match, which is how a truncated listing is caught.

Every line that does not follow the format raises ConntrackError naming the command and the line; an
empty listing is accepted only when conntrack's summary line confirms it (0 flow entries), because
empty output cannot be told from lost output.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .errors import ProblemsError

COMMAND = "conntrack -L"
PROC_PATH = "/proc/net/nf_conntrack"
PORT_PROTOCOLS = ("tcp", "udp", "udplite", "sctp", "dccp")
ICMP_PROTOCOLS = ("icmp", "icmpv6")
STATEFUL_PROTOCOLS = ("tcp", "sctp", "dccp")  # conntrack prints their protocol state after the timeout
FAMILIES = {"ipv4": 2, "ipv6": 10}  # AF_INET, AF_INET6
MAX_PORT = 65535
_SUMMARY = re.compile(r"^conntrack v(\S+) \(conntrack-tools\): (\d+) flow entries have been shown\.$")
_TOKEN = re.compile(r"\[[^\]]*\]|\S+")
_STATE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_TUPLE_KEYS = {
    "src", "dst", "sport", "dport", "type", "code", "id", "srckey", "dstkey", "packets", "bytes",
    "zone-orig", "zone-reply",
}
_AFTER_REPLY_FLAGS = ("ASSURED", "OFFLOAD", "HW_OFFLOAD")
_EVENTS = ("[NEW]", "[UPDATE]", "[DESTROY]")


class ConntrackError(ProblemsError):
    """conntrack output that is not what conntrack prints. `problems`: [("<command>, line N", message)]."""


@dataclass(frozen=True)
class Tuple:
    """One direction of a flow. sport/dport for port protocols; icmp = (type, code, id) for ICMP."""

    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    icmp: tuple | None = None
    packets: int | None = None  # with nf_conntrack_acct=1
    bytes: int | None = None
    zone: int | None = None  # zone-orig= / zone-reply=
    other: tuple = ()  # (key, value) pairs not modelled here: gre's srckey/dstkey


@dataclass(frozen=True)
class Flow:
    """One conntrack entry."""

    family: str  # "ipv4" or "ipv6"
    protocol: str  # tcp, udp, icmp, ... ("unknown" for a protocol conntrack has no name for)
    protonum: int
    timeout: int  # seconds left
    state: str | None  # TCP/SCTP/DCCP state: ESTABLISHED, TIME_WAIT, SYN_SENT, ...
    original: Tuple
    reply: Tuple
    flags: tuple  # ("UNREPLIED",), ("ASSURED",)
    mark: int | None
    zone: int | None
    use: int
    id: int | None = None  # with -o id
    helper: str | None = None
    labels: tuple = ()
    other: tuple = ()  # (key, value) pairs not modelled here: secmark, secctx, delta-time, [start=...]
    line: int = 0  # where it was printed (1-based)

    @property
    def assured(self):
        return "ASSURED" in self.flags

    @property
    def unreplied(self):
        return "UNREPLIED" in self.flags

    @property
    def dnat(self):
        """The reply comes from another address or port than the original went to (a Service's DNAT)."""
        return (self.reply.src, self.reply.sport) != (self.original.dst, self.original.dport)

    @property
    def snat(self):
        """The reply goes to another address or port than the original came from (masquerade)."""
        return (self.reply.dst, self.reply.dport) != (self.original.src, self.original.sport)


class _Line:
    def __init__(self, command, number, text):
        self.command, self.number, self.text = command, number, text
        self.tokens, self.i = _TOKEN.findall(text), 0

    def error(self, message):
        return (f"{self.command}, line {self.number}", f"{message}; the line: {self.text.strip()[:160]!r}")

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self):
        self.i += 1
        return self.tokens[self.i - 1]


class _Bad(Exception):
    """One line's problem, turned into a ConntrackError entry by the caller."""


def parse_conntrack(text, stderr=None, command=COMMAND):
    """`conntrack -L [-o extended[,id]]` stdout (stderr merged into it or given apart) -> [Flow].

    The summary line "... N flow entries have been shown." is checked against the flows found when it
    is present (in text or stderr); without it an empty listing is an error. stderr without the summary
    line is an error too (conntrack failed: its message is quoted).
    """
    return _parse(text, stderr, command, empty_ok=False)


def parse_proc(text, command=PROC_PATH):
    """/proc/net/nf_conntrack -> [Flow]; an empty file is an empty table (a file read cannot be cut short)."""
    return _parse(text, None, command, empty_ok=True)


def _parse(text, stderr, command, empty_ok):
    if not isinstance(text, str) or (stderr is not None and not isinstance(stderr, str)):
        raise ConntrackError([(command, "expected the command's output as text")])
    problems, flows, summaries = [], [], []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        summary = _SUMMARY.match(raw.strip())
        if summary:
            summaries.append((f"{command}, line {number}", int(summary.group(2))))
            continue
        line = _Line(command, number, raw)
        try:
            flows.append(_flow(line))
        except _Bad as exc:
            problems.append(line.error(str(exc)))
    if stderr is not None:
        found = [_SUMMARY.match(s.strip()) for s in stderr.splitlines()]
        found = [m for m in found if m]
        if not found:
            first = stderr.strip().splitlines()[0][:200] if stderr.strip() else "(empty)"
            problems.append((f"{command} (stderr)", "has no 'N flow entries have been shown.' line, so the "
                                                    f"listing is not known to be complete; stderr: {first!r}"))
        summaries += [(f"{command} (stderr)", int(m.group(2))) for m in found]
    for where, count in summaries:
        if count != len(flows) and not problems:
            problems.append((where, f"conntrack reported {count} flow entries but the output has {len(flows)}: "
                                    "it is truncated or merged from several listings"))
    if not flows and not summaries and not problems and not empty_ok:
        problems.append((command, "the output is empty and there is no 'N flow entries have been shown.' line "
                                  "(stderr) to confirm an empty table: pass conntrack's stderr as well"))
    if problems:
        raise ConntrackError(problems)
    return flows


def _flow(line):
    """One listing line -> Flow, reading the fields in the order conntrack prints them."""
    family, protocol, protonum, timeout, state = _head(line)
    flags = []
    original = _tuple(line, protocol, "original")
    if line.peek() == "[UNREPLIED]":
        flags.append(line.take()[1:-1])
    reply = _tuple(line, protocol, "reply")
    if line.peek() in tuple(f"[{f}]" for f in _AFTER_REPLY_FLAGS):
        flags.append(line.take()[1:-1])
    values, labels, other = _tail(line)
    src_family = "ipv6" if ":" in original.src else "ipv4"
    if family is not None and family != src_family:
        raise _Bad(f"the addresses are {src_family}, but the line says {family}")
    return Flow(src_family, protocol, protonum, timeout, state, original, reply, tuple(flags), values.get("mark"),
                values.get("zone"), values["use"], values.get("id"), values.get("helper"), labels, other,
                line.number)


def _head(line):
    """[<l3 name> <l3 num>] <l4 name> <l4 num> <timeout> [<state>]"""
    if line.peek() in _EVENTS:
        raise _Bad(f"{line.peek()} starts an event line of `conntrack -E`, not a listing line")
    family = None
    if line.peek() in FAMILIES:
        family = line.take()
        number = line.take() if line.peek() is not None else None
        if number != str(FAMILIES[family]):
            raise _Bad(f"{family} is followed by {number!r}, not its number {FAMILIES[family]}")
    protocol = line.take() if line.peek() is not None else ""
    if not re.match(r"^[a-z][a-z0-9]*$", protocol):
        raise _Bad(f"{protocol!r} is not a protocol name (tcp, udp, icmp, ...); a flow line starts with one")
    protonum, timeout = _number(line, "the protocol number"), _number(line, "the timeout")
    state = None
    if line.peek() is not None and _STATE.match(line.peek()):
        state = line.take()
    if protocol in STATEFUL_PROTOCOLS and state is None:
        raise _Bad(f"the {protocol} state (ESTABLISHED, TIME_WAIT, ...) is missing after the timeout")
    if protocol not in STATEFUL_PROTOCOLS and state is not None:
        raise _Bad(f"{state!r} after the timeout: {protocol} flows have no state")
    return family, protocol, protonum, timeout, state


def _tail(line):
    """The fields after the reply tuple and its flag: ({mark, zone, use, id, helper}, labels, other)."""
    values, other, labels, seen = {}, [], (), set()
    while line.peek() is not None:
        token = line.take()
        if token.startswith("[") and token.endswith("]") and token[1:].startswith(("start=", "stop=")):
            key, _, value = token[1:-1].partition("=")
            other.append((key, value))
            continue
        key, eq, value = token.partition("=")
        if not eq or not key:
            raise _Bad(f"{token!r} is not a key=value field of a flow")
        if key in seen:
            raise _Bad(f"{key}= appears twice")
        seen.add(key)
        if key in ("mark", "zone", "use", "id"):
            values[key] = _integer(key, value)
        elif key == "helper":
            values[key] = value
        elif key == "labels":
            labels = tuple(value.split(","))
        else:
            other.append((key, value))
    if "use" not in values:
        raise _Bad("use= is missing: conntrack prints it on every flow, so the line is cut short")
    return values, labels, tuple(other)


def _number(line, what):
    token = line.take() if line.peek() is not None else None
    if token is None or not token.isdigit():
        raise _Bad(f"{what} is {'missing' if token is None else repr(token)}, not a number")
    return int(token)


def _integer(key, value):
    if not value.isdigit():
        raise _Bad(f"{key}={value!r} is not a number")
    return int(value)


def _tuple(line, protocol, direction):
    values, other = {}, []
    if line.peek() is None or not line.peek().startswith("src="):
        raise _Bad(f"the {direction} tuple (src= dst= ...) is missing")
    while line.peek() is not None:
        key, eq, value = line.peek().partition("=")
        if not eq or key not in _TUPLE_KEYS or key in values or (key == "src" and values):
            break
        line.take()
        if key in ("src", "dst"):
            values[key] = _address(key, value, direction)
        elif key in ("srckey", "dstkey"):
            values[key] = value
            other.append((key, value))
        else:
            values[key] = _integer(key, value)
    if "dst" not in values:
        raise _Bad(f"the {direction} tuple has no dst=")
    needed = ("sport", "dport") if protocol in PORT_PROTOCOLS else ("type", "code", "id") \
        if protocol in ICMP_PROTOCOLS else ()
    missing = [k for k in needed if k not in values]
    if missing:
        raise _Bad(f"the {direction} tuple has no {'= '.join(missing)}= ({protocol} flows print "
                   f"{' '.join(k + '=' for k in ('src', 'dst', *needed))})")
    for key in ("sport", "dport"):
        if values.get(key, 0) > MAX_PORT:
            raise _Bad(f"{direction} {key}={values[key]} is not a port (0-{MAX_PORT})")
    icmp = tuple(values[k] for k in ("type", "code", "id")) if protocol in ICMP_PROTOCOLS else None
    return Tuple(values["src"], values["dst"], values.get("sport"), values.get("dport"), icmp, values.get("packets"),
                 values.get("bytes"), values.get("zone-orig", values.get("zone-reply")), tuple(other))


def _address(key, value, direction):
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _Bad(f"{direction} {key}={value!r} is not an IP address") from None
