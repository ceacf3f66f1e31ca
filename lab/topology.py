"""Bring the lab up and down.

Everything lives in namespaces named with PREFIX: a switch namespace (the underlay bridge and the
lab router), an outside host, and per node a network namespace plus the mount, UTS and PID
namespaces of the node's init. The root network namespace of the machine is never touched:
every link is created inside a lab namespace.

The lab programs the data plane (flannel's devices, routes and leases, kube-proxy's rules) itself
only because flanneld and kube-proxy cannot run here; that code is lab code, not netmend's.
"""

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab import dataplane, image, ssh
from lab.inventory import load_cluster
from lab.sh import ENV, LabError, alive, ip_batch, netns_inode, run

ROOT = Path("/srv/netmend-lab")
RUN = ROOT / "run"
STATE = RUN / "state.json"
PREFIX = "nmlab-"
OUTSIDE_NAME = "outside.test"  # the one name the outside DNS server answers
SWITCH = PREFIX + "switch"
OUTSIDE = PREFIX + "outside"
NETNS_DIR = Path("/run/netns")
OVERLAY_DIRS = ("etc", "usr", "var", "root", "opt")

# Runs inside the node's new namespaces as the future PID 1: private copy-on-write system
# directories, private /run, /tmp and sysfs, the lab's own state hidden, then the node's init.
NODE_BOOT = r'''
set -eu
node="$1"; run="$2"; image="$3"; root="$4"
for d in etc usr var root opt; do
  lower="/$d"
  [ -d "$image/$d" ] && lower="$image/$d:/$d"
  mount -t overlay overlay -o "lowerdir=$lower,upperdir=$run/upper/$d,workdir=$run/work/$d" "/$d"
done
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=700 tmpfs "$root"
mkdir -p /run/sshd /run/netns /run/flannel /run/lock
hostname "$node"
exec /usr/sbin/init
'''


def log(msg):
    print(f"lab: {msg}", flush=True)


def load_state():
    try:
        return json.loads(STATE.read_text())
    except (OSError, ValueError):
        return None


def save_state(state):
    RUN.mkdir(parents=True, exist_ok=True)
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(STATE)


def lab_namespaces():
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(PREFIX))


def up(inventory, log=log):
    """Build the lab described by the inventory. A lab already up is torn down first."""
    cluster, variables = load_cluster(inventory)  # validation happens before anything exists
    if load_state() or lab_namespaces():
        log("a lab is already up (or half built): tearing it down first")
        down(log=log)
    started = time.monotonic()
    image_dir = image.ensure(ROOT / "image", log=log)
    netns_was_mounted = os.path.ismount(NETNS_DIR)
    state = {"inventory": str(Path(inventory).resolve()), "prefix": PREFIX, "nodes": {},
             "processes": [], "netns_was_mounted": netns_was_mounted, "ready": False}
    save_state(state)
    try:
        _underlay(cluster, variables)
        keys = ssh.make_keys(RUN / "ssh", [n.name for n in cluster.nodes])
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda n: _prepare_node(n, variables, keys), cluster.nodes))
        for node in cluster.nodes:
            state["nodes"][node.name] = _boot_node(node, image_dir)
        save_state(state)
        for node in cluster.nodes:
            _wait_booted(node.name, state["nodes"][node.name])
        pids = {name: info["pid"] for name, info in state["nodes"].items()}
        state["processes"] += _outside_host(variables)
        save_state(state)
        dataplane.build(cluster, variables, pids, log=log)
        ssh.write_client_config(RUN / "ssh", cluster, RUN / "proxy", keys)
        _write_proxy(pids, cluster)
        state["ready"] = True
        state["up_seconds"] = round(time.monotonic() - started, 2)
        save_state(state)
    except BaseException:
        log("lab up failed: tearing down what was built")
        down(log=lambda _msg: None)
        raise
    log(f"up: {len(cluster.nodes)} nodes in {state['up_seconds']} s")
    return state


def _underlay(cluster, variables):
    gateway = variables.get("lab_gateway", "198.51.100.1")
    prefix = cluster.node_cidr.split("/")[1]
    outside = variables.get("lab_outside_host", "203.0.113.10")
    outside_net = variables.get("lab_outside_cidr", "203.0.113.0/24")
    outside_prefix = outside_net.split("/")[1]
    router_outside = str(_first_host(outside_net))
    ip_batch(None, [f"netns add {ns}" for ns in [SWITCH, OUTSIDE] + [PREFIX + n.name for n in cluster.nodes]])
    sw = ["link set lo up",
          "link add br0 type bridge", f"addr add {gateway}/{prefix} dev br0", "link set br0 up",
          f"link add up0 type veth peer name eth0 netns {OUTSIDE}",
          f"addr add {router_outside}/{outside_prefix} dev up0", "link set up0 up"]
    for node in cluster.nodes:
        port = f"p{node.index}"
        sw += [f"link add {port} type veth peer name eth0 netns {PREFIX}{node.name}",
               f"link set {port} master br0", f"link set {port} up"]
    ip_batch(SWITCH, sw)
    run(["ip", "netns", "exec", SWITCH, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
    ip_batch(OUTSIDE, ["link set lo up", f"addr add {outside}/{outside_prefix} dev eth0", "link set eth0 up",
                       f"route add {cluster.node_cidr} via {router_outside}"])
    for node in cluster.nodes:
        ip_batch(PREFIX + node.name, [
            "link set lo up", f"addr add {node.address}/{prefix} dev eth0", "link set eth0 up",
            f"route add default via {gateway}"])


def _first_host(cidr):
    return ipaddress.ip_network(cidr).network_address + 1


def _prepare_node(node, variables, keys):
    """Lay out the node's overlay dirs and write its own files into its upper layer."""
    base = RUN / "nodes" / node.name
    for d in OVERLAY_DIRS:
        (base / "upper" / d).mkdir(parents=True, exist_ok=True)
        (base / "work" / d).mkdir(parents=True, exist_ok=True)
    etc = base / "upper" / "etc"
    (etc / "hostname").write_text(node.name + "\n")
    (etc / "resolv.conf").write_text(dataplane.node_resolv_conf(variables))
    (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n{node.address}\t{node.name}\n")
    ssh.install_node(base / "upper", node.name, keys)
    lib = base / "upper" / "usr" / "local" / "lib" / "netmend-lab"
    lib.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).with_name("agent.py"), lib / "agent.py")
    shutil.copy(Path(__file__).with_name("clusterdns.py"), lib / "clusterdns.py")
    # netmend's stdlib core, for the cluster DNS stand-in (it reads the Corefile with netmend.coredns).
    shutil.copytree(Path(__file__).resolve().parents[1] / "module_utils" / "netmend", lib / "netmend",
                    ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)


def _boot_node(node, image_dir):
    base = RUN / "nodes" / node.name
    logf = open(base / "boot.log", "w")
    proc = subprocess.Popen(
        ["nsenter", f"--net={NETNS_DIR / (PREFIX + node.name)}", "unshare", "--mount", "--uts", "--pid",
         "--fork", "--propagation", "private", "--mount-proc", "sh", "-c", NODE_BOOT, "boot",
         node.name, str(base), str(image_dir), str(ROOT)],
        stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
    logf.close()
    return {"parent": proc.pid, "pid": None, "address": node.address, "netns": PREFIX + node.name}


def _child_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            kids = fh.read().split()
    except OSError:
        return None
    return int(kids[0]) if kids else None


def _wait_booted(name, info, timeout=20.0):
    """The node is booted when its PID 1 is the init (the boot script has exec'd it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = info["pid"] or _child_of(info["parent"])
        if pid:
            info["pid"] = pid
            try:
                if os.readlink(f"/proc/{pid}/exe").startswith("/usr/bin/python3"):
                    return
            except OSError:
                pass
        if not alive(info["parent"]):
            break
        time.sleep(0.02)
    boot_log = (RUN / "nodes" / name / "boot.log").read_text(errors="replace")
    raise LabError(f"node {name} did not boot: {boot_log.strip()[-2000:]}")


def _outside_host(variables):
    """The outside world: an HTTP server and an upstream DNS server, in their own namespace."""
    outside = variables.get("lab_outside_host", "203.0.113.10")
    procs = []
    logs = RUN / "outside"
    logs.mkdir(parents=True, exist_ok=True)
    for what, argv in (
        ("outside-http", ["python3", str(Path(__file__).with_name("agent.py")), "serve", "--name", "outside",
                          "--http", "80", "--bind", outside]),
        ("outside-dns", ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--pid-file",
                         "--user=root", "--group=root", f"--listen-address={outside}", "--bind-interfaces",
                         f"--address=/{OUTSIDE_NAME}/{outside}", "--address=/#/"]),
    ):
        with open(logs / f"{what}.log", "w") as logf:
            proc = subprocess.Popen(["ip", "netns", "exec", OUTSIDE, *argv], stdin=subprocess.DEVNULL,
                                    stdout=logf, stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
        procs.append({"pid": proc.pid, "what": what, "netns": OUTSIDE})
    return procs


def _write_proxy(pids, cluster):
    """The ssh ProxyCommand: start sshd in inetd mode inside the node that owns a name or address."""
    by = RUN / "by"
    by.mkdir(parents=True, exist_ok=True)
    for node in cluster.nodes:
        for key in (node.name, node.address):
            (by / key).write_text(str(pids[node.name]))
    proxy = RUN / "proxy"
    proxy.write_text(f'''#!/bin/sh
# ssh ProxyCommand for the netmend lab: sshd -i inside the node named or addressed by $1.
pid=$(cat "{by}/$1" 2>/dev/null) || {{ echo "netmend lab: no node $1 (is the lab up?)" >&2; exit 1; }}
exec nsenter -t "$pid" -n -m -u -p -- /usr/sbin/sshd -i -f /etc/ssh/sshd_config
''')
    proxy.chmod(0o755)


def down(log=log):
    """Remove every lab process (by PID), namespace and file; safe on a half-built lab."""
    started = time.monotonic()
    state = load_state() or {}
    namespaces = lab_namespaces()
    inodes = {ino for ino in (_ns_inode(ns) for ns in namespaces) if ino}
    pids = set()
    for info in state.get("nodes", {}).values():
        pids.update(p for p in (info.get("pid"), info.get("parent")) if p)
    pids.update(p["pid"] for p in state.get("processes", []))
    # Processes in lab network namespaces are lab processes, whether or not the state recorded them.
    for entry in os.listdir("/proc"):
        if entry.isdigit() and netns_inode(entry) in inodes:
            pids.add(int(entry))
    # A recorded PID may belong to someone else by now (the lab's processes die with the session
    # that started them): only a process in a lab namespace or running the lab's boot is killed.
    pids = {pid for pid in pids if _is_lab_process(pid, inodes)}
    for pid in pids:
        _kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.02)
    if namespaces:
        ip_batch(None, [f"netns del {ns}" for ns in namespaces])
    if not state.get("netns_was_mounted", True) and not any(NETNS_DIR.iterdir()):
        run(["umount", str(NETNS_DIR)], check=False)
    shutil.rmtree(RUN, ignore_errors=True)
    log(f"down in {time.monotonic() - started:.2f} s ({len(namespaces)} namespaces, {len(pids)} processes)")


def _is_lab_process(pid, lab_inodes):
    if netns_inode(pid) in lab_inodes:
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return str(RUN / "nodes").encode() in fh.read()
    except OSError:
        return False


def _ns_inode(name):
    try:
        return os.stat(NETNS_DIR / name).st_ino
    except OSError:
        return None


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def status():
    state = load_state()
    if not state:
        return {"up": False, "namespaces": lab_namespaces()}
    nodes = {name: {"address": info["address"], "pid": info["pid"], "running": bool(alive(info["pid"]))}
             for name, info in state["nodes"].items()}
    procs = [{**p, "running": bool(alive(p["pid"]))} for p in state["processes"]]
    healthy = state.get("ready") and all(n["running"] for n in nodes.values()) and all(p["running"] for p in procs)
    return {"up": bool(healthy), "ready": state.get("ready", False), "inventory": state["inventory"],
            "nodes": nodes, "processes": procs, "namespaces": lab_namespaces(),
            "ssh_config": str(RUN / "ssh" / "ssh_config")}


def require_up():
    state = load_state()
    if not state or not state.get("ready"):
        raise LabError("the lab is not up: run `python -m lab up` first")
    return state
