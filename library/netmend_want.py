#!/usr/bin/python
"""Documentation only: netmend_want is an action plugin (action_plugins/netmend_want.py) that runs on the
controller; this file gives it the module documentation ansible-doc and ansible-test read."""

DOCUMENTATION = r"""
---
module: netmend_want
short_description: Build the desired state one node is audited against, on the controller
description:
  - Builds the node's want (netmend.want.build) from its groups, the roles' public settings (their defaults
    and the inventory, as Ansible templates them for this host) and the cluster truth, the same function
    every front end uses. The result is the C(want) that M(netmend.netmend.netmend_node) takes.
  - Fails naming every bad or missing variable before anything is checked or changed.
  - Runs on the controller only and never connects to a host.
options:
  truth:
    description: The cluster truth, the C(truth) that M(netmend.netmend.netmend_validate) returns with
      C(truth=true).
    type: dict
    required: true
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
  - The settings are read from the task's variables (the roles' public variables), not from options.
seealso:
  - module: netmend.netmend.netmend_validate
  - module: netmend.netmend.netmend_node
author: netmend maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Health | What this node is audited against
  netmend_want:
    truth: "{{ _health_cluster.truth }}"
  register: _health_want_result
"""

RETURN = r"""
want:
  description: The node's desired state, as M(netmend.netmend.netmend_node) takes it.
  type: dict
  returned: success
problems:
  description: Every bad variable, each with C(variable) and C(problem).
  type: list
  elements: dict
  returned: failure
"""
