"""netmend_firewalld through Ansible, against tests/modules/fake_firewall_cmd.py: real `--list-all-zones`
captures (tests/fixtures/) edited as firewalld edits them. No firewalld runs outside the lab, so this tests
the module's judgement, its plan and its record, not firewalld itself (tests/lab/test_roles.py does that).

The module runs the audit's `firewall` check: its `findings` are the audit's finding IDs for the same zones.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.modules.sandbox import ROOT, ansible_env, module_cmd, results
from tests.unit.test_audit import lab_want

FIXTURES = ROOT / "tests" / "fixtures"
W1_ZONES = (FIXTURES / "drift" / "w1-firewalld-zones.txt").read_text()
DEFAULT_ZONES = (FIXTURES / "checks" / "firewall" / "reset-to-defaults" / "zones.txt").read_text()
FW = lab_want()["firewall"]
WITHOUT_VXLAN = [p for p in FW["ports"] if p != "8472/udp"]


@pytest.fixture
def node(tmp_path):
    """(run, state): run(args, check=False) runs the module against the fake firewalld in `state`."""
    bindir, state = tmp_path / "bin", tmp_path / "firewalld"
    bindir.mkdir()
    state.mkdir()
    shutil.copy(Path(__file__).with_name("fake_firewall_cmd.py"), bindir / "firewall-cmd")
    (bindir / "firewall-cmd").chmod(0o755)
    env = ansible_env(FAKE_FIREWALLD=str(state), PATH=f"{bindir}:{os.environ['PATH']}")
    base = {"ports": FW["ports"], "trusted_interfaces": FW["trusted_interfaces"],
            "trusted_sources": FW["trusted_sources"], "state_file": str(tmp_path / "netmend" / "firewalld.json")}

    def run(args=None, check=False):
        proc = subprocess.run(["sh", "-c", module_cmd("netmend_firewalld", {**base, **(args or {})}, check=check,
                                                      diff=True)], capture_output=True, text=True, env=env,
                              timeout=120, check=False)
        (result,) = results(proc.stdout)
        return result

    return run, state


def with_public_ports(text, ports):
    """`--list-all-zones` text whose public zone lists `ports`."""
    out, zone = [], None
    for line in text.splitlines():
        if line and not line.startswith(" "):
            zone = line.split()[0]
        out.append(f"  ports: {ports}" if zone == "public" and line.startswith("  ports:") else line)
    return "\n".join(out) + "\n"


def zones(state, config, zone):
    text = (state / f"{config}.txt").read_text()
    block = next(b for b in text.split("\n\n") if b.split()[0] == zone)
    return {line.split(":")[0].strip(): line.split(":", 1)[1].split() for line in block.splitlines()[1:]}


def calls(state):
    path = state / "calls"
    return path.read_text().splitlines() if path.exists() else []


def changes(state):
    return [c for c in calls(state) if "--add-" in c or "--remove-" in c or "--change-" in c]


def test_reset_firewalld_is_configured_once_runtime_and_permanent_and_the_hosts_services_stay(node):
    run, state = node
    for config in ("runtime", "permanent"):
        (state / f"{config}.txt").write_text(DEFAULT_ZONES)
    check = run(check=True)
    assert check["changed"] and check["findings"] == ["FIREWALLD-BLOCKING"] and check["zone"] == "public"
    assert "--zone=public --add-port=10250/tcp" in check["commands"][0]
    assert "firewall-cmd --permanent --zone=trusted --change-interface=cni0 --change-interface=flannel.1" \
        in check["commands"]
    assert changes(state) == [], "check mode changes nothing"
    assert "# permanent\npublic\n  interfaces: \n  sources: \n  ports: \n" in check["diff"]["before"]
    first = run()
    assert first["changed"] and first["commands"] == check["commands"]
    again = run()
    assert not again["changed"] and again["findings"] == [] and again["commands"] == []
    for config in ("runtime", "permanent"):
        public = zones(state, config, "public")
        assert public["ports"] == FW["ports"] and public["masquerade"] == ["yes"]
        assert public["services"] == ["dhcpv6-client", "ssh"], "the host's services stay"
        assert zones(state, config, "trusted")["interfaces"] == ["cni0", "flannel.1"]


def test_a_port_missing_only_from_the_permanent_configuration_is_added_there_alone(node):
    run, state = node
    (state / "runtime.txt").write_text(W1_ZONES)
    (state / "permanent.txt").write_text(with_public_ports(W1_ZONES, "10250/tcp 10256/tcp 53/udp 53/tcp 9153/tcp "
                                                                     "8081/tcp"))
    first = run()
    assert first["changed"] and first["findings"] == ["FIREWALLD-NOT-PERSISTED"]
    assert first["commands"] == ["firewall-cmd --permanent --zone=public --add-port=30000-32767/tcp "
                                 "--add-port=30000-32767/udp --add-port=8472/udp"]
    assert not run()["changed"]


def test_what_netmend_added_and_no_longer_needs_is_removed_and_the_operators_port_stays(node, tmp_path):
    run, state = node
    operator = with_public_ports(DEFAULT_ZONES, "9100/tcp 8472/udp")  # the operator's, before netmend
    for config in ("runtime", "permanent"):
        (state / f"{config}.txt").write_text(operator)
    assert run()["changed"]
    record = json.loads((tmp_path / "netmend" / "firewalld.json").read_text())
    assert "8472/udp" not in record["runtime"]["public"]["ports"], "the operator's, not netmend's"
    assert record["permanent"]["trusted"]["interfaces"] == ["cni0", "flannel.1"]
    # host-gw now: no VXLAN port, no flannel.1. netmend added flannel.1; 8472/udp was there before it.
    hostgw = {"ports": WITHOUT_VXLAN, "trusted_interfaces": ["cni0"]}
    check = run(hostgw, check=True)
    assert check["changed"] and check["findings"] == ["FIREWALLD-STALE-ENTRY"]
    assert check["commands"] == ["firewall-cmd --zone=trusted --remove-interface=flannel.1",
                                 "firewall-cmd --permanent --zone=trusted --remove-interface=flannel.1"]
    assert run(hostgw)["changed"]
    assert not run(hostgw)["changed"]
    for config in ("runtime", "permanent"):
        assert zones(state, config, "public")["ports"][:2] == ["9100/tcp", "8472/udp"]
        assert zones(state, config, "trusted")["interfaces"] == ["cni0"]


def test_a_stopped_firewalld_fails_and_check_mode_says_the_role_would_start_it(node):
    run, state = node
    (state / "stopped").touch()
    check = run(check=True)
    assert check["changed"] and "would be started" in check["msg"] and check["commands"] == []
    failed = run()
    assert failed.get("failed") and "firewalld is not running" in failed["msg"]
    assert changes(state) == []


@pytest.mark.parametrize(("args", "words"), [
    ({"ports": ["8472"]}, "ports: '8472' is not a port"),
    ({"zone": "trusted"}, "trusted_zone: must differ from zone"),
    ({"trusted_sources": ["10.244.0.1/16"]}, "trusted_sources: '10.244.0.1/16' is not a network"),
])
def test_bad_arguments_fail_naming_the_option_before_firewalld_is_asked(node, args, words):
    run, state = node
    result = run(args)
    assert result.get("failed") and words in result["msg"]
    assert calls(state) == []
