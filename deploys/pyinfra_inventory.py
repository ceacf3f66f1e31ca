"""An inventory file for the `pyinfra` command: netmend's Ansible inventory as pyinfra groups.

    NETMEND_INVENTORY=inventory/lab .venv/bin/pyinfra deploys/pyinfra_inventory.py deploys.netmend.netmend_audit
    .venv/bin/pyinfra deploys/pyinfra_inventory.py deploys.netmend.netmend_remediate [--dry] [--limit w1]

Run from the repository root (pyinfra puts the current directory on sys.path). NETMEND_INVENTORY names the
Ansible inventory (default inventory/lab); the hosts, groups, ssh data and the roles' settings come from it
through deploys.inventory, as for `python -m deploys`. Reports and the severity gate are `python -m deploys`'s.
"""

import os

from deploys.run import inventory_groups

globals().update(inventory_groups(os.environ.get("NETMEND_INVENTORY", "inventory/lab")))
