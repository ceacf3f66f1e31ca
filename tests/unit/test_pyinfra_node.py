"""The pyinfra front end's view of a node (deploys.node): netmend.facts' host adapter over pyinfra facts.

No lab and no network: the batch script a NodeReads fact sends is run here with `sh` on a temporary directory
and compared with the core's own LocalHost; the rounds of gather() run over an in-memory node built from the
lab's captured output (tests/fixtures/drift) and give exactly the facts the core's gather reads directly.
"""

import base64
import json
import os
import re
import subprocess

import pytest
from test_audit import CONNTRACK_SUMMARY, DNS_FLOW, KMOD_FIXTURES, SYSCTL_FILE, SYSCTLS, fixture, lab_want, pod_text

from deploys.node import MISSING, NodeHost, NodeReadError, NodeReads, batch_script, gather, parse_records
from netmend import facts, resolvconf, sysctl
from netmend.checks import CHECKS
from netmend.proxymode import PROC_IP_VS
from netmend.sysctl import proc_path


def local_fetch(requests):
    """What NodeReads returns, with the script run by this machine's sh (only on the test's own files)."""
    proc = subprocess.run(["sh", "-c", batch_script(requests)], capture_output=True, text=True, timeout=60, check=True)
    return [parse_records(proc.stdout.splitlines(), len(requests))[i] for i in range(len(requests))]


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "plain").write_text("a\nb\n")
    (tmp_path / "no-newline").write_text("last line")
    (tmp_path / "empty").write_text("")
    (tmp_path / "latin1").write_bytes(b"caf\xe9 \xff\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / ".hidden").write_text("h")
    (tmp_path / "dir" / "with space.conf").write_text("s")
    (tmp_path / "dir" / "sub").mkdir()
    (tmp_path / "link").symlink_to("plain")
    (tmp_path / "dangling").symlink_to("nowhere/at/all")
    return tmp_path


def test_reads_over_the_batch_script_are_the_local_hosts_byte_for_byte(tree):
    node, local = NodeHost(local_fetch), facts.LocalHost()
    paths = [str(tree / n) for n in ("plain", "no-newline", "empty", "latin1", "dir", "link", "dangling", "absent")]
    node.prefetch([(kind, p) for p in paths for kind in ("read", "isdir", "isfile", "link")]
                  + [("listdir", str(tree / "dir"))])
    assert node.rounds == 1
    for path in paths:
        if os.path.isdir(path):
            with pytest.raises(NodeReadError):
                node.read(path)
        else:
            assert node.read(path) == local.read(path), path
        assert (node.isdir(path), node.isfile(path), node.link_target(path)) == \
               (local.isdir(path), local.isfile(path), local.link_target(path)), path
    assert node.listdir(str(tree / "dir")) == local.listdir(str(tree / "dir")) == [".hidden", "sub", "with space.conf"]
    assert node.read(str(tree / "latin1")).encode("utf-8", "surrogateescape") == b"caf\xe9 \xff\n"
    assert node.rounds == 1  # all of it was read in one command


def test_a_command_runs_with_lc_all_c_its_output_byte_exact_and_its_status():
    node = NodeHost(local_fetch)
    script = "printf 'out\\n\\nno newline'; printf 'err' >&2; echo \" $LC_ALL $EXTRA\" >&2; exit 3"
    rc, out, err = node.run(["sh", "-c", script, "arg with 'quotes' and $dollar"], env=(("EXTRA", "x y"),))
    assert (rc, out, err) == (3, "out\n\nno newline", "err C x y\n")
    assert node.run(["sh", "-c", 'printf %s "$0"', "a 'b' \"c\" $d"]) == (0, "a 'b' \"c\" $d", "")
    assert node.run(["no-such-tool-netmend"])[0] == 127
    with pytest.raises(ValueError, match="standard input"):
        node.run(["cat"], data="x")


def test_tools_are_found_on_the_path_and_sbin_as_get_bin_path_finds_them():
    node = NodeHost(local_fetch)
    assert node.tool("sh").startswith("/") and node.tool("no-such-tool-netmend") is None


def test_a_tree_read_answers_a_directorys_listing_and_files_as_their_own_reads_would(tree):
    (tree / "dir" / "fifo").symlink_to("/nonexistent")
    node, local, directory = NodeHost(local_fetch), facts.LocalHost(), str(tree / "dir")
    node.prefetch([("tree", directory), ("tree", str(tree / "absent"))])
    assert node.listdir(directory) == local.listdir(directory) == [".hidden", "fifo", "sub", "with space.conf"]
    for name in local.listdir(directory):
        path = f"{directory}/{name}"
        assert node.isfile(path) == local.isfile(path)
        if local.isfile(path):
            assert node.read(path) == local.read(path)
    assert node.isdir(directory) and not node.isdir(str(tree / "absent"))
    assert node.rounds == 1  # every answer above came from the two tree reads


def test_the_nameservers_probed_with_the_resolv_conf_are_its_nameserver_lines(tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("# dhcp\nsearch lab.example\nnameserver 198.51.100.53\n  nameserver\t203.0.113.10 # x\n"
                      "options rotate\nnameserver *\n")
    script = batch_script([("resolv-dns", str(resolv), 1.5)], python="echo")  # the probe's argv, not a probe
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60, check=True)
    (status, out, _err) = parse_records(proc.stdout.splitlines(), 1)[0]
    assert status == "0" and out.endswith(b" 1.5 198.51.100.53 203.0.113.10 *\n")


def test_the_fact_returns_one_record_per_request_and_refuses_a_short_answer():
    fact = NodeReads()
    script = fact.command((("isdir", "/"), ("isfile", "/nonexistent-netmend")))
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert fact.process(proc.stdout.splitlines()) == [("0", b"", b""), ("1", b"", b"")]
    with pytest.raises(NodeReadError, match="did not answer 1 of 2"):
        fact.process(proc.stdout.splitlines()[:1])


def test_the_dns_probe_ships_the_cores_own_function():
    from deploys.node import DNS_PROBE  # noqa: PLC0415

    assert "def nameserver_answers(" in DNS_PROBE and f"DNS_PORT = {resolvconf.DNS_PORT}" in DNS_PROBE
    compile(DNS_PROBE, "<probe>", "exec")
    assert NodeHost(local_fetch).dns_answers([], 1.0) == {}


# --- the rounds: gather() over an in-memory node --------------------------------------------------------

class Node:
    """A node in memory: files, directories and the output of every command gather runs, from the lab's w1."""

    TOOLS = ("iptables-save", "ip6tables-save", "firewall-cmd", "ip", "bridge", "conntrack", "nft", "ipset")

    def __init__(self, want):
        self.files = {proc_path(k): f"{v}\n" for k, v in SYSCTLS.items()}
        self.files |= {SYSCTL_FILE: sysctl.render(SYSCTLS), "/etc/sysctl.conf": "# nothing\n",
                       "/usr/lib/sysctl.d/50-default.conf": "net.ipv4.conf.default.rp_filter = 2\n",
                       want["modules_file"]: want["modules_text"], "/run/flannel/subnet.env": fixture("w1-subnet.env"),
                       "/etc/resolv.conf": fixture("w1-resolv.conf"),
                       "/proc/modules": KMOD_FIXTURES.joinpath("proc", "modules").read_text(),
                       "/proc/sys/kernel/osrelease": KMOD_FIXTURES.joinpath("proc/sys/kernel/osrelease").read_text()}
        self.files |= {p["path"]: pod_text(p["namespace"]) for p in want["dns"]["pods"]}
        self.dirs = {"/proc/sys/net/bridge", "/etc/sysctl.d", "/usr/lib/sysctl.d"}
        addrs = fixture("w1-addrs.json")
        self.commands = {
            ("iptables-save",): (0, fixture("w1-iptables-save"), ""), ("ip6tables-save",): (0, "", ""),
            ("firewall-cmd", "--state"): (0, "running\n", ""),
            ("firewall-cmd", "--get-default-zone"): (0, "public\n", ""),
            ("firewall-cmd", "--list-all-zones"): (0, fixture("w1-firewalld-zones.txt"), ""),
            ("firewall-cmd", "--permanent", "--list-all-zones"): (0, fixture("w1-firewalld-zones.txt"), ""),
            ("ip", "-j", "-d", "link", "show"): (0, fixture("w1-links.json"), ""),
            ("ip", "-j", "addr", "show"): (0, addrs, ""), ("ip", "-d", "-j", "addr", "show"): (0, addrs, ""),
            ("ip", "-j", "route", "show"): (0, fixture("w1-routes.json"), ""),
            ("ip", "-j", "neigh", "show"): (0, fixture("w1-neighs.json"), ""),
            ("bridge", "-j", "fdb", "show"): (0, fixture("w1-fdb.json"), ""),
            ("conntrack", "-L", "-p", "udp", "--orig-dst", want["cluster_dns"]):
                (0, DNS_FLOW.format(reply="10.244.0.3"), CONNTRACK_SUMMARY.format(n=1)),
            ("nft", "list", "tables"): (0, fixture("w1-nft-tables.txt"), ""), ("ipset", "save"): (0, "", ""),
        }
        self.asked = []

    # the core's host interface, directly (what facts.gather reads on a node through the Ansible module)
    def run(self, argv):
        return self.commands.get((os.path.basename(argv[0]), *argv[1:]), (127, "", "not found"))

    def tool(self, name):
        return f"/usr/sbin/{name}" if name in self.TOOLS else None

    def read(self, path):
        return self.files.get(path)

    def isdir(self, path):
        return path in self.dirs

    def isfile(self, path):
        return path in self.files

    def listdir(self, path):
        return sorted(p.rsplit("/", 1)[1] for p in self.files if p.rsplit("/", 1)[0] == path)

    def link_target(self, path):
        return None

    def dns_answers(self, servers, timeout):
        return dict.fromkeys(servers, True)

    # the same node behind NodeReads: one record per request
    def fetch(self, requests):
        self.asked.append(list(requests))
        return [self.answer(r) for r in requests]

    def answer(self, request):
        """(status, stdout, stderr) as the batch script prints them for this node."""
        kind, arg = request[0], request[1]
        if kind in ("isdir", "isfile", "link"):
            test = {"isdir": self.isdir, "isfile": self.isfile, "link": lambda p: False}[kind](arg)
            return "0" if test else "1", b"", b""
        return getattr(self, "answer_" + kind.replace("-", "_"))(*request[1:])

    def answer_run(self, argv, env):
        rc, out, err = self.run(argv)
        return str(rc), out.encode(), err.encode()

    def answer_tool(self, name):
        found = self.tool(name)
        return ("0", found.encode(), b"") if found else ("1", b"", b"")

    def answer_read(self, path):
        return ("0", self.files[path].encode(), b"") if path in self.files else (MISSING, b"", b"")

    def answer_listdir(self, path):
        if path not in self.dirs:
            return "1", b"", b""
        return "0", b"".join(n.encode() + b"\0" for n in self.listdir(path)), b""

    def answer_dns(self, servers, timeout):
        return "0", json.dumps(self.dns_answers(servers, timeout)).encode(), b""

    def answer_resolv_dns(self, path, timeout):
        servers = re.findall(r"^\s*nameserver\s+(\S+)", self.files.get(path, ""), re.M)
        return self.answer_dns(servers, timeout)

    def answer_tree(self, path):
        if path not in self.dirs:
            return "2" if path in self.files else "1", b"", b""
        lines = []
        for name in self.listdir(path):
            full, b64 = f"{path}/{name}", base64.b64encode(name.encode()).decode()
            content = base64.b64encode(self.files[full].encode()).decode()
            lines.append(f"f {b64} {content}\n" if self.isfile(full) else f"o {b64}\n")
        return "0", "".join(lines).encode(), b""


def test_gather_in_rounds_gives_exactly_the_facts_the_core_reads_directly():
    want = lab_want()
    node = Node(want)
    direct = facts.gather(node, want, list(CHECKS))
    pyinfra_node = NodeHost(node.fetch)
    assert gather(pyinfra_node, want, list(CHECKS)) == direct
    assert direct["errors"] == {} and direct["iptables"] and direct["firewalld"]["running"]
    assert pyinfra_node.rounds == len(node.asked) == 1  # the hints hold what gather reads after a first answer
    assert ("read", PROC_IP_VS) in node.asked[0]  # read on the node, not on the controller
    assert sum(len(batch) for batch in node.asked) == len({r for batch in node.asked for r in batch})


def test_a_fact_that_fails_on_the_node_is_the_same_error_as_the_core_records():
    want = lab_want()
    node = Node(want)
    node.commands[("iptables-save",)] = (1, "", "iptables-save: cannot lock\n")
    del node.commands[("firewall-cmd", "--list-all-zones")]
    ran = gather(NodeHost(node.fetch), want, list(CHECKS))
    assert ran == facts.gather(node, want, list(CHECKS))
    assert ran["errors"]["iptables"] == "`iptables-save` failed (rc 1): iptables-save: cannot lock"
    assert sorted(ran["errors"]) == ["firewalld", "iptables", "proxy"]


def test_parse_records_decodes_base64_and_keeps_empty_fields():
    lines = [f"0 0 {base64.b64encode(b'x y').decode()} ", "1 nx", "2 1 "]
    assert parse_records(lines, 3) == {0: ("0", b"x y", b""), 1: ("nx", b"", b""), 2: ("1", b"", b"")}
