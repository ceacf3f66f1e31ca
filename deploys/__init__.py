"""netmend's pyinfra front end: the audit and the remediation as pyinfra deploys over the pure core.

`python -m deploys audit|remediate [--dry] [--inventory DIR] [--limit HOSTS] [--report-dir DIR]` reads the
Ansible inventory (inventory/lab, inventory/example, or any) through `deploys.inventory`, gathers each node's
facts with pyinfra (`deploys.node`), judges them with netmend.checks and fixes them with the plan's own
commands (`deploys.operations`). docs/pyinfra.md describes it.

The package is `deploys`, not `pyinfra`, so it never shadows the pyinfra package it imports.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The core (module_utils/netmend) is imported as `netmend`, as the action plugins and the tests do.
_MODULE_UTILS = str(ROOT / "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.insert(0, _MODULE_UTILS)


def import_ansible_quietly():
    """Under gevent (`python -m deploys`, the pyinfra command), importing Ansible probes getaddrinfo with a value it
    rejects, on purpose; gevent's threaded resolver would print that rejection as an error. Ansible is imported
    once with gevent's blocking resolver, whose error Ansible catches as it expects."""
    try:
        from gevent import get_hub, monkey  # noqa: PLC0415
        from gevent.resolver.blocking import Resolver  # noqa: PLC0415
    except ImportError:
        return
    if not monkey.is_module_patched("socket"):
        return
    hub = get_hub()
    resolver, hub.resolver = hub.resolver, Resolver(hub)
    try:
        import ansible.inventory.manager  # noqa: F401, PLC0415
    finally:
        hub.resolver = resolver


import_ansible_quietly()
