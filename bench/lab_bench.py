"""Lab benchmarks: the numbers the lab issue names, measured on this machine.

    python bench/lab_bench.py [--nodes 50] [--repeat 3]

Targets: a 3-node lab up in under 15 s and down in under 5 s; all probes on 3 nodes in under
5 s; a 50-node lab up in under 2 minutes and under 4 GB of memory. Results go to
bench/results/lab.json and a table on stdout. These are measurements, not tests: the exit code
is 0 whatever the numbers are, unless the lab itself fails.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "module_utils")]

from lab import topology  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def lab(*args, inventory=None):
    argv = [sys.executable, "-m", "lab", *args] + (["-i", str(inventory)] if inventory else [])
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    elapsed = time.monotonic() - started
    if proc.returncode not in (0, 1) or (args[0] != "probe" and proc.returncode):
        raise SystemExit(f"lab {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed, proc


def mem_available_kib():
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def lab_rss_kib():
    """Resident memory of every process in a lab network namespace."""
    inodes = {topology.netns_inode(info["pid"]) for info in topology.load_state()["nodes"].values()}
    inodes.add(topology._ns_inode(topology.OUTSIDE))
    total = 0
    for pid in (p for p in Path("/proc").iterdir() if p.name.isdigit()):
        if topology.netns_inode(pid.name) in inodes:
            try:
                for line in (pid / "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
    return total


def big_inventory(nodes, directory):
    inv = Path(directory) / "inventory"
    shutil.copytree(ROOT / "inventory" / "lab", inv)
    workers = {f"w{i}": {"ansible_host": f"198.51.100.{11 + i}"} for i in range(1, nodes)}
    hosts = {"all": {"children": {"k8s_cluster": {"children": {
        "control_plane": {"hosts": {"cp1": {"ansible_host": "198.51.100.11"}}},
        "workers": {"hosts": workers}}}}}}
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    return inv


def measure_small(repeat):
    ups, downs, probes, passed = [], [], [], True
    for _ in range(repeat):
        ups.append(lab("up")[0])
        _, proc = lab("probe", "--json")
        report = json.loads(proc.stdout)
        probes.append(report["elapsed_s"])
        passed = passed and all(r["pass"] for r in report["results"])
        downs.append(lab("down")[0])
    return {"up_s": ups, "down_s": downs, "probe_s": probes, "probes_all_passed": passed}


def measure_big(nodes):
    with tempfile.TemporaryDirectory() as tmp:
        inv = big_inventory(nodes, tmp)
        before = mem_available_kib()
        up_s, _ = lab("up", inventory=inv)
        time.sleep(1)
        used_kib = before - mem_available_kib()
        rss_kib = lab_rss_kib()
        _, proc = lab("probe", "--json", inventory=inv)
        report = json.loads(proc.stdout)
        down_s, _ = lab("down")
    return {"nodes": nodes, "up_s": up_s, "down_s": down_s, "mem_used_mib": used_kib / 1024,
            "lab_rss_mib": rss_kib / 1024, "probe_s": report["elapsed_s"],
            "probes": len(report["results"]), "probes_failed": sum(not r["pass"] for r in report["results"])}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if topology.load_state():
        lab("down")
    small = measure_small(args.repeat)
    big = measure_big(args.nodes)
    rows = [
        ("3-node up (median)", statistics.median(small["up_s"]), 15, "s"),
        ("3-node down (median)", statistics.median(small["down_s"]), 5, "s"),
        ("3-node probes (median)", statistics.median(small["probe_s"]), 5, "s"),
        (f"{big['nodes']}-node up", big["up_s"], 120, "s"),
        (f"{big['nodes']}-node memory (MemAvailable drop)", big["mem_used_mib"], 4096, "MiB"),
    ]
    print(f"{'measure':44} {'value':>10}  {'target':>8}")
    for name, value, target, unit in rows:
        print(f"{name:44} {value:>8.2f} {unit:3} < {target:>5} {unit:3} {'ok' if value < target else 'OVER'}")
    print(f"3-node probes all passed: {small['probes_all_passed']}; {big['nodes']}-node probes: "
          f"{big['probes'] - big['probes_failed']}/{big['probes']} passed in {big['probe_s']:.2f} s; "
          f"lab processes' RSS {big['lab_rss_mib']:.0f} MiB; {big['nodes']}-node down {big['down_s']:.2f} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lab.json").write_text(json.dumps({"small": small, "big": big}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
