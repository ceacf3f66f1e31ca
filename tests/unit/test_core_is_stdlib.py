"""The core in module_utils/netmend runs on nodes that have only Python: stdlib imports, Python 3.9 syntax."""

import glob
import subprocess
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "module_utils"
MODULES = sorted(p.stem for p in (CORE / "netmend").glob("*.py") if p.stem != "__init__")


def _import_all(python):
    code = f"import sys; sys.path.insert(0, {str(CORE)!r})\n" + "".join(f"import netmend.{m}\n" for m in MODULES)
    # -S: no site-packages, so anything beyond the standard library fails to import.
    return subprocess.run([python, "-S", "-c", code], capture_output=True, text=True, timeout=60, check=False)


def test_every_core_module_imports_with_the_standard_library_only():
    assert len(MODULES) >= 10
    proc = _import_all("/usr/bin/python3")
    assert proc.returncode == 0, proc.stderr


# Debian 11 and RHEL 9 nodes have Python 3.9. A real 3.9 interpreter, where this machine has one.
PY39 = sorted(glob.glob("/usr/bin/python3.9") + glob.glob("/root/.pyenv/versions/3.9.*/bin/python3.9"))


@pytest.mark.skipif(not PY39, reason="no Python 3.9 interpreter here")
def test_every_core_module_imports_on_python_3_9():
    proc = _import_all(PY39[0])
    assert proc.returncode == 0, proc.stderr
