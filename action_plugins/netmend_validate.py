"""Action plugin: validate the whole inventory on the controller before any host changes.

Runs netmend.cluster.build_cluster over the inventory's k8s_cluster hosts and the cluster variables,
so overlapping pod, service and node CIDRs, an MTU that does not fit the underlay, an unknown flannel
backend or a bad service fail the play with every bad variable named, before a single node is touched.

With `truth: true` it also returns what every node is audited against (netmend.cluster.truth), from the
inventory and the flannel `leases` read from etcd: roles/health hands each node its part.
"""

import sys
from pathlib import Path

from ansible.plugins.action import ActionBase

_MODULE_UTILS = str(Path(__file__).resolve().parents[1] / "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.insert(0, _MODULE_UTILS)

from netmend.cluster import NODE_GROUPS, SpecError, build_cluster, truth  # noqa: E402

# The variables the cluster model reads (the rest of the inventory is the roles' business).
PREFIXES = ("netmend_", "flannel_", "lab_")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        groups, hostvars = task_vars.get("groups", {}), task_vars.get("hostvars", {})
        hosts = []
        for group in NODE_GROUPS:
            for name in groups.get(group, []):
                hv = hostvars[name]
                hosts.append((name, group, {"ansible_host": self._templar.template(hv.get("ansible_host", name))}))
        variables = {key: self._templar.template(value) for key, value in task_vars.items()
                     if key.startswith(PREFIXES)}
        try:
            cluster = build_cluster(hosts, variables)
        except SpecError as exc:
            result.update(failed=True, problems=[{"variable": f, "problem": m} for f, m in exc.problems],
                          msg="The inventory is not valid; nothing was changed:\n"
                              + "\n".join(f"  {f}: {m}" for f, m in exc.problems))
            return result
        result.update(changed=False, msg=f"{len(cluster.nodes)} nodes, {len(cluster.services)} services: valid",
                      nodes={n.name: {"address": n.address, "subnet": n.subnet, "role": n.role}
                             for n in cluster.nodes})
        args = self._task.args
        if args.get("truth"):
            result["truth"] = truth(cluster, args.get("leases") or [], args.get("pod_resolv_path") or "",
                                    args.get("hostnet_resolv_path") or "")
        return result
