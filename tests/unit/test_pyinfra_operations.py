"""The pyinfra front end's plan steps (deploys.operations): every kind of Action the checks produce, rendered as
the pyinfra commands that carry it out, and the plans it refuses before anything runs.

No lab: the Actions come from the checks run on the lab's captured facts (tests/unit/test_audit.py's Raw and
lab_want). The steps that touch only files (file, proc) are also run here with `sh` on a temporary directory,
and a payload's way to its tool is run against a stand-in tool: nothing here touches this machine's network.
"""

import os
import stat
import subprocess
from io import StringIO

import pytest
from pyinfra.api import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.context import ctx_host
from test_audit import (
    DNS_FLOW,
    SYSCTL_FILE,
    W2_MAC,
    Raw,
    _in_table,
    _zone_field,
    kp_fixture,
    lab_want,
    only,
    run,
    without_netmend_forward,
)

from deploys import operations
from deploys.node import MISSING, NodeHost
from deploys.operations import PlanRefused, Steps, netmend_node, refuse
from netmend import checks, firewalld, sysctl
from netmend.iptables import parse_save
from netmend.plan import Action, Result

STAMP = "2026-01-02@03:04:05"


def answering(records):
    """A NodeHost whose node answers from `records` ({request: (status, out, err)}); anything else fails."""
    return NodeHost(lambda requests: [records[r] for r in requests])


def steps(node=None, backup=True):
    return Steps(node or answering({}), lambda key: f"/tmp/pyinfra-{key}", STAMP, backup)


def shown(command):
    if isinstance(command, FileUploadCommand):
        return ("upload", command.src.getvalue(), command.dest)
    assert isinstance(command, StringCommand), command
    return ("run", str(command))


def render(action, node=None, backup=True):
    return [shown(c) for c in steps(node, backup).commands(action)]


def fed(line, tool_argv):
    """The line that feeds an uploaded payload to a tool: (argv, temp path) as the line names them."""
    prefix = f"LC_ALL=C {tool_argv} < "
    assert line.startswith(prefix), line
    path = line[len(prefix):].split(";")[0]
    assert line == f"{prefix}{path}; r=$?; rm -f {path}; exit $r"
    return path


# --- each kind -------------------------------------------------------------------------------------------

def test_proc_writes_the_value_to_the_key():
    raw = Raw()
    raw.proc["net.ipv4.ip_forward"] = "0"
    (action,) = run(raw).actions
    assert render(action) == [("run", "printf %s 1 > /proc/sys/net/ipv4/ip_forward")]


def test_iptables_uploads_the_payload_and_restores_it_noflush_in_one_transaction():
    raw = Raw()
    raw.iptables = _in_table(without_netmend_forward(raw.iptables), "filter", ":FORWARD ACCEPT [0:0]",
                             ":FORWARD DROP [0:0]")
    (action,) = only_actions(run(raw), "FORWARD-POLICY-DROP")
    (upload, restore) = render(action)
    assert upload[:2] == ("upload", action.payload) and upload[2].startswith("/tmp/pyinfra-")
    assert fed(restore[1], "iptables-restore -w 5 --noflush") == upload[2]


def test_an_ipv6_payload_goes_to_ip6tables_restore():
    raw = Raw()
    raw.nft_tables += "table ip kube-proxy\ntable ip6 kube-proxy\n"
    state = raw.state()
    state["proxy"].iptables["ipv6"] = parse_save(kp_fixture("iptables-mode-ip6-save.txt"))
    want = lab_want()
    want["kube_proxy"]["mode"] = "nftables"
    result = checks.audit(state, want)
    six = [a for a in result.actions if a.kind == "iptables" and a.family == "ipv6"]
    assert len(six) == 1
    (upload, restore) = render(six[0])
    assert upload[1] == six[0].payload
    assert fed(restore[1], "ip6tables-restore -w 5 --noflush") == upload[2]


def test_ip_and_bridge_feed_their_batch_of_lines():
    raw = Raw()
    cni0 = next(a for a in raw.addrs if a["ifname"] == "cni0")
    next(i for i in cni0["addr_info"] if i["family"] == "inet").update(local="10.244.200.1", broadcast="10.244.200.255")
    (action,) = run(raw).actions
    (upload, line) = render(action)
    assert upload[1] == "addr del 10.244.200.1/24 dev cni0\naddr add 10.244.1.1/24 dev cni0\n"
    assert fed(line[1], "ip -batch -") == upload[2]

    raw = Raw()
    raw.fdb = [e for e in raw.fdb if not (e["mac"] == W2_MAC and e.get("ifname") == "flannel.1")]
    (action,) = run(raw).actions
    (upload, line) = render(action)
    assert upload[1] == f"fdb replace {W2_MAC} dev flannel.1 dst 198.51.100.13 self permanent\n"
    assert fed(line[1], "bridge -batch -") == upload[2]


def test_commands_run_as_their_argv_shell_quoted():
    raw = Raw()
    raw.bridge_nf_present = False
    for key in ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"):
        raw.proc[key] = None
    modprobe = run(raw).actions[0]
    assert render(modprobe) == [("run", "LC_ALL=C modprobe br_netfilter")]

    raw = Raw()
    raw.conntrack = DNS_FLOW.format(reply="10.244.0.250")
    (action,) = run(raw).actions
    assert render(action) == [("run", "LC_ALL=C conntrack -D -p udp --orig-src 10.244.1.2 --orig-dst 10.96.0.10 "
                                      "--orig-port-src 43567 --orig-port-dst 53 --reply-src 10.244.0.250")]
    quoted = Action("X", "command", "x", [["echo", "a b", "it's", "$HOME"]])
    assert render(quoted) == [("run", "LC_ALL=C echo 'a b' 'it'\"'\"'s' '$HOME'")]


@pytest.mark.parametrize(("systemd", "line"), [(True, "LC_ALL=C systemctl stop firewalld"),
                                               (False, "LC_ALL=C service firewalld stop")])
def test_a_service_step_uses_the_nodes_service_manager(systemd, line):
    want = lab_want()
    want["firewall"]["mode"] = "disabled"
    (action,) = run(Raw(), want).actions
    node = answering({("isdir", operations.SYSTEMD_DIR): ("0" if systemd else "1", b"", b""),
                      ("tool", "systemctl"): ("0", b"/usr/bin/systemctl", b"")})
    assert render(action, node) == [("run", line)]


def test_a_file_is_uploaded_then_backed_up_if_it_differs_and_moved_into_place_keeping_its_mode():
    raw = Raw()
    del raw.sysctl_files[SYSCTL_FILE]
    (action,) = run(raw).actions
    (upload, script) = render(action)
    assert upload[:2] == ("upload", sysctl.render(lab_want()["sysctls"]))
    assert script[1] == "\n".join([
        "set -e", "mkdir -p /etc/sysctl.d", f"cp {upload[2]} /etc/sysctl.d/.90-netmend.conf.netmend.tmp",
        f"rm -f {upload[2]}", "if [ -e /etc/sysctl.d/90-netmend.conf ]; then",
        "  cmp -s /etc/sysctl.d/.90-netmend.conf.netmend.tmp /etc/sysctl.d/90-netmend.conf || "
        f"cp -p /etc/sysctl.d/90-netmend.conf '/etc/sysctl.d/90-netmend.conf.{STAMP}.netmend~'",
        "  chmod --reference=/etc/sysctl.d/90-netmend.conf /etc/sysctl.d/.90-netmend.conf.netmend.tmp",
        "  chown --reference=/etc/sysctl.d/90-netmend.conf /etc/sysctl.d/.90-netmend.conf.netmend.tmp",
        "else chmod 644 /etc/sysctl.d/.90-netmend.conf.netmend.tmp; fi",
        "mv -f /etc/sysctl.d/.90-netmend.conf.netmend.tmp /etc/sysctl.d/90-netmend.conf"])
    assert "cmp -s" not in render(action, backup=False)[1][1]  # health_backup: false


def execute(commands, tmp_path, **env):
    """Run rendered commands here, as pyinfra would on a node: uploads written, lines run by sh."""
    for command in commands:
        if isinstance(command, FileUploadCommand):
            with open(command.dest, "w", encoding="utf-8") as handle:
                handle.write(command.src.getvalue())
        else:
            proc = subprocess.run(["sh", "-c", str(command)], capture_output=True, text=True, check=False,
                                  env={**os.environ, **env, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"})
            if proc.returncode:
                return proc
    return None


def test_the_file_step_run_on_files_backs_up_only_a_differing_file_and_keeps_its_mode(tmp_path):
    temp = lambda key: str(tmp_path / f"upload-{key}")  # noqa: E731
    new = tmp_path / "etc" / "new.conf"
    execute(Steps(answering({}), temp, STAMP).file(str(new), "x = 1\n", 0o640, True), tmp_path)
    assert new.read_text() == "x = 1\n" and stat.S_IMODE(new.stat().st_mode) == 0o640
    assert sorted(p.name for p in new.parent.iterdir()) == ["new.conf"]  # no backup of nothing, no temp left

    old = tmp_path / "etc" / "old.conf"
    old.write_text("x = 0\n")
    old.chmod(0o600)
    execute(Steps(answering({}), temp, STAMP).file(str(old), "x = 1\n", 0o644, True), tmp_path)
    assert old.read_text() == "x = 1\n" and stat.S_IMODE(old.stat().st_mode) == 0o600
    backup = old.parent / f"old.conf.{STAMP}.netmend~"
    assert backup.read_text() == "x = 0\n"
    backup.unlink()
    execute(Steps(answering({}), temp, STAMP).file(str(old), "x = 1\n", 0o644, True), tmp_path)
    assert not backup.exists()  # the same text: nothing to keep
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("upload-")]


def test_the_proc_step_writes_the_value_without_a_newline(tmp_path):
    key = tmp_path / "ip_forward"
    key.write_text("0\n")
    execute(steps().commands(Action("X", "proc", str(key), "1")), tmp_path)
    assert key.read_text() == "1"


def test_a_payload_reaches_its_tool_byte_exact_and_the_tools_failure_fails_the_step(tmp_path):
    (tmp_path / "bin").mkdir()
    tool = tmp_path / "bin" / "iptables-restore"
    tool.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\ncat > {tmp_path}/stdin\nexit "${{RC:-0}}"\n')
    tool.chmod(0o755)
    payload = "*filter\n:KUBE-X - [0:0]\n-A KUBE-X -m comment --comment \"a 'b'\" -j RETURN\nCOMMIT\n"
    action = Action("X", "iptables", "filter", payload)
    temp = lambda key: str(tmp_path / f"upload-{key}")  # noqa: E731
    assert execute(Steps(answering({}), temp, STAMP).commands(action), tmp_path) is None
    assert (tmp_path / "stdin").read_text() == payload
    assert (tmp_path / "argv").read_text() == "-w 5 --noflush\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("upload-")]
    failed = execute(Steps(answering({}), temp, STAMP).commands(action), tmp_path, RC="4")
    assert failed is not None and failed.returncode == 4


def zone_blocks(zones):
    """{zone: its `firewall-cmd --zone=Z --list-all` text} from `--list-all-zones` output."""
    out = {}
    for block in zones.split("\n\n"):
        if block.strip():
            out[block.strip().split("\n", 1)[0].split()[0]] = block.strip("\n") + "\n"
    return out


def test_firewalld_adds_exactly_what_the_zone_lacks_runtime_and_permanent_then_records_it():
    raw = Raw()
    raw.zones = _zone_field(raw.zones, "public", "ports", "10250/tcp")
    (action,) = only_actions(run(raw), "FIREWALLD-BLOCKING")
    blocks = zone_blocks(raw.zones)
    records = {("read", "/var/lib/netmend/firewalld.json"): (MISSING, b"", b"")}
    for zone in action.payload["want"]:
        for flag in ((), ("--permanent",)):
            records[("run", ("firewall-cmd", *flag, f"--zone={zone}", "--list-all"), ())] = (
                "0", blocks[zone].encode(), b"")
    node = answering(records)
    lines = render(action, node)
    lacking = [p for p in lab_want()["firewall"]["ports"] if p != "10250/tcp"]
    adds = " ".join(f"--add-port={p}" for p in lacking)
    assert lines[:2] == [("run", f"LC_ALL=C firewall-cmd --zone=public {adds}"),
                         ("run", f"LC_ALL=C firewall-cmd --permanent --zone=public {adds}")]
    (upload, script) = lines[2:]
    owned = firewalld.load_owned(upload[1], "state")
    assert owned["runtime"]["public"]["ports"] == owned["permanent"]["public"]["ports"] == lacking
    assert script[1].endswith("mv -f /var/lib/netmend/.firewalld.json.netmend.tmp /var/lib/netmend/firewalld.json")
    assert "cmp -s" not in script[1]  # netmend's own record is not backed up (as the Ansible module writes it)
    assert node.rounds == 1  # the record and every zone, runtime and permanent, in one read


def only_actions(result, fid):
    only(result, fid)
    return result.actions


# --- refusals --------------------------------------------------------------------------------------------

NOT_OWNED = Action("X", "iptables", "filter", "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -j ACCEPT\nCOMMIT\n")


@pytest.mark.parametrize(("action", "why"), [
    (NOT_OWNED, "touches a chain netmend does not own"),
    (Action("X", "iptables", "filter", "*filter\n-A INPUT -j ACCEPT\nCOMMIT\n"), "does not own"),
    (Action("X", "reboot", "node", []), "unknown plan step kind 'reboot'"),
])
def test_a_plan_step_netmend_does_not_run_is_refused(action, why):
    with pytest.raises(PlanRefused, match=why):
        refuse([Action("Y", "proc", "/proc/sys/net/ipv4/ip_forward", "1"), action])


class FakeHost:
    name, print_prefix = "w1", "[w1] "

    def __init__(self):
        self.noops = []

    def noop(self, text):
        self.noops.append(text)

    def get_temp_filename(self, key):
        return f"/tmp/pyinfra-{key}"


def operation(monkeypatch, results, want=None):
    """The netmend_node operation's generator on a fake host, its audits answered by `results` in turn."""
    answers = iter(results)
    monkeypatch.setattr(operations, "audit_node", lambda node, want, checks, extra=(): next(answers))
    fake, record = FakeHost(), {}
    return fake, record, netmend_node._inner(want or lab_want(), record=record)


def test_the_operation_refuses_the_whole_plan_before_it_yields_anything(monkeypatch):
    fine = Action("Y", "proc", "/proc/sys/net/ipv4/ip_forward", "1")
    fake, record, gen = operation(monkeypatch, [Result(actions=[fine, NOT_OWNED])])
    with ctx_host.use(fake), pytest.raises(PlanRefused):
        next(gen)
    assert record == {}


def test_a_clean_node_yields_nothing(monkeypatch):
    fake, record, gen = operation(monkeypatch, [Result()])
    with ctx_host.use(fake):
        assert list(gen) == []
    assert fake.noops == ["clean: the audit found nothing to fix"] and record["done"] == []


def test_the_operation_yields_the_steps_then_a_read_only_audit_that_fails_on_a_fix_that_did_not_take(monkeypatch):
    raw = Raw()
    raw.proc["net.ipv4.ip_forward"] = "0"
    before = run(raw)
    fake, record, gen = operation(monkeypatch, [before, before])
    with ctx_host.use(fake):
        commands = list(gen)
    assert [shown(c) for c in commands[:-1]] == [("run", "printf %s 1 > /proc/sys/net/ipv4/ip_forward")]
    assert isinstance(commands[-1], FunctionCommand)
    assert record["done"] == [before.actions[0].describe()]
    with ctx_host.use(fake):
        assert commands[-1].function(None, fake) is False  # the finding is still there
    assert record["stuck"] == ["SYSCTL-IP-FORWARD-OFF"]


def test_an_invalid_want_is_refused_before_anything_is_read(monkeypatch):
    fake, _record, gen = operation(monkeypatch, [], want={"node": "w1"})
    with ctx_host.use(fake), pytest.raises(operations.OperationError, match="want is not valid"):
        next(gen)


def test_stringio_payloads_are_uploaded_as_given():
    (upload,) = [c for c in steps().commands(Action("X", "ip", "cni0", ["a", "b"])) if isinstance(c, FileUploadCommand)]
    assert isinstance(upload.src, StringIO) and upload.src.getvalue() == "a\nb\n"


def test_the_dry_run_shows_each_step_with_its_diff_and_marks_a_refused_one():
    from deploys.run import show_plan  # noqa: PLC0415

    raw = Raw()
    raw.proc["net.ipv4.ip_forward"] = "0"
    result = run(raw)
    result.actions.append(NOT_OWNED)
    lines = show_plan("w1", result)
    assert lines[:2] == ["w1: 2 steps", "  - SYSCTL-IP-FORWARD-OFF: write 1 to /proc/sys/net/ipv4/ip_forward"]
    assert "    -net.ipv4.ip_forward = 0" in lines and "    +net.ipv4.ip_forward = 1" in lines
    assert lines[-1].endswith("(REFUSED: it touches a chain netmend does not own)")
    assert show_plan("w2", Result()) == ["w2: nothing to do"]
