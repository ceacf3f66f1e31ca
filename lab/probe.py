"""Real packets along every path of the seeds, each reported as pass or fail with its latency.

A probe runs the agent (lab/agent.py) inside the namespace a packet starts from: a pod, a node
(hostNetwork) or the outside host. Checks from one source go to one agent process; all sources
run at once. A check whose outcome is expected to fail (a hostNetwork pod without
ClusterFirstWithHostNet cannot resolve cluster names, seed 000 section 3) passes when it fails.
"""

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab import dataplane, topology
from lab.inventory import load_cluster
from lab.sh import ENV

SPREAD_REQUESTS = 30
ALL_PAIRS_UP_TO = 6
AGENT_TIMEOUT = 30  # seconds for one source's whole batch; every check has its own, shorter timeout
# Every pod resolves these service names (the ones present in the cluster) by the cluster DNS.
DNS_NAMES = ("kubernetes", "hello-world-service")
# A name only the outside DNS server knows: the cluster DNS must forward it upstream.
OUTSIDE_NAME = topology.OUTSIDE_NAME
# One DNS flow per pod with the same conntrack tuple every time (a client that keeps its source port,
# as many resolvers do): a stale conntrack entry for it outlives a change of the DNS endpoint.
FIXED_DNS_SPORT = 53535


@dataclass
class Check:
    id: str
    path: str
    source: str
    target: str
    spec: dict
    expect_ok: bool = True
    want: dict = field(default_factory=dict)  # extra conditions on the agent's result


def plan(cluster, variables):
    """Every check, grouped by the source it is sent from: {source: [Check]}."""
    outside = variables.get("lab_outside_host", "203.0.113.10")
    checks = {}
    pods = [p for p in cluster.pods if not p.host_network]
    netcheck = {p.node: p for p in pods if p.app == "netcheck"}
    for node in cluster.nodes:
        src = netcheck[node.name]
        group = checks.setdefault(f"pod:{node.name}:{src.name}", [])
        group += _same_node_checks(cluster, pods, src)
        group += _cross_node_checks(cluster, node, netcheck)
        group.append(Check(f"pod-outside:{src.name}", "pod to outside (MASQUERADE)", src.name, f"{outside}:80",
                           _http(outside, 80), want={"clients": [node.address]}))
        group += _cluster_ip_checks(cluster, src)
        group += [Check(f"pod-dns:{src.name}:{name}", "pod DNS", src.name, name, _dns(name, svc))
                  for name, svc in _dns_targets(cluster)]
        group.append(Check(f"pod-dns:{src.name}:{OUTSIDE_NAME}", "pod DNS, forwarded upstream", src.name,
                           OUTSIDE_NAME, {"kind": "dns", "name": OUTSIDE_NAME, "expect": [outside]}))
        group.append(Check(f"pod-dns-fixed-port:{src.name}", "pod DNS, fixed source port", src.name,
                           f"{cluster.cluster_dns}:{dataplane.DNS_PORT}/udp from :{FIXED_DNS_SPORT}",
                           {"kind": "dnsquery", "server": cluster.cluster_dns, "port": dataplane.DNS_PORT,
                            "name": f"kubernetes.default.svc.{cluster.cluster_domain}", "sport": FIXED_DNS_SPORT}))
        # The node itself (no pod): its own /etc/resolv.conf, the nameservers DHCP handed out.
        checks[f"node:{node.name}"] = [Check(f"node-dns:{node.name}", "node DNS", node.name, OUTSIDE_NAME,
                                             {"kind": "dns", "name": OUTSIDE_NAME, "expect": [outside]})]
    nodeport = _nodeport_checks(cluster)
    if nodeport:
        checks.setdefault("outside", []).extend(nodeport)
    # One hostNetwork pod shows both DNS policies.
    pod = next((p for p in cluster.pods if p.host_network and p.app != "kubernetes"), None)
    if pod is not None:
        for policy, expect_ok in (("ClusterFirstWithHostNet", True), ("ClusterFirst", False)):
            group = [Check(f"hostnet-dns:{pod.name}:{policy}:{name}", f"hostNetwork pod DNS, {policy}",
                           f"{pod.name} ({pod.node})", name, _dns(name, svc), expect_ok=expect_ok)
                     for name, svc in _dns_targets(cluster)]
            if group:
                checks.setdefault(f"hostnet:{pod.node}:{pod.name}:{policy}", []).extend(group)
    return checks


def _same_node_checks(cluster, pods, src):
    """From src's netcheck pod to the first other HTTP pod on its node, if there is one."""
    other = next((p for p in pods if p.node == src.node and p is not src and _http_port(cluster, p)), None)
    if other is None:
        return []
    return [Check(f"pod-pod-same-node:{src.name}->{other.name}", "pod to pod, same node", src.name,
                  f"{other.name} {other.ip}", _http(other.ip, _http_port(cluster, other)))]


def _cross_node_checks(cluster, node, netcheck):
    """To the netcheck pod of every other node, or only of the next node in larger clusters."""
    nodes = cluster.nodes
    src = netcheck[node.name]
    backend = cluster.flannel["backend"]
    peers = nodes if len(nodes) <= ALL_PAIRS_UP_TO else [nodes[(node.index + 1) % len(nodes)]]
    return [Check(f"pod-pod-cross-node:{src.name}->{dst.name}", f"pod to pod, cross node ({backend})",
                  src.name, f"{dst.name} {dst.ip}", _http(dst.ip, 8080))
            for dst in (netcheck[peer.name] for peer in peers if peer.name != node.name)]


def _cluster_ip_checks(cluster, src):
    """Every service port from src: a DNS query to DNS ports, HTTP (spread over the replicas) to TCP ports."""
    checks = []
    for svc in cluster.services:
        replicas = {p.name for p in cluster.service_pods(svc)}
        for port in svc.ports:
            target = f"{svc.name} {svc.cluster_ip}:{port.port}/{port.protocol.lower()}"
            cid = f"clusterip:{src.name}->{svc.namespace}/{svc.name}:{port.port}/{port.protocol.lower()}"
            if port.port == dataplane.DNS_PORT:
                spec = {"kind": "dnsquery", "server": svc.cluster_ip, "port": dataplane.DNS_PORT,
                        "name": f"kubernetes.default.svc.{cluster.cluster_domain}", "tcp": port.protocol == "TCP"}
                checks.append(Check(cid, "pod to ClusterIP", src.name, target, spec))
            elif port.target_port in _tcp_http_ports(svc):
                spread = len(replicas) > 1
                want = {"responders": sorted(replicas)} if spread else {}
                checks.append(Check(cid, "pod to ClusterIP" + (" (spread)" if spread else ""), src.name, target,
                                    _http(svc.cluster_ip, port.port, SPREAD_REQUESTS if spread else 1), want=want))
    return checks


def _nodeport_checks(cluster):
    """From the outside host to every node's NodePort of every service port that has one. A service with
    several replicas gets as many connections as a spread check, so that one unreachable replica fails the
    check every time (with 3 connections it failed about 2 runs in 3: kube-proxy picks at random)."""
    checks = []
    for svc in cluster.services:
        hostnet = " (hostNetwork endpoint)" if svc.host_network else ""
        count = SPREAD_REQUESTS if len(cluster.service_pods(svc)) > 1 else 3
        for port in (p for p in svc.ports if p.node_port):
            checks += [Check(f"nodeport:outside->{node.name}:{port.node_port}", f"outside to NodePort{hostnet}",
                             "outside", f"{svc.name} {node.address}:{port.node_port}",
                             _http(node.address, port.node_port, count))
                       for node in cluster.nodes]
    return checks


def _dns_targets(cluster):
    """(name, service) of the DNS_NAMES that are services of the cluster."""
    found = ((name, next((s for s in cluster.services if s.name == name), None)) for name in DNS_NAMES)
    return [(name, svc) for name, svc in found if svc is not None]


def _dns(name, svc):
    return {"kind": "dns", "name": name, "expect": [svc.cluster_ip]}


def _http(host, port, count=1):
    return {"kind": "http", "host": host, "port": port, "count": count, "timeout": 3.0}


def _tcp_http_ports(svc):
    return {p.target_port for p in svc.ports if p.protocol == "TCP" and p.target_port != dataplane.DNS_PORT}


def _http_port(cluster, pod):
    svc = next((s for s in cluster.services if s.app == pod.app), None)
    ports = sorted(_tcp_http_ports(svc)) if svc else [8080]
    return ports[0] if ports else None


def _argv(source, state):
    """The command that runs the agent's probe inside a source: "outside", "node:NODE", "pod:NODE:POD" or
    "hostnet:NODE:POD:DNSPOLICY"."""
    if source == "outside":
        return ["ip", "netns", "exec", topology.OUTSIDE, "python3", str(Path(__file__).with_name("agent.py")),
                "probe"]
    kind, node, *rest = source.split(":")
    agent = ["python3", dataplane.AGENT, "probe"]
    enter = ["nsenter", "-t", str(state["nodes"][node]["pid"]), "-n", "-m", "-u", "-p", "--"]
    if kind == "node":
        return enter + agent
    pod, *policy = rest
    if kind == "pod":
        return [*enter, "ip", "netns", "exec", dataplane.POD_PREFIX + pod, *agent]
    if policy == ["ClusterFirst"]:
        return enter + agent  # the node's own resolv.conf, as the kubelet copies it
    resolv = dataplane.HOSTNET_RESOLV.format(pod=pod)
    return [*enter, "unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount --bind {resolv} /etc/resolv.conf && exec "$@"', "pod", *agent]


def run(inventory=None):
    """Run every probe; returns a list of result dicts."""
    state = topology.require_up()
    cluster, variables = load_cluster(inventory or state["inventory"])
    checks = plan(cluster, variables)
    started = time.monotonic()
    procs = {}
    for source, group in checks.items():
        payload = json.dumps([{"id": c.id, **c.spec} for c in group])
        proc = subprocess.Popen(_argv(source, state), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=ENV)
        proc.stdin.write(payload)
        proc.stdin.close()
        proc.stdin = None  # written and closed: communicate() below only reads
        procs[source] = proc
    results = []
    for source, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=AGENT_TIMEOUT)
            answers = {a["id"]: a for a in json.loads(out)}
        except (ValueError, subprocess.TimeoutExpired) as exc:
            proc.kill()
            proc.communicate()
            answers, err = {}, str(exc)
        for check in checks[source]:
            results.append(_judge(check, answers.get(check.id), err))
    elapsed = time.monotonic() - started
    return results, elapsed


def _judge(check, answer, err):
    if answer is None:
        ok, detail, latency = False, f"agent gave no answer: {err.strip()[-300:]}", None
    else:
        ok, detail, latency = bool(answer.get("ok")), answer.get("detail", ""), answer.get("latency_ms")
        for key, wanted in check.want.items():
            got = answer.get(key)
            got_set = sorted(got) if isinstance(got, (list, dict)) else got
            if ok and got_set != sorted(wanted):
                ok, detail = False, f"{key} {got_set}, expected {sorted(wanted)}"
        if ok and "responders" in answer and len(answer["responders"]) > 1:
            detail = "spread " + ", ".join(f"{k}={v}" for k, v in sorted(answer["responders"].items()))
        elif ok and answer.get("addresses"):
            detail = " ".join(answer["addresses"])
    return {"id": check.id, "path": check.path, "source": check.source, "target": check.target,
            "expect": "ok" if check.expect_ok else "fail", "outcome": "ok" if ok else "fail",
            "pass": ok == check.expect_ok, "latency_ms": latency, "detail": detail}


def table(results, elapsed):
    rows = [("RESULT", "PATH", "SOURCE", "TARGET", "EXPECT", "LATENCY", "DETAIL")]
    for r in results:
        lat = f"{r['latency_ms']:.2f} ms" if r["latency_ms"] is not None else "-"
        rows.append(("pass" if r["pass"] else "FAIL", r["path"], r["source"], r["target"], r["expect"], lat,
                     (r["detail"] or "")[:70]))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]) - 1)]
    # Every column but the last (DETAIL) is padded to its width.
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
             for row in rows]
    passed = sum(r["pass"] for r in results)
    lines.append(f"probes: {passed} passed, {len(results) - passed} failed in {elapsed:.2f} s")
    return "\n".join(lines)
