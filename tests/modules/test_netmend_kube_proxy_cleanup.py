"""netmend_kube_proxy_cleanup on real iptables (legacy and nft), nftables, ipsets and links, in a throwaway
network namespace: each mode switch removes what kube-proxy owned for the old mode and nothing of the
host's (seed 000's LOG rules, a host chain, `table inet filter`, an ipset, a link) or kubelet's."""

import json
import re

import pytest

from tests.modules.sandbox import ROOT, can_sandbox, legacy_iptables, module_cmd, results, run_in_sandbox

pytestmark = pytest.mark.skipif(not can_sandbox(), reason="needs root and unshare --net")

FIX = ROOT / "tests" / "fixtures" / "kube-proxy"
SEED = ROOT / "tests" / "fixtures" / "iptables" / "seed000-nodeport-3-replicas.txt"
IPTABLES_MODE = (f"iptables-restore --noflush < {SEED}\niptables-restore --noflush < {FIX}/iptables-mode.rules\n"
                 f"ip6tables-restore --noflush < {FIX}/iptables-mode-ip6.rules\n")
IPVS_MODE = f". {FIX}/ipvs-mode.sh\n"
NFTABLES_MODE = f"nft -f {FIX}/nftables-mode.nft\n"
NODE = f". {FIX}/kubelet.sh\n. {FIX}/host-canaries.sh\n"
KUBELET = ("KUBE-FIREWALL", "KUBE-MARK-DROP", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")
SECTIONS = ("iptables", "ip6tables", "nft-host", "nft-kube-proxy", "ipsets", "host-link", "kube-ipvs0", "state")
# This kernel has no dummy links (CONFIG_DUMMY unset), so the sandbox's kube-ipvs0 is a bridge. This `ip`
# runs the real one and reports kube-ipvs0 as the dummy kube-proxy creates; deleting it is real.
DUMMY_IP = """#!/usr/bin/python3
import json, subprocess, sys
proc = subprocess.run(["/usr/sbin/ip", *sys.argv[1:]], capture_output=True, text=True)
out = proc.stdout
if sys.argv[1:] == ["-d", "-j", "addr", "show"] and proc.returncode == 0:
    links = json.loads(out)
    for link in links:
        if link.get("ifname") == "kube-ipvs0":
            link["linkinfo"] = {"info_kind": "dummy"}
    out = json.dumps(links)
sys.stdout.write(out)
sys.stderr.write(proc.stderr)
sys.exit(proc.returncode)
"""


@pytest.fixture(params=["nf_tables", "legacy"])
def backend(request, tmp_path):
    if request.param == "nf_tables":
        return request.param, None
    tools = ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore")
    return request.param, legacy_iptables(tmp_path, tools)


def dummy_ip(tmp_path, bindir=None):
    """A PATH directory whose `ip` reports kube-ipvs0 as a dummy (plus the legacy tools, if any)."""
    target = tmp_path / "dummy-ip"
    target.mkdir()
    (target / "ip").write_text(DUMMY_IP)
    (target / "ip").chmod(0o755)
    return f"{target}:{bindir}" if bindir else str(target)


def dump(label, state_file):
    """Shell that prints the node's state in sections, between markers."""
    return (f"echo '@@ {label}'\n"
            "echo '## iptables'; iptables-save | grep -v '^#'\n"
            "echo '## ip6tables'; ip6tables-save | grep -v '^#'\n"
            "echo '## nft-host'; nft list table inet filter\n"
            "echo '## nft-kube-proxy'; nft list table ip kube-proxy 2>/dev/null || true; "
            "nft list table ip6 kube-proxy 2>/dev/null || true\n"
            "echo '## ipsets'; ipset save\n"
            "echo '## host-link'; ip -o addr show dev host-br0; ip -o link show dev host-br0\n"
            "echo '## kube-ipvs0'; ip -o addr show dev kube-ipvs0 2>/dev/null || true\n"
            f"echo '## state'; cat {state_file} 2>/dev/null || true\n"
            f"echo '@@ end {label}'\n")


def states(stdout):
    """{label: {section: text}} of every dump in a script's output."""
    found = {}
    for label, body in re.findall(r"^@@ (\S+)\n(.*?)^@@ end \1$", stdout, re.S | re.M):
        parts = re.split(r"^## (\S+)\n", body, flags=re.M)
        found[label] = {parts[i]: re.sub(r" \[\d+:\d+\]$", "", parts[i + 1], flags=re.M)
                        for i in range(1, len(parts), 2)}
    return found


def canary(save):
    """The lines of an iptables-save that neither kube-proxy mode owns: the host's and kubelet's."""
    return [line for line in save.splitlines() if "KUBE-" not in line or any(k in line for k in KUBELET)]


def kube_proxy_lines(save):
    return [line for line in save.splitlines() if "KUBE-" in line and not any(k in line for k in KUBELET)]


def run_switch(tmp_path, setup, args, recorded=None, path_prefix=None):
    """setup; dump; check+diff run; dump; real run; dump; another run; dump. Returns (results, states)."""
    state_file = tmp_path / "state" / "kube-proxy-mode"
    args = {**args, "state_file": str(state_file)}
    record = f"mkdir -p {state_file.parent}; echo {recorded} > {state_file}\n" if recorded else ""
    script = (setup + record + dump("before", state_file)
              + f"{module_cmd('netmend_kube_proxy_cleanup', args, check=True, diff=True)}\n" + dump("check", state_file)
              + f"{module_cmd('netmend_kube_proxy_cleanup', args, diff=True)}\n" + dump("after", state_file)
              + f"{module_cmd('netmend_kube_proxy_cleanup', args)}\n" + dump("again", state_file))
    proc = run_in_sandbox(script, path_prefix=path_prefix, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results(proc.stdout), states(proc.stdout)


def assert_host_untouched(seen, before="before", after="after"):
    assert canary(seen[after]["iptables"]) == canary(seen[before]["iptables"])
    assert canary(seen[after]["ip6tables"]) == canary(seen[before]["ip6tables"])
    assert seen[after]["nft-host"] == seen[before]["nft-host"]
    assert "tcp dport 22 accept" in seen[after]["nft-host"]
    assert seen[after]["host-link"] == seen[before]["host-link"] and "192.0.2.1/24" in seen[after]["host-link"]
    host_set = [line for line in seen[before]["ipsets"].splitlines() if "host-allow" in line]
    assert len(host_set) == 2
    assert [line for line in seen[after]["ipsets"].splitlines() if "host-allow" in line] == host_set
    for line in ('-A INPUT -p icmp -j LOG --log-prefix "liuye-input: "', "-A HOST-OWN -s 192.0.2.0/24 -j RETURN",
                 "-A INPUT -j KUBE-FIREWALL", "-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000",
                 ":KUBE-KUBELET-CANARY -", ":KUBE-IPTABLES-HINT -"):
        assert line in seen[after]["iptables"], line


def assert_check_mode_changed_nothing(check, seen):
    assert check["changed"]
    assert {s: seen["check"][s] for s in SECTIONS} == {s: seen["before"][s] for s in SECTIONS}


def test_iptables_to_nftables_removes_the_iptables_mode_and_keeps_the_rest(backend, tmp_path):
    name, bindir = backend
    (check, first, second), seen = run_switch(tmp_path, IPTABLES_MODE + NODE + NFTABLES_MODE,
                                              {"mode": "nftables"}, path_prefix=bindir)
    assert_check_mode_changed_nothing(check, seen)
    assert ":KUBE-SVC-5MRENC7Q6ZQR6GKR -" in check["diff"][0]["before"]
    assert "KUBE-SVC" not in check["diff"][0]["after"]
    assert check["diff"][1]["after"].endswith("nftables\n")
    assert first["changed"] and not second["changed"]
    assert first["backend"] == name and first["recorded_mode"] is None and first["previous_modes"] == ["iptables"]
    assert first["removed"]["chains"]["ipv4"]["nat"][-1] == "KUBE-SVC-5MRENC7Q6ZQR6GKR"
    assert kube_proxy_lines(seen["before"]["iptables"]) and kube_proxy_lines(seen["before"]["ip6tables"])
    assert kube_proxy_lines(seen["after"]["iptables"]) == []
    assert kube_proxy_lines(seen["after"]["ip6tables"]) == []
    assert_host_untouched(seen)
    # nftables is the configured mode: its tables are the running kube-proxy's and stay as they were.
    assert seen["after"]["nft-kube-proxy"] == seen["before"]["nft-kube-proxy"]
    assert "service-5MRENC7Q-default/hello-world-service/tcp/" in seen["after"]["nft-kube-proxy"]
    assert seen["after"]["state"].endswith("\nnftables\n")
    assert seen["again"] == seen["after"]


def test_nftables_to_iptables_deletes_the_kube_proxy_tables_only(backend, tmp_path):
    _, bindir = backend
    (check, first, second), seen = run_switch(tmp_path, IPTABLES_MODE + NODE + NFTABLES_MODE,
                                              {"mode": "iptables"}, recorded="nftables", path_prefix=bindir)
    assert_check_mode_changed_nothing(check, seen)
    assert check["diff"][0]["before"].endswith("table ip kube-proxy\ntable ip6 kube-proxy\n")
    assert "table ip kube-proxy" not in check["diff"][0]["after"]
    assert first["changed"] and not second["changed"]
    assert first["previous_modes"] == ["nftables"] and first["removed"]["nft_tables"] == ["ip kube-proxy",
                                                                                         "ip6 kube-proxy"]
    assert "hello-world" in seen["before"]["nft-kube-proxy"] and seen["after"]["nft-kube-proxy"] == ""
    # iptables is the configured mode: every rule, kube-proxy's included, is as it was.
    assert seen["after"]["iptables"] == seen["before"]["iptables"]
    assert seen["after"]["ip6tables"] == seen["before"]["ip6tables"]
    assert_host_untouched(seen)
    assert seen["again"] == seen["after"]


def test_ipvs_to_iptables_removes_ipvs_chains_ipsets_and_kube_ipvs0(backend, tmp_path):
    _, bindir = backend
    (check, first, second), seen = run_switch(tmp_path, IPVS_MODE + NODE, {"mode": "iptables"}, recorded="ipvs",
                                              path_prefix=dummy_ip(tmp_path, bindir))
    assert_check_mode_changed_nothing(check, seen)
    assert "link kube-ipvs0 (dummy): 10.96.0.1/32, 10.96.0.10/32, 10.96.103.220/32" in check["diff"][0]["before"]
    assert "ipset KUBE-CLUSTER-IP hash:ip,port (3 entries)" in check["diff"][0]["before"]
    assert check["diff"][0]["after"] == ""
    assert first["changed"] and not second["changed"]
    assert first["previous_modes"] == ["ipvs"] and first["removed"]["link"] == "kube-ipvs0"
    assert any("ip_vs is not loaded" in w for w in first["warnings"])
    assert "KUBE-IPVS-FILTER" in seen["before"]["iptables"]
    assert "--match-set KUBE-CLUSTER-IP" in seen["before"]["iptables"]
    assert kube_proxy_lines(seen["after"]["iptables"]) == []
    assert [line for line in seen["after"]["ipsets"].splitlines() if "KUBE-" in line] == []
    assert "10.96.0.1/32" in seen["before"]["kube-ipvs0"] and seen["after"]["kube-ipvs0"] == ""
    assert_host_untouched(seen)
    assert seen["after"]["state"].endswith("\niptables\n")
    assert seen["again"] == seen["after"]


def test_a_kube_ipvs0_that_is_not_a_dummy_is_kept(tmp_path):
    (check, first, second), seen = run_switch(tmp_path, IPVS_MODE + NODE, {"mode": "iptables"}, recorded="ipvs")
    assert first["changed"] and not second["changed"]
    assert {"what": "link kube-ipvs0", "why": "it is a bridge, not the dummy kube-proxy creates"} in first["kept"]
    assert seen["after"]["kube-ipvs0"] == seen["before"]["kube-ipvs0"]
    assert kube_proxy_lines(seen["after"]["iptables"]) == []
    assert [line for line in seen["after"]["ipsets"].splitlines() if "KUBE-" in line] == []
    assert check["diff"][0]["after"].startswith("link kube-ipvs0 (bridge)")


def test_switching_to_a_running_ipvs_keeps_its_chains(tmp_path):
    """iptables -> ipvs after kube-proxy restarted in ipvs mode: its chains, ipsets and link stay."""
    setup = f"iptables-restore --noflush < {SEED}\n" + IPVS_MODE + NODE
    (_check, first, second), seen = run_switch(tmp_path, setup, {"mode": "ipvs"}, recorded="iptables",
                                              path_prefix=dummy_ip(tmp_path))
    assert first["changed"] and not second["changed"]
    after = seen["after"]["iptables"]
    assert "KUBE-SVC-" not in after and "KUBE-SEP-" not in after and ":KUBE-NODEPORTS" not in after
    for chain in ("KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-MARK-MASQ", "KUBE-FORWARD", "KUBE-IPVS-FILTER"):
        assert f":{chain} -" in after, chain
    ipvs_lines = [line for line in seen["before"]["iptables"].splitlines()
                  if "match-set" in line or "kubernetes service portals" in line]
    assert ipvs_lines and all(line in after for line in ipvs_lines)
    assert seen["after"]["ipsets"] == seen["before"]["ipsets"]
    assert seen["after"]["kube-ipvs0"] == seen["before"]["kube-ipvs0"]
    assert {k["what"] for k in first["kept"]} >= {"ipv4 nat chain KUBE-SERVICES", "ipv4 filter chain KUBE-FORWARD"}


def test_the_configured_mode_alone_changes_no_rule(tmp_path):
    """No record and iptables mode on the node, configured iptables (the lab): only the record is written."""
    (check, first, second), seen = run_switch(tmp_path, IPTABLES_MODE + NODE, {"mode": "iptables"})
    assert check["changed"] and first["changed"] and not second["changed"]
    assert first["previous_modes"] == [] and first["plan"] == []
    for section in SECTIONS[:-1]:
        assert seen["after"][section] == seen["before"][section], section
    assert seen["before"]["state"] == "" and seen["after"]["state"].endswith("\niptables\n")


def test_cleanup_off_reports_and_changes_nothing(tmp_path):
    (check, first, second), seen = run_switch(tmp_path, IPVS_MODE + NODE,
                                              {"mode": "iptables", "cleanup": False}, recorded="ipvs")
    assert not check["changed"] and not first["changed"] and not second["changed"]
    assert first["previous_modes"] == ["ipvs"] and first["removed"]["ipsets"]
    assert any(w.startswith("cleanup is off: the plan (not run) would remove") for w in first["warnings"])
    assert seen["after"] == seen["before"]


def test_leftovers_after_the_recorded_cleanup_are_reported_not_removed(tmp_path):
    (_check, first, _second), seen = run_switch(tmp_path, IPVS_MODE + NODE, {"mode": "iptables"},
                                                recorded="iptables")
    assert not first["changed"] and set(first["leftovers"]) == {"ipvs"}
    assert any("ipvs mode leftovers remain" in w for w in first["warnings"])
    assert seen["after"] == seen["before"]


@pytest.mark.parametrize(("args", "record", "words"), [
    ({"mode": "userspace"}, None, "mode"),
    ({}, None, "mode"),
    ({"mode": "iptables", "state_file": "relative/kube-proxy-mode"}, None, "state_file"),
    ({"mode": "iptables"}, "userspace", "state_file"),
    ({"mode": "iptables", "cleanup": "maybe"}, None, "cleanup"),
])
def test_bad_arguments_fail_naming_the_option_and_change_nothing(tmp_path, args, record, words):
    state_file = tmp_path / "kube-proxy-mode"
    args = {"state_file": str(state_file), **args}
    if record:
        state_file.write_text(record + "\n")
    before = tmp_path / "before.txt"
    script = (IPVS_MODE + f"iptables-save | grep -v '^#' > {before}\n"
              + f"{module_cmd('netmend_kube_proxy_cleanup', args)} || true\n"
              + f"iptables-save | grep -v '^#' | diff {before} - && echo UNCHANGED\n"
              + "ipset list -n | grep -c KUBE-\n")
    proc = run_in_sandbox(script)
    (result,) = results(proc.stdout)
    assert result.get("failed") and words in result["msg"], result
    assert "UNCHANGED" in proc.stdout and proc.stdout.rstrip().endswith("9")
    if record:
        assert "'userspace'" in result["msg"] and state_file.read_text() == record + "\n"


def test_result_is_json_serialisable_plan(tmp_path):
    (_check, first, _second), _seen = run_switch(tmp_path, IPTABLES_MODE + NODE, {"mode": "nftables"})
    restore = [step for step in first["plan"] if step.startswith("iptables-restore")]
    assert len(restore) == 1 and restore[0].splitlines()[1] == "*filter"
    ip6 = [step for step in first["plan"] if step.startswith("ip6tables-restore")]
    assert len(ip6) == 1 and "-X KUBE-PROXY-CANARY" in ip6[0]
    json.dumps(first)
