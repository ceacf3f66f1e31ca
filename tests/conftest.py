"""Shared test setup: the repository root and module_utils on sys.path, the lab fixture."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "module_utils"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from lab import topology  # noqa: E402

LAB_INVENTORY = ROOT / "inventory" / "lab"
SSH_CONFIG = topology.RUN / "ssh" / "ssh_config"


def lab_cli(*args, check=True, timeout=300):
    """Run `python -m lab ARGS` as a user would."""
    proc = subprocess.run([sys.executable, "-m", "lab", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"lab {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def lab():
    """The default 3-node lab, up for the session and torn down at its end."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    lab_cli("up")
    yield topology.load_state()
    lab_cli("down")
