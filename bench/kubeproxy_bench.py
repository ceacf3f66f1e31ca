"""kube-proxy's iptables state at scale: the DNAT audit and its repair against what the kernel's own tools cost.

    python bench/kubeproxy_bench.py [--services 1000 5000 10000] [--endpoints 10] [--stale 50]

For each size, a synthetic nat table in kube-proxy's exact format (netmend.kubeproxy's grammar, the one the lab's
kube-proxy stand-in writes: KUBE-SERVICES with the masquerade and service jumps, KUBE-NODEPORTS, KUBE-SVC chains
with the statistic probabilities, KUBE-SEP chains with their KUBE-MARK-MASQ and DNAT, KUBE-MARK-MASQ and
KUBE-POSTROUTING) is loaded into a network namespace of its own (nmbench-kp, deleted at the end), with `--stale`
services whose first endpoint chain DNATs to an IP that is no longer an endpoint. One run per size measures:

- `iptables-save -t nat > /dev/null`, the dump alone;
- the audit: that dump read, parsed (netmend.iptables.parse_save) and judged by the `kube-proxy` check;
- the repair the audit plans (one `iptables-restore -w --noflush`), a `--noflush` restore of one service chain,
  and a full `iptables-restore` of the table;
- what a person does by hand: `iptables -t nat -S CHAIN` for each stale service's chain and endpoint chains;
- afterwards the audit again, which must find nothing (the benchmark fails otherwise).

Results in bench/results/kubeproxy.json and a table on stdout. A measurement, not a test: the exit code is 0
whatever the times are, unless a step fails. Root is needed (the namespace).
"""

import argparse
import ipaddress
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "module_utils"))

from netmend import checks, kubeproxy  # noqa: E402
from netmend.iptables import parse_save  # noqa: E402

RESULTS = ROOT / "bench" / "results"
NS = "nmbench-kp"
POD_CIDR = "10.0.0.0/8"  # rules only, in a namespace of their own: no packet is ever sent to these addresses
FIRST_POD = int(ipaddress.ip_address("10.1.0.0"))
FIRST_SERVICE = int(ipaddress.ip_address("10.96.0.0"))
STALE_POD = int(ipaddress.ip_address("10.250.0.0"))
NODE_PORTS = 2768  # 30000-32767: the first services get a NodePort each


def ip(n):
    return str(ipaddress.ip_address(n))


def synthetic(services, endpoints, stale):
    """(iptables-restore text of the nat table, the want's services, the stale services' chains)."""
    every = max(1, services // stale)
    stale_ids = set(range(0, every * stale, every))
    head, svc_rules, sep_rules, chains, want, stale_chains = [], [], [], [], [], []
    nodeports = []
    for i in range(services):
        name, proto, port = f"svc-{i}", "TCP", 80
        spn = kubeproxy.service_port_name("bench", name, "http")
        chain = kubeproxy.service_chain("bench", name, "http", proto)
        cluster_ip = ip(FIRST_SERVICE + i)
        match = f'-p tcp -m comment --comment "{spn} cluster IP" -m tcp --dport {port}'
        head += [f"-A KUBE-SERVICES ! -s {POD_CIDR} -d {cluster_ip}/32 {match} -j KUBE-MARK-MASQ",
                 f"-A KUBE-SERVICES -d {cluster_ip}/32 {match} -j {chain}"]
        if i < NODE_PORTS:
            node_match = f'-p tcp -m comment --comment "{spn}" -m tcp --dport {30000 + i}'
            nodeports += [f"-A KUBE-NODEPORTS {node_match} -j KUBE-MARK-MASQ",
                          f"-A KUBE-NODEPORTS {node_match} -j {chain}"]
        wanted = [f"{ip(FIRST_POD + i * endpoints + j)}:8080" for j in range(endpoints)]
        written = list(wanted)
        if i in stale_ids:
            written[0] = f"{ip(STALE_POD + i)}:8080"
            stale_chains.append(chain)
        chains.append(chain)
        for j, dest in enumerate(written):
            sep = kubeproxy.endpoint_chain("bench", name, "http", proto, dest)
            chains.append(sep)
            svc_rules.append(f"-A {chain} {kubeproxy.statistic(j, len(written))}-j {sep}")
            sep_rules += kubeproxy.endpoint_rules(sep, dest, proto)
            if i in stale_ids:
                stale_chains.append(sep)
        want.append({"namespace": "bench", "name": name, "port_name": "http", "protocol": proto,
                     "cluster_ip": cluster_ip, "port": port, "endpoints": wanted})
    base = ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-MARK-MASQ", "KUBE-MARK-DROP", "KUBE-POSTROUTING"]
    lines = ["*nat", *(f":{c} - [0:0]" for c in base + chains),
             '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
             '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
             kubeproxy.POSTROUTING_JUMP,
             *(r for rules in kubeproxy.masq_chain_rules().values() for r in rules),
             f"-A KUBE-MARK-DROP -j MARK --set-xmark {kubeproxy.MARK_DROP}/{kubeproxy.MARK_DROP}",
             *head,
             '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule '
             'in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
             *nodeports, *svc_rules, *sep_rules, "COMMIT"]
    return "\n".join(lines) + "\n", want, stale_chains


def ns(*argv, stdin=None):
    """(seconds, stdout) of a command in the benchmark's namespace; fails the benchmark when it fails."""
    started = time.monotonic()
    proc = subprocess.run(["ip", "netns", "exec", NS, *argv], input=stdin, capture_output=True, text=True,
                          check=False, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.strip()[:400]}")
    return time.monotonic() - started, proc.stdout


def audit(want):
    """(seconds, result) of the audit as the node runs it: the dump read, parsed and judged."""
    started = time.monotonic()
    _, out = ns("iptables-save", "-t", "nat")
    result = checks.audit({"iptables": parse_save(out), "errors": {}}, want, ["kube-proxy"])
    return time.monotonic() - started, result


def measure(services, endpoints, stale):
    text, wanted, stale_chains = synthetic(services, endpoints, stale)
    want = {"node": "bench", "pod_cidr": POD_CIDR, "services": wanted}
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        load, _ = ns("iptables-restore", "-w", "5", stdin=text)
        save, _ = ns("sh", "-c", "iptables-save -t nat > /dev/null")
        audit_s, result = audit(want)
        found = {f.summary.split()[1] for f in result.findings}
        if len(found) != stale or len(result.actions) != 1:
            raise SystemExit(f"{services}: the audit found {len(found)} stale services of {stale} and planned "
                             f"{len(result.actions)} transactions (expected 1)")
        by_hand = 0.0
        for chain in stale_chains:
            seconds, _ = ns("iptables", "-w", "5", "-t", "nat", "-S", chain)
            by_hand += seconds
        chain = stale_chains[0]
        single, _ = ns("iptables-restore", "-w", "5", "--noflush", stdin="\n".join(
            ["*nat", f":{chain} - [0:0]", *(x for x in text.splitlines() if x.startswith(f"-A {chain} ")), "COMMIT\n"]))
        repair, _ = ns("iptables-restore", "-w", "5", "--noflush", stdin=result.actions[0].payload)
        _, again = audit(want)
        if again.findings or again.actions:
            raise SystemExit(f"{services}: the audit after the repair still finds {len(again.findings)}")
        _, now = ns("iptables-save", "-t", "nat")
        full, _ = ns("iptables-restore", "-w", "5", stdin=now)
    finally:
        subprocess.run(["ip", "netns", "delete", NS], check=False)
    return {"services": services, "endpoints": endpoints, "stale": stale, "dump_lines": len(text.splitlines()),
            "load_s": load, "save_s": save, "audit_s": audit_s, "audit_over_save": audit_s / save,
            "repair_s": repair, "single_chain_s": single, "repair_over_single_chain": repair / single,
            "full_restore_s": full, "full_over_repair": full / repair, "by_hand_s": by_hand,
            "by_hand_calls": len(stale_chains), "dump_bytes": len(now)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--stale", type=int, default=50)
    args = parser.parse_args()
    rows = [measure(n, args.endpoints, args.stale) for n in args.services]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "kubeproxy.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("| services | rules | iptables-save -t nat | audit | audit / save | repair of "
          f"{args.stale} | one-chain --noflush | repair / one chain | full restore | full / repair | by hand |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['services']:,} | {r['dump_lines']:,} | {r['save_s']:.2f} s | {r['audit_s']:.2f} s | "
              f"{r['audit_over_save']:.2f} | {r['repair_s']:.2f} s | {r['single_chain_s']:.2f} s | "
              f"{r['repair_over_single_chain']:.1f} | {r['full_restore_s']:.2f} s | {r['full_over_repair']:.1f}x | "
              f"{r['by_hand_s']:.1f} s ({r['by_hand_calls']} calls) |")


if __name__ == "__main__":
    main()
