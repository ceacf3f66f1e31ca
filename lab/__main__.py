"""python -m lab up|down|status|probe|image|faults [-i INVENTORY] [--json] [--check]
python -m lab inject NAME [--node N]
python -m lab recover [NAME ...] [--node N]   (no name: every active fault, newest first)
python -m lab schedule start|stop [--every MINUTES]   (cron + ansible-pull in every node, Prometheus)"""

import argparse
import json
import os
import sys
from pathlib import Path

from lab import faults, image, probe, schedule, topology
from lab.sh import LabError
from netmend.cluster import SpecError

DEFAULT_INVENTORY = Path(__file__).resolve().parent.parent / "inventory" / "lab"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("up", "down", "status", "probe", "image", "faults", "inject", "recover",
                                                       "schedule"))
    parser.add_argument("names", nargs="*", metavar="NAME", help="inject: one fault; recover: faults (default all)")
    parser.add_argument("--node", help="inject/recover: the node (default: the fault's own node)")
    parser.add_argument("-i", "--inventory", default=str(DEFAULT_INVENTORY), help="YAML inventory directory")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--check", action="store_true", help="image: exit 1 if the node image needs a build")
    parser.add_argument("--every", type=int, default=1, help="schedule start: minutes between runs (default 1)")
    args = parser.parse_args(argv)
    if args.command == "schedule" and args.names not in (["start"], ["stop"]):
        parser.error("schedule takes start or stop")
    if args.names and args.command not in ("inject", "recover", "schedule"):
        parser.error(f"{args.command} takes no fault names")
    if args.command == "inject" and len(args.names) != 1:
        parser.error(f"inject takes exactly one fault name, one of: {', '.join(faults.BY_NAME)}")
    if args.node and args.command not in ("inject", "recover"):
        parser.error("--node goes with inject and recover")
    if os.geteuid() != 0:
        parser.exit(2, "lab: must run as root (it creates network namespaces)\n")
    try:
        return _run(args)
    except faults.FaultError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 2
    except SpecError as exc:
        print(f"lab: the inventory {args.inventory} is invalid; nothing was created:", file=sys.stderr)
        for fieldname, message in exc.problems:
            print(f"  {fieldname}: {message}", file=sys.stderr)
        return 2
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1


def _run(args):
    if args.command == "up":
        topology.up(args.inventory)
    elif args.command == "down":
        topology.down()
    elif args.command == "schedule":
        if args.names == ["start"]:
            schedule.start(args.every)
        else:
            schedule.stop()
    elif args.command == "image":
        if args.check:
            return 0 if image.current(topology.ROOT / "image") else 1
        image.ensure(topology.ROOT / "image")
    elif args.command == "status":
        st = topology.status()
        st["faults"] = [{k: f[k] for k in ("name", "node", "since")} for f in faults.load()]
        print(json.dumps(st, indent=2) if args.json else _status_text(st))
        return 0 if st["up"] else 1
    elif args.command == "probe":
        results, elapsed = probe.run(None if args.inventory == str(DEFAULT_INVENTORY) else args.inventory)
        if args.json:
            print(json.dumps({"elapsed_s": round(elapsed, 3), "results": results}, indent=2))
        else:
            print(probe.table(results, elapsed))
        return 0 if all(r["pass"] for r in results) else 1
    else:
        _faults_command(args)
    return 0


def _status_text(st):
    if not st.get("nodes"):
        left = st.get("namespaces")
        return "lab: down" + (f" (namespaces left: {' '.join(left)})" if left else "")
    lines = [f"lab: {'up' if st['up'] else 'NOT HEALTHY'} ({st['inventory']})"]
    for name, node in st["nodes"].items():
        lines.append(f"  node {name:12} {node['address']:15} pid {node['pid']} "
                     f"{'running' if node['running'] else 'STOPPED'}")
    for proc in st["processes"]:
        lines.append(f"  {proc['what']:17} {proc['netns']:15} pid {proc['pid']} "
                     f"{'running' if proc['running'] else 'STOPPED'}")
    lines.append(f"  ssh: ssh -F {st['ssh_config']} <node>")
    for fault in st.get("faults", []):
        lines.append(f"  fault {fault['name']:24} on {fault['node']:8} since {fault['since']}")
    if not st.get("faults"):
        lines.append("  faults: none active")
    return "\n".join(lines)


def _faults_command(args):
    if args.command == "faults":
        rows = faults.catalog(args.inventory)
        print(json.dumps(rows, indent=2) if args.json else _faults_text(rows))
    elif args.command == "inject":
        faults.inject(args.names[0], args.node)
    else:
        faults.recover(args.names, args.node)


def _faults_text(rows):
    lines = []
    for row in rows:
        also = "".join(f", {fid}" for fid in row["also"])
        lines.append(f"{row['name']}  (node {row['node']}, finding {row['finding']}{also})")
        lines.append(f"    {row['description']}")
        lines.append("    breaks: " + (" ".join(row["breaks"]) or f"no probe: {row['quiet']}"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
