"""The plan executor (netmend.plan.execute) on real files and real processes in a temporary directory.

The host adapter here is the smallest real one: files are written and backed up on disk, commands run
with subprocess. /proc/sys keys are stood in for by files (a test must not change the machine's kernel).
"""

import shutil
import subprocess
import time

import pytest

from netmend.plan import Action, ExecutionError, execute, owned_only


class TmpHost:
    def __init__(self):
        self.ran = []

    def run(self, argv, data=None):
        self.ran.append((list(argv), data))
        proc = subprocess.run(argv, input=data, capture_output=True, text=True, check=False, timeout=10)
        return proc.returncode, proc.stdout, proc.stderr

    def write(self, path, text):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)

    def replace_file(self, path, text, mode):
        backup = None
        try:
            with open(path, encoding="utf-8") as handle:
                current = handle.read()
        except FileNotFoundError:
            current = None
        if current is not None and current != text:
            backup = f"{path}.{time.time_ns()}~"
            shutil.copy2(path, backup)
        self.write(path, text)
        return backup

    def restore_file(self, path, backup):
        shutil.copy2(backup, path)

    def service(self, name, verb):
        return ["echo", "service", name, verb]


def test_a_plan_runs_in_order_and_returns_the_backups(tmp_path):
    conf, key = tmp_path / "netmend.conf", tmp_path / "ip_forward"
    conf.write_text("old\n")
    key.write_text("0\n")
    host = TmpHost()
    backups = execute([Action("SYSCTL-IP-FORWARD-OFF", "proc", str(key), 1, before="k = 0\n", after="k = 1\n"),
                       Action("SYSCTL-NOT-PERSISTED", "file", str(conf), "new\n", "old\n", "new\n"),
                       Action("FIREWALLD-RUNNING", "command", "x", [["@service", "firewalld", "stop"]])], host)
    assert key.read_text() == "1" and conf.read_text() == "new\n"
    assert len(backups) == 1 and open(backups[0]).read() == "old\n"
    assert host.ran == [(["echo", "service", "firewalld", "stop"], None)]


def test_a_failed_step_rolls_back_files_and_proc_keys_and_names_the_step(tmp_path):
    conf, key = tmp_path / "netmend.conf", tmp_path / "ip_forward"
    conf.write_text("old\n")
    key.write_text("0")
    host = TmpHost()
    plan = [Action("SYSCTL-IP-FORWARD-OFF", "proc", str(key), 1, before="net.ipv4.ip_forward = 0\n"),
            Action("SYSCTL-NOT-PERSISTED", "file", str(conf), "new\n", "old\n", "new\n"),
            Action("CONNTRACK-STALE-DNS", "command", "conntrack", [["sh", "-c", "echo no such flow >&2; exit 1"]])]
    with pytest.raises(ExecutionError) as err:
        execute(plan, host)
    assert "CONNTRACK-STALE-DNS: sh -c" in str(err.value) and "no such flow" in str(err.value)
    assert err.value.done == [plan[0].describe(), plan[1].describe()]
    assert err.value.rolled_back == [str(conf), str(key)]
    assert err.value.step is plan[2]  # netmend_sysctl and netmend_kmod word their failure from it
    assert conf.read_text() == "old\n" and key.read_text() == "0"


def test_a_payload_that_touches_a_host_chain_is_refused_before_anything_runs(tmp_path):
    key = tmp_path / "ip_forward"
    key.write_text("0")
    host = TmpHost()
    bad = Action("FORWARD-POLICY-DROP", "iptables", "filter",
                 "*filter\n:HOST-OWN - [0:0]\n-A HOST-OWN -j ACCEPT\nCOMMIT\n")
    assert not owned_only(bad)
    with pytest.raises(ExecutionError, match="touches a chain netmend does not own"):
        execute([Action("SYSCTL-IP-FORWARD-OFF", "proc", str(key), 1), bad], host)
    assert key.read_text() == "0" and host.ran == []


def test_a_firewalld_step_without_a_hook_and_an_unknown_kind_are_refused_up_front():
    with pytest.raises(ExecutionError, match="cannot change firewalld"):
        execute([Action("FIREWALLD-BLOCKING", "firewalld", "firewalld", {"missing": ["port 8472/udp"]})], TmpHost())
    with pytest.raises(ExecutionError, match="unknown plan step kind 'reboot'"):
        execute([Action("X-Y", "reboot", "node", [])], TmpHost())


def test_iptables_and_batch_steps_run_the_restore_and_batch_tools_with_the_payload_on_stdin():
    ipt = Action("MASQUERADE-MISSING", "iptables", "nat", "*nat\n:FLANNEL-POSTRTG - [0:0]\nCOMMIT\n")
    six = Action("KUBE-PROXY-MODE-LEFTOVERS", "iptables", "filter", "*filter\nCOMMIT\n", family="ipv6")
    batch = Action("FLANNEL-PEER-FDB-MISSING", "bridge", "flannel.1", ["fdb replace a dev b", "fdb replace c dev d"])
    assert ipt.argvs() == [(["iptables-restore", "-w", "5", "--noflush"], ipt.payload)]
    assert six.argvs()[0][0][0] == "ip6tables-restore"
    assert batch.argvs() == [(["bridge", "-batch", "-"], "fdb replace a dev b\nfdb replace c dev d\n")]
