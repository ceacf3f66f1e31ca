"""Scheduled remediation in the lab: every node heals itself with cron and ansible-pull, and Prometheus sees it.

`python -m lab schedule start [--every MINUTES]`:
- the outside host serves a bare clone of this checkout's HEAD (branch `lab`) with `git daemon`
  (git://203.0.113.10/netmend.git): ansible-pull in a node fetches from the lab, never from beyond it;
- each node runs Debian's cron (in the node image) with /etc/cron.d/netmend-pull, every MINUTES: the run
  (`netmend-pull`, below) takes a lock (a run never overlaps the last one), runs ansible-pull with
  playbooks/audit.yml, remediate.yml and audit.yml again, with a local connection and the same inventory and
  variables as the controller path, and leaves netmend.prom in node_exporter's textfile directory;
- each node runs Debian's prometheus-node-exporter with only its textfile collector, on the node's cni0
  address (firewalld trusts cni0 as the pod network; on a real cluster open 9100/tcp instead, as the example
  inventory does), and the control-plane node runs Debian's Prometheus, scraping every node every 2 s and
  evaluating contrib/prometheus/netmend-alerts.yml.
`python -m lab schedule stop` ends all of it (by PID file or recorded PID) and removes the cron file.
"""

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode

from lab import topology
from lab.inventory import load_cluster
from lab.sh import ENV, LabError, in_node, write_node_file

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
GIT_DIR = topology.RUN / "git"
BRANCH = "lab"
GIT_PORT = 9418
EXPORTER_PORT = 9100
PROMETHEUS = "127.0.0.1:9090"  # on the control-plane node
REPORT_DIR = "/var/lib/netmend/audit"  # audit.yml writes netmend.prom here; node_exporter reads it
PULL = "/usr/local/sbin/netmend-pull"
CRON_FILE = "/etc/cron.d/netmend-pull"
PULL_LOG = "/var/log/netmend-pull.log"
PIDS = {"cron": "/run/crond.pid", "node-exporter": "/run/netmend-node-exporter.pid",
        "prometheus": "/run/netmend-prometheus.pid"}

# One scheduled run on a node. The same playbooks and variables as the controller path, with a local connection.
# A run that cannot pull, or whose playbooks fail, says so in the log and sets netmend_last_run_success to 0
# in the textfile (the NetmendRunFailed alert), leaving everything else as it was.
PULL_SCRIPT = r"""#!/bin/sh
# netmend's scheduled run on this node (the lab's cron; contrib/ansible-pull has the systemd form).
set -u
PATH=/usr/sbin:/usr/bin:/sbin:/bin
. /etc/default/netmend-pull
exec 9>/run/lock/netmend.lock
now() { date -u +%Y-%m-%dT%H:%M:%SZ; }
if ! flock -n 9; then
    echo "$(now) netmend-pull: the previous run still holds /run/lock/netmend.lock; not starting another"
    exit 0
fi
echo "$(now) netmend-pull: start ($NETMEND_REPO $NETMEND_BRANCH)"
rc=0
"$NETMEND_VENV/bin/ansible-pull" --url "$NETMEND_REPO" --checkout "$NETMEND_BRANCH" \
    --directory /var/lib/netmend/pull --clean --inventory "$NETMEND_INVENTORY" --limit "$(hostname)" \
    --extra-vars netmend_local=true --extra-vars ansible_connection=local --extra-vars ansible_become=false \
    --extra-vars netmend_audit_fail_at=never --extra-vars "netmend_report_dir=$NETMEND_REPORT_DIR" \
    playbooks/audit.yml playbooks/remediate.yml playbooks/audit.yml || rc=$?
if [ "$rc" -ne 0 ]; then
    prom="$NETMEND_REPORT_DIR/netmend.prom"
    mkdir -p "$NETMEND_REPORT_DIR" && {
        if [ -f "$prom" ]; then grep -v '^netmend_last_run_success ' "$prom"; else
            echo '# HELP netmend_last_run_success 1 when the last audit reached every node.'
            echo '# TYPE netmend_last_run_success gauge'; fi
        echo 'netmend_last_run_success 0'
    } > "$prom.tmp" && mv "$prom.tmp" "$prom"
    echo "$(now) netmend-pull: FAILED (ansible-pull exit $rc); netmend_last_run_success is 0"
    exit "$rc"
fi
echo "$(now) netmend-pull: done"
"""


def _cluster():
    state = topology.require_up()
    cluster, _variables = load_cluster(state["inventory"])
    return state, cluster


def _outside():
    return topology.OUTSIDE, "203.0.113.10"


def start(every=1, log=topology.log):
    """Serve the repository, start cron, node_exporter and Prometheus; every node runs netmend every `every`
    minutes. A schedule already running is stopped first."""
    if not isinstance(every, int) or not 1 <= every <= 59:  # noqa: PLR2004
        raise LabError(f"--every {every!r}: the interval is whole minutes, 1 to 59 (cron's */N)")
    state, cluster = _cluster()
    stop(log=lambda _msg: None)
    netns, outside = _outside()
    bare = GIT_DIR / "netmend.git"
    shutil.rmtree(GIT_DIR, ignore_errors=True)
    GIT_DIR.mkdir(parents=True)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    subprocess.run(["git", "clone", "--bare", "--quiet", str(REPO), str(bare)], check=True, env=ENV)
    subprocess.run(["git", "-C", str(bare), "update-ref", f"refs/heads/{BRANCH}", head], check=True)
    with open(GIT_DIR / "daemon.log", "w") as logf:
        proc = subprocess.Popen(["ip", "netns", "exec", netns, "git", "daemon", "--reuseaddr", "--export-all",
                                 "--informative-errors", f"--base-path={GIT_DIR}", f"--listen={outside}",
                                 f"--port={GIT_PORT}", str(GIT_DIR)],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=ENV,
                                start_new_session=True)
    state["processes"].append({"pid": proc.pid, "what": "schedule-git", "netns": netns})
    topology.save_state(state)
    control = cluster.nodes[0].name
    for node in cluster.nodes:
        pid = state["nodes"][node.name]["pid"]
        _node_start(pid, node, every, f"git://{outside}/netmend.git", state["inventory"])
    _prometheus_start(state["nodes"][control]["pid"], cluster)
    log(f"schedule: every {every} min on {len(cluster.nodes)} nodes from git://{outside}/netmend.git "
        f"({head[:12]}); Prometheus on {control} {PROMETHEUS}")


def _node_start(pid, node, every, url, inventory):
    inv = Path(inventory).resolve()
    inv = inv.relative_to(REPO) if inv.is_relative_to(REPO) else inv
    write_node_file(pid, "/etc/default/netmend-pull",
                    f"NETMEND_REPO={url}\nNETMEND_BRANCH={BRANCH}\nNETMEND_INVENTORY={inv}\n"
                    f"NETMEND_VENV={VENV}\nNETMEND_REPORT_DIR={REPORT_DIR}\nANSIBLE_NOCOLOR=1\n"
                    "export ANSIBLE_NOCOLOR\n")
    write_node_file(pid, PULL, PULL_SCRIPT, mode=0o755)
    write_node_file(pid, CRON_FILE, f"# netmend's scheduled run (the lab: python -m lab schedule)\n"
                                    f"*/{every} * * * * root {PULL} >> {PULL_LOG} 2>&1\n")
    in_node(pid, ["mkdir", "-p", REPORT_DIR])
    in_node(pid, ["start-stop-daemon", "--start", "--quiet", "--pidfile", PIDS["cron"], "--exec", "/usr/sbin/cron"])
    in_node(pid, ["start-stop-daemon", "--start", "--quiet", "--background", "--make-pidfile",
                  "--pidfile", PIDS["node-exporter"], "--output", "/var/log/netmend-node-exporter.log",
                  "--exec", "/usr/bin/prometheus-node-exporter", "--",
                  f"--web.listen-address={node.gateway}:{EXPORTER_PORT}", "--collector.disable-defaults",
                  "--collector.textfile", f"--collector.textfile.directory={REPORT_DIR}"])


def _prometheus_start(pid, cluster):
    targets = [f"{node.gateway}:{EXPORTER_PORT}" for node in cluster.nodes]
    config = {"global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
              "rule_files": [str(REPO / "contrib" / "prometheus" / "netmend-alerts.yml")],
              "scrape_configs": [{"job_name": "node", "static_configs": [{"targets": targets}]}]}
    write_node_file(pid, "/etc/netmend-lab/prometheus.yml", json.dumps(config, indent=2) + "\n")
    in_node(pid, ["rm", "-rf", "/var/lib/netmend-lab/prometheus"])
    in_node(pid, ["start-stop-daemon", "--start", "--quiet", "--background", "--make-pidfile",
                  "--pidfile", PIDS["prometheus"], "--output", "/var/log/netmend-prometheus.log",
                  "--exec", "/usr/bin/prometheus", "--", "--config.file=/etc/netmend-lab/prometheus.yml",
                  "--storage.tsdb.path=/var/lib/netmend-lab/prometheus", f"--web.listen-address={PROMETHEUS}"])
    deadline, ready = time.monotonic() + 30, ["python3", "-c", _GET.format(url=f"http://{PROMETHEUS}/-/ready")]
    while time.monotonic() < deadline:
        if in_node(pid, ready, check=False).returncode == 0:
            return
        time.sleep(0.5)
    raise LabError("Prometheus on the control-plane node did not become ready in 30 s "
                   "(see /var/log/netmend-prometheus.log in the node)")


_GET = "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen({url!r}, timeout=5).read().decode())"


def stop(log=topology.log):
    """End the schedule: cron, node_exporter and Prometheus by their PID files, the git daemon by its PID."""
    state = topology.load_state()
    if not state:
        return
    for name, info in state["nodes"].items():
        pid = info.get("pid")
        if not pid:
            continue
        in_node(pid, ["rm", "-f", CRON_FILE], check=False)
        for pidfile in PIDS.values():
            in_node(pid, ["start-stop-daemon", "--stop", "--quiet", "--oknodo", "--retry", "5",
                          "--pidfile", pidfile, "--remove-pidfile"], check=False)
        log(f"schedule: stopped on {name}")
    kept = []
    for proc in state.get("processes", []):
        if proc["what"] == "schedule-git":
            topology._kill(proc["pid"], signal.SIGTERM)
        else:
            kept.append(proc)
    state["processes"] = kept
    topology.save_state(state)


def query(expr):
    """The result of a Prometheus instant query on the control-plane node's Prometheus (the API's `data`)."""
    state, cluster = _cluster()
    pid = state["nodes"][cluster.nodes[0].name]["pid"]
    url = f"http://{PROMETHEUS}/api/v1/query?" + urlencode({"query": expr})
    out = in_node(pid, ["python3", "-c", _GET.format(url=url)]).stdout
    doc = json.loads(out)
    if doc.get("status") != "success":
        raise LabError(f"Prometheus query {expr!r} failed: {out[:300]}")
    return doc["data"]
