"""The shipped alert rules and dashboard: checked and unit-tested with Prometheus's own promtool (Debian's
prometheus package, installed by ./dev setup), and written against the metrics netmend really writes."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from netmend.findings import Finding, to_prometheus

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "contrib" / "prometheus" / "netmend-alerts.yml"
RULE_TESTS = ROOT / "contrib" / "prometheus" / "netmend-alerts.test.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "netmend-dashboard.json"
METRIC = re.compile(r"\bnetmend_[a-z_]+\b")


@pytest.fixture(scope="module")
def promtool():
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: it comes with Debian's prometheus package (APT_PACKAGES in ./dev)"
    return tool


def _promtool(tool, *args, cwd=None):
    proc = subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_the_rules_check_and_their_unit_tests_pass(promtool):
    assert "SUCCESS: 4 rules found" in _promtool(promtool, "check", "rules", str(RULES))
    assert "SUCCESS" in _promtool(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)


def test_a_broken_rule_test_fails(promtool, tmp_path):
    """The unit tests can fail: the same tests against rules whose finding alert never fires."""
    rules = yaml.safe_load(RULES.read_text())
    rules["groups"][0]["rules"][0]["expr"] = "max by (node, id, severity, component) (netmend_finding) > 1"
    (tmp_path / RULES.name).write_text(yaml.safe_dump(rules))
    (tmp_path / RULE_TESTS.name).write_text(RULE_TESTS.read_text())
    proc = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path)
    assert proc.returncode != 0 and "NetmendFinding" in proc.stdout + proc.stderr


def _written_metrics():
    finding = Finding("SYSCTL-IP-FORWARD-OFF", "critical", "w1", "kernel", "s", "e", "a", "f")
    text = to_prometheus([finding], {"w1": ["SYSCTL-IP-FORWARD-OFF"]}, {"finished_unix": 1, "complete": True})
    return {line.split("{")[0].split()[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_rules_and_dashboard_use_only_metrics_netmend_writes():
    written = _written_metrics()
    exprs = [rule["expr"] for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]]
    exprs += [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used and used <= written, f"not written by netmend.findings.to_prometheus: {sorted(used - written)}"
    assert {"netmend_finding", "netmend_last_run_timestamp_seconds", "netmend_last_run_success"} <= used


def test_every_dashboard_query_is_valid_promql(promtool, tmp_path):
    """Grafana imports the JSON; each panel's query is parsed by Prometheus's own parser (as a recording rule)."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    records = [{"record": f"netmend:dashboard_{panel['id']}_{target['refId']}", "expr": target["expr"]}
               for panel in dashboard["panels"] for target in panel["targets"]]
    path = tmp_path / "dashboard.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    assert f"SUCCESS: {len(records)} rules found" in _promtool(promtool, "check", "rules", str(path))
