"""netmend's audit and remediation as pyinfra deploys, and what they are judged against.

Host data: the keys are the roles' public variables under their own names (netmend.want.SETTINGS:
netmend_pod_cidr, firewall_mode, dns_node_nameservers, ...; health_checks, health_backup and the health role's
resolv.conf paths; the flannel role's etcd settings), as deploys.inventory reads them from the Ansible inventory
over the roles' defaults. The want of each node is netmend.want.build over them, its groups and the cluster's
truth, as the health role's netmend_want action builds it.

The truth (netmend.cluster.truth) is worked out once per run, as roles/health does: the cluster model from the
inventory (netmend.cluster.build_cluster), flannel's leases read from etcd on the first control-plane node
(`etcdctl get --prefix <prefix>/subnets/` through the same pyinfra facts), and the pod resolv.conf paths.
"""

from gevent.lock import Semaphore
from pyinfra import host, logger
from pyinfra.api import deploy

from netmend.checks import CHECKS
from netmend.cluster import NODE_GROUPS, build_cluster, truth
from netmend.errors import ProblemsError
from netmend.findings import rank
from netmend.flannel import etcdctl_argv, parse_etcd_leases
from netmend.want import CONTROL_PLANE_GROUP, SETTINGS, build

from . import ROOT
from .inventory import Inventory
from .node import NodeHost, pyinfra_fetch
from .operations import audit_node, netmend_node

HEALTH = ("health_checks", "health_backup", "health_pod_resolv_path", "health_hostnet_resolv_path")
ETCD = ("flannel_store", "flannel_etcd_endpoints", "flannel_etcd_prefix", "flannel_etcd_cafile",
        "flannel_etcd_certfile", "flannel_etcd_keyfile")
# Every host data key the deploys read (beside pyinfra's own ssh_* keys).
DATA = (*SETTINGS, *HEALTH, *ETCD, "ansible_python_interpreter")
# The variables netmend.cluster.build_cluster reads (netmend_validate's PREFIXES).
CLUSTER_PREFIXES = ("netmend_", "flannel_", "lab_")
ETCD_TIMEOUT = 5
_UNSET = object()


class TruthError(RuntimeError):
    """The cluster's truth could not be worked out (the message says why); nothing was checked or changed."""


def python_of(data):
    """The node's Python for the DNS probe: ansible_python_interpreter, or python3 on its PATH."""
    return str(data.get("ansible_python_interpreter") or "python3")


def check_resolv_paths(settings):
    """roles/health/tasks/validate.yml: each pod resolv.conf path is '' or absolute with {pod}."""
    problems = [(name, f"{value!r} is not accepted; accepted: an absolute path with {{pod}}, or ''")
                for name in HEALTH[2:] for value in [settings.get(name) or ""]
                if value and not (value.startswith("/") and "{pod}" in value)]
    if problems:
        raise ProblemsError(problems)


def read_leases(node, settings):
    """flannel's leases from etcd, through `node` (a NodeHost on the first control-plane node), as the
    netmend_flannel_leases module reads them; [] unless flannel_store is etcd."""
    if settings.get("flannel_store") != "etcd":
        return []
    prefix = str(settings.get("flannel_etcd_prefix") or "/coreos.com/network").rstrip("/")
    endpoints = list(settings.get("flannel_etcd_endpoints") or ["http://127.0.0.1:2379"])
    argv = [*etcdctl_argv("etcdctl", endpoints, ETCD_TIMEOUT, settings.get("flannel_etcd_cafile") or None,
                          settings.get("flannel_etcd_certfile") or None, settings.get("flannel_etcd_keyfile") or None),
            "get", "--prefix", f"{prefix}/subnets/", "-w", "json"]

    def read():
        if not node.tool("etcdctl"):
            raise TruthError("etcdctl is not installed on the first control-plane node")
        return node.run(argv, env=(("ETCDCTL_API", "3"),))

    rc, out, err = node.collect(read)
    if rc != 0:
        raise TruthError(f"etcdctl get --prefix {prefix}/subnets/ failed (rc {rc}) against {', '.join(endpoints)}: "
                         f"{(err or out).strip()}")
    return parse_etcd_leases(out, prefix)


def cluster_truth(nodes, variables, leases, settings):
    """netmend.cluster.truth: nodes [(name, group, {"ansible_host": address})] of the NODE_GROUPS, variables the
    inventory's netmend_/flannel_/lab_ variables (templated), leases from read_leases, settings the health
    role's resolv.conf paths."""
    check_resolv_paths(settings)
    cluster = build_cluster(nodes, variables)
    return truth(cluster, leases, settings.get("health_pod_resolv_path") or "",
                 settings.get("health_hostnet_resolv_path") or "")


def truth_of(inventory, hosts, first):
    """netmend.cluster.truth, once for a run, as roles/health works it out: inventory a deploys.inventory.Inventory,
    hosts {name: pyinfra Host} (the first control-plane node reads etcd for all), first the host whose settings
    count (the play's run_once host: the first one targeted)."""
    settings = inventory.settings(first, DATA)
    groups = inventory.groups()
    nodes = [(name, group, {"ansible_host": inventory.address(name)})
             for group in NODE_GROUPS for name in groups.get(group, [])]
    leases = []
    first_cp = (groups.get(CONTROL_PLANE_GROUP) or [""])[0]
    if settings.get("flannel_store") == "etcd" and first_cp:
        cp = hosts[first_cp]
        if not cp.connected:
            cp.connect(show_errors=False)
        if not cp.connected:
            raise TruthError(f"{first_cp} (the first control-plane node, which reads flannel's leases) "
                             "could not be reached")
        leases = read_leases(NodeHost(pyinfra_fetch(cp, python_of(cp.data))), settings)
    return cluster_truth(nodes, inventory.prefixed(first, CLUSTER_PREFIXES), leases, settings)


_TRUTHS, _TRUTH_LOCK = {}, Semaphore()


def truth_for(state):
    """The truth for a run of the pyinfra command (deploys/pyinfra_inventory.py sets netmend_inventory): worked
    out once, by the first host's deploy to ask, for every host."""
    with _TRUTH_LOCK:
        if id(state) not in _TRUTHS:
            hosts = list(state.inventory)
            inventory = Inventory(hosts[0].data.get("netmend_inventory") or ROOT / "inventory" / "lab")
            _TRUTHS[id(state)] = truth_of(inventory, {h.name: h for h in hosts}, hosts[0].name)
        return _TRUTHS[id(state)]


def groups_of(state):
    """{group: [host names]} of the pyinfra inventory (the Ansible inventory's groups, deploys.run)."""
    groups = {name: [h.name for h in hosts] for name, hosts in state.inventory.groups.items()}
    groups["all"] = [h.name for h in state.inventory]
    return groups


def host_want(target, truth_):
    """netmend.want.build for `target` (a pyinfra Host) from its data: the roles' public settings."""
    settings = {}
    for name in SETTINGS:
        value = target.data.get(name, _UNSET)
        if value is not _UNSET:
            settings[name] = value
    return build(target.name, groups_of(target.state), settings, truth_)


def host_checks(target):
    """health_checks ([] = every check)."""
    return list(target.data.get("health_checks") or CHECKS)


def summary_line(name, entry):
    """One node's line, as the netmend_report action prints it."""
    result = entry.get("result")
    if result is None:
        return f"{name}: NOT AUDITED ({entry.get('error') or 'no result: unreachable or failed'})"
    mine = sorted(result.findings, key=lambda f: (-rank(f.severity), f.id))
    return (f"{name}: {len(result.checks)} checks, "
            + (", ".join(f"{f.id} ({f.severity})" for f in mine) if mine else "clean")
            + "".join(f"; skipped {c}: {why}" for c, why in result.skipped))


@deploy("netmend audit")
def netmend_audit(truth_=None, results=None):
    """Audit this host (read-only): results[host.name] = {"want", "result" (netmend.plan.Result)} or {"error"}.
    truth_: the cluster's truth (default: worked out once for the run, truth_for)."""
    entry = (results if results is not None else {}).setdefault(host.name, {})
    try:
        entry["want"] = host_want(host, truth_ if truth_ is not None else truth_for(host.state))
        node = NodeHost(pyinfra_fetch(host, python_of(host.data)))
        entry["result"] = audit_node(node, entry["want"], host_checks(host))
    except Exception as exc:  # a node that cannot be audited is reported as not audited, as by Ansible
        entry["error"] = f"{type(exc).__name__}: {exc}"
        logger.error(f"{host.print_prefix}not audited: {entry['error']}")
        return
    host.log(summary_line(host.name, entry))
    if not entry["result"].findings:
        host.noop("clean")


@deploy("netmend remediate")
def netmend_remediate(truth_=None, results=None, batch=0, proceed=None):
    """Fix this host: the netmend_node operation over its want. results[host.name] gets the operation's
    record (deploys.operations.netmend_node) and its pyinfra OperationMeta (`op`). truth_: as netmend_audit's;
    batch: hosts per batch (pyinfra's _parallel); proceed(): whether this host's batch may start (pyinfra's _if)."""
    entry = (results if results is not None else {}).setdefault(host.name, {})
    try:
        entry["want"] = host_want(host, truth_ if truth_ is not None else truth_for(host.state))
    except ProblemsError as exc:
        entry["error"] = f"the settings are not valid; nothing was checked or changed: {exc}"
        logger.error(f"{host.print_prefix}{entry['error']}")
        return
    extra = {"_parallel": batch} if batch else {}
    if proceed is not None:
        extra["_if"] = proceed
    entry["op"] = netmend_node(name="netmend: fix what the audit finds", want=entry["want"],
                               checks=host_checks(host), backup=bool(host.data.get("health_backup", True)),
                               python=python_of(host.data), record=entry, **extra)
