"""Tests for lab/agent.py, run as subprocesses on loopback only (127.0.0.1 / ::1)."""

import importlib.util
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parents[2] / "lab" / "agent.py"
# The lab runs the agent with the system interpreter: test with it too (proves "stdlib only").
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
LOOPBACK = "127.0.0.1"


def free_port(socktype, host=LOOPBACK):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socktype) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start_server(*args):
    """Start `agent.py serve ...` and return (Popen, ready-line dict) once all sockets are bound."""
    proc = subprocess.Popen([PYTHON, str(AGENT), "serve", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=10)
    if not ready:
        stop_server(proc)
        pytest.fail("agent serve did not print its ready line within 10s")
    line = proc.stdout.readline()
    if not line:
        stop_server(proc)
        pytest.fail(f"agent serve exited early: rc={proc.returncode} stderr={proc.stderr.read()}")
    return proc, json.loads(line)


def stop_server(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    proc.stdout.close()
    proc.stderr.close()
    return proc.returncode


def probe(checks, raw=None, timeout=30):
    stdin = raw if raw is not None else json.dumps(checks)
    return subprocess.run([PYTHON, str(AGENT), "probe"], input=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)


def probe_ok(checks):
    done = probe(checks)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [r["id"] for r in results] == [c["id"] for c in checks]
    return results


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ports = {"http": [free_port(socket.SOCK_STREAM), free_port(socket.SOCK_STREAM)],
             "udp": free_port(socket.SOCK_DGRAM)}
    pidfile = tmp_path_factory.mktemp("agent") / "agent.pid"
    proc, ready = start_server("--name", "pod-a", "--bind", LOOPBACK,
                               "--http", ",".join(map(str, ports["http"])),
                               "--udp-echo", str(ports["udp"]), "--pidfile", str(pidfile))
    yield {"proc": proc, "ready": ready, "pidfile": pidfile, **ports}
    stop_server(proc)


@pytest.fixture
def silent_tcp():
    """A listening socket that never accepts: connects succeed, requests never get an answer."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen(16)
        yield sock.getsockname()[1]


@pytest.fixture
def silent_udp():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((LOOPBACK, 0))
        yield sock.getsockname()[1]


# --------------------------------------------------------------------------- serve + probe


def test_serve_ready_line_and_pidfile(server):
    assert server["ready"]["ready"] is True
    assert server["ready"]["http"] == server["http"]
    assert server["ready"]["udp"] == [server["udp"]]
    assert server["pidfile"].read_text().strip() == str(server["proc"].pid)


def test_serve_answers_json_over_http(server):
    port = server["http"][1]
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        sock.sendall(b"GET /any/path HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        for _ in range(100):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        local_port = sock.getsockname()[1]
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200")
    assert json.loads(body) == {"pod": "pod-a", "port": port, "client": f"127.0.0.1:{local_port}",
                                "server": LOOPBACK}


def test_probe_http_tcp_udp(server):
    http_port, udp_port = server["http"][0], server["udp"]
    results = probe_ok([
        {"id": "web", "kind": "http", "host": LOOPBACK, "port": http_port, "count": 10},
        {"id": "web2", "kind": "http", "host": "localhost", "port": server["http"][1]},
        {"id": "conn", "kind": "tcp", "host": LOOPBACK, "port": http_port, "timeout": 1},
        {"id": "echo", "kind": "udp", "host": LOOPBACK, "port": udp_port, "payload": "hi"},
    ])
    web, web2, conn, echo = results
    assert web == {"id": "web", "ok": True, "latency_ms": web["latency_ms"], "responders": {"pod-a": 10},
                   "clients": ["127.0.0.1"], "errors": 0, "detail": ""}
    assert isinstance(web["latency_ms"], float) and web["latency_ms"] > 0
    assert web2["ok"] and web2["responders"] == {"pod-a": 1}
    assert conn["ok"] and conn["detail"] == "" and conn["latency_ms"] >= 0
    assert set(conn) == {"id", "ok", "latency_ms", "detail"}
    assert echo == {"id": "echo", "ok": True, "latency_ms": echo["latency_ms"], "responders": {"pod-a": 1},
                    "detail": ""}


def test_probe_closed_ports_fail_fast():
    closed_tcp, closed_udp = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    start = time.monotonic()
    results = probe_ok([
        {"id": "h", "kind": "http", "host": LOOPBACK, "port": closed_tcp, "count": 3, "timeout": 1.5},
        {"id": "t", "kind": "tcp", "host": LOOPBACK, "port": closed_tcp, "timeout": 1.5},
        {"id": "u", "kind": "udp", "host": LOOPBACK, "port": closed_udp, "timeout": 1.5},
    ])
    # Refused connections fail at once: well inside the 3 attempts x 1.5 s a hang would take.
    assert time.monotonic() - start < 1.5 * 3
    for result in results:
        assert result["ok"] is False
        assert result["detail"]
        assert result["latency_ms"] is None
    assert results[0]["errors"] == 3 and results[0]["responders"] == {} and results[0]["clients"] == []


def test_probe_timeouts_are_total_and_checks_run_concurrently(silent_tcp, silent_udp):
    checks = [{"id": f"h{i}", "kind": "http", "host": LOOPBACK, "port": silent_tcp, "count": 5, "timeout": 0.8}
              for i in range(4)]
    checks.append({"id": "u", "kind": "udp", "host": LOOPBACK, "port": silent_udp, "timeout": 0.8})
    checks.append({"id": "q", "kind": "dnsquery", "server": LOOPBACK, "port": silent_udp, "name": "x.test",
                   "timeout": 0.8})
    start = time.monotonic()
    results = probe_ok(checks)
    elapsed = time.monotonic() - start
    assert elapsed < 0.8 * 3, elapsed  # one shared timeout each, all at once; in sequence it takes >= 4.8 s
    for result in results:
        assert result["ok"] is False and result["detail"], result
    assert all(r["errors"] == 5 for r in results[:4])
    assert results[-1]["rcode"] is None and results[-1]["addresses"] == []


def test_probe_empty_list():
    assert probe_ok([]) == []


@pytest.mark.parametrize(("raw", "needle"), [
    ("this is not json", "JSON"),
    ('{"id": "a", "kind": "tcp"}', "list"),
    ('["a"]', "object"),
    ('[{"id": "a", "host": "127.0.0.1", "port": 80}]', "'kind'"),
    ('[{"id": "a", "kind": "bogus"}]', "'kind'"),
    ('[{"kind": "tcp", "host": "127.0.0.1", "port": 80}]', "'id'"),
    ('[{"id": "a", "kind": "http", "host": "127.0.0.1", "port": 80, "count": 0}]', "'count'"),
    ('[{"id": "a", "kind": "http", "host": "127.0.0.1", "port": 80, "count": 201}]', "'count'"),
    ('[{"id": "a", "kind": "tcp", "host": "127.0.0.1", "port": 80, "timeout": 11}]', "'timeout'"),
    ('[{"id": "a", "kind": "tcp", "host": "127.0.0.1", "port": "80"}]', "'port'"),
    ('[{"id": "a", "kind": "tcp", "host": "127.0.0.1"}]', "'port'"),
    ('[{"id": "a", "kind": "tcp", "host": "127.0.0.1", "port": 80, "tiemout": 1}]', "'tiemout'"),
    ('[{"id": "a", "kind": "dns", "name": "localhost", "expect": ["not-an-ip"]}]', "'expect'"),
    ('[{"id": "a", "kind": "dnsquery", "server": "127.0.0.1", "name": "x", "qtype": "MX"}]', "'qtype'"),
])
def test_probe_malformed_input_exits_2(raw, needle):
    done = probe(None, raw=raw)
    assert done.returncode == 2
    assert done.stdout == ""
    assert needle in done.stderr, done.stderr


def test_probe_malformed_names_the_check():
    done = probe([{"id": "ok", "kind": "tcp", "host": LOOPBACK, "port": 1},
                  {"id": "bad", "kind": "http", "host": LOOPBACK, "port": 1, "count": 0}])
    assert done.returncode == 2
    assert "check #1 (id 'bad')" in done.stderr and "'count'" in done.stderr


def test_serve_sigterm_exits_zero_and_removes_pidfile(tmp_path):
    pidfile = tmp_path / "a.pid"
    proc, ready = start_server("--name", "p", "--bind", LOOPBACK, "--http", "0", "--udp-echo", "0",
                               "--pidfile", str(pidfile))
    try:
        assert pidfile.exists() and ready["http"][0] > 0 and ready["udp"][0] > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert not pidfile.exists()
    finally:
        stop_server(proc)


def test_serve_sigint_exits_zero():
    proc, _ = start_server("--name", "p", "--bind", LOOPBACK, "--http", "0")
    try:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        stop_server(proc)


def test_serve_port_in_use_fails(silent_tcp):
    done = subprocess.run([PYTHON, str(AGENT), "serve", "--name", "p", "--bind", LOOPBACK,
                           "--http", str(silent_tcp)], capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode == 1 and "cannot bind" in done.stderr


def test_serve_and_probe_ipv6_loopback():
    try:
        port = free_port(socket.SOCK_STREAM, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    proc, _ = start_server("--name", "pod6", "--bind", "::1", "--http", str(port))
    try:
        (result,) = probe_ok([{"id": "v6", "kind": "http", "host": "::1", "port": port, "count": 2}])
        assert result["ok"] and result["responders"] == {"pod6": 2} and result["clients"] == ["::1"]
    finally:
        stop_server(proc)


# --------------------------------------------------------------------------- dns


def test_dns_localhost_via_hosts_file():
    results = probe_ok([
        {"id": "plain", "kind": "dns", "name": "localhost"},
        {"id": "expect", "kind": "dns", "name": "localhost", "expect": ["127.0.0.1"]},
        {"id": "wrong", "kind": "dns", "name": "localhost", "expect": ["127.0.0.2"]},
    ])
    assert results[0] == {"id": "plain", "ok": True, "latency_ms": results[0]["latency_ms"],
                          "addresses": ["127.0.0.1"], "detail": ""}
    assert results[1]["ok"] is True
    assert results[2]["ok"] is False and results[2]["addresses"] == ["127.0.0.1"]
    assert "127.0.0.2" in results[2]["detail"]


def _qname(name):
    return b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"


def dns_answer(query):
    """Tiny authoritative answers for *.test, built by hand (names compressed with pointers)."""
    query_id, _, _, _, _, _ = struct.unpack_from("!HHHHHH", query)
    end = 12
    labels = []
    while query[end]:
        labels.append(query[end + 1:end + 1 + query[end]].decode())
        end += 1 + query[end]
    question = query[12:end + 5]
    name = ".".join(labels)

    def a_record(name_offset, addr):
        return struct.pack("!HHHIH", 0xC000 | name_offset, 1, 1, 30, 4) + socket.inet_aton(addr)

    answers = []
    rcode = 0
    if name == "web.test":  # one A record whose owner name is a pointer to the question
        answers = [a_record(12, "10.96.0.10")]
    elif name == "alias.test":  # CNAME (target partly compressed) then A records owned by the target
        target = b"\x04real" + struct.pack("!H", 0xC000 | (12 + 1 + len("alias")))  # "real" + ptr to "test"
        cname = struct.pack("!HHHIH", 0xC00C, 5, 1, 30, len(target)) + target
        target_offset = 12 + len(question) + 12  # header + question + fixed part of the CNAME record
        answers = [cname, a_record(target_offset, "10.0.0.2"), a_record(target_offset, "10.0.0.1")]
    elif name == "refused.test":
        rcode = 5
    elif name == "empty.test":
        pass
    else:
        rcode = 3
    header = struct.pack("!HHHHHH", query_id, 0x8180 | rcode, 1, len(answers), 0, 0)
    return header + question + b"".join(answers)


@pytest.fixture
def dns_server():
    """UDP + TCP DNS responder on 127.0.0.1 (same port), stopped after the test; loops are bounded."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((LOOPBACK, 0))
    port = udp.getsockname()[1]
    tcp = socket.socket()
    try:
        tcp.bind((LOOPBACK, port))
    except OSError:
        tcp.close()
        tcp = None
    stop = threading.Event()
    queries, peers = [], []

    def serve_udp():
        udp.settimeout(0.1)
        for _ in range(300):  # <= ~30s
            if stop.is_set():
                return
            try:
                data, peer = udp.recvfrom(512)
            except TimeoutError:
                continue
            queries.append(data)
            peers.append(peer)
            udp.sendto(struct.pack("!HHHHHH", 0xBEEF, 0x8180, 0, 0, 0, 0), peer)  # stray id: ignored
            udp.sendto(dns_answer(data), peer)

    def serve_tcp():
        tcp.listen(4)
        tcp.settimeout(0.1)
        for _ in range(300):
            if stop.is_set():
                return
            try:
                conn, _ = tcp.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                size = struct.unpack("!H", conn.recv(2))[0]
                reply = dns_answer(conn.recv(size))
                conn.sendall(struct.pack("!H", len(reply)) + reply[:5])  # split to exercise reassembly
                time.sleep(0.05)
                conn.sendall(reply[5:])

    threads = [threading.Thread(target=serve_udp, daemon=True)]
    if tcp is not None:
        threads.append(threading.Thread(target=serve_tcp, daemon=True))
    for thread in threads:
        thread.start()
    yield {"port": port, "tcp": tcp is not None, "queries": queries, "peers": peers}
    stop.set()
    for thread in threads:
        thread.join(timeout=2)
    udp.close()
    if tcp is not None:
        tcp.close()


def test_dnsquery_udp(dns_server):
    base = {"kind": "dnsquery", "server": LOOPBACK, "port": dns_server["port"], "timeout": 2}
    web, alias, missing, refused, empty = probe_ok([
        {**base, "id": "web", "name": "web.test"},
        {**base, "id": "alias", "name": "alias.test.", "qtype": "A"},
        {**base, "id": "missing", "name": "missing.test"},
        {**base, "id": "refused", "name": "refused.test"},
        {**base, "id": "empty", "name": "empty.test"},
    ])
    assert web == {"id": "web", "ok": True, "latency_ms": web["latency_ms"], "addresses": ["10.96.0.10"],
                   "rcode": "NOERROR", "detail": ""}
    assert isinstance(web["latency_ms"], float)
    assert alias["ok"] and alias["addresses"] == ["10.0.0.2", "10.0.0.1"]
    assert missing["ok"] is False and missing["rcode"] == "NXDOMAIN" and missing["addresses"] == []
    assert "NXDOMAIN" in missing["detail"]
    assert refused["ok"] is False and refused["rcode"] == "REFUSED"
    assert empty["ok"] is False and empty["rcode"] == "NOERROR" and empty["detail"]
    # the query on the wire: recursion desired, one question, QTYPE A, QCLASS IN
    query = next(q for q in dns_server["queries"] if _qname("web.test") in q)
    assert struct.unpack_from("!HHHH", query, 2) == (0x0100, 1, 0, 0)
    assert query[12:] == _qname("web.test") + struct.pack("!HH", 1, 1)


def test_dnsquery_from_a_fixed_source_port(dns_server):
    sport = free_port(socket.SOCK_DGRAM)
    base = {"kind": "dnsquery", "server": LOOPBACK, "port": dns_server["port"], "sport": sport, "timeout": 2}
    # Twice from the same port: the socket is released after each check, the tuple is the same.
    (first,) = probe_ok([{**base, "id": "a", "name": "web.test"}])
    (second,) = probe_ok([{**base, "id": "b", "name": "web.test"}])
    assert first["ok"] and second["ok"] and first["addresses"] == ["10.96.0.10"]
    assert [peer[1] for peer in dns_server["peers"]] == [sport, sport]
    (without,) = probe_ok([{**base, "id": "c", "name": "web.test", "sport": 0}])
    assert without["ok"] and dns_server["peers"][-1][1] != sport, "0: the kernel picks the source port"


@pytest.mark.parametrize("sport", [-1, 65536, "53535", True])
def test_dnsquery_rejects_a_bad_source_port(sport):
    proc = subprocess.run([PYTHON, str(AGENT), "probe"], input=json.dumps(
        [{"id": "d", "kind": "dnsquery", "server": LOOPBACK, "name": "x.test", "sport": sport}]),
        capture_output=True, text=True, timeout=10, check=False)
    assert proc.returncode == 2
    assert "check #0 (id 'd'): field 'sport': must be an integer in 0..65535" in proc.stderr


def test_dnsquery_tcp(dns_server):
    if not dns_server["tcp"]:
        pytest.skip("TCP port matching the UDP port is taken")
    results = probe_ok([
        {"id": "t1", "kind": "dnsquery", "server": LOOPBACK, "port": dns_server["port"], "tcp": True,
         "name": "web.test"},
        {"id": "t2", "kind": "dnsquery", "server": LOOPBACK, "port": dns_server["port"], "tcp": True,
         "name": "nope.test"},
    ])
    assert results[0]["ok"] and results[0]["addresses"] == ["10.96.0.10"] and results[0]["rcode"] == "NOERROR"
    assert results[1]["ok"] is False and results[1]["rcode"] == "NXDOMAIN"


def test_guard_abandons_a_check_that_overruns_its_timeout(monkeypatch):
    """getaddrinfo() cannot be interrupted: the per-check guard thread must give up on time."""
    spec = importlib.util.spec_from_file_location("netmend_lab_agent", AGENT)
    agent = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent)
    release = threading.Event()

    def stuck(check, deadline):
        release.wait(10)
        return {"ok": True}

    monkeypatch.setitem(agent.KINDS, "dns", (stuck, *agent.KINDS["dns"][1:]))
    (check,) = agent.parse_checks('[{"id": "d", "kind": "dns", "name": "x", "timeout": 0.3}]')
    start = time.monotonic()
    try:
        result = agent.run_check(check)
    finally:
        release.set()
    assert time.monotonic() - start < 0.3 + agent.GUARD_MARGIN + 0.3
    assert result == {"id": "d", "ok": False, "latency_ms": None, "addresses": [], "detail": "timed out after 0.3s"}


# --------------------------------------------------------------------------- resolvconf


def test_resolvconf_prints_file():
    done = subprocess.run([PYTHON, str(AGENT), "resolvconf"], capture_output=True, text=True, timeout=10,
                          check=False)
    if not os.path.exists("/etc/resolv.conf"):
        assert done.returncode == 1
    else:
        assert done.returncode == 0
        assert done.stdout == Path("/etc/resolv.conf").read_text()
