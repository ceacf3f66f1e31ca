"""molecule's scenarios on the lab: default (site.yml, idempotence, testinfra and the probes) and remediation
(the fault matrix), each from create to destroy."""

import os
import re
import subprocess

import pytest

from lab import topology
from lab.faults import FAULTS
from tests.labutil import ROOT, lab_cli

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root")


def molecule_test(scenario, steps, timeout):
    """`molecule test -s SCENARIO` on the lab; asserts every step ran and destroy took the lab down, and
    returns how many verifier tests passed. A lab that was up before is brought up again."""
    was_up = topology.load_state() is not None
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}", "PY_COLORS": "0",
           "ANSIBLE_FORCE_COLOR": "0", "NO_COLOR": "1"}
    try:
        proc = subprocess.run(["molecule", "test", "-s", scenario], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-6000:]
        for step in steps:
            assert re.search(rf"{step}\S*: Executed: Successful", out), f"{step} did not run:\n{out[-3000:]}"
        match = re.search(r"(\d+) passed", out)
        assert match, out[-3000:]
        assert topology.load_state() is None, "destroy tears the lab down"
        return int(match.group(1))
    finally:
        if was_up:
            lab_cli("up")


def test_molecule_default_scenario():
    passed = molecule_test("default", ("create", "converge", "idempotence", "verify", "destroy"), timeout=900)
    assert passed >= 10


def test_molecule_remediation_scenario_runs_the_fault_matrix():
    """create, prepare (site.yml and the operator's canaries), converge (remediate.yml on a healthy lab:
    nothing to fix), idempotence, verify (every fault alone and in combinations), destroy."""
    steps = ("create", "prepare", "converge", "idempotence", "verify", "destroy")
    # The matrix: every fault alone with both front ends, and 2 combinations.
    assert molecule_test("remediation", steps, timeout=3000) == len(FAULTS) + 2
