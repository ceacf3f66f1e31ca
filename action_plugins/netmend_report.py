"""Action plugin: the audit's reports, written on the controller from every node's netmend_node result.

JSON, JUnit XML (one test case per check per node), a Prometheus textfile for node_exporter and a
Markdown summary (netmend.findings), in one report directory. It prints one line per node and fails
the play when a finding reaches `fail_at` (info, warning, error, critical; never disables the gate),
so CI can gate on the audit. A node that did not answer makes the run incomplete
(netmend_last_run_success 0) and fails the gate too: an audit that did not look is not a clean one.
"""

import os
import sys
import time
from pathlib import Path

from ansible.plugins.action import ActionBase

_MODULE_UTILS = str(Path(__file__).resolve().parents[1] / "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.insert(0, _MODULE_UTILS)

from netmend.errors import ProblemsError  # noqa: E402
from netmend.findings import SEVERITIES, Finding, gate, rank, to_json, to_junit, to_markdown, to_prometheus  # noqa: E402

FILES = {"report.json": to_json, "junit.xml": to_junit, "netmend.prom": to_prometheus, "report.md": to_markdown}
FAIL_AT = (*SEVERITIES, "never")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        fail_at, report_dir = str(args.get("fail_at", "error")), args.get("dir", "")
        hosts, results = list(args.get("hosts") or []), args.get("results") or {}
        if fail_at not in FAIL_AT:
            return {**result, "failed": True,
                    "msg": f"fail_at: {fail_at!r} is not accepted; accepted: {', '.join(FAIL_AT)}"}
        if not report_dir:
            return {**result, "failed": True, "msg": "dir: the report directory is required"}
        findings, checks, missing, skipped = [], {}, [], {}
        try:
            for host in hosts:
                res = results.get(host) or {}
                if "checks" not in res:
                    missing.append(host)
                    continue
                checks[host] = list(res["checks"])
                if res.get("skipped_checks"):
                    skipped[host] = list(res["skipped_checks"])
                findings += [Finding(**{**f, "evidence": tuple(f.get("evidence", ()))}) for f in res["findings"]]
        except (TypeError, ProblemsError) as exc:
            return {**result, "failed": True, "msg": f"results: not netmend_node results ({exc})"}
        run = {"started": args.get("started", ""), "finished_unix": time.time(), "complete": not missing,
               "unreachable": missing, "fail_at": fail_at, "skipped": skipped}
        os.makedirs(report_dir, exist_ok=True)
        written = []
        for name, render in FILES.items():
            path = os.path.join(report_dir, name)
            tmp_path = path + ".tmp"
            text = to_junit(findings, checks, run, skipped) if render is to_junit else render(findings, checks, run)
            with open(tmp_path, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp_path, path)
            written.append(path)
        summary = []
        for host in hosts:
            if host in missing:
                summary.append(f"{host}: NOT AUDITED (no result: unreachable or failed)")
                continue
            mine = sorted((f for f in findings if f.node == host), key=lambda f: (-rank(f.severity), f.id))
            summary.append(f"{host}: {len(checks[host])} checks, "
                           + (", ".join(f"{f.id} ({f.severity})" for f in mine) if mine else "clean")
                           + "".join(f"; skipped {s}" for s in skipped.get(host, ())))
        failed = bool(missing) or (fail_at != "never" and gate(findings, fail_at))
        result.update(changed=False, failed=failed, summary=summary, files=written, findings=len(findings),
                      msg=("\n".join(summary) + f"\nreports: {report_dir}"
                           + (f"\nfailing: a finding reaches {fail_at}" if failed and not missing else "")
                           + (f"\nfailing: not audited: {', '.join(missing)}" if missing else "")))
        return result
