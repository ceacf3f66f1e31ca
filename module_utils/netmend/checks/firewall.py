"""firewalld: running with exactly what the node needs open (or stopped, when the operator chose that).

Field guide failure mode 3. The firewall role provisions the same zones through netmend_firewalld.
"""

from .. import firewalld
from ..findings import Spec
from ..plan import Action
from .base import Check


def run(a):
    fw, st = a.want.get("firewall") or {}, a.facts.get("firewalld")
    mode = fw.get("mode", "unmanaged")
    if mode == "unmanaged":
        return
    if st is None:
        a.skip("firewall", "firewalld is not installed")
        return
    if mode == "disabled":
        if st.get("running"):
            a.find("FIREWALLD-RUNNING", "firewalld is running although firewall_mode is disabled",
                   "firewalld stopped", "firewalld running", "stop firewalld",
                   actions=[Action("FIREWALLD-RUNNING", "command", "firewalld", [["@service", "firewalld", "stop"]])])
        return
    if not st.get("running"):
        return  # a stopped firewalld blocks nothing
    zone = fw.get("zone") or st.get("default_zone") or "public"
    want_z = firewalld.check_want({**fw, "zone": zone})
    absent = [z for z in want_z if z not in st.get("zones", {})]
    if absent:
        a.skip("firewall", f"firewalld has no zone {', '.join(absent)}")
        return
    lacking = firewalld.missing(want_z, st["zones"])
    changes = [c for c in firewalld.plan(want_z, st["zones"], {})[0] if c[1] != "remove"]
    if lacking:
        a.find("FIREWALLD-BLOCKING", f"firewalld is running and zone {zone} lacks what the node needs",
               "the node's ports open, cni0/flannel.1 and the pod and service CIDRs trusted, masquerade on",
               f"{len(lacking)} missing: " + ", ".join(lacking[:8]) + (" ..." if len(lacking) > 8 else ""),  # noqa: PLR2004
               "add exactly what is missing, runtime and permanent (no reload)", lacking,
               [Action("FIREWALLD-BLOCKING", "firewalld", "firewalld",
                       {"want": want_z, "state_file": fw.get("state_file"), "missing": lacking},
                       "".join(firewalld.render(st["zones"][z]) for z in want_z),
                       "".join(firewalld.render(firewalld.apply_changes(st["zones"][z], changes)) for z in want_z))])


CHECKS = (Check("firewall", ("firewalld",), (
    Spec("FIREWALLD-BLOCKING", "error", "firewall"),
    Spec("FIREWALLD-RUNNING", "error", "firewall")), run),)
