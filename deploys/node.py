"""A node as the core sees it, over pyinfra facts: netmend.facts.gather's host adapter.

pyinfra facts are the core's facts: `NodeReads` is a pyinfra fact that performs a batch of the adapter's
reads on the node (run an argv with LC_ALL=C, find a tool, read a file, test or list a path, resolve a
symlink, probe DNS servers) and returns each result byte-exact (base64 on the wire; pyinfra's output is
lines). `NodeHost` answers the interface at the top of netmend/facts.py from those results, so the core's own
gather() and parsers run on the controller.

A node is slow to ask (one ssh channel and one login shell per command), so gather() runs in rounds: the core's
gather runs against what has been read so far, every read it asks for that is not known yet is collected
(with a stand-in answer so that it goes on and asks for the rest), all of them are read in one NodeReads
call, and gather runs again, until a run asks for nothing new. That last run's facts are the result: every
value in it was read from the node. Two or three rounds read everything the checks need.

No pyinfra fact is cached: a NodeHost caches its own answers for one gather only; make a new one to read again.
"""

import base64
import inspect
import json
import os
import posixpath
import shlex

from pyinfra.api import FactBase

from netmend import facts as core_facts
from netmend import firewalld, kmod, resolvconf
from netmend.sysctl import ETC_SYSCTL_CONF, SYSCTL_DIRS

# get_bin_path's search (Ansible, ModuleHost.tool): the PATH, then the sbin directories.
SEARCH_PATH = 'PATH="$PATH:/sbin:/usr/sbin:/usr/local/sbin"; export PATH'
MAX_ROUNDS = 8
MISSING = "nx"  # a read of a path that does not exist


class NodeReadError(RuntimeError):
    """The node could not answer a read (the message names it)."""


# --- the DNS probe, run on the node: netmend.resolvconf.nameserver_answers, shipped as its own source text

def _probe_source():
    return "\n".join((
        "import json, os, socket, struct, sys, time",
        "from concurrent.futures import ThreadPoolExecutor",
        f"DNS_PORT = {resolvconf.DNS_PORT!r}",
        inspect.getsource(resolvconf.nameserver_answers),
        "timeout, servers = float(sys.argv[1]), sys.argv[2:]",
        "with ThreadPoolExecutor(max_workers=len(servers)) as pool:",
        "    answers = list(pool.map(lambda s: nameserver_answers(s, timeout=timeout), servers))",
        "print(json.dumps(dict(zip(servers, answers))))",
    ))


DNS_PROBE = _probe_source()


# --- the fact ------------------------------------------------------------------------------------------

def _q(value):
    return shlex.quote(str(value))


def _captured(i, command):
    """Run `command` with stdout and stderr to the temp files; print `i rc out err` (base64)."""
    return (f"{command} </dev/null >\"$o\" 2>\"$e\"; r=$?; printf '%s %s ' {i} \"$r\"; base64 -w0 \"$o\"; "
            f"printf ' '; base64 -w0 \"$e\"; echo")


def _read(i, path):
    return (f"if [ -e {path} ]; then base64 -w0 <{path} >\"$o\" 2>\"$e\"; r=$?; printf '%s %s ' {i} \"$r\"; "
            f"cat \"$o\"; printf ' '; base64 -w0 \"$e\"; echo; else echo '{i} {MISSING}'; fi")


def _listdir(i, path):
    return (f"if [ -d {path} ]; then printf '{i} 0 '; find -H {path} -mindepth 1 -maxdepth 1 -printf '%f\\0' "
            f"| base64 -w0; echo; else echo '{i} 1'; fi")


def _link(i, path):
    return (f"if [ -L {path} ]; then printf '{i} 0 '; printf %s \"$(realpath -m -- {path})\" | base64 -w0; echo; "
            f"else echo '{i} 1'; fi")


def _tool(i, name):
    return (f"if p=$(command -v {name} 2>/dev/null) && [ \"${{p#/}}\" != \"$p\" ]; then printf '{i} 0 '; "
            f"printf %s \"$p\" | base64 -w0; echo; else echo '{i} 1'; fi")


def _tree(i, path):
    """A directory's entries in one read: per entry `f NAME CONTENT` (a regular file, base64) or `o NAME`."""
    entry = ('n=$(printf %s "${f##*/}" | base64 -w0); if [ -f "$f" ] && c=$(base64 -w0 <"$f" 2>/dev/null); '
             'then printf \'f %s %s\\n\' "$n" "$c"; else printf \'o %s\\n\' "$n"; fi')
    return (f"if [ -d {path} ]; then for f in {path}/* {path}/.[!.]* {path}/..?*; do "
            f"{{ [ -e \"$f\" ] || [ -L \"$f\" ]; }} || continue; {entry}; done >\"$o\"; printf '{i} 0 '; "
            f"base64 -w0 \"$o\"; echo; elif [ -e {path} ]; then echo '{i} 2'; else echo '{i} 1'; fi")


PATH_READS = {"read": _read, "listdir": _listdir, "link": _link, "tool": _tool, "tree": _tree,
              "isdir": lambda i, path: f"[ -d {path} ]; echo \"{i} $?\"",
              "isfile": lambda i, path: f"[ -f {path} ]; echo \"{i} $?\""}


def request_script(i, request, python="python3"):
    """The shell lines that answer one request, printing one record line `i status [out [err]]`."""
    kind = request[0]
    if kind == "run":
        _, argv, env = request
        assigns = " ".join(f"{k}={_q(v)}" for k, v in (("LC_ALL", "C"), *env))
        return _captured(i, f"{assigns} {' '.join(_q(a) for a in argv)}")
    if kind == "dns":
        _, servers, timeout = request
        return _captured(i, f"{_q(python)} -c {_q(DNS_PROBE)} {_q(timeout)} {' '.join(_q(s) for s in servers)}")
    if kind == "resolv-dns":  # every `nameserver` of a resolv.conf, probed: the answer node-dns asks for next
        _, path, timeout = request
        servers = (f"$(sed -n 's/^[[:space:]]*nameserver[[:space:]][[:space:]]*\\([^[:space:]#;]*\\).*/\\1/p' "
                   f"{_q(path)} 2>/dev/null)")
        return "set -f; " + _captured(i, f"{_q(python)} -c {_q(DNS_PROBE)} {_q(timeout)} {servers}") + "; set +f"
    if kind not in PATH_READS:
        raise ValueError(f"unknown read {kind!r}")
    return PATH_READS[kind](i, _q(request[1]))


def batch_script(requests, python="python3"):
    """One shell script answering every request; it always exits 0 (each answer carries its own status)."""
    lines = ["set +e", SEARCH_PATH, 'o=$(mktemp) || exit 0', 'e=$(mktemp) || exit 0']
    lines += [request_script(i, r, python) for i, r in enumerate(requests)]
    lines += ['rm -f "$o" "$e"', "exit 0"]
    return "\n".join(lines)


def parse_records(lines, count):
    """{index: (status, stdout bytes, stderr bytes)} from the script's output lines."""
    records = {}
    for line in lines:
        words = line.split(" ")
        if len(words) < 2 or not words[0].isdigit():  # noqa: PLR2004 - index and status
            continue
        out = base64.b64decode(words[2]) if len(words) > 2 else b""  # noqa: PLR2004
        err = base64.b64decode(words[3]) if len(words) > 3 else b""  # noqa: PLR2004
        records[int(words[0])] = (words[1], out, err)
    missing = [i for i in range(count) if i not in records]
    if missing:
        raise NodeReadError(f"the node did not answer {len(missing)} of {count} reads (first: #{missing[0]})")
    return records


class NodeReads(FactBase):
    """A batch of reads in one command: [(status, stdout bytes, stderr bytes)], one per request.

    requests: ("run", argv, env pairs) | ("tool", name) | ("read", path) | ("isdir", path) | ("isfile", path)
    | ("listdir", path) | ("link", path) | ("dns", servers, timeout); python: the node's interpreter (DNS)."""

    def command(self, requests, python="python3"):
        self._count = len(requests)
        return batch_script(requests, python)

    def process(self, output):
        records = parse_records(output, self._count)
        return [records[i] for i in range(self._count)]


def pyinfra_fetch(host, python="python3"):
    """fetch(requests) -> records, through pyinfra's fact API on `host`."""

    def fetch(requests):
        return host.get_fact(NodeReads, requests=tuple(requests), python=python)

    return fetch


# --- the adapter ---------------------------------------------------------------------------------------

def _text(data):
    return data.decode("utf-8", errors="surrogateescape")


class _Speculating(Exception):
    """Raised out of a speculative gather that cannot go on; the reads it asked for are fetched."""


class NodeHost:
    """netmend.facts' host adapter (run, tool, read, isdir, listdir, isfile, link_target, dns_answers) over
    `fetch`, a function that performs a batch of requests on the node (pyinfra_fetch, or a test's own)."""

    def __init__(self, fetch):
        self.fetch = fetch
        self.known = {}
        self.wanted = None  # while speculating: the requests asked for that are not known yet
        self.rounds = 0

    # the rounds

    def prefetch(self, requests):
        """Read every request not known yet, in one batch."""
        todo = list(dict.fromkeys(r for r in requests if r not in self.known))
        if todo:
            self.rounds += 1
            for request, record in zip(todo, self.fetch(todo), strict=True):
                self.known[request] = record
                if request[0] == "tree":
                    self._learn_tree(request[1], record)

    def _learn_tree(self, path, record):
        """What a `tree` read answers for isdir, listdir, isfile and read (a read already made stays)."""
        status, out, _ = record
        learnt = {("isdir", path): ("0" if status == "0" else "1", b"", b"")}
        if status == "1":  # nothing there at all
            learnt.update({("isfile", path): ("1", b"", b""), ("read", path): (MISSING, b"", b"")})
        if status == "0":
            names = []
            for line in out.decode().splitlines():
                kind, name, *content = line.split(" ")
                name = base64.b64decode(name)
                names.append(name)
                full = posixpath.join(path, _text(name))
                learnt[("isfile", full)] = ("0" if kind == "f" else "1", b"", b"")
                if kind == "f":
                    learnt[("read", full)] = ("0", base64.b64decode(content[0] if content else ""), b"")
            learnt[("listdir", path)] = ("0", b"".join(n + b"\0" for n in names), b"")
        for request, answer in learnt.items():
            self.known.setdefault(request, answer)

    def collect(self, read, extra=()):
        """read() (which asks this host for what it needs) once everything it asks for is known: rounds of
        speculative runs, each followed by one batch of reads, then a run on known answers only. `extra`:
        requests the caller will ask for afterwards, read in the first batch."""
        for n in range(MAX_ROUNDS):
            self.wanted = [r for r in extra if r not in self.known] if n == 0 else []
            try:
                result, error = read(), None
            except Exception as exc:  # a stand-in answer led it astray: the real one is fetched next
                result, error = None, exc
            wanted, self.wanted = self.wanted, None
            if not wanted:
                if error is not None:
                    raise error
                return result
            self.prefetch(wanted)
        raise NodeReadError(f"the reads did not settle in {MAX_ROUNDS} rounds")

    def _ask(self, request, stand_in):
        if request in self.known:
            return self.known[request]
        if self.wanted is not None:
            self.wanted.append(request)
            return stand_in
        self.prefetch([request])
        return self.known[request]

    # the interface of netmend.facts (and netmend.proxymode.read_snapshot)

    def run(self, argv, data=None, env=()):
        if data is not None:
            raise ValueError("NodeHost.run reads: standard input is for the plan's commands (deploys.operations)")
        argv = tuple(argv)
        name = os.path.basename(argv[0])
        if argv[0] == self._known_tool(name):
            argv = (name, *argv[1:])  # the same binary: both are found on the same search path
        stand_in = ("0", b"[]" if "-j" in argv else b"", b"")
        status, out, err = self._ask(("run", argv, tuple(env)), stand_in)
        return int(status), _text(out), _text(err)

    def _known_tool(self, name):
        status, out, _ = self.known.get(("tool", name), ("1", b"", b""))
        return _text(out) if status == "0" else None

    def tool(self, name):
        status, out, _ = self._ask(("tool", name), ("0", name.encode(), b""))
        if status != "0":
            return None
        return _text(out) if ("tool", name) in self.known else name

    def read(self, path):
        status, out, err = self._ask(("read", path), (MISSING, b"", b""))
        if status == MISSING:
            return None
        if status != "0":
            raise NodeReadError(f"cannot read {path}: {_text(err).strip()}")
        return _text(out)

    def isdir(self, path):
        return self._ask(("isdir", path), ("0", b"", b""))[0] == "0"

    def isfile(self, path):
        return self._ask(("isfile", path), ("0", b"", b""))[0] == "0"

    def listdir(self, path):
        status, out, _ = self._ask(("listdir", path), ("0", b"", b""))
        if status != "0":
            raise NodeReadError(f"cannot list {path}: not a directory")
        return sorted(_text(name) for name in out.split(b"\0") if name)

    def link_target(self, path):
        status, out, _ = self._ask(("link", path), ("1", b"", b""))
        return _text(out) if status == "0" else None

    def dns_answers(self, servers, timeout):
        if not servers:
            return {}
        for request, (status, out, _) in self.known.items():  # a resolv.conf's servers, probed with its read
            if request[0] == "resolv-dns" and request[2] == float(timeout) and status == "0":
                answers = json.loads(out)
                if all(s in answers for s in servers):
                    return {s: answers[s] for s in servers}
        request = ("dns", tuple(servers), float(timeout))
        status, out, err = self._ask(request, ("0", json.dumps(dict.fromkeys(servers, True)).encode(), b""))
        if status != "0":
            raise NodeReadError(f"the DNS probe failed on the node (rc {status}): {_text(err).strip()[-300:]}")
        return json.loads(out)


def hints(want, checks):
    """The reads gather makes only after a first answer, asked for in its first round: the sysctl.d directories
    with their files (listdir, then each file), /proc/modules and the kernel release (kmod.status), the node's
    nameservers probed (resolv.conf, then the probe), and firewalld's permanent zones and netmend's record
    (after the runtime zones parse, firewall_mode configured).
    An answer a hint does not hold (a nameserver the script did not see) is read in a later round."""
    extra = [*(("tree", d) for d in SYSCTL_DIRS), ("tree", ETC_SYSCTL_CONF), ("isfile", ETC_SYSCTL_CONF),
             ("read", ETC_SYSCTL_CONF), ("read", kmod.PROC_MODULES), ("read", kmod.OSRELEASE)] \
        if "kernel" in checks else []
    fw = want.get("firewall") or {}
    if "firewall" in checks and fw.get("mode") == "configured":
        extra += [("run", ("firewall-cmd", "--permanent", "--list-all-zones"), ()),
                  ("read", fw.get("state_file") or firewalld.STATE_FILE)]
    if "node-dns" in checks:
        timeout = float((want.get("dns") or {}).get("probe_timeout", 1.0))
        extra.append(("resolv-dns", resolvconf.ETC_RESOLV_CONF, timeout))
    return extra


def gather(node, want, checks, extra=()):
    """netmend.facts.gather over `node` (a NodeHost), in as few rounds as the reads allow (`extra`: more
    requests to read in the first round, beside the hints)."""
    return node.collect(lambda: core_facts.gather(node, want, checks), [*hints(want, checks), *extra])
