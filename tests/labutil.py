"""Helpers for the lab tests: paths and the lab command as a user runs it."""

import subprocess
import sys
from pathlib import Path

from lab import topology

ROOT = Path(__file__).resolve().parent.parent
LAB_INVENTORY = ROOT / "inventory" / "lab"
SSH_CONFIG = topology.RUN / "ssh" / "ssh_config"


def lab_cli(*args, check=True, timeout=300):
    """Run `python -m lab ARGS` as a user would."""
    proc = subprocess.run([sys.executable, "-m", "lab", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"lab {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
