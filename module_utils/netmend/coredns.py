"""CoreDNS's Corefile: render kubeadm's standard shape, parse any Corefile, find loopback upstreams.

Pure and stdlib-only: imported by the netmend_coredns module (as ansible.module_utils.netmend.coredns),
by the lab (which configures its DNS server from the Corefile the role writes), by the audit and by
the unit tests (as netmend.coredns). Everything here works on text and data.

The syntax is CoreDNS's Caddyfile dialect (coredns/caddy, a fork of Caddy v1):
- words are separated by whitespace; `"..."` quotes a word (it may span lines; `\\"` is a quote);
- `#` outside quotes starts a comment that runs to the end of the line;
- a server block is one or more keys (`.:53`, `dns://cluster.local`, `example.org:1053`; a trailing
  comma continues the list on the next line), then `{`, then directives, one per line, then `}` on
  a line of its own;
- a directive is a plugin name and its arguments up to the end of the line; a `{` at the end of the
  line opens a block of sub-directives that may span lines (`health { lameduck 5s }` on one line too).
Braces must be separate words. `import NAME` of a snippet `(NAME) { ... }` declared earlier is
expanded like CoreDNS does; `import` of a file and environment placeholders (`{$POD_IP}`) are kept as
written. A Corefile CoreDNS would reject (unbalanced braces, a brace stuck to a word, a block without
keys, an unclosed quote) raises CorefileError with the line number.
"""

import ipaddress
import json
import posixpath
import re
from dataclasses import dataclass, field

from .errors import ProblemsError
from .resolvconf import DNS_PORT, check_domain, is_local
from .resolvconf import parse as parse_resolv_conf

HEADER = "# Managed by netmend (roles/dns). Local edits are overwritten; set the dns_* variables instead."
DEFAULT_RESOLV_CONF = "/etc/resolv.conf"
REVERSE_ZONES = ("in-addr.arpa", "ip6.arpa")
# Transports a server block key or a forward target may name, and their default ports.
TRANSPORT_PORTS = {"dns": DNS_PORT, "tls": 853, "https": 443, "grpc": 443, "quic": 853}
FORWARD_PROTOCOLS = ("dns", "tls", "https")
MAX_UPSTREAMS = 15  # forward's limit
CACHE_DEFAULT_TTL = 3600  # cache's maximum TTL when none is given
CACHE_MAX_TTL = 86400
MAX_CONCURRENT = 1000  # kubeadm's forward { max_concurrent 1000 }
INDENT = "    "


class CorefileError(ValueError):
    """A Corefile CoreDNS would reject or netmend cannot read: `line` (1-based, 0 when unknown) and `reason`."""

    def __init__(self, line, reason, source="Corefile"):
        self.line, self.reason, self.source = line, reason, source
        where = f"{source}, line {line}" if line else source
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class Token:
    text: str
    line: int
    quoted: bool = False

    @property
    def end_line(self):
        return self.line + self.text.count("\n")

    @property
    def opens(self):
        return self.text == "{" and not self.quoted

    @property
    def closes(self):
        return self.text == "}" and not self.quoted


@dataclass(frozen=True)
class Directive:
    """A plugin (or a sub-directive inside a plugin's block): its name, arguments, line and block."""

    name: str
    args: tuple = ()
    line: int = 0
    block: tuple = ()  # of Directive

    def sub(self, name):
        """The sub-directives with this name, in order."""
        return [d for d in self.block if d.name == name]

    def as_dict(self):
        out = {"name": self.name, "args": list(self.args), "line": self.line}
        if self.block:
            out["block"] = [d.as_dict() for d in self.block]
        return out


@dataclass(frozen=True)
class Zone:
    zone: str  # lower case, no trailing dot; "." for the root
    port: int
    transport: str = "dns"


@dataclass(frozen=True)
class ServerBlock:
    keys: tuple
    line: int
    directives: tuple = ()  # of Directive
    zones: tuple = field(default=())  # of Zone
    snippet: str = ""  # the name of a snippet block `(name) { ... }` (only while parsing)

    def plugins(self, name):
        return [d for d in self.directives if d.name == name]

    def plugin(self, name):
        found = self.plugins(name)
        return found[0] if found else None

    def serves(self, zone, port):
        return any(z.zone == zone and z.port == port for z in self.zones)

    def as_dict(self):
        return {"keys": list(self.keys), "line": self.line,
                "zones": [{"zone": z.zone, "port": z.port, "transport": z.transport} for z in self.zones],
                "plugins": [d.as_dict() for d in self.directives]}


# Lexing and parsing.


def tokenize(text, source="Corefile"):
    """The Corefile's words with their line numbers (Caddy v1's lexer, but an unclosed quote is an error)."""
    if not isinstance(text, str):
        raise CorefileError(0, "is not text", source)
    if "\0" in text:
        raise CorefileError(text[:text.index("\0")].count("\n") + 1, "contains a NUL byte; this is not a Corefile",
                            source)
    tokens, i, line, n = [], 0, 1, len(text)
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
        elif ch.isspace():
            i += 1
        elif ch == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif ch == '"':
            tok, i = _quoted(text, i + 1, line, source)
            tokens.append(tok)
            line = tok.end_line
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] != "#":
                i += 1
            tokens.append(Token(text[start:i], line))
    for tok in tokens:
        _check_braces(tok, source)
    return tokens


def _quoted(text, i, line, source):
    """The quoted word starting at text[i] (after its opening quote) and the index after its closing quote."""
    value, n = [], len(text)
    while i < n:
        if text[i] == "\\" and i + 1 < n and text[i + 1] == '"':
            value.append('"')
            i += 2
        elif text[i] == '"':
            return Token("".join(value), line, quoted=True), i + 1
        else:
            value.append(text[i])
            i += 1
    raise CorefileError(line, "a quoted word is never closed (missing '\"'; truncated file?)", source)


def _check_braces(tok, source):
    t = tok.text
    if tok.quoted or t in ("{", "}"):
        return
    # `{$ENV}`, `{%ENV%}` and log placeholders such as `{common}` are words; a brace at the edge is not.
    if t.endswith("{") or t.startswith("}") or (t.endswith("}") and "{" not in t):
        raise CorefileError(tok.line, f"{t!r} has a brace stuck to a word; put spaces around '{{' and '}}'", source)


def parse_corefile(text, source="Corefile"):
    """The server blocks of a Corefile, in order; raises CorefileError (with the line) on bad syntax.

    An empty Corefile (or one of only comments) has no server blocks and is an error: CoreDNS would
    then serve nothing but its default `.:53 { whoami log }`.
    """
    tokens = tokenize(text, source)
    if not tokens:
        raise CorefileError(0, "is empty (no server block); expected for example `.:53 { ... }`", source)
    blocks, snippets, i = [], {}, 0
    while i < len(tokens):
        block, i = _server_block(tokens, i, source)
        if block.snippet:
            if block.snippet in snippets:
                raise CorefileError(block.line, f"snippet ({block.snippet}) is declared twice", source)
            snippets[block.snippet] = _expand(block.directives, snippets, block.line, source)
            continue
        blocks.append(ServerBlock(block.keys, block.line, _expand(block.directives, snippets, block.line, source),
                                  block.zones))
    if not blocks:
        raise CorefileError(0, "has only snippets and no server block", source)
    seen = {}
    for block in blocks:
        for z in block.zones:
            key = (z.zone, z.port)
            if key in seen:
                raise CorefileError(block.line, f"zone {z.zone} on port {z.port} is already served by the block "
                                    f"on line {seen[key]}", source)
            seen[key] = block.line
    return blocks


def _server_block(tokens, i, source):
    first = tokens[i]
    if first.opens:
        raise CorefileError(first.line, "'{' without server block keys before it (such as .:53)", source)
    if first.closes:
        raise CorefileError(first.line, "'}' without a matching '{'", source)
    keys, line, more = [], first.end_line, False
    while i < len(tokens) and not tokens[i].opens:
        tok = tokens[i]
        if tok.closes:
            raise CorefileError(tok.line, "'}' without a matching '{'", source)
        if keys and tok.line != line and not more:
            raise CorefileError(first.line, f"server block {' '.join(keys)} has no '{{' after its keys "
                                "(each server block is `KEYS {` ... `}`)", source)
        more = tok.text.endswith(",")
        key = tok.text[:-1] if more else tok.text
        if key:
            keys.append(key)
        line = tok.end_line
        i += 1
    if i >= len(tokens):
        raise CorefileError(first.line, f"server block {' '.join(keys)} has no '{{' (truncated file?)", source)
    if more:
        raise CorefileError(tokens[i].line, "a server block key ends in ',' but no key follows it", source)
    if not keys:
        raise CorefileError(first.line, "a server block without keys (such as .:53)", source)
    snippet = keys[0][1:-1] if len(keys) == 1 and keys[0].startswith("(") and keys[0].endswith(")") else ""
    zones = () if snippet else tuple(_zone(k, first.line, source) for k in keys)
    directives, i = _directives(tokens, i + 1, tokens[i], 1, source)
    return ServerBlock(keys=tuple(keys), line=first.line, directives=tuple(directives), zones=zones,
                       snippet=snippet), i


def _expand(directives, snippets, line, source):
    """Directives with `import NAME` of an earlier snippet replaced by the snippet's (already expanded)
    directives, as CoreDNS does; `import` of a file stays as written."""
    out = []
    for d in directives:
        if d.name == "import" and len(d.args) == 1 and d.args[0] in snippets and not d.block:
            out.extend(snippets[d.args[0]])
        elif d.name == "import" and len(d.args) != 1:
            raise CorefileError(d.line or line, "import takes one argument, a snippet name or a file", source)
        else:
            out.append(d)
    return tuple(out)


def _directives(tokens, i, opener, depth, source):
    """Directives up to the '}' that closes `opener`; returns them and the index after that '}'."""
    items = []
    while True:
        if i >= len(tokens):
            raise CorefileError(opener.line, "this '{' is never closed (unbalanced braces or truncated file)",
                                source)
        tok = tokens[i]
        if tok.closes:
            return items, i + 1
        if tok.opens:
            raise CorefileError(tok.line, "'{' must end the line of the directive it belongs to", source)
        line, args, block = tok.end_line, [], ()
        i += 1
        while i < len(tokens) and tokens[i].line == line and not (tokens[i].opens or tokens[i].closes):
            args.append(tokens[i].text)
            line = tokens[i].end_line
            i += 1
        if i < len(tokens) and tokens[i].line == line and tokens[i].opens:
            block, i = _directives(tokens, i + 1, tokens[i], depth + 1, source)
            block = tuple(block)
            line = tokens[i - 1].line  # the closing brace's
            if i < len(tokens) and tokens[i].line == line and not tokens[i].closes:
                raise CorefileError(line, f"{tokens[i].text!r} after '}}' on the same line", source)
        if i < len(tokens) and tokens[i].line == line and tokens[i].closes and depth == 1:
            raise CorefileError(line, "the '}' closing a server block must be on a line of its own", source)
        items.append(Directive(tok.text, tuple(args), tok.line, block))


def _zone(key, line, source):
    """A server block key as (zone, port, transport): `dns://.:53`, `cluster.local`, `10.0.0.0/24:53`."""
    transport, sep, rest = key.partition("://")
    if not sep:
        transport, rest = "dns", key
    if transport not in TRANSPORT_PORTS:
        raise CorefileError(line, f"server block key {key!r}: unknown transport {transport}://; accepted: "
                            + ", ".join(f"{t}://" for t in TRANSPORT_PORTS), source)
    port = TRANSPORT_PORTS[transport]
    host, colon, raw_port = rest.rpartition(":")
    if colon:
        if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:  # noqa: PLR2004 - the port range
            raise CorefileError(line, f"server block key {key!r}: {raw_port!r} is not a port", source)
        port, rest = int(raw_port), host
    zone = rest.lower().rstrip(".") or "."
    if "," in zone or not rest or (zone != "." and not re.match(r"^[a-z0-9_.*/-]+$", zone)):
        raise CorefileError(line, f"server block key {key!r} is not a zone such as . or cluster.local, "
                            "optionally with :PORT", source)
    return Zone(zone, port, transport)


# What a server block says.


def forward_target(to, line=0, source="Corefile"):
    """One forward TO: an address (with protocol and port), a resolv.conf-style file, or a hostname."""
    transport, sep, rest = to.partition("://")
    if not sep:
        transport, rest = "dns", to
    if transport not in FORWARD_PROTOCOLS:
        raise CorefileError(line, f"forward target {to!r}: unknown protocol {transport}://; accepted: "
                            + ", ".join(f"{p}://" for p in FORWARD_PROTOCOLS), source)
    if not sep and ("/" in rest or rest.startswith(".")):
        return {"to": to, "kind": "file", "path": rest}
    if transport == "tls" and "%" in rest:  # tls://ADDRESS%SERVERNAME[:PORT]
        address, _, tail = rest.partition("%")
        _, colon, raw_port = tail.partition(":")
        rest = f"{address}:{raw_port}" if colon else address
    host, port = _host_port(rest, TRANSPORT_PORTS[transport])
    if host is None:
        raise CorefileError(line, f"forward target {to!r} is not an address, ADDRESS:PORT, [IPv6]:PORT, "
                            "a file such as /etc/resolv.conf or a host name", source)
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        return {"to": to, "kind": "hostname", "protocol": transport, "host": host, "port": port}
    return {"to": to, "kind": "address", "protocol": transport, "address": address, "port": port}


def _host_port(text, default_port):
    """(host, port) of `1.2.3.4`, `1.2.3.4:53`, `[::1]:53`, `::1`, `dns.example:53`; (None, 0) when malformed."""
    if text.startswith("["):
        host, bracket, tail = text[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            return None, 0
        raw = tail[1:] if tail else str(default_port)
    elif text.count(":") > 1:  # a bare IPv6 address
        host, raw = text, str(default_port)
    else:
        host, _, raw = text.partition(":")
        raw = raw or str(default_port)
    if not host or not raw.isdigit() or not 0 < int(raw) < 65536:  # noqa: PLR2004 - the port range
        return None, 0
    if not re.match(r"^[A-Za-z0-9_.:-]+$", host):
        return None, 0
    return host, int(raw)


def _forward(d, source):
    if len(d.args) < 2:  # noqa: PLR2004 - FROM and at least one TO
        raise CorefileError(d.line, "forward needs FROM and at least one TO, such as `forward . /etc/resolv.conf`",
                            source)
    if len(d.args) > MAX_UPSTREAMS + 1:
        raise CorefileError(d.line, f"forward has {len(d.args) - 1} targets; CoreDNS accepts at most {MAX_UPSTREAMS}",
                            source)
    targets = [forward_target(t, d.line, source) for t in d.args[1:]]
    options = {sub.name: list(sub.args) for sub in d.block}
    zone = d.args[0].lower().rstrip(".") or "."
    return {"from": zone, "to": list(d.args[1:]), "targets": targets, "options": options, "line": d.line}


def _cache_ttl(d, source):
    if d is None:
        return None
    if d.args and d.args[0].isdigit():
        ttl = int(d.args[0])
        if ttl <= 0:
            raise CorefileError(d.line, "cache TTL must be a positive number of seconds", source)
        return ttl
    return CACHE_DEFAULT_TTL


def settings(block, source="Corefile"):
    """What netmend, the lab and the audit need from one server block, as plain data.

    forward: every forward directive (from, to, targets, options, line); forward_to / forward_addresses /
    forward_resolv_conf: the targets of the first `forward .` (the block's default upstreams), split into
    addresses ("ADDRESS" for port 53, else "ADDRESS:PORT", "[V6]:PORT") and the file; kubernetes_zones:
    the kubernetes plugin's zones (the block's zones when it names none); cluster_domain: the first of
    them that is not a reverse zone; cache_ttl: cache's maximum TTL (None without cache).
    """
    forwards = [_forward(d, source) for d in block.plugins("forward")]
    root = next((f for f in forwards if f["from"] == "."), None)
    kube = block.plugin("kubernetes")
    if kube is None:
        kube_zones = []
    else:
        kube_zones = [a.lower().rstrip(".") for a in kube.args] or [z.zone for z in block.zones]
    files = [t["path"] for t in (root["targets"] if root else []) if t["kind"] == "file"]
    return {
        "keys": list(block.keys), "line": block.line,
        "zones": [z.zone for z in block.zones], "port": block.zones[0].port if block.zones else DNS_PORT,
        "plugins": [d.name for d in block.directives],
        "forward": forwards,
        "forward_to": list(root["to"]) if root else [],
        "forward_addresses": [_address_text(t) for t in (root["targets"] if root else []) if t["kind"] == "address"],
        "forward_resolv_conf": files[0] if files else "",
        "kubernetes_zones": kube_zones,
        "cluster_domain": next((z for z in kube_zones if not z.endswith(REVERSE_ZONES) and z != "."), ""),
        "cache_ttl": _cache_ttl(block.plugin("cache"), source),
    }


def _address_text(target):
    addr, port = target["address"], target["port"]
    if port == TRANSPORT_PORTS[target["protocol"]] and target["protocol"] == "dns":
        return addr
    prefix = "" if target["protocol"] == "dns" else f"{target['protocol']}://"
    return f"{prefix}[{addr}]:{port}" if ":" in addr else f"{prefix}{addr}:{port}"


def _blocks(corefile, source):
    return parse_corefile(corefile, source) if isinstance(corefile, str) else list(corefile)


def root_block(corefile, port=DNS_PORT, source="Corefile"):
    """The server block that answers for `.` on port (53): the one pods reach through kube-dns."""
    for block in _blocks(corefile, source):
        if block.serves(".", port):
            return block
    raise CorefileError(0, f"has no server block for the root zone . on port {port} (such as `.:{port} {{`); "
                        "CoreDNS would not answer pods' queries for other names", source)


def root_settings(corefile, port=DNS_PORT, source="Corefile"):
    """settings() of the root server block: the forward targets, the kubernetes zones, the cache TTL."""
    return settings(root_block(corefile, port, source), source)


def loopback_upstreams(corefile, resolv_confs=None, source="Corefile"):
    """Every loopback (or unspecified) upstream the Corefile's forward plugins reach, directly
    (`forward . 127.0.0.53`) or through a forwarded file (`forward . /etc/resolv.conf` whose text
    lists `nameserver 127.0.0.53`); resolv_confs maps each forwarded path to its text (in a CoreDNS
    pod, /etc/resolv.conf is a copy of the kubelet's resolvConf). A forwarded path missing from
    resolv_confs raises CorefileError: the answer would otherwise be a guess.

    Each finding: server (the block's keys), line, from, target, address, port, via (the file, or "")
    and reaches: "itself" when the port is the forwarding block's own (the loop plugin halts CoreDNS),
    "block <keys>" when another block of this Corefile listens there (chaining), "nothing" otherwise
    (in a pod's network namespace nothing else listens on loopback: every query fails).
    """
    resolv_confs = resolv_confs or {}
    blocks = _blocks(corefile, source)
    found = []
    for block in blocks:
        for fwd in settings(block, source)["forward"]:
            for target in fwd["targets"]:
                for address, port, via in _target_addresses(target, resolv_confs, fwd["line"], source):
                    if is_local(address):
                        found.append({"server": " ".join(block.keys), "line": fwd["line"], "from": fwd["from"],
                                      "target": target["to"], "address": address, "port": port, "via": via,
                                      "reaches": _reaches(block, blocks, port)})
    return found


def _target_addresses(target, resolv_confs, line, source):
    if target["kind"] == "address":
        return [(target["address"], target["port"], "")]
    if target["kind"] == "hostname":
        return [("127.0.0.1", target["port"], "")] if target["host"] == "localhost" else []
    path = posixpath.normpath(target["path"])
    if path not in resolv_confs:
        raise CorefileError(line, f"forward reads {path}; its text is needed to check it for loopback nameservers",
                            source)
    conf = parse_resolv_conf(resolv_confs[path], path)
    return [(ns.address, DNS_PORT, path) for ns in conf.nameservers]


def _reaches(block, blocks, port):
    if any(z.port == port for z in block.zones):
        return "itself"
    for other in blocks:
        if any(z.port == port for z in other.zones):
            return "block " + " ".join(other.keys)
    return "nothing"


# Rendering.


def check_upstream(fieldname, value):
    """[(field, message)] unless value is an upstream CoreDNS can forward to without a loop."""
    if not isinstance(value, str) or not value:
        return [(fieldname, f"{value!r} is not an upstream such as 192.0.2.53, 192.0.2.53:5353 or tls://9.9.9.9")]
    try:
        target = forward_target(value)
    except CorefileError as exc:
        return [(fieldname, exc.reason)]
    if target["kind"] != "address":
        what = "a file" if target["kind"] == "file" else "a host name"
        return [(fieldname, f"{value!r} is {what}; upstreams are IP addresses (optionally dns:// or tls://, "
                            ":PORT); leave the list empty to forward to the resolv.conf")]
    if is_local(target["address"]):
        return [(fieldname, f"{value!r} is a loopback address: inside the CoreDNS pod it is CoreDNS itself, "
                            "so forwarding there loops and the loop plugin halts CoreDNS")]
    return []


def _check_int(fieldname, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return [(fieldname, f"{value!r} is not accepted; an integer {low}-{high}")]
    return []


def render_corefile(domain="cluster.local", upstreams=(), *, resolv_conf=DEFAULT_RESOLV_CONF, cache_ttl=30,
                    max_concurrent=MAX_CONCURRENT):
    """kubeadm's standard Corefile for `domain`, forwarding to the explicit upstreams, or, when there
    are none, to the resolv.conf (as seen inside the CoreDNS pod: the kubelet's resolvConf).

    Raises ProblemsError naming every bad argument (domain, upstreams[i], resolv_conf, cache_ttl,
    max_concurrent); loopback upstreams are refused because they would loop.
    """
    problems = check_domain("domain", domain)
    if isinstance(upstreams, str) or not isinstance(upstreams, (list, tuple)):
        problems.append(("upstreams", "must be a list of addresses"))
        upstreams = []
    if len(upstreams) > MAX_UPSTREAMS:
        problems.append(("upstreams", f"has {len(upstreams)} entries; CoreDNS's forward takes at most {MAX_UPSTREAMS}"))
    for i, up in enumerate(upstreams):
        problems += check_upstream(f"upstreams[{i}]", up)
    if not upstreams and (not isinstance(resolv_conf, str) or not posixpath.isabs(resolv_conf)
                          or any(c.isspace() or c in '{}#"' for c in resolv_conf)):
        problems.append(("resolv_conf", f"{resolv_conf!r} is not an absolute path without spaces, braces or #"))
    problems += _check_int("cache_ttl", cache_ttl, 1, CACHE_MAX_TTL)
    problems += _check_int("max_concurrent", max_concurrent, 1, 1000000)
    if problems:
        raise ProblemsError(problems)
    targets = " ".join(upstreams) if upstreams else resolv_conf
    body = [
        "errors",
        ("health", [], ["lameduck 5s"]),
        "ready",
        (f"kubernetes {domain} {' '.join(REVERSE_ZONES)}", [],
         ["pods insecure", f"fallthrough {' '.join(REVERSE_ZONES)}", "ttl 30"]),
        "prometheus :9153",
        (f"forward . {targets}", [], [f"max_concurrent {max_concurrent}"]),
        f"cache {cache_ttl}",
        "loop",
        "reload",
        "loadbalance",
    ]
    lines = [HEADER, f".:{DNS_PORT} {{"]
    for item in body:
        if isinstance(item, str):
            lines.append(INDENT + item)
        else:
            head, _, subs = item
            lines.append(f"{INDENT}{head} {{")
            lines += [INDENT * 2 + s for s in subs]
            lines.append(INDENT + "}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_configmap(corefile, name="coredns", namespace="kube-system", header=HEADER):
    """The coredns ConfigMap (kubeadm's name and namespace) holding the Corefile, as YAML text."""
    lines = [header] if header else []
    lines += ["apiVersion: v1", "kind: ConfigMap", "metadata:", f"  name: {name}", f"  namespace: {namespace}",
              "data:"]
    block_ok = (corefile.endswith("\n") and not corefile.endswith("\n\n") and corefile[:1] not in (" ", "\t", "")
                and "\r" not in corefile and all(not ln.startswith("\t") for ln in corefile.splitlines()))
    if block_ok:
        lines.append("  Corefile: |")
        lines += [f"    {ln}" if ln else "" for ln in corefile.splitlines()]
    else:  # JSON string syntax is valid YAML for any text
        lines.append(f"  Corefile: {json.dumps(corefile)}")
    return "\n".join(lines) + "\n"


def configmap(corefile, name="coredns", namespace="kube-system"):
    """The same ConfigMap as data (for kubernetes.core.k8s's definition)."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": {"Corefile": corefile}}
