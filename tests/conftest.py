"""Shared test setup: the repository root and module_utils on sys.path, the lab fixture."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "module_utils"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from lab import topology  # noqa: E402
from tests.labutil import lab_cli  # noqa: E402


@pytest.fixture(scope="session")
def lab():
    """The default 3-node lab, up for the session and torn down at its end."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    lab_cli("up")
    yield topology.load_state()
    lab_cli("down")
