#!/usr/bin/python
"""Documentation only: netmend_validate is an action plugin (action_plugins/netmend_validate.py) that runs on
the controller; this file gives it the module documentation ansible-doc and ansible-test read."""

DOCUMENTATION = r"""
---
module: netmend_validate
short_description: Validate the whole inventory on the controller before any node changes
description:
  - Builds netmend's cluster model (netmend.cluster.build_cluster) from the hosts of the C(control_plane)
    and C(workers) groups (their C(ansible_host)) and every variable whose name starts with C(netmend_),
    C(flannel_) or C(lab_).
  - Overlapping pod, service and node CIDRs, an MTU that does not fit the underlay, an unknown flannel
    backend or a bad service fail the task with every bad variable named, before a single node is touched.
  - With O(truth=true) it also returns what every node is audited against (netmend.cluster.truth),
    from the inventory and the flannel leases read from etcd; the health role hands each node its part.
  - Runs on the controller only and never connects to a host; run it with C(run_once).
options:
  truth:
    description: Also return RV(truth), what every node is audited against.
    type: bool
    default: false
  leases:
    description:
      - flannel's subnet leases as read from etcd (the C(leases) that
        M(netmend.netmend.netmend_flannel_leases) returns), each a dict with C(subnet), C(public_ip) and
        C(vtep_mac). Used only with O(truth=true).
      - A lease is matched to a node by its public IP, or by the subnet the cluster model gives the node;
        a node without one gets the model's subnet and its inventory address.
    type: list
    elements: dict
    default: []
  pod_resolv_path:
    description:
      - Where a pod's resolv.conf is on its node, with C({pod}) for the pod's name; empty means pods'
        resolv.conf files are not checked. Used only with O(truth=true).
    type: str
    default: ""
  hostnet_resolv_path:
    description:
      - The same as O(pod_resolv_path) for hostNetwork pods. Used only with O(truth=true).
    type: str
    default: ""
attributes:
  action:
    description: Runs on the controller as an action plugin.
    support: full
  check_mode:
    description: Changes nothing; runs the same way in check mode.
    support: full
  diff_mode:
    description: Returns no diff.
    support: none
notes:
  - The inventory is read from the task's variables (C(groups), C(hostvars)), not from options.
seealso:
  - module: netmend.netmend.netmend_node
author: netmend maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Validate | The whole inventory, before any host changes
  netmend_validate:
  run_once: true

- name: Health | What every node is audited against
  netmend_validate:
    truth: true
    leases: "{{ _health_leases.leases | default([]) }}"
    pod_resolv_path: "{{ health_pod_resolv_path }}"
    hostnet_resolv_path: "{{ health_hostnet_resolv_path }}"
  run_once: true
  register: _health_cluster
"""

RETURN = r"""
nodes:
  description: Every node of the cluster model with its address, pod subnet and role.
  type: dict
  returned: success
  sample: {"w1": {"address": "10.77.0.11", "subnet": "10.244.1.0/24", "role": "workers"}}
truth:
  description:
    - What every node is audited against (netmend.cluster.truth)
      with the keys C(leases), C(services), C(pods), C(flannel) and C(addresses).
  type: dict
  returned: success and O(truth=true)
problems:
  description: Every bad variable, each with C(variable) and C(problem).
  type: list
  elements: dict
  returned: failure
  sample: [{"variable": "netmend_pod_cidr", "problem": "10.96.0.0/16 overlaps netmend_service_cidr (10.96.0.0/12);
      the pod, service, node and lab networks must be disjoint"}]
"""
