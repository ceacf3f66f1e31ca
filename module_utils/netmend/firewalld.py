"""firewalld for Kubernetes nodes: what a node needs, what `firewall-cmd --list-all` says, and the plan between.

Stdlib only. netmend adds what the node's roles need and removes only what it added itself
(recorded in its state file), so the operator's own services, ports and rules are never touched.
The plan is applied to the runtime and the permanent configuration separately: `firewall-cmd
--reload` would flush every iptables rule on the node (firewalld 1.3 does), kube-proxy's included.
"""

import ipaddress
import json
import re

from .errors import ProblemsError

CONTROL_PLANE_PORTS = ("6443/tcp", "2379-2380/tcp", "10250/tcp", "10257/tcp", "10259/tcp")
NODE_PORTS = ("10250/tcp", "10256/tcp", "30000-32767/tcp", "30000-32767/udp")
DNS_PORTS = ("53/udp", "53/tcp", "9153/tcp")
PROTOCOLS = ("tcp", "udp", "sctp", "dccp")
STATE_FILE = "/var/lib/netmend/firewalld.json"  # netmend's record of what it added (firewall_state_file)
# The --list-all fields netmend reads; the others are kept as text.
LIST_FIELDS = ("target", "icmp-block-inversion", "interfaces", "sources", "services", "ports", "protocols",
               "forward", "masquerade", "forward-ports", "source-ports", "icmp-blocks", "rich rules")
MULTI = ("interfaces", "sources", "services", "ports", "protocols", "forward-ports", "source-ports", "icmp-blocks")
ZONE_NAME = re.compile(r"^[A-Za-z0-9_+-]{1,17}$")
INTERFACE = re.compile(r"^[A-Za-z0-9_.:@+-]{1,15}$")
PORT = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?/([a-z]+)$")
# What netmend manages in a zone: (kind, firewall-cmd option stem).
KINDS = (("ports", "port"), ("interfaces", "interface"), ("sources", "source"))


class FirewalldError(ProblemsError):
    """Bad input or unreadable firewall-cmd output; `problems` names each field."""


def check_port(value, fieldname="ports"):
    """A firewalld port spec `N/proto` or `N-M/proto`, normalised; FirewalldError otherwise."""
    m = PORT.match(str(value).strip())
    ok = bool(m) and m.group(3) in PROTOCOLS and 1 <= int(m.group(1)) <= 65535 and (  # noqa: PLR2004
        m.group(2) is None or int(m.group(1)) < int(m.group(2)) <= 65535)  # noqa: PLR2004
    if not ok:
        raise FirewalldError([(fieldname, f"{value!r} is not a port such as 8472/udp or 30000-32767/tcp "
                                          f"(protocols: {', '.join(PROTOCOLS)})")])
    return str(value).strip()


def node_ports(control_plane, dns, vxlan_port=None, host_network=(), extra=()):
    """The ports a node opens, in a stable order without duplicates.

    control_plane: the API server, etcd, the controller manager and the scheduler; every node: the
    kubelet, kube-proxy's healthz and the NodePort range; dns: CoreDNS may run here; vxlan_port:
    flannel's VXLAN port (None for host-gw); host_network: target ports of hostNetwork endpoints here.
    """
    ports = list(CONTROL_PLANE_PORTS if control_plane else ()) + list(NODE_PORTS)
    if vxlan_port:
        ports.append(f"{int(vxlan_port)}/udp")
    ports += list(DNS_PORTS if dns else ()) + list(host_network) + list(extra)
    return list(dict.fromkeys(check_port(p) for p in ports))


def host_network_ports(services, node):
    """Target ports of the hostNetwork services (netmend_services entries) with a replica on `node`."""
    ports = []
    for svc in services or ():
        if isinstance(svc, dict) and svc.get("host_network") and node in (svc.get("replicas") or ()):
            for p in svc.get("ports") or ():
                target = p.get("target_port", p.get("port"))
                ports.append(f"{target}/{str(p.get('protocol', 'TCP')).lower()}")
    return ports


def parse_list_all(text):
    """One zone of `firewall-cmd [--permanent] --zone=Z --list-all`: {'zone', 'active', 'default', fields}.

    Multi-valued fields are lists, forward/masquerade/icmp-block-inversion booleans, rich rules a list.
    """
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise FirewalldError([("firewall-cmd --list-all", "empty output")])
    head = re.match(r"^([A-Za-z0-9_+-]+)(?: \(([a-z, ]+)\))?$", lines[0].strip())
    if not head or lines[0].startswith((" ", "\t")):
        raise FirewalldError([("firewall-cmd --list-all", f"line 1: expected a zone name, got {lines[0]!r}")])
    flags = {f.strip() for f in (head.group(2) or "").split(",")}
    zone = {"zone": head.group(1), "active": "active" in flags, "default": "default" in flags}
    current = None
    for number, line in enumerate(lines[1:], start=2):
        key, sep, value = line.strip().partition(":")
        if sep and key in LIST_FIELDS and line.startswith(" "):
            current = key
            value = value.strip()
            if key in MULTI or key == "rich rules":
                zone[key] = value.split() if key in MULTI else ([value] if value else [])
            elif key in ("forward", "masquerade", "icmp-block-inversion"):
                if value not in ("yes", "no"):
                    raise FirewalldError([("firewall-cmd --list-all",
                                           f"line {number}: {key}: {value!r} is not yes/no")])
                zone[key] = value == "yes"
            else:
                zone[key] = value
        elif line.startswith("\t") and isinstance(zone.get(current), list):
            zone[current].append(line.strip())  # forward-ports and rich rules: one per tab-indented line
        else:
            raise FirewalldError([("firewall-cmd --list-all", f"line {number}: unexpected {line!r}")])
    missing = [f for f in ("interfaces", "sources", "ports", "masquerade") if f not in zone]
    if missing:
        raise FirewalldError([("firewall-cmd --list-all", f"truncated: no {', '.join(missing)} line")])
    return zone


def parse_zones(text):
    """Every zone of `firewall-cmd --list-all-zones`, as {name: parse_list_all result}."""
    blocks, block = [], []
    for line in text.splitlines():
        if line and not line.startswith((" ", "\t")) and block:
            blocks.append(block)
            block = []
        if line.strip():
            block.append(line)
    if block:
        blocks.append(block)
    if not blocks:
        raise FirewalldError([("firewall-cmd --list-all-zones", "empty output")])
    zones = (parse_list_all("\n".join(b)) for b in blocks)
    return {z["zone"]: z for z in zones}


def check_want(params):
    """Validate the desired settings (the module's options: zone, trusted_zone, ports, trusted_interfaces,
    trusted_sources, masquerade) and return {zone: settings}. FirewalldError names every bad option."""
    zone, trusted_zone, masquerade = params["zone"], params["trusted_zone"], params["masquerade"]
    interfaces, sources = params["trusted_interfaces"], params["trusted_sources"]
    problems = []
    for name, value in (("zone", zone), ("trusted_zone", trusted_zone)):
        if value and not ZONE_NAME.match(value):
            problems.append((name, f"{value!r} is not a firewalld zone name (letters, digits, _+-, at most 17)"))
    if zone and zone == trusted_zone:
        problems.append(("trusted_zone", f"must differ from zone ({zone})"))
    norm_ports = []
    for p in params["ports"]:
        try:
            norm_ports.append(check_port(p))
        except FirewalldError as exc:
            problems += exc.problems
    for i in interfaces:
        if not INTERFACE.match(str(i)):
            problems.append(("trusted_interfaces", f"{i!r} is not an interface name (at most 15 characters)"))
    norm_sources = []
    for s in sources:
        try:
            if "/" not in str(s):
                raise ValueError(s)
            norm_sources.append(str(ipaddress.ip_network(str(s), strict=True)))
        except ValueError:
            problems.append(("trusted_sources", f"{s!r} is not a network in CIDR form such as 10.244.0.0/16"))
    if not isinstance(masquerade, bool):
        problems.append(("masquerade", f"{masquerade!r} is not a boolean"))
    if problems:
        raise FirewalldError(problems)
    return {zone: {"ports": norm_ports, "masquerade": masquerade},
            trusted_zone: {"interfaces": [str(i) for i in interfaces], "sources": norm_sources}}


def plan(want, current, owned):
    """The firewall-cmd changes for one configuration (runtime or permanent).

    want: {zone: {'ports'|'interfaces'|'sources': [..], 'masquerade': bool}}; current: {zone: parsed
    --list-all}; owned: {zone: {kind: [..]}} of what netmend added before. Returns (changes, owned after)
    where changes is a list of (zone, action, kind, values) with action 'add', 'change' or 'remove'.
    Interfaces and sources are bound with 'change', which also moves them out of another zone: cni0,
    flannel.1 and the pod and service CIDRs are Kubernetes', not the host's. A zone netmend added to
    before and no longer manages (firewall_zone changed) loses what netmend added there, except an
    interface or source another wanted zone takes (the 'change' moves it).
    """
    changes, new_owned = [], {}
    bound = {v for settings in want.values() for kind in ("interfaces", "sources") for v in settings.get(kind, ())}
    left = {zname: {"masquerade": False} for zname in owned if zname not in want and zname in current}
    for zname, settings in {**want, **left}.items():
        have = current[zname]
        mine = owned.get(zname, {})
        keep = new_owned.setdefault(zname, {})
        for kind, _stem in KINDS:
            wanted = settings.get(kind, [])
            present = set(have.get(kind, ()))
            missing = [v for v in wanted if v not in present]
            add, move = (missing, []) if kind == "ports" else ([], missing)
            stale = [v for v in mine.get(kind, ()) if v not in wanted and v in present
                     and (kind == "ports" or v not in bound)]
            if add:
                changes.append((zname, "add", kind, add))
            if move:
                changes.append((zname, "change", kind, move))
            if stale:
                changes.append((zname, "remove", kind, stale))
            kept = [v for v in mine.get(kind, ()) if v in wanted and v in present]
            keep[kind] = list(dict.fromkeys(kept + add + move))
        if "masquerade" in settings:
            was_mine = bool(mine.get("masquerade"))
            if settings["masquerade"] and not have.get("masquerade"):
                changes.append((zname, "add", "masquerade", []))
                keep["masquerade"] = True
            elif not settings["masquerade"] and have.get("masquerade") and was_mine:
                changes.append((zname, "remove", "masquerade", []))
            elif settings["masquerade"]:
                keep["masquerade"] = was_mine
        if zname in left:
            del new_owned[zname]  # nothing of a zone netmend no longer manages stays netmend's
    return changes, new_owned


def commands(changes, permanent):
    """firewall-cmd argument lists for `changes` (one call per zone, action and kind)."""
    stems = dict(KINDS)
    argvs = []
    for zname, action, kind, values in changes:
        argv = ["--permanent"] if permanent else []
        argv.append(f"--zone={zname}")
        if kind == "masquerade":
            argv.append(f"--{action}-masquerade")
        else:
            argv += [f"--{action}-{stems[kind]}={v}" for v in values]
        argvs.append(argv)
    return argvs


def apply_changes(zone, changes):
    """The parsed zone `zone` after `changes` (for the diff)."""
    z = {k: (list(v) if isinstance(v, list) else v) for k, v in zone.items()}
    for zname, action, kind, values in changes:
        if zname != z["zone"]:
            continue
        if kind == "masquerade":
            z["masquerade"] = action != "remove"
        elif action == "remove":
            z[kind] = [v for v in z.get(kind, []) if v not in values]
        else:
            z[kind] = z.get(kind, []) + [v for v in values if v not in z.get(kind, [])]
    return z


def render(zone):
    """The fields netmend manages, as a person reads them in a diff."""
    return (f"{zone['zone']}\n  interfaces: {' '.join(zone.get('interfaces', []))}\n"
            f"  sources: {' '.join(zone.get('sources', []))}\n  ports: {' '.join(zone.get('ports', []))}\n"
            f"  masquerade: {'yes' if zone.get('masquerade') else 'no'}\n")


CONFIGS = (("runtime", False), ("permanent", True))


def judge(want, configs, owned):
    """{config: (changes, owned after)} for each configuration of CONFIGS. configs: {config: {zone: parsed
    --list-all}} holding at least the wanted zones; owned: netmend's record, {config: {zone: {kind: [..]}}}.
    The one judgement of firewalld: the firewall check reports it, reconcile (the hooks) carries it out."""
    return {config: plan(want, configs[config], owned.get(config) or {}) for config, _ in CONFIGS}


def view(want, configs, judged=None):
    """(before, after): the zones netmend manages in each configuration, before and after the changes
    (judged None: no changes)."""
    before, after = [], []
    for config, _ in CONFIGS:
        current, changes = configs[config], judged[config][0] if judged else []
        zones = list(dict.fromkeys([*want, *(c[0] for c in changes)]))
        before += [f"# {config}\n"] + [render(current[z]) for z in zones]
        after += [f"# {config}\n"] + [render(apply_changes(current[z], changes)) for z in zones]
    return "".join(before), "".join(after)


def argvs(judged):
    """Every firewall-cmd argument list of a judgement, runtime first, then permanent."""
    return [argv for config, permanent in CONFIGS for argv in commands(judged[config][0], permanent)]


def reconcile(want, owned, list_zone):
    """Everything firewalld needs, in both configurations: (argument lists for firewall-cmd, the owned
    record after, diff text before, diff text after). list_zone(zone, permanent) returns the zone's
    `firewall-cmd [--permanent] --zone=Z --list-all` text (the wanted zones and those netmend's record
    names); owned is the record of what netmend added. A zone only the record names that cannot be listed
    (deleted since) is not planned and stays in the record as it was."""
    configs, unread = {}, {}
    for config, permanent in CONFIGS:
        configs[config] = {zname: parse_list_all(list_zone(zname, permanent)) for zname in want}
        for zname in (z for z in owned.get(config) or {} if z not in want):
            try:
                configs[config][zname] = parse_list_all(list_zone(zname, permanent))
            except Exception:  # any failure: the zone is left alone, its record kept
                unread.setdefault(config, {})[zname] = owned[config][zname]
    judged = judge(want, configs, owned)
    before, after = view(want, configs, judged)
    return argvs(judged), {config: {**judged[config][1], **unread.get(config, {})} for config, _ in CONFIGS}, \
        before, after


def items(changes):
    """[(verb, item)] of one configuration's changes, as a person reads them: ("add", "public: port
    8472/udp"), ("add", "trusted: interface cni0"), ("remove", "public: masquerade")."""
    stems = dict(KINDS)
    out = []
    for zname, action, kind, values in changes:
        verb = "remove" if action == "remove" else "add"
        out += [(verb, f"{zname}: masquerade")] if kind == "masquerade" else \
            [(verb, f"{zname}: {stems[kind]} {v}") for v in values]
    return out


def load_owned(text, path):
    """The record of what netmend added (the firewall role's state file), {} when there is none."""
    if text is None:
        return {}
    try:
        owned = json.loads(text)
    except ValueError as exc:
        raise FirewalldError([("state_file", f"{path} is not netmend's JSON record ({exc}); move it away "
                                             "to start over")]) from None
    if not isinstance(owned, dict):
        raise FirewalldError([("state_file", f"{path} is not netmend's JSON record (not an object)")])
    return owned
