"""flannel: subnet.env, cni0's address, flannel.1 (VNI, port, MTU) and every peer's route, neighbour
and fdb entry agree with the leases.

Field guide failure mode 7. The flannel role provisions the configuration flanneld starts from.
"""

import ipaddress

from .. import flannel
from ..errors import ProblemsError
from ..findings import Spec
from ..plan import Action
from .base import Check, lines, own_lease


def run(a):
    want, fl = a.want, a.want.get("flannel") or {}
    lease = own_lease(want)
    if not fl or lease is None:
        a.skip("flannel", "no flannel settings or no lease for this node")
        return
    subnet = ipaddress.ip_network(lease["subnet"])
    gateway = f"{subnet.network_address + 1}/{subnet.prefixlen}"
    _check_subnet_env(a, fl, gateway)
    _check_cni0(a, fl, gateway)
    recreate = _check_vxlan(a, fl, lease) if fl["backend"] == "vxlan" else False
    _check_peers(a, fl, lease, recreate)


def _check_subnet_env(a, fl, gateway):
    text = a.facts.get("subnet_env")
    wanted = flannel.render_subnet_env(a.want["pod_cidr"], gateway, fl["mtu"], fl.get("ip_masq", True))
    if text is None:
        return  # flanneld has not started yet: nothing reads a file it never wrote
    try:
        env = flannel.parse_subnet_env(text)
        diffs = [f"{k}={have} (lease: {w})" for k, have, w in (
            ("FLANNEL_NETWORK", env["network"], a.want["pod_cidr"]),
            ("FLANNEL_SUBNET", f"{env['gateway']}/{env['subnet'].split('/')[1]}", gateway),
            ("FLANNEL_MTU", env["mtu"], fl["mtu"])) if str(have) != str(w)]
    except ProblemsError as exc:
        diffs = ["unreadable: " + "; ".join(str(exc).splitlines())]
    if diffs:
        a.find("FLANNEL-SUBNET-ENV-MISMATCH", "/run/flannel/subnet.env disagrees with the node's lease",
               f"FLANNEL_SUBNET={gateway}, FLANNEL_MTU={fl['mtu']}", "; ".join(diffs),
               "rewrite /run/flannel/subnet.env from the lease (backed up)", diffs,
               [Action("FLANNEL-SUBNET-ENV-MISMATCH", "file", flannel.SUBNET_ENV_PATH, wanted, text, wanted)])


def _check_cni0(a, fl, gateway):
    bridge = fl.get("bridge", "cni0")
    links = {link.name for link in a.facts.get("links") or []}
    if bridge not in links:
        return  # the CNI plugin creates it with the first pod
    have = [ad.cidr for ad in a.facts.get("addrs") or [] if ad.ifname == bridge and ad.family == "inet"]
    if have == [gateway]:
        return
    wrong = [c for c in have if c != gateway]
    cmds = [f"addr del {c} dev {bridge}" for c in wrong] + ([] if gateway in have else
                                                            [f"addr add {gateway} dev {bridge}"])
    a.find("CNI0-ADDRESS-MISMATCH", f"{bridge} already has an IP address different from {gateway}",
           f"{bridge} {gateway} (the .1 of the node's lease)", f"{bridge} " + (", ".join(have) or "no address"),
           f"re-address {bridge}", [f"ip addr show {bridge}: " + ", ".join(have)],
           [Action("CNI0-ADDRESS-MISMATCH", "ip", bridge, cmds, "".join(f"{c}\n" for c in have), f"{gateway}\n")])


def _check_vxlan(a, fl, lease):
    """flannel.1's VNI, port and MTU; True when the device is (re)created (its peer entries go with it)."""
    dev = fl.get("device", "flannel.1")
    link = next((lk for lk in a.facts.get("links") or [] if lk.name == dev), None)
    vtep = f"{ipaddress.ip_network(lease['subnet']).network_address}/32"
    mac = lease.get("vtep_mac") or (link.address if link else None)
    underlay = (link.vxlan.dev if link and link.vxlan and link.vxlan.dev else
                next((ad.ifname for ad in a.facts.get("addrs") or [] if ad.local == a.want["address"]), "eth0"))
    create = [f"link add {dev}" + (f" address {mac}" if mac else "")
              + f" type vxlan id {fl['vni']} local {a.want['address']} dev {underlay} dstport {fl['port']} nolearning",
              f"link set {dev} mtu {fl['mtu']}", f"addr add {vtep} dev {dev}", f"link set {dev} up"]
    if link is None or link.vxlan is None:
        a.find("FLANNEL-VXLAN-MISSING", f"{dev} does not exist: no VXLAN to the other nodes",
               f"{dev} vxlan id {fl['vni']} dstport {fl['port']}", "absent", f"create {dev} with the lease's VtepMAC",
               [f"ip -d link show {dev}: absent"],
               [Action("FLANNEL-VXLAN-MISSING", "ip", dev, create, "", lines(create))])
        return True
    wrong = []
    if link.vxlan.id != fl["vni"]:
        wrong.append(("FLANNEL-VXLAN-VNI", f"VNI {link.vxlan.id}", f"VNI {fl['vni']}"))
    if link.vxlan.port is not None and link.vxlan.port != fl["port"]:
        wrong.append(("FLANNEL-VXLAN-PORT", f"dstport {link.vxlan.port}", f"dstport {fl['port']}"))
    before = f"{dev}: vxlan id {link.vxlan.id} dstport {link.vxlan.port} mtu {link.mtu} address {link.address}\n"
    recreate = [f"link del {dev}", *create]
    for i, (fid, have, need) in enumerate(wrong):
        a.find(fid, f"{dev} has {have}; the other nodes use {need}", need, have,
               f"recreate {dev} with the same MAC and re-add its peer entries", [before.strip()],
               [Action(fid, "ip", dev, recreate, before, lines(recreate))] if i == 0 else [])
    if not wrong and link.mtu != fl["mtu"]:
        cmd = [f"link set {dev} mtu {fl['mtu']}"]
        a.find("FLANNEL-VXLAN-MTU", f"{dev} MTU {link.mtu} does not fit the underlay (want {fl['mtu']})",
               f"mtu {fl['mtu']}", f"mtu {link.mtu}", f"ip link set {dev} mtu {fl['mtu']}", [before.strip()],
               [Action("FLANNEL-VXLAN-MTU", "ip", dev, cmd, before, lines(cmd))])
    return bool(wrong)


def _check_peers(a, fl, lease, recreated):
    dev = fl.get("device", "flannel.1")
    routes, neighs, fdbs = a.facts.get("routes") or [], a.facts.get("neighs") or [], a.facts.get("fdb") or []
    missing = {"FLANNEL-PEER-ROUTE-MISSING": [], "FLANNEL-PEER-NEIGH-MISSING": [], "FLANNEL-PEER-FDB-MISSING": []}
    fixes = {k: [] for k in missing}
    for peer in a.want.get("leases") or []:
        if peer is lease:
            continue
        if fl["backend"] == "host-gw":
            ok = any(r.dst == peer["subnet"] and r.gateway == peer["public_ip"] for r in routes)
            if not ok or recreated:
                missing["FLANNEL-PEER-ROUTE-MISSING"].append(f"{peer['subnet']} via {peer['public_ip']}")
                fixes["FLANNEL-PEER-ROUTE-MISSING"].append(f"route replace {peer['subnet']} via {peer['public_ip']}")
            continue
        vtep = str(ipaddress.ip_network(peer["subnet"]).network_address)
        mac = (peer.get("vtep_mac") or "").lower()
        route_ok = any(r.dst == peer["subnet"] and r.gateway == vtep and r.dev == dev for r in routes)
        if recreated or not route_ok:
            missing["FLANNEL-PEER-ROUTE-MISSING"].append(f"{peer['subnet']} via {vtep} dev {dev} onlink")
            fixes["FLANNEL-PEER-ROUTE-MISSING"].append(f"route replace {peer['subnet']} via {vtep} dev {dev} onlink")
        if not mac:
            continue  # no VtepMAC in the lease (kube subnet manager without the API): routes only
        neigh_ok = any(n.dst == vtep and n.dev == dev and (n.lladdr or "").lower() == mac for n in neighs)
        if recreated or not neigh_ok:
            missing["FLANNEL-PEER-NEIGH-MISSING"].append(f"{vtep} lladdr {mac}")
            fixes["FLANNEL-PEER-NEIGH-MISSING"].append(f"neigh replace {vtep} lladdr {mac} dev {dev} nud permanent")
        fdb_ok = any(f.mac.lower() == mac and f.dev == dev and f.dst == peer["public_ip"] for f in fdbs)
        if recreated or not fdb_ok:
            missing["FLANNEL-PEER-FDB-MISSING"].append(f"{mac} dst {peer['public_ip']}")
            fixes["FLANNEL-PEER-FDB-MISSING"].append(
                f"fdb replace {mac} dev {dev} dst {peer['public_ip']} self permanent")
    for fid, items in missing.items():
        if not items:
            continue
        kind = "bridge" if fid == "FLANNEL-PEER-FDB-MISSING" else "ip"
        action = Action(fid, kind, dev, fixes[fid], "", lines(fixes[fid]))
        if recreated:
            a.result.actions.append(action)  # re-added after the device is recreated; not a finding of its own
            continue
        what = fid.split("-")[2].lower()
        a.find(fid, f"{len(items)} peer {what} entr{'y is' if len(items) == 1 else 'ies are'} missing or wrong",
               "an entry for every other node's lease", "missing: " + "; ".join(items), f"{kind} {fixes[fid][0]} ...",
               items, [action])


CHECKS = (Check("flannel", ("links", "subnet_env"), (
    Spec("FLANNEL-SUBNET-ENV-MISMATCH", "error", "flannel"),
    Spec("CNI0-ADDRESS-MISMATCH", "critical", "flannel"),
    Spec("FLANNEL-VXLAN-MISSING", "critical", "flannel"),
    Spec("FLANNEL-VXLAN-MTU", "warning", "flannel"),
    Spec("FLANNEL-VXLAN-VNI", "critical", "flannel"),
    Spec("FLANNEL-VXLAN-PORT", "critical", "flannel"),
    Spec("FLANNEL-PEER-ROUTE-MISSING", "critical", "flannel"),
    Spec("FLANNEL-PEER-NEIGH-MISSING", "critical", "flannel"),
    Spec("FLANNEL-PEER-FDB-MISSING", "critical", "flannel")), run),)
