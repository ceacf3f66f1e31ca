"""The netmend lab: a multi-node Kubernetes node network built from Linux namespaces on one machine."""

import sys
from pathlib import Path

# The lab reuses netmend's pure core (module_utils/netmend) without Ansible.
_MODULE_UTILS = str(Path(__file__).resolve().parent.parent / "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.insert(0, _MODULE_UTILS)
