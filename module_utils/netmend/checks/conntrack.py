"""conntrack: no UDP flow to the cluster DNS still goes to an endpoint that is gone.

Field guide failure mode 10.
"""

from ..findings import Spec
from ..plan import Action
from .base import Check, lines


def run(a):
    flows = a.facts["conntrack"]
    dns = [s for s in a.want.get("services") or []
           if s["protocol"] == "UDP" and s["cluster_ip"] == a.want["cluster_dns"] and s.get("endpoints")]
    for svc in dns:
        stale = [f for f in flows if f.protocol == "udp" and f.original.dst == svc["cluster_ip"]
                 and f.original.dport == svc["port"] and f"{f.reply.src}:{f.reply.sport}" not in svc["endpoints"]]
        if not stale:
            continue
        argvs = [["conntrack", "-D", "-p", "udp", "--orig-src", f.original.src, "--orig-dst", f.original.dst,
                  "--orig-port-src", str(f.original.sport), "--orig-port-dst", str(f.original.dport),
                  "--reply-src", f.reply.src] for f in stale]
        evidence = [f"udp src={f.original.src}:{f.original.sport} dst={f.original.dst}:{f.original.dport} "
                    f"reply src={f.reply.src}:{f.reply.sport}" + (" UNREPLIED" if f.unreplied else "") for f in stale]
        entries = "entry still sends" if len(stale) == 1 else "entries still send"
        a.find("CONNTRACK-STALE-DNS", f"{len(stale)} UDP conntrack {entries} "
               f"DNS for {svc['cluster_ip']} to an endpoint that is gone",
               "replies from " + ", ".join(svc["endpoints"]),
               "replies from " + ", ".join(sorted({f"{f.reply.src}:{f.reply.sport}" for f in stale})),
               "delete exactly those conntrack entries", evidence,
               [Action("CONNTRACK-STALE-DNS", "command", "conntrack", argvs, lines(evidence), "")])


CHECKS = (Check("conntrack", ("conntrack",), (Spec("CONNTRACK-STALE-DNS", "error", "conntrack"),), run),)
