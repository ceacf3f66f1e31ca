"""Findings and the reports made of them: JSON, JUnit XML, a Prometheus textfile and Markdown.

Stdlib only. A finding is one thing wrong on one node, with a stable ID (documented in
docs/findings/<ID>.md), what was expected, what was found, the evidence and the fix. The audit
runs every check on every node; a check that finds nothing is a passed test case in JUnit and
absent from the Prometheus series, so alerts fire on `netmend_finding` and clear when it goes.
"""

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field

from .errors import ProblemsError

SEVERITIES = ("info", "warning", "error", "critical")
FINDING_ID = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)+$")  # e.g. SYSCTL-IP-FORWARD-OFF
COMPONENTS = ("kernel", "firewall", "forward", "flannel", "kube-proxy", "dns", "conntrack")


@dataclass(frozen=True)
class Finding:
    id: str
    severity: str
    node: str
    component: str
    summary: str
    expected: str
    actual: str
    fix: str
    evidence: tuple = field(default_factory=tuple)

    def __post_init__(self):
        problems = []
        if not isinstance(self.id, str) or not FINDING_ID.match(self.id):
            problems.append(("id", f"{self.id!r} is not a finding ID such as SYSCTL-IP-FORWARD-OFF"))
        if self.severity not in SEVERITIES:
            problems.append(("severity", f"{self.severity!r} is not one of {', '.join(SEVERITIES)}"))
        if self.component not in COMPONENTS:
            problems.append(("component", f"{self.component!r} is not one of {', '.join(COMPONENTS)}"))
        if not self.node:
            problems.append(("node", "is empty"))
        if problems:
            raise ProblemsError(problems)


@dataclass(frozen=True)
class Spec:
    """A kind of finding, as the check that reports it declares it: the stable ID, its severity and
    component, and its page. The catalog (netmend.checks.CATALOG) is every check's specs."""

    id: str
    severity: str
    component: str

    def __post_init__(self):
        Finding(self.id, self.severity, "catalog", self.component, "", "", "", "")  # the same rules as a finding

    @property
    def doc(self):
        return f"docs/findings/{self.id}.md"


def rank(severity):
    """The order of a severity: info 0 ... critical 3."""
    if severity not in SEVERITIES:
        raise ProblemsError([("severity", f"{severity!r} is not one of {', '.join(SEVERITIES)}")])
    return SEVERITIES.index(severity)


def gate(findings, fail_at):
    """True when a finding reaches the severity `fail_at` (the audit then exits non-zero)."""
    threshold = rank(fail_at)
    return any(rank(f.severity) >= threshold for f in findings)


def sort_key(finding):
    return (finding.node, -rank(finding.severity), finding.id)


def to_json(findings, checks, run):
    """The machine-readable report: run metadata, every check per node, every finding."""
    found = [dict(asdict(f), evidence=list(f.evidence)) for f in sorted(findings, key=sort_key)]
    return json.dumps({"run": run, "checks": {node: sorted(ids) for node, ids in sorted(checks.items())},
                       "findings": found}, indent=2, sort_keys=True) + "\n"


def to_junit(findings, checks, run, skipped=None):
    """JUnit XML: one testsuite per node, one testcase per check; a finding fails its check's case.

    checks: {node: [check IDs run there]} (the IDs findings carry); skipped: {node: ["check: why"]},
    each a skipped test case (a check that could not run there, such as conntrack without the tool)."""
    skipped = skipped or {}
    missing = sorted({(f.node, f.id) for f in findings} - {(n, i) for n, ids in checks.items() for i in ids})
    if missing:
        raise ProblemsError([("checks", f"finding {i} on {n} has no check in the run") for n, i in missing])
    by_case = {}
    for f in findings:
        by_case.setdefault((f.node, f.id), []).append(f)
    suites = ET.Element("testsuites", name="netmend audit", tests=str(sum(len(c) for c in checks.values())),
                        failures=str(len(by_case)), timestamp=run.get("started", ""))
    for node in sorted(checks):
        ids = sorted(set(checks[node]))
        failed = [i for i in ids if (node, i) in by_case]
        skips = list(skipped.get(node, ()))
        suite = ET.SubElement(suites, "testsuite", name=node, tests=str(len(ids) + len(skips)),
                              failures=str(len(failed)), skipped=str(len(skips)))
        for skip in skips:
            check, _, why = str(skip).partition(": ")
            case = ET.SubElement(suite, "testcase", classname=f"netmend.{node}", name=f"check {check}")
            ET.SubElement(case, "skipped", message=why or check)
        for check in ids:
            case = ET.SubElement(suite, "testcase", classname=f"netmend.{node}", name=check)
            for f in by_case.get((node, check), []):
                failure = ET.SubElement(case, "failure", type=f.severity, message=f.summary)
                failure.text = (f"expected: {f.expected}\nactual: {f.actual}\nfix: {f.fix}\n"
                                + "".join(f"evidence: {e}\n" for e in f.evidence))
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _label(value):
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def to_prometheus(findings, checks, run):
    """A node_exporter textfile: netmend_finding{id,node,severity,component} 1 per finding, plus
    netmend_checks{node}, netmend_last_run_timestamp_seconds and netmend_last_run_success."""
    lines = ["# HELP netmend_finding A netmend audit finding (1 while it is present).",
             "# TYPE netmend_finding gauge"]
    for f in sorted(findings, key=sort_key):
        lines.append(f'netmend_finding{{id="{_label(f.id)}",node="{_label(f.node)}",'
                     f'severity="{f.severity}",component="{f.component}"}} 1')
    lines += ["# HELP netmend_checks Checks the last audit ran on a node.", "# TYPE netmend_checks gauge"]
    lines += [f'netmend_checks{{node="{_label(n)}"}} {len(set(ids))}' for n, ids in sorted(checks.items())]
    lines += ["# HELP netmend_last_run_timestamp_seconds When the last audit finished (Unix time).",
              "# TYPE netmend_last_run_timestamp_seconds gauge",
              f"netmend_last_run_timestamp_seconds {float(run.get('finished_unix', 0)):.3f}",
              "# HELP netmend_last_run_success 1 when the last audit reached every node.",
              "# TYPE netmend_last_run_success gauge",
              f"netmend_last_run_success {1 if run.get('complete', False) else 0}"]
    return "\n".join(lines) + "\n"


def to_markdown(findings, checks, run):
    """A readable summary: one line per node, then each finding with its fix."""
    lines = ["# netmend audit", "", f"Run {run.get('started', '')}: {len(checks)} nodes, "
             f"{sum(len(set(c)) for c in checks.values())} checks, {len(findings)} findings.", "",
             "| node | checks | findings | worst |", "|---|---|---|---|"]
    for node in sorted(checks):
        mine = [f for f in findings if f.node == node]
        worst = max((f.severity for f in mine), key=rank) if mine else "ok"
        lines.append(f"| {node} | {len(set(checks[node]))} | {len(mine)} | {worst} |")
    for f in sorted(findings, key=sort_key):
        lines += ["", f"## {f.node}: {f.id} ({f.severity})", "", f.summary, "",
                  f"- expected: {f.expected}", f"- actual: {f.actual}", f"- fix: {f.fix}",
                  f"- docs: docs/findings/{f.id}.md"]
    return "\n".join(lines) + "\n"
