"""The Ansible inventory (inventory/lab, inventory/example, or any), read for front ends other than Ansible.

Not a second inventory: Ansible's own inventory and variable code reads the directory, the roles'
defaults (roles/<role>/defaults/main.yml, what site.yml provisions with) sit under the inventory's
variables as they do in a play, and Ansible's templar resolves them. The result is what netmend.want.build
needs for one host, so the pyinfra deploy audits against exactly the want the health role builds.
"""

import shlex
from pathlib import Path

from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template
from ansible.vars.manager import VariableManager

ROOT = Path(__file__).resolve().parents[1]
# The roles whose public settings the audit reads (roles/health loads the same ones).
ROLES = ("kernel", "firewall", "forward", "flannel", "dns", "health")
# The variables Ansible's ssh connection reads that pyinfra's ssh connector has a counterpart for.
CONNECTION_VARS = ("ansible_host", "ansible_port", "ansible_user", "ansible_ssh_private_key_file",
                   "ansible_ssh_common_args", "ansible_ssh_args", "ansible_ssh_extra_args")


class Inventory:
    def __init__(self, source, roles_dir=ROOT / "roles"):
        self.loader = DataLoader()
        self.inventory = InventoryManager(loader=self.loader, sources=[str(source)])
        self.variables = VariableManager(loader=self.loader, inventory=self.inventory)
        self.defaults = {}
        for role in ROLES:
            path = Path(roles_dir) / role / "defaults" / "main.yml"
            self.defaults.update(_trusted(self.loader.load_from_file(str(path)) or {}))

    def groups(self):
        return {name: [h.name for h in group.get_hosts()] for name, group in self.inventory.groups.items()}

    def hosts(self, group="all"):
        return [h.name for h in self.inventory.get_hosts(group)]

    def host_vars(self, host):
        """Every variable of `host` as a play sees it (role defaults under the inventory), templated."""
        hv = self.variables.get_vars(host=self.inventory.get_host(host))
        merged = {**self.defaults, **hv, "groups": self.groups(), "inventory_hostname": host}
        templar = Templar(loader=self.loader, variables=merged)
        return templar, merged

    def settings(self, host, names):
        """{name: templated value} of the variables `names` that exist for `host`."""
        templar, merged = self.host_vars(host)
        return {name: templar.template(merged[name]) for name in names if name in merged}

    def prefixed(self, host, prefixes):
        """{name: templated value} of every variable of `host` whose name starts with one of `prefixes`
        (what netmend_validate hands netmend.cluster.build_cluster)."""
        templar, merged = self.host_vars(host)
        return {name: templar.template(value) for name, value in merged.items() if name.startswith(tuple(prefixes))}

    def address(self, host):
        """The address Ansible connects to: ansible_host, templated, or the host's name."""
        templar, merged = self.host_vars(host)
        return str(templar.template(merged.get("ansible_host", host)))

    def connection(self, host):
        """pyinfra's ssh connector data for `host`, from the variables Ansible's ssh connection reads:
        ansible_host, ansible_port, ansible_user, ansible_ssh_private_key_file and an ssh_config given as
        `-F PATH` in ansible_ssh_common_args / ansible_ssh_args / ansible_ssh_extra_args. Host keys are
        checked strictly, as Ansible does with host_key_checking (netmend's ansible.cfg)."""
        templar, merged = self.host_vars(host)
        value = {name: templar.template(merged[name]) for name in CONNECTION_VARS if merged.get(name)}
        data = {"ssh_hostname": str(value.get("ansible_host", host)), "ssh_strict_host_key_checking": "yes"}
        for name, key in (("ansible_port", "ssh_port"), ("ansible_user", "ssh_user"),
                          ("ansible_ssh_private_key_file", "ssh_key")):
            if name in value:
                data[key] = int(value[name]) if key == "ssh_port" else str(value[name])
        for name in ("ansible_ssh_common_args", "ansible_ssh_args", "ansible_ssh_extra_args"):
            words = shlex.split(str(value.get(name, "")))
            for i, word in enumerate(words):
                if word == "-F" and i + 1 < len(words):
                    data["ssh_config_file"] = words[i + 1]
                elif word.startswith("-F") and len(word) > 2:  # noqa: PLR2004 - "-F" and a path
                    data["ssh_config_file"] = word[2:]
        return data


def _trusted(value):
    """The roles' defaults are the project's own files: their templates are trusted, as in a play."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {k: _trusted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trusted(v) for v in value]
    return value
