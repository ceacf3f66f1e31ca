"""netmend_kmod run by ansible on this machine, with /etc/modules-load.d on a throwaway tmpfs.

Each test runs its ansible calls in one private mount namespace (`unshare --mount`) whose
/etc/modules-load.d is a fresh tmpfs, and saves the directory after every call to files outside it.
The tests never load a module: they skip when a module they expect present is absent (loading
br_netfilter would change how this machine's bridges filter) or when ip_vs could be loaded.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from netmend.kmod import FileProbe, render, status
from tests.modules.sandbox import ROOT, ansible_env, can_sandbox, module_cmd

LOAD_DIR = "/etc/modules-load.d"
CONF = f"{LOAD_DIR}/netmend.conf"
BASE = ["br_netfilter", "overlay", "nf_conntrack"]


pytestmark = pytest.mark.skipif(not can_sandbox(), reason="needs root and unshare --net --mount")


def require_present(*names):
    missing = [n for n in names if status(n, FileProbe("/")).state == "absent"]
    if missing:
        pytest.skip(f"{', '.join(missing)} absent here; the test would load it")


def run_steps(tmp_path, steps, setup=""):
    """Run `setup` then each (args, flags) in one namespace with a tmpfs on /etc/modules-load.d.
    Returns per step (result, {file name: (mode, text)}) of the directory after it."""
    out = tmp_path / "out"
    out.mkdir()
    lines = [setup]
    for i, (args, flags) in enumerate(steps):
        step = out / str(i)
        lines += [f"{module_cmd('netmend_kmod', args, **flags)} > {step}.json 2> {step}.err",
                  f"mkdir {step}.dir; cd {LOAD_DIR}; for f in * .[!.]*; do [ -f \"$f\" ] || continue; "
                  f"stat -c %a \"$f\" > {step}.dir/\"$f\".mode; cat \"$f\" > {step}.dir/\"$f\"; done; cd /"]
    env = ansible_env()
    before = sorted(os.listdir(LOAD_DIR))
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         f'mount -t tmpfs tmpfs {LOAD_DIR} && exec "$@"', "sh", "sh", "-c", "\n".join(lines)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(LOAD_DIR)) == before, "the real /etc/modules-load.d was not touched"
    results = []
    for i in range(len(steps)):
        doc = json.loads((out / f"{i}.json").read_text() or "{}")
        assert doc, (out / f"{i}.err").read_text()
        files = {p.name: ((out / f"{i}.dir" / f"{p.name}.mode").read_text().strip(), p.read_text())
                 for p in sorted((out / f"{i}.dir").iterdir()) if not p.name.endswith(".mode")}
        results.append((doc["plays"][0]["tasks"][0]["hosts"]["localhost"], files))
    return results


def test_base_modules_are_present_and_listed_once(tmp_path):
    require_present(*BASE)
    args = {"names": BASE}
    (nopersist, nofiles), (check, check_files), (first, first_files), (second, second_files) = run_steps(
        tmp_path, [({**args, "persist": False}, {}), (args, {"check": True, "diff": True}), (args, {"diff": True}),
                   (args, {})])

    assert not nopersist["changed"] and not nopersist["file_changed"] and nofiles == {}
    assert check["changed"] and check["file_changed"] and check_files == {}, "check mode writes nothing"
    assert check["diff"]["before"] == "" and check["diff"]["after"] == render(BASE)

    assert first["changed"] and first["file_changed"] and first["backup_file"] is None
    assert first_files == {"netmend.conf": ("644", render(BASE))}
    assert sorted(first["modules"]) == sorted(BASE)  # the json callback sorts keys
    for name, entry in first["modules"].items():
        assert entry["state"] in ("builtin", "loaded"), (name, entry)
        assert entry["evidence"] == status(name, FileProbe("/")).evidence

    assert first["findings"] == ["KMOD-NOT-PERSISTED"] and nopersist["findings"] == []
    assert not second["changed"] and not second["file_changed"], "a second run changes nothing"
    assert second["findings"] == [], "the audit's kernel check finds nothing either"
    assert second_files == first_files and second["modules"] == first["modules"]


def test_a_different_file_is_backed_up_and_rewritten(tmp_path):
    require_present("overlay", "nf_conntrack")
    setup = f"printf 'overlay\\n' > {CONF}; chmod 600 {CONF}"
    ((result, files),) = run_steps(tmp_path, [({"names": ["overlay", "nf-conntrack"]}, {"diff": True})], setup)
    assert result["changed"] and result["file_changed"]
    backup = Path(result["backup_file"]).name
    assert files[backup] == ("600", "overlay\n")
    assert files["netmend.conf"] == ("600", render(["overlay", "nf-conntrack"]))  # a rewritten file keeps its mode
    assert result["findings"] == ["KMOD-NOT-PERSISTED"], "the audit's finding for the same file"
    assert result["diff"]["before"] == "overlay\n"


def test_ip_vs_fails_naming_what_was_checked_and_writes_nothing(tmp_path):
    require_present("br_netfilter")
    if status("ip_vs", FileProbe("/")).state != "absent":
        pytest.skip("ip_vs is present here")
    modprobe = subprocess.run(["modprobe", "--dry-run", "ip_vs"], capture_output=True, check=False)
    if modprobe.returncode == 0:
        pytest.skip("ip_vs can be loaded here; the test would load it")
    args = {"names": ["br_netfilter", "ip_vs"]}
    (check, check_files), (real, real_files) = run_steps(tmp_path, [(args, {"check": True}), (args, {})])
    for result, files in ((check, check_files), (real, real_files)):
        assert result.get("failed") and files == {}
        msg = result["msg"]
        assert msg.startswith("ip_vs is not in the running kernel")
        for checked in ("/proc/modules", "/modules.builtin", "/sys/module/ip_vs", "/proc/net/ip_vs", "modprobe"):
            assert checked in msg, checked
        assert f"{CONF} was not written" in msg
        assert result["modules"]["br_netfilter"]["state"] in ("builtin", "loaded")
        assert not result["changed"]
    assert "modprobe --dry-run ip_vs failed" in check["msg"]
    assert "modprobe ip_vs failed" in real["msg"]


def test_a_bad_name_fails_before_anything(tmp_path):
    ((result, files),) = run_steps(tmp_path, [({"names": ["overlay", "br netfilter"]}, {})])
    assert result.get("failed") and files == {}
    assert "'br netfilter' is not a module name" in result["msg"]
    assert result["modules"] == {}, "no module was checked"
    assert not result["changed"]


def test_modprobe_is_needed_only_for_an_absent_module(tmp_path):
    require_present(*BASE)
    if status("ip_vs", FileProbe("/")).state != "absent":
        pytest.skip("ip_vs is present here")
    # Inside the namespace only: /dev/null over modprobe (through its symlink), which is not executable.
    setup = "mount --bind /dev/null \"$(readlink -f \"$(command -v modprobe)\")\""
    (present, present_files), (absent, absent_files) = run_steps(
        tmp_path, [({"names": BASE}, {}), ({"names": ["overlay", "ip_vs"]}, {})], setup)
    assert present["changed"] and "netmend.conf" in present_files
    assert absent.get("failed") and "modprobe was not found (install the kmod package)" in absent["msg"]
    assert absent_files == present_files
