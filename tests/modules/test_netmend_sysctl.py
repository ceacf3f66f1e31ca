"""netmend_sysctl run through Ansible, each test in a throwaway network and mount namespace.

Every run happens under `unshare --net --mount` with a tmpfs over /etc/sysctl.d: the module's file,
backups and the other files a test writes live in that tmpfs, and net.* sysctls are per network
namespace, so nothing of the host changes (checked after each test). Only net.* keys are written.
One namespace per test: all ansible calls and read-backs of a test run in one `sh -c`, and the
results land in files under tmp_path.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from netmend.sysctl import render
from tests.modules.sandbox import ANSIBLE, ROOT, ansible_env, can_sandbox

OURS = "/etc/sysctl.d/90-netmend.conf"
FORWARD = "/proc/sys/net/ipv4/ip_forward"
# The tmpfs must be in place (and be a tmpfs) before anything else runs.
WRAPPER = ('mount -t tmpfs tmpfs /etc/sysctl.d && [ "$(stat -f -c %T /etc/sysctl.d)" = tmpfs ] && '
           '[ "$(readlink /proc/self/ns/net)" != "$HOST_NETNS" ] && exec "$@"')
# run NAME ARGS_JSON [ansible options]: the JSON callback's output in $OUT/NAME.json.
RUN = """
run() {
    name=$1; args=$2; shift 2
    "$ANSIBLE" localhost -c local -i localhost, -M "$LIBRARY" -m netmend_sysctl -a "$args" "$@" \\
        > "$OUT/$name.json" 2> "$OUT/$name.err"
    echo $? > "$OUT/$name.rc"
}
"""


pytestmark = pytest.mark.skipif(not can_sandbox(), reason="needs root and `unshare --net --mount`")


def _host_state():
    return Path(FORWARD).read_text(), sorted(os.listdir("/etc/sysctl.d"))


class Namespace:
    """The files one namespace run left in tmp_path."""

    def __init__(self, out):
        self.out = out

    def text(self, name):
        return (self.out / name).read_text()

    def result(self, name):
        """The module's result of run NAME (the JSON callback's host entry)."""
        raw = self.text(f"{name}.json")
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"run {name}: no JSON output:\n{raw}\n{self.text(f'{name}.err')}") from exc
        result = doc["plays"][0]["tasks"][0]["hosts"]["localhost"]
        result["rc"] = int(self.text(f"{name}.rc"))
        return result


@pytest.fixture
def netns(tmp_path):
    """in_namespace(script): run the shell script in a fresh namespace; returns a Namespace."""
    host_before = _host_state()

    def in_namespace(script):
        out = tmp_path / "out"
        out.mkdir(exist_ok=True)
        env = ansible_env(ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
                          ANSIBLE_REMOTE_TEMP=str(tmp_path / "ansible-remote"), ANSIBLE=str(ANSIBLE),
                          LIBRARY=str(ROOT / "library"), OUT=str(out), HOST_NETNS=os.readlink("/proc/self/ns/net"))
        proc = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", WRAPPER,
                               "sh", "sh", "-c", RUN + script], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300, check=False)
        assert proc.returncode == 0, f"namespace script failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        return Namespace(out)

    yield in_namespace
    assert _host_state() == host_before, "the host's ip_forward or /etc/sysctl.d changed"


def args(settings, **options):
    return json.dumps({"settings": settings, **options})


FORWARD_ON = {"net.ipv4.ip_forward": 1, "net.ipv4.tcp_rmem": "4096 87380  6291456",
              "net.bridge.bridge-nf-call-iptables": 1}


def test_first_run_writes_file_and_live_values_second_run_is_unchanged(netns):
    ns = netns(f"""
        cat {FORWARD} > "$OUT/forward.before"
        run first '{args(FORWARD_ON)}'
        cat {FORWARD} > "$OUT/forward.after"
        cat /proc/sys/net/ipv4/tcp_rmem > "$OUT/rmem.after"
        cat {OURS} > "$OUT/file"
        stat -c %a {OURS} > "$OUT/mode"
        run second '{args(FORWARD_ON)}'
        ls -A /etc/sysctl.d > "$OUT/ls"
    """)
    first, second = ns.result("first"), ns.result("second")
    assert ns.text("forward.before").strip() == "0"
    assert first["rc"] == 0 and first["changed"] and first["file_changed"]
    assert first["live_before"]["net.ipv4.ip_forward"] == "0"
    assert first["live_after"] == {"net.ipv4.ip_forward": "1", "net.ipv4.tcp_rmem": "4096 87380 6291456",
                                   "net.bridge.bridge-nf-call-iptables": "1"}
    assert first["settings"]["net.ipv4.tcp_rmem"] == "4096 87380 6291456"
    assert "backup_file" not in first  # there was no file to back up
    assert ns.text("forward.after").strip() == "1"
    assert ns.text("rmem.after").split() == ["4096", "87380", "6291456"]
    assert ns.text("file") == render(first["settings"])
    assert ns.text("mode").strip() == "644"
    assert second["rc"] == 0 and not second["changed"] and not second["file_changed"]
    assert second["live_before"] == second["live_after"] == first["live_after"]
    assert ns.text("ls").split() == ["90-netmend.conf"]  # no temp file or backup left behind


def test_check_mode_changes_neither_file_nor_live_value(netns):
    ns = netns(f"""
        run check '{args({"net.ipv4.ip_forward": 1})}' --check --diff
        cat {FORWARD} > "$OUT/forward"
        ls -A /etc/sysctl.d > "$OUT/ls"
    """)
    check = ns.result("check")
    assert check["rc"] == 0 and check["changed"] and check["file_changed"]
    assert check["live_after"] == {"net.ipv4.ip_forward": "1"}  # predicted
    assert check["diff"][0]["after"] == render({"net.ipv4.ip_forward": "1"})
    assert ns.text("forward").strip() == "0"
    assert ns.text("ls") == ""


def test_diff_and_backup_when_the_file_changes(netns):
    old = render({"net.ipv4.ip_forward": "0"})
    ns = netns(f"""
        printf '%s' '{old}' > {OURS}
        chmod 600 {OURS}
        run change '{args({"net.ipv4.ip_forward": 1})}' --diff
        ls -A /etc/sysctl.d > "$OUT/ls"
        for f in /etc/sysctl.d/90-netmend.conf.*~; do cat "$f" > "$OUT/backup"; done
        stat -c %a {OURS} > "$OUT/mode"
        run nobackup '{args({"net.ipv4.ip_forward": 0}, backup=False)}'
        ls -A /etc/sysctl.d > "$OUT/ls2"
    """)
    change = ns.result("change")
    assert change["rc"] == 0 and change["changed"]
    file_diff, live_diff = change["diff"]
    assert file_diff["before_header"] == file_diff["after_header"] == OURS
    assert file_diff["before"] == old
    assert file_diff["after"] == render({"net.ipv4.ip_forward": "1"})
    assert live_diff == {"before_header": "live values (/proc/sys)", "after_header": "live values (/proc/sys)",
                         "before": "net.ipv4.ip_forward = 0\n", "after": "net.ipv4.ip_forward = 1\n"}
    backup = change["backup_file"]
    assert backup.startswith(OURS + ".") and not backup.endswith(".conf")  # a boot does not read it
    assert sorted(ns.text("ls").split()) == sorted(["90-netmend.conf", os.path.basename(backup)])
    assert ns.text("backup") == old
    assert ns.text("mode").strip() == "600"  # a rewritten file keeps its mode (the executor's file step)
    nobackup = ns.result("nobackup")
    assert nobackup["changed"] and "backup_file" not in nobackup
    assert ns.text("ls2") == ns.text("ls")


def test_conflicting_later_file_warns_and_is_left_alone(netns):
    ns = netns(f"""
        printf 'net.ipv4.ip_forward=0\\nnot an assignment\\n' > /etc/sysctl.d/99-zz.conf
        cp /etc/sysctl.d/99-zz.conf "$OUT/zz.before"
        run conflict '{args({"net.ipv4.ip_forward": 1})}'
        run again '{args({"net.ipv4.ip_forward": 1})}'
        cp /etc/sysctl.d/99-zz.conf "$OUT/zz.after"
        cat {FORWARD} > "$OUT/forward"
        cat {OURS} > "$OUT/file"
    """)
    result, again = ns.result("conflict"), ns.result("again")
    assert result["rc"] == 0 and result["changed"] and result["file_changed"]
    assert ns.text("file") == render({"net.ipv4.ip_forward": "1"}), "netmend's own file is written all the same"
    assert result["findings"] == ["SYSCTL-IP-FORWARD-OFF", "SYSCTL-NOT-PERSISTED"]
    # A second run plans nothing: the host's later file is reported (the audit's finding stays), never edited.
    assert again["rc"] == 0 and not again["changed"] and again["findings"] == ["SYSCTL-NOT-PERSISTED"]
    assert again["conflicts"] == result["conflicts"] and again["warnings"] == result["warnings"]
    assert result["conflicts"] == [{"key": "net.ipv4.ip_forward", "wanted": "1", "path": "/etc/sysctl.d/99-zz.conf",
                                    "value": "0"}]
    assert ("/etc/sysctl.d/99-zz.conf sets net.ipv4.ip_forward = 0 after /etc/sysctl.d/90-netmend.conf; "
            "at boot the value will revert to 0") in result["warnings"]
    assert any(w.startswith("/etc/sysctl.d/99-zz.conf, line 2: ") for w in result["warnings"])
    assert (ns.out / "zz.after").read_bytes() == (ns.out / "zz.before").read_bytes()
    assert ns.text("forward").strip() == "1"


def test_unknown_key_fails_naming_it_and_changes_nothing(netns):
    ns = netns(f"""
        run bogus '{args({"net.ipv4.ip_forward": 1, "net.bogus.key": 1})}'
        run bridge '{args({"net.bridge.bridge-nf-call-nothing": 1})}'
        cat {FORWARD} > "$OUT/forward"
        ls -A /etc/sysctl.d > "$OUT/ls"
    """)
    bogus, bridge = ns.result("bogus"), ns.result("bridge")
    assert bogus["rc"] != 0 and bogus.get("failed") and not bogus["changed"]
    assert "net.bogus.key" in bogus["msg"] and "/proc/sys/net/bogus/key does not exist" in bogus["msg"]
    assert "net.ipv4.ip_forward" not in bogus["msg"]
    assert bridge.get("failed") and "load br_netfilter first" in bridge["msg"]
    assert ns.text("forward").strip() == "0"
    assert ns.text("ls") == ""


def test_bad_option_types_fail_cleanly(netns):
    ns = netns(f"""
        run notdict '{json.dumps({"settings": [1, 2]})}'
        run notbool '{args({"net.ipv4.ip_forward": 1}, apply="maybe")}'
        run badvalue '{args({"net.ipv4.ip_forward": True, "Net.Bad": 1})}'
        run relative '{args({"net.ipv4.ip_forward": 1}, path="sysctl.d/90-netmend.conf")}'
        cat {FORWARD} > "$OUT/forward"
        ls -A /etc/sysctl.d > "$OUT/ls"
    """)
    notdict, notbool, badvalue = ns.result("notdict"), ns.result("notbool"), ns.result("badvalue")
    assert notdict.get("failed") and "settings" in notdict["msg"] and "dict" in notdict["msg"]
    assert notbool.get("failed") and "apply" in notbool["msg"]
    assert badvalue.get("failed")
    assert {p["key"] for p in badvalue["problems"]} == {"net.ipv4.ip_forward", "Net.Bad"}
    assert "accepted" in badvalue["msg"]
    assert ns.result("relative").get("failed") and "absolute" in ns.result("relative")["msg"]
    assert ns.text("forward").strip() == "0"
    assert ns.text("ls") == ""


def test_value_the_kernel_rejects_restores_live_values_and_persists_nothing(netns):
    # Keys apply in sorted order: conf.all.rp_filter is written before ip_forward is rejected.
    ns = netns(f"""
        cat /proc/sys/net/ipv4/conf/all/rp_filter > "$OUT/rp.before"
        run rejected '{args({"net.ipv4.conf.all.rp_filter": 2, "net.ipv4.ip_forward": "on"})}'
        cat /proc/sys/net/ipv4/conf/all/rp_filter > "$OUT/rp.after"
        ls -A /etc/sysctl.d > "$OUT/ls"
    """)
    rejected = ns.result("rejected")
    assert rejected.get("failed") and "net.ipv4.ip_forward" in rejected["msg"] and "'on'" in rejected["msg"]
    assert "restored" in rejected["msg"]
    assert ns.text("rp.after") == ns.text("rp.before")
    assert ns.text("ls") == ""


def test_apply_only_and_persist_only(netns):
    ns = netns(f"""
        run live '{args({"net.ipv4.ip_forward": 1}, persist=False)}'
        ls -A /etc/sysctl.d > "$OUT/ls.live"
        run file '{args({"net.ipv4.ip_forward": 0}, apply=False)}'
        cat {FORWARD} > "$OUT/forward"
        cat {OURS} > "$OUT/file"
    """)
    live, file_only = ns.result("live"), ns.result("file")
    assert live["changed"] and not live["file_changed"] and len(live["diff"]) == 1
    assert ns.text("ls.live") == ""
    assert file_only["changed"] and file_only["file_changed"] and len(file_only["diff"]) == 1
    assert ns.text("forward").strip() == "1"  # apply=false left the live value
    assert ns.text("file") == render({"net.ipv4.ip_forward": "0"})
