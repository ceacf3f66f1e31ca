"""action_plugins/netmend_report.py run by `ansible-playbook` on localhost with hand-made netmend_node results:
the four report files, the severity gate and an incomplete run. The plugin runs on the controller and needs
no connection, so the play targets only localhost; the nodes are names in its arguments."""

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from netmend.checks import CATALOG, CHECKS

ROOT = Path(__file__).resolve().parents[2]
IDS = [i for ids in CHECKS.values() for i in ids]
N = len(IDS)  # checks per node: every finding ID of the catalog
STARTED = "2026-11-21T12:00:00Z"


def finding(fid, node, **over):
    severity, component = CATALOG[fid].severity, CATALOG[fid].component
    return {"id": fid, "severity": severity, "node": node, "component": component,
            "summary": f"{fid} on {node}", "expected": "as Kubernetes needs it", "actual": "not so",
            "fix": "the fix", "evidence": ["line 1", 'a "quoted" <evidence> & more'], **over}


MASQ = finding("MASQUERADE-MISSING", "w1")  # error
MTU = finding("FLANNEL-VXLAN-MTU", "w2")  # warning
RESULTS = {"cp1": {"checks": IDS, "findings": [], "changed": False},
           "w1": {"checks": IDS, "findings": [MASQ], "changed": True},
           "w2": {"checks": IDS, "findings": [MTU], "changed": True}}


def task(name, fail_at, report_dir, hosts=("cp1", "w1", "w2"), results=None, ignore=True):  # noqa: PLR0913, PLR0917
    body = {"name": f"Report | {name}",
            "netmend_report": {"hosts": list(hosts), "results": results if results is not None else RESULTS,
                               "dir": str(report_dir), "fail_at": fail_at, "started": STARTED}}
    return {**body, "ignore_errors": True} if ignore else body


def playbook(tmp_path, tasks):
    """Run the tasks in one play on localhost; returns (rc, {task name: result}, output)."""
    path = tmp_path / "report.yml"
    path.write_text(yaml.safe_dump([{"name": "Report", "hosts": "localhost", "gather_facts": False,
                                     "tasks": tasks}], sort_keys=False))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_STDOUT_CALLBACK": "json",
           "ANSIBLE_ACTION_PLUGINS": str(ROOT / "action_plugins"), "ANSIBLE_LOCALHOST_WARNING": "0",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "al"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           str(path)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False)
    try:
        doc = json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError(f"no JSON output (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from exc
    results = {t["task"]["name"]: t["hosts"]["localhost"] for t in doc["plays"][0]["tasks"]}
    return proc.returncode, results, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def never(tmp_path_factory):
    """One run whose gate never fails: the reports of three nodes with two findings."""
    tmp = tmp_path_factory.mktemp("never")
    rc, results, out = playbook(tmp, [task("never", "never", tmp / "reports", ignore=False)])
    return rc, results["Report | never"], tmp / "reports", out


def test_fail_at_never_passes_and_writes_the_four_reports(never):
    rc, result, reports, out = never
    assert rc == 0, out
    assert not result.get("failed") and not result["changed"] and result["findings"] == 2
    assert sorted(Path(f).name for f in result["files"]) == ["junit.xml", "netmend.prom", "report.json", "report.md"]
    assert sorted(p.name for p in reports.iterdir()) == ["junit.xml", "netmend.prom", "report.json", "report.md"]
    assert result["summary"] == [f"cp1: {N} checks, clean", f"w1: {N} checks, MASQUERADE-MISSING (error)",
                                 f"w2: {N} checks, FLANNEL-VXLAN-MTU (warning)"]


def test_the_json_report_holds_the_run_every_check_and_every_finding(never):
    doc = json.loads((never[2] / "report.json").read_text())
    assert doc["run"]["complete"] is True and doc["run"]["unreachable"] == [] and doc["run"]["fail_at"] == "never"
    assert doc["run"]["started"] == STARTED and doc["run"]["finished_unix"] > 0
    assert doc["checks"] == {node: sorted(IDS) for node in ("cp1", "w1", "w2")}
    assert doc["findings"] == [MASQ, MTU]


def test_junit_has_one_testcase_per_check_per_node_and_a_failure_per_finding(never):
    root = ET.parse(never[2] / "junit.xml").getroot()
    assert root.tag == "testsuites" and root.get("tests") == str(3 * N) and root.get("failures") == "2"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert sorted(suites) == ["cp1", "w1", "w2"]
    for node, suite in suites.items():
        cases = suite.findall("testcase")
        assert sorted(c.get("name") for c in cases) == sorted(IDS) and suite.get("tests") == str(N)
        assert {c.get("classname") for c in cases} == {f"netmend.{node}"}
    failed = {(s, c.get("name")): c.find("failure") for s, suite in suites.items() for c in suite.findall("testcase")
              if c.find("failure") is not None}
    assert sorted(failed) == [("w1", "MASQUERADE-MISSING"), ("w2", "FLANNEL-VXLAN-MTU")]
    masq = failed["w1", "MASQUERADE-MISSING"]
    assert masq.get("type") == "error" and masq.get("message") == "MASQUERADE-MISSING on w1"
    assert 'evidence: a "quoted" <evidence> & more' in masq.text


def test_prometheus_textfile_has_a_series_per_finding_and_the_run_state(never):
    lines = (never[2] / "netmend.prom").read_text().splitlines()
    assert 'netmend_finding{id="MASQUERADE-MISSING",node="w1",severity="error",component="flannel"} 1' in lines
    assert 'netmend_finding{id="FLANNEL-VXLAN-MTU",node="w2",severity="warning",component="flannel"} 1' in lines
    assert [line for line in lines if line.startswith("netmend_checks{")] == [
        f'netmend_checks{{node="cp1"}} {N}', f'netmend_checks{{node="w1"}} {N}', f'netmend_checks{{node="w2"}} {N}']
    assert "netmend_last_run_success 1" in lines
    assert any(line.startswith("netmend_last_run_timestamp_seconds ") for line in lines)
    for line in lines:  # every sample line is `name{labels} value` or `name value`, every family typed
        if not line.startswith("#"):
            name = line.split("{")[0].split()[0]
            assert f"# TYPE {name} gauge" in lines and float(line.rsplit(" ", 1)[1]) >= 0


def test_the_markdown_summary_lists_each_node_and_finding(never):
    md = (never[2] / "report.md").read_text()
    assert f"| w1 | {N} | 1 | error |" in md and f"| cp1 | {N} | 0 | ok |" in md
    assert "## w1: MASQUERADE-MISSING (error)" in md and "docs/findings/MASQUERADE-MISSING.md" in md


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """One run of the failing cases (ignored, to see each result), ending with a gate that fails the play."""
    tmp = tmp_path_factory.mktemp("gated")
    tasks = [task("bad fail_at", "high", tmp / "bad"),
             task("no dir", "error", ""),
             task("incomplete", "never", tmp / "incomplete", hosts=("cp1", "w1", "w2", "w3")),
             task("critical", "critical", tmp / "critical"),
             task("warning", "warning", tmp / "warning", results={"w2": RESULTS["w2"]}, hosts=("w2",)),
             task("not results", "never", tmp / "garbage", results={"w1": {"checks": IDS, "findings": [{"id": 1}]}},
                  hosts=("w1",)),
             task("error", "error", tmp / "error", ignore=False),
             task("after the gate", "never", tmp / "after", ignore=False)]
    rc, results, out = playbook(tmp, tasks)
    return rc, results, tmp, out


def test_an_error_finding_fails_the_play_at_fail_at_error(gated):
    rc, results, tmp, out = gated
    assert rc != 0, out
    error = results["Report | error"]
    assert error["failed"] and "failing: a finding reaches error" in error["msg"]
    assert (tmp / "error" / "junit.xml").is_file()  # the reports are written before the gate fails
    assert "Report | after the gate" not in results


def test_the_gate_compares_severities(gated):
    _, results, _, _ = gated
    assert not results["Report | critical"].get("failed")  # an error finding does not reach critical
    assert results["Report | warning"]["failed"]  # a warning reaches warning


def test_a_host_without_a_result_makes_the_run_incomplete_and_fails(gated):
    _, results, tmp, _ = gated
    incomplete = results["Report | incomplete"]
    assert incomplete["failed"] and "not audited: w3" in incomplete["msg"]
    assert "w3: NOT AUDITED (no result: unreachable or failed)" in incomplete["summary"]
    assert "netmend_last_run_success 0" in (tmp / "incomplete" / "netmend.prom").read_text().splitlines()
    doc = json.loads((tmp / "incomplete" / "report.json").read_text())
    assert doc["run"]["complete"] is False and doc["run"]["unreachable"] == ["w3"]
    assert sorted(doc["checks"]) == ["cp1", "w1", "w2"]


def test_bad_arguments_fail_with_a_clear_message_and_write_nothing(gated):
    _, results, tmp, _ = gated
    bad = results["Report | bad fail_at"]
    assert bad["failed"] and bad["msg"] == ("fail_at: 'high' is not accepted; accepted: info, warning, error, "
                                            "critical, never")
    assert not (tmp / "bad").exists()
    assert results["Report | no dir"]["failed"] and results["Report | no dir"]["msg"].startswith("dir: ")
    garbage = results["Report | not results"]
    assert garbage["failed"] and garbage["msg"].startswith("results: not netmend_node results")
    assert not (tmp / "garbage").exists()
