"""molecule's default scenario on the lab: create, converge site.yml, idempotence, verify, destroy."""

import os
import re
import subprocess

import pytest

from lab import topology
from lab.faults import FAULTS
from tests.labutil import ROOT, lab_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")


def test_molecule_default_scenario():
    was_up = topology.load_state() is not None
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", "PY_COLORS": "0",
           "ANSIBLE_FORCE_COLOR": "0", "NO_COLOR": "1"}
    try:
        proc = subprocess.run(["molecule", "test"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=900, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-5000:]
        for step in ("create", "converge", "idempotence", "verify", "destroy"):
            assert re.search(rf"{step}\S*: Executed: Successful", out), f"{step} did not run:\n{out[-3000:]}"
        match = re.search(r"(\d+) passed", out)
        assert match and int(match.group(1)) >= 10, out[-3000:]
        assert topology.load_state() is None, "destroy tears the lab down"
    finally:
        if was_up:
            lab_cli("up")


def test_molecule_remediation_scenario_runs_the_fault_matrix():
    """create, prepare (site.yml and the operator's canaries), converge (remediate.yml on a healthy lab:
    nothing to fix), idempotence, verify (every fault alone and in combinations), destroy."""
    was_up = topology.load_state() is not None
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", "PY_COLORS": "0",
           "ANSIBLE_FORCE_COLOR": "0", "NO_COLOR": "1"}
    try:
        proc = subprocess.run(["molecule", "test", "-s", "remediation"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=2400, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-6000:]
        for step in ("create", "prepare", "converge", "idempotence", "verify", "destroy"):
            assert re.search(rf"{step}\S*: Executed: Successful", out), f"{step} did not run:\n{out[-3000:]}"
        match = re.search(r"(\d+) passed", out)
        assert match and int(match.group(1)) == len(FAULTS) + 2, out[-3000:]  # every fault alone, 2 combinations
        assert topology.load_state() is None, "destroy tears the lab down"
    finally:
        if was_up:
            lab_cli("up")
