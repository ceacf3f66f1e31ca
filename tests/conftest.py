"""Shared test setup: the repository root and module_utils on sys.path, the lab fixture, and which unit
tests the core's Python 3.9 run leaves out.

The core (module_utils/netmend) runs on the nodes' own Python, 3.9 and later, so ./dev test runs tests/unit
under a real Python 3.9 too (.venv39: pytest and PyYAML, requirements-py39.txt). Nothing at the top of this
file may need the controller's packages (testinfra, ansible) or Python 3.10+.
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "module_utils"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

# The unit test files that cannot run under 3.9: they need the controller's packages (ansible,
# kubernetes_validate), the lab's code or Python 3.11; not collected under Python < 3.11 (the controller's).
# Every other file in tests/unit, a new one included, runs under 3.9 as well and may import only the
# standard library, pytest, yaml, netmend and lab.inventory (the lab inventory is the core tests' fixture):
# tests/unit/test_core_is_stdlib.py checks that, and that each entry here names a file.
CONTROLLER_ONLY = {
    "unit/test_agent.py": "lab/agent.py, the lab's probe agent, runs on the lab nodes' Python 3.11",
    "unit/test_coredns.py": "validates rendered manifests with kubernetes_validate",
    "unit/test_example_inventory.py": "runs ansible-playbook",
    "unit/test_faults_catalog.py": "tests the lab's fault catalog (lab.faults)",
    "unit/test_flannel.py": "kubernetes_validate and the lab's dataplane (lab.dataplane)",
    "unit/test_kubeproxy.py": "the lab's kube-proxy stand-in (lab.kubeproxy)",
    "unit/test_proxyconfig.py": "validates rendered manifests with kubernetes_validate",
    "unit/test_prometheus_rules.py": "runs promtool, the monitoring side (contrib/prometheus, contrib/grafana)",
    "unit/test_pyinfra_node.py": "the pyinfra front end (deploys/) needs pyinfra and Ansible",
    "unit/test_pyinfra_operations.py": "the pyinfra front end (deploys/) needs pyinfra and Ansible",
    "unit/test_report_plugin.py": "runs ansible-playbook with the controller's report plugin",
}
CONTROLLER_PYTHON = (3, 11)

if sys.version_info < CONTROLLER_PYTHON:
    collect_ignore = ["lab", "modules", *CONTROLLER_ONLY]


def pytest_terminal_summary(terminalreporter):
    if sys.version_info < CONTROLLER_PYTHON:
        terminalreporter.write_line(f"Python {sys.version.split()[0]}: not collected (controller only, "
                                    f"tests/conftest.py): {', '.join(sorted(CONTROLLER_ONLY))}")


@pytest.fixture(scope="session")
def lab():
    """The default 3-node lab, up for the session and torn down at its end."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    from lab import topology  # noqa: PLC0415 - not at the top: the 3.9 run has no testinfra
    from tests.labutil import lab_cli  # noqa: PLC0415
    lab_cli("up")
    yield topology.load_state()
    lab_cli("down")
