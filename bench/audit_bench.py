"""Audit and remediation benchmark: the numbers of the audit issue, measured on the 3-node lab.

    python bench/audit_bench.py [--repeat 3]

Targets: `playbooks/audit.yml` on the 3-node lab under 10 s wall; remediation of a node with one
fault under 15 s; one module call per host for the whole audit (counted from Ansible's JSON
callback: every task result on a host whose action runs there, so controller-side actions such as
set_fact, include_role, argument validation and netmend_report do not count). The lab is brought up
and provisioned with site.yml once. Results go to bench/results/audit.json and a table on stdout.
These are measurements, not tests: the exit code is 0 whatever the times are, unless a run fails.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PLAYBOOK = str(ROOT / ".venv" / "bin" / "ansible-playbook")
# Actions that run on the controller: they cost no round trip to the node.
CONTROLLER = {"ansible.builtin.set_fact", "set_fact", "ansible.builtin.include_role", "include_role",
              "ansible.builtin.validate_argument_spec", "validate_argument_spec", "ansible.builtin.assert", "assert",
              "ansible.builtin.debug", "debug", "netmend_validate", "netmend_report"}
FAULT = ("bridge-nf-off", "w1")


def run(argv, env=None):
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
                          env={**os.environ, **(env or {})})
    return time.monotonic() - started, proc


def must(argv, env=None):
    elapsed, proc = run(argv, env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return elapsed, proc


def remote_calls(json_stdout):
    """{host: module calls that ran on it} from the JSON callback's output."""
    doc = json.loads(json_stdout[json_stdout.index("{"):])
    calls = {}
    for play in doc["plays"]:
        for task in play["tasks"]:
            for host, res in task["hosts"].items():
                if res.get("skipped") or res.get("action") in CONTROLLER:
                    continue
                delegated = res.get("_ansible_delegated_vars") or {}
                target = delegated.get("ansible_delegated_host") or delegated.get("ansible_host") or host
                calls[target] = calls.get(target, 0) + 1
    return calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    must([sys.executable, "-m", "lab", "up"])
    must([PLAYBOOK, "site.yml"])
    audits, single, single_limited, calls = [], [], [], None
    with tempfile.TemporaryDirectory() as reports:
        for _ in range(args.repeat):
            elapsed, proc = must([PLAYBOOK, "playbooks/audit.yml", "-e", f"netmend_report_dir={reports}"])
            audits.append(elapsed)
        _, proc = must([PLAYBOOK, "playbooks/audit.yml", "-e", f"netmend_report_dir={reports}"],
                       env={"ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json"})
        calls = remote_calls(proc.stdout)
    for limited in (False, True):
        for _ in range(args.repeat):
            must([sys.executable, "-m", "lab", "inject", FAULT[0], "--node", FAULT[1]])
            elapsed, _proc = must([PLAYBOOK, "playbooks/remediate.yml", *(["--limit", FAULT[1]] if limited else [])])
            (single_limited if limited else single).append(elapsed)
            must([sys.executable, "-m", "lab", "recover"])
    must([sys.executable, "-m", "lab", "down"])
    rows = [("audit.yml, 3 nodes (median)", statistics.median(audits), 10),
            ("remediate.yml --limit node, one fault", statistics.median(single_limited), 15),
            ("remediate.yml, 3 nodes serial 1, one fault", statistics.median(single), 15)]
    print(f"{'measure':44} {'value':>8}  {'target':>8}")
    for name, value, target in rows:
        print(f"{name:44} {value:>6.2f} s < {target:>5} s {'ok' if value < target else 'OVER'}")
    print(f"module calls per host during the audit: {calls} (the extra one on the first control-plane "
          "node reads flannel's leases from etcd, once for the cluster)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "audit.json").write_text(json.dumps(
        {"audit_s": audits, "remediate_single_fault_limit_s": single_limited,
         "remediate_single_fault_all_nodes_s": single, "module_calls_per_host": calls}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
