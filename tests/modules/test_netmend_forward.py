"""netmend_forward on real iptables (legacy and nft), in a throwaway network namespace."""


import pytest

from tests.modules.sandbox import can_sandbox, legacy_iptables, module_cmd, results, run_in_sandbox

pytestmark = pytest.mark.skipif(not can_sandbox(), reason="needs root and unshare --net")

ARGS = {"pod_cidr": "10.244.0.0/16"}
# The host's own rules, as an operator would have them (seed 000 section 5.2): they must survive.
CANARY = 'iptables -P FORWARD DROP\niptables -A FORWARD -p icmp -j LOG --log-prefix "liuye-forward: "\n' \
         "iptables -N HOST-OWN\niptables -A HOST-OWN -s 192.0.2.0/24 -j RETURN\n"


@pytest.fixture(params=["nf_tables", "legacy"])
def backend(request, tmp_path):
    if request.param == "nf_tables":
        return request.param, None
    return request.param, legacy_iptables(tmp_path)


def test_accept_pod_cidr_adds_own_chain_once_and_keeps_host_rules(backend):
    name, bindir = backend
    script = (CANARY + f"{module_cmd('netmend_forward', ARGS, check=True, diff=True)}\n"
              "echo CHECK; iptables-save -t filter | grep -v '^#'\n"
              f"{module_cmd('netmend_forward', ARGS)}\n{module_cmd('netmend_forward', ARGS)}\n"
              "echo AFTER; iptables-save -t filter | grep -v '^#'\n")
    proc = run_in_sandbox(script, path_prefix=bindir)
    assert proc.returncode == 0, proc.stderr
    check, first, second = results(proc.stdout)
    assert check["changed"] and "NETMEND" not in check["diff"]["before"]
    assert "-A NETMEND-FORWARD -s 10.244.0.0/16" in check["diff"]["after"]
    assert first["changed"] and not second["changed"]
    assert first["backend"] == name and first["policy"] == "DROP"
    check_save = proc.stdout.split("CHECK\n", 1)[1].split("{", 1)[0]
    assert "NETMEND-FORWARD" not in check_save, "check mode changed nothing"
    after = proc.stdout.split("AFTER\n", 1)[1]
    forward = [line for line in after.splitlines() if line.startswith("-A FORWARD")]
    assert forward[0] == '-A FORWARD -m comment --comment "netmend: pod CIDR forwarding" -j NETMEND-FORWARD'
    assert forward[1] == '-A FORWARD -p icmp -j LOG --log-prefix "liuye-forward: "'
    assert "-A HOST-OWN -s 192.0.2.0/24 -j RETURN" in after
    assert ":FORWARD DROP" in after


def test_policy_accept_sets_the_policy(backend):
    _, bindir = backend
    args = {**ARGS, "mode": "policy_accept"}
    script = CANARY + f"{module_cmd('netmend_forward', args)}\n{module_cmd('netmend_forward', args)}\n" \
        "iptables -S FORWARD\n"
    proc = run_in_sandbox(script, path_prefix=bindir)
    first, second = results(proc.stdout)
    assert first["changed"] and not second["changed"] and first["policy"] == "ACCEPT"
    assert "-P FORWARD ACCEPT" in proc.stdout
    assert '-A FORWARD -p icmp -j LOG --log-prefix "liuye-forward: "' in proc.stdout


@pytest.mark.parametrize(("args", "words"), [
    ({"pod_cidr": "10.244.0.1/16"}, "pod_cidr"),
    ({"pod_cidr": "pods"}, "pod_cidr"),
    ({"pod_cidr": "10.244.0.0/16", "mode": "open"}, "mode"),
    ({"pod_cidr": "10.244.0.0/16", "chain": "FORWARD"}, "chain"),
])
def test_bad_arguments_fail_naming_the_option_and_change_nothing(args, words):
    script = f"{module_cmd('netmend_forward', args)} || true\niptables-save -t filter | grep -c NETMEND || true\n"
    proc = run_in_sandbox(script)
    (result,) = results(proc.stdout)
    assert result.get("failed") and words in result["msg"]
    assert proc.stdout.rstrip().endswith("0")



MARK_RULE = ('-m mark --mark 0x4000/0x4000 -m comment --comment "netmend: pod CIDR forwarding" -j ACCEPT')


def test_the_forward_role_and_the_audit_are_one_judge_for_a_chain_that_lost_the_mark_accept():
    """netmend_forward's result names the audit's finding: the module runs the audit's forward check and
    applies its plan, so what site.yml repairs is what the audit reports (and nothing it leaves is clean)."""
    script = (CANARY + f"{module_cmd('netmend_forward', ARGS)}\n"
              f"iptables -D NETMEND-FORWARD {MARK_RULE}\n"
              f"{module_cmd('netmend_forward', ARGS, check=True)}\n{module_cmd('netmend_forward', ARGS)}\n"
              f"{module_cmd('netmend_forward', ARGS)}\n"
              "iptables -S NETMEND-FORWARD\n")
    proc = run_in_sandbox(script)
    assert proc.returncode == 0, proc.stderr
    first, check, repair, again = results(proc.stdout)
    assert first["findings"] == ["FORWARD-POLICY-DROP"], "the host's DROP policy and no netmend chain yet"
    assert check["changed"] and check["findings"] == ["FORWARD-POLICY-DROP"]
    assert repair["changed"] and repair["findings"] == ["FORWARD-POLICY-DROP"]
    assert not again["changed"] and again["findings"] == []
    assert f"-A NETMEND-FORWARD {MARK_RULE}" in proc.stdout
