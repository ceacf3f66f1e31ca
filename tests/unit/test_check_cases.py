"""Every check case in tests/fixtures/checks/<check>/<case>/: the node's text in, the findings, the plan and the
skipped checks out (tests/fixtures/checks/README.md). A new case is a new directory; a check or a finding ID
without a case fails here.

Each case is the lab's w1 as captured (tests/fixtures/checks/_base/, tests/checkcases.py) with the case's
edits, read by netmend.facts.gather through a FixtureHost and judged by netmend.checks.audit, as netmend_node
does on a node.
"""

import json

import pytest

from netmend import checks
from netmend.iptables import parse_save
from netmend.plan import owned_only
from tests.checkcases import (
    CASES,
    Case,
    FixtureHost,
    Raw,
    base_tables,
    discover,
    lab_want,
    node_host,
    replay_iptables,
    run,
    same_tables,
    with_policies_of,
)

DIRS = discover()
LOADED = {}

# Finding IDs no case expects yet. Keep it empty: a new finding comes with its case directory.
UNCOVERED = set()


def load(directory):
    if directory not in LOADED:
        LOADED[directory] = Case(directory)
    return LOADED[directory]


def _matches(finding, want):
    if "actual" in want and finding.actual != want["actual"]:
        return f"actual {finding.actual!r}, expected {want['actual']!r}"
    lacking = [e for e in want.get("evidence_contains", ()) if not any(e in line for line in finding.evidence)]
    if lacking:
        return f"no evidence line contains {lacking}; the evidence: {list(finding.evidence)}"
    return ""


@pytest.mark.parametrize("directory", DIRS, ids=[d.relative_to(CASES).as_posix() for d in DIRS])
def test_check_case(directory):
    case = load(directory)
    gathered, result = case.run()
    expected = case.expected
    got = [(f.id, f.actual) for f in result.findings]
    assert [f.id for f in result.findings] == [f["id"] for f in expected["findings"]], got
    for i, finding in enumerate(result.findings):  # (no zip(strict=): the 3.9 run runs this file too)
        want = expected["findings"][i]
        assert not _matches(finding, want), f"{finding.id}: {_matches(finding, want)}"
        spec = checks.CATALOG[finding.id]
        assert (finding.severity, finding.component, finding.node) == (spec.severity, spec.component, case.node)
        assert finding.summary and finding.expected and finding.actual and finding.fix
    assert [a.describe() for a in result.actions] == expected["actions"]
    for action in result.actions:
        assert owned_only(action), action.describe()
        assert action.describe().startswith(f"{action.finding}: ")
        assert set(action.diff()) == {"before_header", "after_header", "before", "after"}
    assert len(result.skipped) == len(expected["skipped"]), result.skipped
    for i, (check, why) in enumerate(result.skipped):
        want_check, prefix = expected["skipped"][i]
        assert check == want_check and why.startswith(prefix), (check, why)
    ran = [c for c in checks.CHECKS if case.checks is None or c in case.checks]
    skipped = {check for check, _ in result.skipped}
    assert result.checks == [fid for c in ran if c not in skipped for fid in checks.CHECKS[c]]
    if expected.get("after_replay_clean"):
        assert "iptables" in gathered, "after_replay_clean needs the iptables fact"
        fixed = replay_iptables(gathered["iptables"], result.actions)
        same_tables(fixed, with_policies_of(base_tables(), gathered["iptables"]))


def test_the_base_is_the_state_the_audit_tests_build_from_the_capture():
    """_base is exactly tests/unit/test_audit.py's Raw(): the same capture, the same clean node."""
    host = node_host()
    gathered, result = run(host, lab_want())
    assert sorted(host.ran) == sorted(host.commands), "the base serves exactly the commands gather runs"
    assert gathered.pop("errors") == {}
    assert gathered == Raw().state()
    assert (result.findings, result.actions, result.skipped) == ([], [], [])
    assert gathered["iptables"] == parse_save((CASES.parent / "drift" / "w1-iptables-save").read_text())


def test_every_check_has_a_case_and_a_clean_case():
    have = {d.parent.name for d in DIRS}
    assert sorted(have) == sorted(checks.CHECKS), "a directory per check, named as the check"
    clean = {d.parent.name for d in DIRS if d.name == "clean"}
    assert clean == set(checks.CHECKS)


def test_every_finding_id_is_expected_by_a_case():
    expected = {f["id"] for d in DIRS for f in load(d).expected["findings"]}
    assert not expected - set(checks.CATALOG), "cases expect IDs the catalog does not have"
    assert set(checks.CATALOG) - expected == UNCOVERED, "a finding ID with no case expecting it"


def test_a_case_directory_holds_only_what_its_case_json_names():
    for directory in DIRS:
        case = load(directory)
        extra = {p.name for p in directory.iterdir()} - {"case.json", "expected.json"} - case.referenced()
        assert not extra, f"{case.name}: files case.json does not name: {sorted(extra)}"
        expected = case.expected
        assert {"findings", "actions", "skipped"} <= set(expected), f"{case.name}: expected.json lacks a key"


def test_the_fixture_host_serves_text_as_the_core_reads_a_node():
    host = FixtureHost({"ip -j addr show": (0, "[]", ""), "firewall-cmd --state": (252, "not running\n", "")},
                       {"/etc/sysctl.d/90-netmend.conf": "x\n", "/proc/sys/net/bridge/bridge-nf-call-iptables": "1\n"},
                       links={"/etc/resolv.conf": "/run/systemd/resolve/stub-resolv.conf"},
                       dns={"203.0.113.10": False}, installed=["conntrack"])
    assert (host.tool("ip"), host.tool("conntrack"), host.tool("nft")) == ("/usr/sbin/ip", "/usr/sbin/conntrack", None)
    assert host.run(["/usr/sbin/ip", "-j", "addr", "show"]) == (0, "[]", "")
    assert host.run(["/usr/sbin/firewall-cmd", "--state"])[0] == 252
    with pytest.raises(AssertionError, match="serves no output for `ip -j route show`"):
        host.run(["/usr/sbin/ip", "-j", "route", "show"])
    assert host.isdir("/proc/sys/net/bridge") and host.isdir("/etc/sysctl.d") and not host.isdir("/run/sysctl.d")
    assert host.listdir("/etc/sysctl.d") == ["90-netmend.conf"] and host.listdir("/proc/sys") == ["net"]
    assert host.isfile("/etc/sysctl.d/90-netmend.conf") and not host.isfile("/etc/sysctl.d")
    assert host.read("/etc/sysctl.conf") is None
    assert host.link_target("/etc/resolv.conf") == "/run/systemd/resolve/stub-resolv.conf"
    assert host.dns_answers(["203.0.113.10", "198.51.100.53"], 1.0) == {"203.0.113.10": False}


def test_the_repair_of_a_service_with_session_affinity_keeps_its_affinity_for_the_new_endpoint_chain():
    """kube-proxy's ClientIP affinity: the service chain's `-m recent --rcheck ... --name SEP -j SEP` rule per
    endpoint and the endpoint chain's `-m recent --set --name SEP`. The repair writes both for the new endpoint
    chain, and no rule names a recent list of a chain the transaction deletes. The replayed table audits clean."""
    case = load(CASES / "kube-proxy" / "stale-with-session-affinity")
    gathered, result = case.run()
    fixed = replay_iptables(gathered["iptables"], result.actions)
    nat = fixed["nat"].index()
    svc = nat["KUBE-SVC-EDVMF3IXK2ZILKRW"]
    new_sep = svc[-1].split()[-1]
    assert new_sep.startswith("KUBE-SEP-") and new_sep != "KUBE-SEP-MLSG6P3IBUPRM47A"
    assert svc == [
        '-A KUBE-SVC-EDVMF3IXK2ZILKRW -m comment --comment "default/hello-world-single: -> 10.244.1.5:8080" '
        f"-m recent --rcheck --seconds 10800 --reap --name {new_sep} --mask 255.255.255.255 --rsource -j {new_sep}",
        f"-A KUBE-SVC-EDVMF3IXK2ZILKRW -j {new_sep}"]
    assert nat[new_sep] == [
        f"-A {new_sep} -s 10.244.1.5/32 -j KUBE-MARK-MASQ",
        f"-A {new_sep} -p tcp -m recent --set --name {new_sep} --mask 255.255.255.255 --rsource -m tcp "
        "-j DNAT --to-destination 10.244.1.5:8080"]
    names = {line.split("--name ")[1].split()[0] for rules in nat.values() for line in rules if "--name " in line}
    assert names <= set(nat), f"recent lists of chains that are gone: {sorted(names - set(nat))}"
    host = FixtureHost({**case.host().commands, "iptables-save": (0, _save_text(fixed), "")}, case.host().files,
                       dns=case.host().dns)
    assert run(host, case.want, ["kube-proxy"])[1].findings == []


def test_the_repair_of_an_external_traffic_local_service_rewrites_its_local_chain_too():
    """externalTrafficPolicy: Local: the stale endpoint chain is jumped to from KUBE-SVC and KUBE-SVL. Both get a
    jump to the new endpoint chain (in w1's subnet, so local), nothing jumps to the deleted one, and the replayed
    table audits clean."""
    case = load(CASES / "kube-proxy" / "stale-external-traffic-local")
    gathered, result = case.run()
    fixed = replay_iptables(gathered["iptables"], result.actions)
    nat = fixed["nat"].index()
    new_sep = nat["KUBE-SVC-EDVMF3IXK2ZILKRW"][-1].split()[-1]
    assert new_sep.startswith("KUBE-SEP-") and "KUBE-SEP-MLSG6P3IBUPRM47A" not in nat
    assert nat["KUBE-SVL-EDVMF3IXK2ZILKRW"] == [
        '-A KUBE-SVL-EDVMF3IXK2ZILKRW -m comment --comment "default/hello-world-single: -> 10.244.1.5:8080" '
        f"-j {new_sep}"]
    assert nat["KUBE-EXT-EDVMF3IXK2ZILKRW"] == gathered["iptables"]["nat"].index()["KUBE-EXT-EDVMF3IXK2ZILKRW"]
    assert not [r for rules in nat.values() for r in rules if r.endswith("-j KUBE-SEP-MLSG6P3IBUPRM47A")]
    host = FixtureHost({**case.host().commands, "iptables-save": (0, _save_text(fixed), "")}, case.host().files,
                       dns=case.host().dns)
    assert run(host, case.want, ["kube-proxy"])[1].findings == []


def test_a_local_chain_keeps_only_local_endpoints():
    """A KUBE-SVL chain jumps only to the endpoints on this node (w1: 10.244.1.0/24, or its own address)."""
    case = load(CASES / "kube-proxy" / "stale-external-traffic-local")
    want = json.loads(json.dumps(case.want))
    svc = next(s for s in want["services"] if s["name"] == "hello-world-single")
    svc["endpoints"] = ["10.244.2.7:8080", "10.244.1.5:8080", f"{want['address']}:8080"]
    gathered, result = run(case.host(), want, ["kube-proxy"])
    nat = replay_iptables(gathered["iptables"], result.actions)["nat"].index()
    assert [r.split("-> ")[1].split('"')[0] for r in nat["KUBE-SVL-EDVMF3IXK2ZILKRW"]] == \
        ["10.244.1.5:8080", f"{want['address']}:8080"]
    assert len(nat["KUBE-SVC-EDVMF3IXK2ZILKRW"]) == len(svc["endpoints"])


def _save_text(tables):
    lines = []
    for name, table in tables.items():
        lines += [f"*{name}", *(f":{c} {p} [0:0]" for c, p in table.policies.items()),
                  *(line for _, line in table.rules), "COMMIT"]
    return "\n".join(lines) + "\n"
