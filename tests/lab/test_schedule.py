"""Scheduled remediation, run for real: cron and ansible-pull in every lab node, node_exporter and Prometheus.

Faults on two nodes are found and fixed by each node's own scheduled run within two intervals, every probe
passes afterwards, and the NetmendFinding alert of each node fired in Prometheus and cleared. A node whose
run cannot reach the repository says so in its log and in netmend_last_run_success, NetmendRunFailed fires,
and the node is left as it was. See lab/schedule.py and docs/remediation.md.
"""

import os
import signal
import time

import pytest

from lab import schedule, topology
from tests.labutil import failing_probes, fresh_lab, lab_cli, playbook

# Lab nodes have their own /tmp and /run: a checkout there (and its .venv, which ansible-pull runs from) is not
# visible inside the nodes, so the scheduled runs cannot start. Said plainly, not passed.
HIDDEN = str(schedule.REPO).startswith(("/tmp/", "/run/"))
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
              pytest.mark.skipif(HIDDEN, reason=f"the checkout {schedule.REPO} is under /tmp or /run, which lab nodes "
                                 "do not see (their own tmpfs): ansible-pull in a node needs the checkout's .venv")]

EVERY = 1  # minutes between runs
INTERVAL = EVERY * 60
FAULTS = {"w1": ("ip-forward-off", "SYSCTL-IP-FORWARD-OFF"), "w2": ("stale-dnat-pod", "DNAT-STALE-POD-IP")}
FIRED = 'max by ({by}) (max_over_time(ALERTS{{alertname="{alert}", alertstate="firing"}}[{window}s]))'


def _until(what, seconds, condition, step=3):
    """Poll condition() (bounded in time) until it returns something true; that value, or fail naming `what`."""
    deadline, last = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"{what}: not within {seconds} s (last: {last!r})")


def _alerts(alert, window, by="node, id, instance"):
    """The (node, id, instance) of every `alert` that fired in the last `window` seconds."""
    return {(r["metric"].get("node"), r["metric"].get("id"), r["metric"].get("instance"))
            for r in schedule.query(FIRED.format(alert=alert, window=int(window), by=by))["result"]}


def _runs_done(h):
    return h.run(f"grep -s 'netmend-pull: done' {schedule.PULL_LOG}").stdout.count("netmend-pull: done")


@pytest.fixture(scope="module")
def scheduled(lab):
    hosts = fresh_lab(lab)
    playbook()
    schedule.start(EVERY)
    yield hosts
    schedule.stop()
    lab_cli("recover", check=False)


def test_faults_on_two_nodes_are_fixed_by_their_own_scheduled_runs_and_prometheus_sees_it(scheduled):
    hosts = scheduled
    # The first scheduled run of every node: provisioned by site.yml, each audits clean.
    _until("a first scheduled run on every node", 2 * INTERVAL, lambda: all(_runs_done(h) for h in hosts.values()))
    assert schedule.query("netmend_finding")["result"] == []
    assert {r["metric"]["instance"] for r in schedule.query("up == 1")["result"]} == \
        {f"{n.gateway}:{schedule.EXPORTER_PORT}" for n in topology_nodes()}

    started = time.monotonic()
    for node, (fault, _finding) in FAULTS.items():
        lab_cli("inject", fault, "--node", node)
    # Fixed by the nodes' own runs within two intervals: the finding was reported (so the alert fired) and is gone.
    expected = {(node, finding) for node, (_fault, finding) in FAULTS.items()}

    def fixed():
        fired = {(n, i) for n, i, _ in _alerts("NetmendFinding", time.monotonic() - started + 10)}
        return expected <= fired and not schedule.query("netmend_finding")["result"] and fired
    fired = _until("each fault found, alerted and fixed by its node's scheduled run", 2 * INTERVAL, fixed)
    assert fired == expected, "exactly the injected faults alerted"
    _until("the alerts cleared", 30, lambda: schedule.query('ALERTS{alertname="NetmendFinding"}')["result"] == [])
    assert failing_probes() == []
    for node in FAULTS:
        log = hosts[node].check_output(f"cat {schedule.PULL_LOG}")
        assert "playbooks/audit.yml playbooks/remediate.yml playbooks/audit.yml" in log
        assert "FAILED" not in log


def test_a_run_that_cannot_reach_the_repository_fails_visibly_and_changes_nothing(scheduled):
    hosts = scheduled
    state = topology.load_state()
    [git] = [p for p in state["processes"] if p["what"] == "schedule-git"]
    before = {n: h.check_output("iptables-save | grep -v '^#'; sysctl net.ipv4.ip_forward") for n, h in hosts.items()}
    os.kill(git["pid"], signal.SIGTERM)  # the repository the lab serves is gone
    started = time.monotonic()
    _until("NetmendRunFailed for every node", 2 * INTERVAL,
           lambda: len(_alerts("NetmendRunFailed", time.monotonic() - started + 10)) == len(hosts))
    for name, h in hosts.items():
        log = h.check_output(f"cat {schedule.PULL_LOG}")
        assert "netmend-pull: FAILED" in log and "netmend_last_run_success is 0" in log
        assert "netmend_last_run_success 0" in h.check_output(f"cat {schedule.REPORT_DIR}/netmend.prom")
        assert h.check_output("iptables-save | grep -v '^#'; sysctl net.ipv4.ip_forward") == before[name]


def topology_nodes():
    from lab.inventory import load_cluster  # noqa: PLC0415 - the lab's inventory, as the schedule reads it
    return load_cluster(topology.load_state()["inventory"])[0].nodes
