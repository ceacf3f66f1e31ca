"""netmend.findings: the finding model and the audit's four report formats."""

import json
import re
import xml.etree.ElementTree as ET

import pytest

from netmend.errors import ProblemsError
from netmend.findings import Finding, gate, to_json, to_junit, to_markdown, to_prometheus

RUN = {"started": "2026-11-21T10:00:00Z", "finished_unix": 1795255200.5, "complete": True}
CHECKS = {"w1": ["SYSCTL-IP-FORWARD-OFF", "FORWARD-POLICY-DROP"], "w2": ["SYSCTL-IP-FORWARD-OFF"]}


def finding(**over):
    base = {"id": "SYSCTL-IP-FORWARD-OFF", "severity": "critical", "node": "w1", "component": "kernel",
            "summary": "IPv4 forwarding is off", "expected": "net.ipv4.ip_forward = 1",
            "actual": "net.ipv4.ip_forward = 0", "fix": "sysctl -w net.ipv4.ip_forward=1 and persist it",
            "evidence": ("/proc/sys/net/ipv4/ip_forward: 0",)}
    return Finding(**{**base, **over})


@pytest.mark.parametrize(("over", "fieldname"), [
    ({"id": "ip-forward"}, "id"), ({"severity": "fatal"}, "severity"), ({"component": "cni"}, "component"),
    ({"node": ""}, "node"),
])
def test_a_bad_finding_names_the_field(over, fieldname):
    with pytest.raises(ProblemsError) as exc:
        finding(**over)
    assert [f for f, _ in exc.value.problems] == [fieldname]


def test_gate_fails_at_the_configured_severity():
    warn = finding(severity="warning")
    assert gate([warn], "warning") and not gate([warn], "error") and not gate([], "info")
    with pytest.raises(ProblemsError, match="severity: 'high'"):
        gate([warn], "high")


def test_json_report_lists_checks_and_findings():
    doc = json.loads(to_json([finding()], CHECKS, RUN))
    assert doc["checks"]["w1"] == ["FORWARD-POLICY-DROP", "SYSCTL-IP-FORWARD-OFF"]
    assert doc["findings"][0]["evidence"] == ["/proc/sys/net/ipv4/ip_forward: 0"]
    assert doc["run"]["complete"] is True


def test_junit_has_one_case_per_check_per_node_and_fails_the_found_ones():
    root = ET.fromstring(to_junit([finding()], CHECKS, RUN).split("\n", 1)[1])
    assert (root.get("tests"), root.get("failures")) == ("3", "1")
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    assert len(cases) == 3
    failure = cases[("netmend.w1", "SYSCTL-IP-FORWARD-OFF")].find("failure")
    assert failure.get("type") == "critical" and "actual: net.ipv4.ip_forward = 0" in failure.text
    assert cases[("netmend.w2", "SYSCTL-IP-FORWARD-OFF")].find("failure") is None


def test_junit_refuses_a_finding_of_a_check_that_did_not_run():
    with pytest.raises(ProblemsError, match="finding SYSCTL-IP-FORWARD-OFF on w3 has no check"):
        to_junit([finding(node="w3")], CHECKS, RUN)


SAMPLE = re.compile(r'^[a-z_]+(\{([a-z_]+="([^"\\]|\\.)*",?)*\})? -?[0-9.]+$')


def test_prometheus_textfile_is_in_the_exposition_format():
    odd = finding(node='w"1\\', id="FORWARD-POLICY-DROP", severity="error", component="forward")
    text = to_prometheus([finding(), odd], CHECKS, RUN)
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or SAMPLE.match(line), line
    assert ('netmend_finding{id="SYSCTL-IP-FORWARD-OFF",node="w1",severity="critical",component="kernel"} 1'
            in text)
    assert 'node="w\\"1\\\\"' in text
    assert "netmend_last_run_success 1" in text and "netmend_last_run_timestamp_seconds 1795255200.500" in text
    assert 'netmend_checks{node="w1"} 2' in text


def test_markdown_summary_has_a_row_per_node_and_the_fix():
    text = to_markdown([finding()], CHECKS, RUN)
    assert "| w1 | 2 | 1 | critical |" in text and "| w2 | 1 | 0 | ok |" in text
    assert "- fix: sysctl -w net.ipv4.ip_forward=1 and persist it" in text
    assert "docs/findings/SYSCTL-IP-FORWARD-OFF.md" in text


def test_junit_lists_a_check_that_could_not_run_as_skipped():
    doc = ET.fromstring(to_junit([], {"w1": ["CONNTRACK-STALE-DNS"]}, {"started": "t"},
                                 {"w1": ["conntrack: conntrack (conntrack-tools) is not installed"]}))
    suite = doc.find("testsuite")
    assert suite.get("tests") == "2" and suite.get("skipped") == "1"
    skipped = [c for c in suite.findall("testcase") if c.find("skipped") is not None]
    assert [c.get("name") for c in skipped] == ["check conntrack"]
    assert skipped[0].find("skipped").get("message") == "conntrack (conntrack-tools) is not installed"
