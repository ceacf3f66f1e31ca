#!/usr/bin/python3
"""netmend lab agent: tiny pod/node workload and prober (stdlib only, Python 3.11).

The lab copies this file into its namespaces and runs it with /usr/bin/python3:

  agent.py serve --name NAME --http PORT[,PORT...] [--bind ADDR] [--udp-echo PORT[,PORT]] [--pidfile FILE]
  agent.py probe < checks.json        # JSON list of checks in, JSON list of results out
  agent.py resolvconf                 # print /etc/resolv.conf as this namespace sees it

`serve` prints one JSON "ready" line on stdout once every socket is bound.
`probe` exits 0 when it ran the checks (even failing ones) and 2 on malformed input.
"""

import argparse
import http.client
import http.server
import ipaddress
import json
import os
import random
import signal
import socket
import socketserver
import statistics
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

MAX_WORKERS = 32
GUARD_MARGIN = 0.3  # seconds a check may overrun its timeout before it is abandoned
RESOLV_CONF = "/etc/resolv.conf"
MAX_PORT = 65535


# --------------------------------------------------------------------------- helpers


def _fmt_addr(sockaddr):
    """('1.2.3.4', 80) -> '1.2.3.4:80'; IPv6 -> '[::1]:80'."""
    host, port = sockaddr[0], sockaddr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _addr_host(text):
    """'1.2.3.4:80' -> '1.2.3.4'; '[::1]:80' -> '::1'."""
    return text.rsplit(":", 1)[0].strip("[]")


def _family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _error_text(exc):
    text = str(exc) or "no detail"
    return f"{type(exc).__name__}: {text}"


def _ms(seconds):
    return round(seconds * 1000.0, 3)


def _remaining(deadline):
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("check timeout exceeded")
    return left


def _resolve(host, port, socktype):
    """First getaddrinfo() result as (family, sockaddr); the probe guard bounds its duration."""
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socktype)[0]
    return family, sockaddr


# --------------------------------------------------------------------------- serve


def _server_class(base, bind):
    # HTTPServer.server_bind() calls socket.getfqdn(), a reverse DNS lookup that can hang for
    # seconds in a namespace whose resolver is not reachable yet; skip it.
    def server_bind(self):
        socketserver.TCPServer.server_bind(self)  # UDPServer inherits this one too
        self.server_name, self.server_port = bind, self.server_address[1]

    return type(base.__name__, (base,), {"address_family": _family(bind), "server_bind": server_bind})


class _HTTPHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        local = self.connection.getsockname()
        body = json.dumps({
            "pod": self.server.pod_name,
            "port": local[1],
            "client": _fmt_addr(self.client_address),
            "server": local[0],
        }).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


class _UDPEchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        _, sock = self.request
        reply = json.dumps({"pod": self.server.pod_name, "client": _fmt_addr(self.client_address)})
        sock.sendto(reply.encode(), self.client_address)


def _port_list(text):
    try:
        ports = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of ports: {text!r}") from None
    if not ports or any(not 0 <= port <= MAX_PORT for port in ports):
        raise argparse.ArgumentTypeError(f"ports must be in 0..{MAX_PORT}: {text!r}")
    return ports


def cmd_serve(args):
    # Block the stop signals before any thread starts (threads inherit the mask), then wait
    # for them synchronously in the main thread: no handler races, clean exit code 0.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    http_cls = _server_class(http.server.ThreadingHTTPServer, args.bind)
    udp_cls = _server_class(socketserver.UDPServer, args.bind)
    servers = []
    try:
        for port in args.http:
            servers.append(http_cls((args.bind, port), _HTTPHandler))
        for port in args.udp_echo:
            servers.append(udp_cls((args.bind, port), _UDPEchoHandler))
    except OSError as exc:
        print(f"agent serve: cannot bind {args.bind}: {exc}", file=sys.stderr)
        return 1

    for server in servers:
        server.pod_name = args.name
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    if args.pidfile:
        with open(args.pidfile, "w") as fh:
            fh.write(f"{os.getpid()}\n")

    ports = [server.server_address[1] for server in servers]
    ready = {"ready": True, "pod": args.name, "bind": args.bind, "pid": os.getpid(),
             "http": ports[:len(args.http)], "udp": ports[len(args.http):]}
    print(json.dumps(ready), flush=True)

    signal.sigwait(stop_signals)
    for server in servers:
        server.shutdown()
        server.server_close()
    if args.pidfile:
        try:
            os.unlink(args.pidfile)
        except OSError:
            pass
    return 0


# --------------------------------------------------------------------------- probe: input validation


class InputError(Exception):
    pass


REQUIRED = object()


def _field(check, name, default, convert):
    if name not in check:
        if default is REQUIRED:
            raise InputError(f"field {name!r}: is required")
        return default
    try:
        return convert(check[name])
    except (TypeError, ValueError) as exc:
        raise InputError(f"field {name!r}: {exc}, got {check[name]!r}") from None


def text(default=REQUIRED):
    def convert(value):
        if not isinstance(value, str) or not value:
            raise ValueError("must be a non-empty string")
        return value
    return default, convert


def integer(lo, hi, default=REQUIRED):
    def convert(value):
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ValueError(f"must be an integer in {lo}..{hi}")
        return value
    return default, convert


def number(lo, hi, default=REQUIRED):
    def convert(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < value <= hi:
            raise ValueError(f"must be a number > {lo} and <= {hi}")
        return float(value)
    return default, convert


def boolean(default=REQUIRED):
    def convert(value):
        if not isinstance(value, bool):
            raise TypeError("must be true or false")
        return value
    return default, convert


def choice(options, default=REQUIRED):
    def convert(value):
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value
    return default, convert


def ipv4_list(default=REQUIRED):
    def convert(value):
        if not isinstance(value, list):
            raise TypeError("must be a list of IPv4 addresses")
        return sorted({str(ipaddress.IPv4Address(item)) for item in value}, key=ipaddress.IPv4Address)
    return default, convert


# --------------------------------------------------------------------------- probe: check kinds
# Each runner gets the validated check and a time.monotonic() deadline and returns the result
# fields that differ from blank_result(); exceptions become {"ok": false, "detail": ...}.


def run_http(check, deadline):
    _, sockaddr = _resolve(check["host"], check["port"], socket.SOCK_STREAM)
    host_header = f"[{check['host']}]" if ":" in check["host"] else check["host"]
    latencies, responders, clients, errors = [], {}, set(), []
    for _ in range(check["count"]):
        conn = None
        try:
            start = time.perf_counter()
            conn = http.client.HTTPConnection(sockaddr[0], sockaddr[1], timeout=_remaining(deadline))
            conn.request("GET", "/", headers={"Host": f"{host_header}:{check['port']}", "Connection": "close"})
            response = conn.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - start
            if response.status != http.HTTPStatus.OK:
                raise http.client.HTTPException(f"HTTP status {response.status}")
        except (OSError, http.client.HTTPException) as exc:
            errors.append(_error_text(exc))
            continue
        finally:
            if conn is not None:
                conn.close()
        latencies.append(elapsed)
        try:
            reply = json.loads(body)
            pod, client = str(reply["pod"]), _addr_host(str(reply["client"]))
        except (ValueError, KeyError, TypeError):
            pod, client = "?", None  # answered, but not by a netmend agent
        responders[pod] = responders.get(pod, 0) + 1
        if client:
            clients.add(client)
    return {
        "ok": not errors,
        "latency_ms": _ms(statistics.median(latencies)) if latencies else None,
        "responders": responders,
        "clients": sorted(clients),
        "errors": len(errors),
        "detail": errors[0] if errors else "",
    }


def run_tcp(check, deadline):
    family, sockaddr = _resolve(check["host"], check["port"], socket.SOCK_STREAM)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(_remaining(deadline))
        start = time.perf_counter()
        sock.connect(sockaddr)
        return {"ok": True, "latency_ms": _ms(time.perf_counter() - start)}


def run_udp(check, deadline):
    family, sockaddr = _resolve(check["host"], check["port"], socket.SOCK_DGRAM)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect(sockaddr)  # connected: only the peer's replies, and ICMP errors are reported
        sock.settimeout(_remaining(deadline))
        start = time.perf_counter()
        sock.send(check["payload"].encode())
        data = sock.recv(65535)
        latency = _ms(time.perf_counter() - start)
    try:
        pod = str(json.loads(data)["pod"])
    except (ValueError, KeyError, TypeError):
        pod = "?"
    return {"ok": True, "latency_ms": latency, "responders": {pod: 1}}


def run_dns(check, deadline):
    # The system resolver (nsswitch, /etc/hosts, resolv.conf search list and ndots) is the point.
    # getaddrinfo() cannot be interrupted; the probe guard thread bounds it by the timeout.
    start = time.perf_counter()
    infos = socket.getaddrinfo(check["name"], None, socket.AF_INET)
    latency = _ms(time.perf_counter() - start)
    addresses = sorted({info[4][0] for info in infos}, key=ipaddress.IPv4Address)
    expect = check["expect"]
    ok = expect is None or addresses == expect
    detail = "" if ok else f"expected {expect}, got {addresses}"
    return {"ok": ok, "latency_ms": latency, "addresses": addresses, "detail": detail}


DNS_TYPES = {"A": 1, "AAAA": 28}
DNS_MAX_LABEL = 63  # bytes
DNS_POINTER = 0xC0  # the top two bits of a length byte that mark a compression pointer
IPV4_BYTES, IPV6_BYTES = 4, 16
DNS_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def dns_encode_query(query_id, name, qtype):
    """Header (recursion desired, one question) + QNAME + QTYPE + QCLASS IN."""
    qname = b""
    for label in name.rstrip(".").split(".") if name.rstrip(".") else []:
        raw = label.encode("idna")
        if not 0 < len(raw) <= DNS_MAX_LABEL:
            raise ValueError(f"bad DNS label {label!r} in {name!r}")
        qname += bytes([len(raw)]) + raw
    return struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + qname + b"\0" + struct.pack("!HH", qtype, 1)


def _dns_skip_name(msg, offset):
    """Offset just past a (possibly compressed) name; a pointer always ends the name."""
    for _ in range(128):  # at most 127 labels fit into 255 bytes
        length = msg[offset]
        if length & DNS_POINTER == DNS_POINTER:
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length
    raise ValueError("DNS name too long")


def dns_decode_response(msg):
    """-> (id, rcode number, truncated, [addresses of A/AAAA answers])."""
    try:
        query_id, flags, qdcount, ancount, _, _ = struct.unpack_from("!HHHHHH", msg)
        offset = 12
        for _ in range(qdcount):
            offset = _dns_skip_name(msg, offset) + 4
        addresses = []
        for _ in range(ancount):
            offset = _dns_skip_name(msg, offset)
            rtype, _, _, rdlength = struct.unpack_from("!HHIH", msg, offset)
            offset += 10
            rdata = msg[offset:offset + rdlength]
            if len(rdata) != rdlength:
                raise ValueError("record data past end of message")
            offset += rdlength
            if rtype == DNS_TYPES["A"] and rdlength == IPV4_BYTES:
                addresses.append(socket.inet_ntop(socket.AF_INET, rdata))
            elif rtype == DNS_TYPES["AAAA"] and rdlength == IPV6_BYTES:
                addresses.append(socket.inet_ntop(socket.AF_INET6, rdata))
    except (struct.error, IndexError) as exc:
        raise ValueError(f"malformed DNS response: {exc}") from None
    return query_id, flags & 0x000F, bool(flags & 0x0200), addresses


def _recv_exact(sock, size, deadline):
    data = b""
    for _ in range(size):  # each recv returns at least one byte or ends the loop
        sock.settimeout(_remaining(deadline))
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed by DNS server")
        data += chunk
        if len(data) == size:
            break
    return data


def run_dnsquery(check, deadline):
    query_id = random.randrange(0x10000)
    query = dns_encode_query(query_id, check["name"], DNS_TYPES[check["qtype"]])
    socktype = socket.SOCK_STREAM if check["tcp"] else socket.SOCK_DGRAM
    family, sockaddr = _resolve(check["server"], check["port"], socktype)
    with socket.socket(family, socktype) as sock:
        sock.settimeout(_remaining(deadline))
        if check["sport"]:  # a fixed source port: the same conntrack tuple every time
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", check["sport"]))
        start = time.perf_counter()
        sock.connect(sockaddr)
        if check["tcp"]:
            sock.sendall(struct.pack("!H", len(query)) + query)
            (size,) = struct.unpack("!H", _recv_exact(sock, 2, deadline))
            reply = dns_decode_response(_recv_exact(sock, size, deadline))
        else:
            sock.send(query)
            for _ in range(16):  # skip stray datagrams with another query id
                sock.settimeout(_remaining(deadline))
                reply = dns_decode_response(sock.recv(65535))
                if reply[0] == query_id:
                    break
            else:
                raise ValueError("no DNS response with a matching query id")
        latency = _ms(time.perf_counter() - start)
    _, rcode_num, truncated, addresses = reply
    rcode = DNS_RCODES.get(rcode_num, f"RCODE{rcode_num}")
    ok = rcode == "NOERROR" and bool(addresses)
    if rcode != "NOERROR":
        detail = f"rcode {rcode}"
    elif not addresses:
        detail = f"no {check['qtype']} records in the answer" + (" (truncated)" if truncated else "")
    else:
        detail = ""
    return {"ok": ok, "latency_ms": latency, "addresses": addresses, "rcode": rcode, "detail": detail}


# kind -> (runner, its fields, extra result fields with their "no answer" values)
KINDS = {
    "http": (run_http, {"host": text(), "port": integer(1, MAX_PORT), "count": integer(1, 200, 1)},
             {"responders": {}, "clients": [], "errors": 0}),
    "tcp": (run_tcp, {"host": text(), "port": integer(1, MAX_PORT)}, {}),
    "udp": (run_udp, {"host": text(), "port": integer(1, MAX_PORT), "payload": text("ping")},
            {"responders": {}}),
    "dns": (run_dns, {"name": text(), "expect": ipv4_list(None)}, {"addresses": []}),
    "dnsquery": (run_dnsquery, {"server": text(), "name": text(), "qtype": choice(tuple(DNS_TYPES), "A"),
                                "port": integer(1, MAX_PORT, 53), "tcp": boolean(False),
                                "sport": integer(0, MAX_PORT, 0)},
                 {"addresses": [], "rcode": None}),
}
COMMON_FIELDS = {"id": text(), "kind": choice(tuple(KINDS)), "timeout": number(0, 10, 2.0)}


def parse_checks(raw):
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"stdin is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise InputError(f"expected a JSON list of checks, got {type(data).__name__}")
    checks = []
    for index, item in enumerate(data):
        where = f"check #{index}"
        try:
            if not isinstance(item, dict):
                raise InputError(f"must be a JSON object, got {type(item).__name__}")
            where += f" (id {item.get('id')!r})"
            kind = _field(item, "kind", *COMMON_FIELDS["kind"])
            fields = {**COMMON_FIELDS, **KINDS[kind][1]}
            unknown = sorted(set(item) - set(fields))
            if unknown:
                raise InputError(f"field {unknown[0]!r}: unknown for kind {kind!r} (allowed: {', '.join(fields)})")
            checks.append({name: _field(item, name, *spec) for name, spec in fields.items()})
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
    return checks


def blank_result(check):
    result = {"id": check["id"], "ok": False, "latency_ms": None}
    result.update(json.loads(json.dumps(KINDS[check["kind"]][2])))  # fresh copies of {} and []
    result["detail"] = ""
    return result


def run_check(check):
    """Run one check in a daemon thread and abandon it if it overruns its timeout."""
    runner = KINDS[check["kind"]][0]
    deadline = time.monotonic() + check["timeout"]
    box = {}

    def target():
        try:
            box["fields"] = runner(check, deadline)
        except Exception as exc:  # any failure is a failed check, not a crash
            box["fields"] = {"ok": False, "detail": _error_text(exc)}

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(check["timeout"] + GUARD_MARGIN)
    result = blank_result(check)
    if "fields" in box:
        result.update(box["fields"])
    else:
        result["detail"] = f"timed out after {check['timeout']:g}s"
        if check["kind"] == "http":
            result["errors"] = check["count"]
    return result


def cmd_probe(args):
    try:
        checks = parse_checks(sys.stdin.read())
    except InputError as exc:
        print(f"agent probe: bad input: {exc}", file=sys.stderr)
        return 2
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_WORKERS, len(checks)))) as pool:
        results = list(pool.map(run_check, checks))
    print(json.dumps(results), flush=True)
    return 0


# --------------------------------------------------------------------------- resolvconf


def cmd_resolvconf(args):
    # `ip netns exec` bind-mounts /etc/netns/NS/resolv.conf here, so this is what the namespace uses.
    try:
        with open(RESOLV_CONF) as fh:
            sys.stdout.write(fh.read())
    except OSError as exc:
        print(f"agent resolvconf: {exc} (glibc then falls back to nameserver 127.0.0.1)", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(prog="agent.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run HTTP servers (and UDP echo servers) answering with JSON")
    serve.add_argument("--name", required=True, help="pod name reported in every answer")
    serve.add_argument("--http", required=True, type=_port_list, metavar="PORT[,PORT...]")
    serve.add_argument("--bind", default="0.0.0.0", help="local address (default 0.0.0.0)")
    serve.add_argument("--udp-echo", type=_port_list, default=[], metavar="PORT[,PORT...]")
    serve.add_argument("--pidfile", help="write the PID here (removed on clean exit)")
    serve.set_defaults(func=cmd_serve)

    probe = sub.add_parser("probe", help="run a JSON list of checks from stdin, print JSON results")
    probe.set_defaults(func=cmd_probe)

    resolv = sub.add_parser("resolvconf", help=f"print the effective {RESOLV_CONF}")
    resolv.set_defaults(func=cmd_resolvconf)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
