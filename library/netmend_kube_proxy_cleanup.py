#!/usr/bin/python
"""netmend_kube_proxy_cleanup: remove the previous kube-proxy mode's leftovers when the mode changes."""
# Ansible's module layout puts DOCUMENTATION, EXAMPLES and RETURN before the imports.
# ruff: noqa: E402

DOCUMENTATION = r"""
---
module: netmend_kube_proxy_cleanup
short_description: Remove what the previous kube-proxy mode left on a node, exactly as kube-proxy --cleanup would
description:
  - kube-proxy does not remove the rules of the mode it ran in before (iptables and ipvs never clean up
    after each other), so a node that switched modes keeps stale KUBE-* chains, the kube-ipvs0 link,
    KUBE-* ipsets or the nftables table C(ip kube-proxy).
  - netmend records the mode it cleaned up for in O(state_file). When O(mode) differs from the recorded
    mode (or, with no record, from the modes the node shows), the other modes' leftovers are removed,
    limited to what C(kube-proxy --cleanup) removes (pkg/proxy/*/proxier.go, CleanupLeftovers).
  - "iptables and ipvs modes: kube-proxy's KUBE-* chains in filter, nat and mangle and the rules of the
    built-in chains that jump into them, in one atomic C(iptables-restore -w --noflush) per IP family.
    kubelet's chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-MARK-DROP, KUBE-IPTABLES-HINT) stay."
  - ipvs mode, also the kube-ipvs0 dummy link, the KUBE-* ipsets, and the ipvs virtual servers whose
    address is on kube-ipvs0 or whose port is one of kube-proxy's NodePorts (only when /proc/net/ip_vs exists).
  - nftables mode, the tables C(ip kube-proxy) and C(ip6 kube-proxy).
  - Nothing else is touched; a chain another rule still refers to, an ipset a remaining rule matches, a
    kube-ipvs0 that is not a dummy and a virtual server that is not kube-proxy's are kept and reported.
    iptables and ipvs modes share five chain names; when the new mode already runs (its own chains
    exist) they are its and are kept.
  - Works with iptables-legacy and iptables-nft (whichever C(iptables) is on the PATH) and IPv4 and IPv6.
options:
  mode:
    description: The mode kube-proxy is configured to run in.
    type: str
    choices: [iptables, ipvs, nftables]
    required: true
  state_file:
    description: Where netmend records the mode it cleaned up for (an absolute path, not a symlink).
    type: path
    default: /var/lib/netmend/kube-proxy-mode
  cleanup:
    description:
      - Remove the leftovers and record O(mode). With C(false) the module only reports what it would
        remove (as warnings and in RV(plan)) and changes nothing, the record included.
    type: bool
    default: true
  backup:
    description: Keep a copy of O(state_file) before rewriting it.
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  platform:
    platforms: linux
  check_mode:
    support: full
  diff_mode:
    description: kube-proxy's state (its chains and their jumps, ipsets, kube-ipvs0, virtual servers, nft tables)
      before and after, and the state file.
    support: full
notes:
  - Run it after kube-proxy runs in the new mode (or is stopped). A kube-proxy still running in the old
    mode writes its rules back; the next run reports them as leftovers.
author:
  - netmend maintainers (!UNKNOWN)
"""

EXAMPLES = r"""
- name: Kube-proxy | Remove the previous mode's leftovers
  netmend_kube_proxy_cleanup:
    mode: nftables

- name: Kube-proxy | Report leftovers only
  netmend_kube_proxy_cleanup:
    mode: ipvs
    cleanup: false
"""

RETURN = r"""
mode:
  description: The configured mode.
  returned: always
  type: str
  sample: nftables
recorded_mode:
  description: The mode O(state_file) held before the run (null when there was no record).
  returned: always
  type: str
  sample: iptables
previous_modes:
  description: The modes whose leftovers were (or would be) removed.
  returned: always
  type: list
  elements: str
  sample: [iptables]
evident_modes:
  description: Each mode whose own state the node showed before the run, with what showed it.
  returned: always
  type: dict
  sample: {"iptables": ["ipv4 nat chain KUBE-NODEPORTS"]}
removed:
  description: What was (or would be) removed.
  returned: always
  type: dict
  contains:
    chains:
      description: IP family to table to chains.
      type: dict
    jumps:
      description: IP family to table to the built-in chains' rules into them.
      type: dict
    ipsets:
      description: ipset names.
      type: list
    link:
      description: The kube-ipvs0 link, or null.
      type: str
    virtual_servers:
      description: ipvs virtual servers as "TCP 10.96.0.1:443 rr".
      type: list
    nft_tables:
      description: nft tables as "ip kube-proxy".
      type: list
kept:
  description: kube-proxy-looking state left in place, with the reason.
  returned: always
  type: list
  elements: dict
leftovers:
  description: State of modes other than O(mode) left alone because the record says the cleanup was done.
  returned: always
  type: dict
plan:
  description: The commands, in order, with the exact iptables-restore input.
  returned: always
  type: list
  elements: str
backend:
  description: The iptables backend the node uses (nf_tables or legacy), or null without iptables.
  returned: always
  type: str
  sample: nf_tables
backup_file:
  description: The copy of O(state_file) made before rewriting it.
  returned: when a backup was made
  type: str
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.files import write_atomic
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.iptables import IptablesSaveError, parse_version
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.kmod import PROXY_MODES
from ansible_collections.netmend.netmend.plugins.module_utils.netmend.proxymode import (
    FAMILIES,
    TOOLS,
    StateError,
    nft_delete_script,
    plan,
    read_snapshot,
    view,
)

ENV = {"LC_ALL": "C"}
LOCK_WAIT = "5"
STATE_HEADER = ("# Managed by netmend (netmend_kube_proxy_cleanup): the kube-proxy mode whose leftovers netmend\n"
                "# last cleaned up for. Delete this file to make netmend read the mode from the node again.\n")


class Cleanup:
    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.state_file = os.path.normpath(self.params["state_file"])
        self.notes = []

    def fail(self, msg, **extra):
        self.module.fail_json(msg=msg, **extra)

    def run(self, argv, data=None):
        rc, out, err = self.module.run_command(argv, data=data, binary_data=data is not None, environ_update=ENV)
        return rc, out, err

    # The record.

    def read_record(self):
        path = self.state_file
        if not os.path.isabs(path):
            self.fail(f"state_file: {path!r} is not an absolute path such as /var/lib/netmend/kube-proxy-mode")
        if os.path.islink(path):
            self.fail(f"state_file: {path} is a symlink; netmend rewrites the file it owns, point state_file "
                      "at a regular file")
        if os.path.exists(path) and not os.path.isfile(path):
            self.fail(f"state_file: {path} exists and is not a regular file")
        if not os.path.exists(path):
            return None, None
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        words = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if len(words) != 1 or words[0] not in PROXY_MODES:
            self.fail(f"state_file: {path} holds {text.strip()[:60]!r}; expected one line with one of "
                      f"{', '.join(PROXY_MODES)} (netmend writes it; delete the file to let netmend read the "
                      "mode from the node)")
        return words[0], text

    # Reading the node.

    def snapshot(self):
        try:
            snap = read_snapshot(self.run, self.module.get_bin_path)
        except (StateError, IptablesSaveError) as exc:
            self.fail(f"cannot read kube-proxy's state: {exc}")
        return snap, self.backend()

    def backend(self):
        """The iptables backend `iptables -V` names (nf_tables or legacy), or None."""
        ipt = self.module.get_bin_path("iptables")
        if not ipt:
            return None
        try:
            return parse_version(self.run([ipt, "-V"])[1])[1]
        except IptablesSaveError:
            return None

    # Acting.

    def tools_for(self, p):
        """Every binary the plan needs, found before anything changes."""
        need = {}
        if p.virtual_servers:
            need["ipvsadm"] = "to delete ipvs virtual servers (install the ipvsadm package)"
        if p.link:
            need["ip"] = "to delete the kube-ipvs0 link"
        for family in p.payloads:
            need[TOOLS[family][2]] = f"to remove the {family} chains"
        if p.ipsets:
            need["ipset"] = "to destroy kube-proxy's ipsets"
        if p.nft_tables:
            need["nft"] = "to delete the kube-proxy nft tables"
        found = {tool: self.module.get_bin_path(tool) for tool in need}
        missing = [f"{tool} is not installed; it is needed {why}" for tool, why in need.items() if not found[tool]]
        return found, missing

    def apply(self, p, tools):
        for vs in p.virtual_servers:
            self.must([tools["ipvsadm"], *vs.ipvsadm_delete()])
        if p.link:
            self.must([tools["ip"], "link", "delete", p.link])
        for family in FAMILIES:
            if family in p.payloads:
                self.must([tools[TOOLS[family][2]], "-w", LOCK_WAIT, "--noflush"], data=p.payloads[family])
        for name in p.ipsets:
            self.must([tools["ipset"], "destroy", name])
        if p.nft_tables:
            self.must([tools["nft"], "-f", "-"], data=nft_delete_script(p.nft_tables))

    def must(self, argv, data=None):
        rc, out, err = self.run(argv, data=data)
        if rc != 0:
            self.fail(f"{' '.join(argv)} failed (rc={rc}): {(err or out).strip()}; the steps before it were done",
                      input=data)

    def write_record(self, mode, current_text):
        result = {}
        if self.params["backup"] and current_text is not None:
            result["backup_file"] = self.module.backup_local(self.state_file)
        try:
            write_atomic(self.module, self.state_file, f"{STATE_HEADER}{mode}\n", 0o644)
        except Exception as exc:  # atomic_move raises a plain Exception
            self.fail(f"cannot write {self.state_file}: {exc}")
        return result

    def main(self):
        mode = self.params["mode"]
        recorded, record_text = self.read_record()
        snap, backend = self.snapshot()
        try:
            p = plan(snap, mode, recorded)
        except (ValueError, IptablesSaveError) as exc:
            self.fail(f"cannot plan the cleanup: {exc}")
        cleanup = self.params["cleanup"]
        new_record = f"{STATE_HEADER}{mode}\n"
        record_changes = cleanup and recorded != mode
        changed = bool(cleanup and (p.removes or record_changes))
        before = view(snap)
        after = view(snap, p) if cleanup else before
        result = {
            "changed": changed, "mode": mode, "recorded_mode": recorded, "previous_modes": p.previous,
            "evident_modes": p.evident, "leftovers": p.leftovers, "backend": backend,
            "removed": {"chains": p.chains, "jumps": p.jumps, "ipsets": p.ipsets, "link": p.link,
                        "virtual_servers": [vs.text() for vs in p.virtual_servers],
                        "nft_tables": [f"{fam} {name}" for fam, name in p.nft_tables]},
            "kept": [{"what": what, "why": why} for what, why in p.kept],
            "plan": p.steps(),
            "diff": [{"before_header": "kube-proxy state (before)", "after_header": "kube-proxy state (after)",
                      "before": before, "after": after},
                     {"before_header": self.state_file if record_text is not None else f"{self.state_file} (absent)",
                      "after_header": self.state_file, "before": record_text or "",
                      "after": new_record if record_changes else (record_text or "")}],
        }
        # What could not be read matters only when there is something to clean up.
        for note in (snap.notes if p.previous or recorded is None else []) + p.notes:
            self.module.warn(note)
        for what, why in p.kept:
            self.module.warn(f"kept {what}: {why}")
        for other, reasons in p.leftovers.items():
            self.module.warn(f"{other} mode leftovers remain ({', '.join(reasons[:3])}) although {self.state_file} "
                             f"records that the cleanup for {mode} was done: a kube-proxy in {other} mode may still "
                             f"run. Stop it, delete {self.state_file} and run again to remove them.")
        if not cleanup:
            if p.removes:
                steps = "; ".join(step.splitlines()[0] for step in p.steps())
                self.module.warn(f"cleanup is off: the plan (not run) would remove the leftovers of "
                                 f"{', '.join(p.previous)} mode: {steps}")
            return result
        tools, missing = self.tools_for(p)
        if missing and self.module.check_mode:
            for problem in missing:
                self.module.warn(f"the real run would fail: {problem}")
        elif missing:
            self.fail("; ".join(missing) + ". Nothing was changed.",
                      **{k: v for k, v in result.items() if k not in ("changed", "diff")})
        if changed and not self.module.check_mode:
            self.apply(p, tools)
            if record_changes:
                result.update(self.write_record(mode, record_text))
        return result


def main():
    module = AnsibleModule(
        argument_spec={
            "mode": {"type": "str", "choices": list(PROXY_MODES), "required": True},
            "state_file": {"type": "path", "default": "/var/lib/netmend/kube-proxy-mode"},
            "cleanup": {"type": "bool", "default": True},
            "backup": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    module.exit_json(**Cleanup(module).main())


if __name__ == "__main__":
    main()
