"""Put the repository root (for `lab`) and module_utils (for `netmend`) on sys.path."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT, ROOT / "module_utils"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
