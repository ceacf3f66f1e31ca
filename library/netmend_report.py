#!/usr/bin/python
"""Documentation only: netmend_report is an action plugin (action_plugins/netmend_report.py) that runs on
the controller; this file gives it the module documentation ansible-doc and ansible-test read."""

DOCUMENTATION = r"""
---
module: netmend_report
short_description: Write the audit's reports on the controller from every node's netmend_node result
description:
  - Writes C(report.json), C(junit.xml) (one test case per check per node), C(netmend.prom) (a Prometheus
    textfile for node_exporter) and C(report.md) (a Markdown summary) into O(dir), each through a
    temporary file.
  - Prints one line per node and fails the task when a finding reaches O(fail_at), so CI can gate on the
    audit.
  - A host of O(hosts) without a result in O(results) (unreachable, or its audit failed) makes the run
    incomplete (C(netmend_last_run_success 0)) and fails the task whatever O(fail_at) is; an audit that
    did not look is not a clean one.
  - Runs on the controller only and never connects to a host; run it with C(run_once).
options:
  hosts:
    description: The hosts that were to be audited, usually C(ansible_play_hosts_all).
    type: list
    elements: str
    default: []
  results:
    description:
      - The M(netmend.netmend.netmend_node) result of each host, keyed by host name. A host's result needs C(checks) and
        C(findings), and may have C(skipped_checks).
    type: dict
    default: {}
  dir:
    description: The report directory, created if need be.
    type: path
    required: true
  fail_at:
    description: The lowest finding severity that fails the task; C(never) reports without failing.
    type: str
    choices: [info, warning, error, critical, never]
    default: error
  started:
    description: When the audit started (ISO 8601), written into the reports.
    type: str
    default: ""
attributes:
  action:
    description: Runs on the controller as an action plugin.
    support: full
  check_mode:
    description: Writes the reports in check mode too; they are the audit's output.
    support: full
  diff_mode:
    description: Returns no diff.
    support: none
seealso:
  - module: netmend.netmend.netmend_node
author: netmend maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Audit | Reports and the gate
  netmend_report:
    hosts: "{{ ansible_play_hosts_all }}"
    results: "{{ dict(ansible_play_hosts_all | zip(ansible_play_hosts_all | map('extract', hostvars)
              | map(attribute='health_result', default={}))) }}"
    dir: "{{ playbook_dir }}/../reports/audit"
    fail_at: error
  run_once: true
"""

RETURN = r"""
summary:
  description: One line per host, its number of checks and its findings, or C(NOT AUDITED).
  type: list
  elements: str
  returned: when the reports were written (also when the gate fails)
  sample: ["w1: 31 checks, FORWARD-POLICY-DROP (error)"]
files:
  description: The report files written.
  type: list
  elements: path
  returned: when the reports were written (also when the gate fails)
findings:
  description: The number of findings over all hosts.
  type: int
  returned: when the reports were written (also when the gate fails)
"""
