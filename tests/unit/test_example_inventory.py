"""inventory/example, the documented real-cluster inventory, passes site.yml's validation as shipped."""

import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_example_inventory_validates_without_touching_a_node():
    proc = subprocess.run([str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", "inventory/example", "site.yml",
                           "--tags", "validate", "-v"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert "6 nodes, 0 services: valid" in proc.stdout
    assert "Kernel | " not in proc.stdout and "Firewall | Open" not in proc.stdout, "no role task ran"
    assert "k8s-worker-3               : ok=" in proc.stdout


def test_example_and_lab_inventories_set_the_same_cluster_variables():
    """Both describe a cluster with the same variable names: the lab is not a special case."""
    def names(inventory):
        return set(yaml.safe_load((ROOT / "inventory" / inventory / "group_vars/all/cluster.yml").read_text()))
    missing = names("lab") - names("example") - {"netmend_services"}
    assert not missing, f"set in the lab but not documented in inventory/example: {sorted(missing)}"
