"""The cluster model: nodes, pod subnets, services and pods, from inventory variables.

Pure and stdlib-only: it runs on nodes that have only Python, inside Ansible modules, in the
pyinfra deploys and in the lab. `build_cluster` validates everything before anything is
created and reports every bad field by its inventory name and what is accepted.
"""

import ipaddress
import re
from dataclasses import dataclass, field

from .errors import ProblemsError
from .flannel import FlannelError, mtu_for

PROTOCOLS = ("TCP", "UDP", "SCTP")
SERVICE_TYPES = ("ClusterIP", "NodePort")
FLANNEL_BACKENDS = ("vxlan", "host-gw")
NODE_GROUPS = ("control_plane", "workers")
NODE_PORT_RANGE = (30000, 32767)
PORT_RANGE = (1, 65535)
SERVICE_KEYS = ("name", "namespace", "cluster_ip", "type", "host_network", "app", "replicas", "ports")
# The pod every node runs for the probes (a DaemonSet in a real cluster).
NETCHECK_APP = "netcheck"
# A Kubernetes node name that is also a usable interface and namespace suffix.
NODE_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")


class SpecError(ProblemsError):
    """Bad inventory input. `problems` is a list of (field, message)."""


@dataclass(frozen=True)
class Port:
    name: str
    port: int
    target_port: int
    protocol: str
    node_port: int = 0


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    cluster_ip: str
    type: str
    host_network: bool
    app: str
    replicas: tuple
    ports: tuple

    @property
    def key(self):
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    node: str
    ip: str
    app: str
    host_network: bool = False


@dataclass(frozen=True)
class Node:
    name: str
    index: int
    address: str
    role: str
    subnet: str

    @property
    def network(self):
        return ipaddress.ip_network(self.subnet)

    @property
    def gateway(self):
        """The cni0 address: the subnet's .1."""
        return str(self.network.network_address + 1)

    @property
    def vtep_ip(self):
        """The flannel.1 address: the subnet's .0."""
        return str(self.network.network_address)


@dataclass
class Cluster:
    nodes: list
    pod_cidr: str
    service_cidr: str
    node_cidr: str
    cluster_domain: str
    cluster_dns: str
    flannel: dict
    services: list
    pods: list = field(default_factory=list)

    def node(self, name):
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def pods_on(self, node_name):
        return [p for p in self.pods if p.node == node_name]

    def service_pods(self, service):
        """The pods behind a service, in replica order."""
        return [p for p in self.pods if p.app == service.app and p.namespace == service.namespace]

    def endpoints(self, service, port):
        """(ip, target_port) per replica, the way an EndpointSlice lists them."""
        return [(p.ip, port.target_port) for p in self.service_pods(service)]


class _Checker:
    def __init__(self):
        self.problems = []

    def fail(self, fieldname, message):
        self.problems.append((fieldname, message))

    def network(self, fieldname, value):
        try:
            if "/" not in str(value):  # ip_network would take a bare address as a /32
                raise ValueError(value)
            net = ipaddress.ip_network(str(value), strict=True)
        except ValueError:
            self.fail(fieldname, f"{value!r} is not a network in CIDR form such as 10.244.0.0/16")
            return None
        if not isinstance(net, ipaddress.IPv4Network):
            self.fail(fieldname, f"{value} is IPv6; IPv4 networks are accepted")
            return None
        return net

    def address(self, fieldname, value):
        if value is None or value == "":
            self.fail(fieldname, "is missing; an IPv4 address is required")
            return None
        try:
            addr = ipaddress.ip_address(str(value))
        except ValueError:
            self.fail(fieldname, f"{value!r} is not an IPv4 address")
            return None
        if not isinstance(addr, ipaddress.IPv4Address):
            self.fail(fieldname, f"{value} is IPv6; IPv4 addresses are accepted")
            return None
        return addr

    def integer(self, fieldname, value, low, high):
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                value = int(str(value), 10)
            except ValueError:
                self.fail(fieldname, f"{value!r} is not an integer; accepted: {low}-{high}")
                return None
        if not low <= value <= high:
            self.fail(fieldname, f"{value} is out of range; accepted: {low}-{high}")
            return None
        return value

    def choice(self, fieldname, value, choices):
        if value not in choices:
            self.fail(fieldname, f"{value!r} is not accepted; choose one of: {', '.join(choices)}")
            return None
        return value


def build_cluster(hosts, variables, extra_networks=None):
    """Validate inventory data and return a Cluster.

    hosts: list of (name, group, hostvars) in inventory order; group is one of NODE_GROUPS.
    variables: the group variables (netmend_*, flannel_*).
    extra_networks: {field: cidr} of other networks that must not overlap (the lab's own).
    Raises SpecError naming every bad field.
    """
    c = _Checker()
    v = variables
    networks = {}
    for key in ("netmend_pod_cidr", "netmend_service_cidr", "netmend_node_cidr"):
        if key not in v:
            c.fail(key, "is missing; a network in CIDR form is required")
            continue
        net = c.network(key, v[key])
        if net is not None:
            networks[key] = net
    for key, value in (extra_networks or {}).items():
        net = c.network(key, value)
        if net is not None:
            networks[key] = net
    names = list(networks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if networks[a].overlaps(networks[b]):
                c.fail(a, f"{networks[a]} overlaps {b} ({networks[b]}); the pod, service, "
                       "node and lab networks must be disjoint")

    backend = c.choice("flannel_backend_type", v.get("flannel_backend_type", "vxlan"), FLANNEL_BACKENDS)
    pod_net = networks.get("netmend_pod_cidr")
    subnet_len = c.integer("flannel_subnet_len", v.get("flannel_subnet_len", 24),
                           (pod_net.prefixlen + 1) if pod_net else 1, 28)
    flannel = {
        "backend": backend,
        "subnet_len": subnet_len,
        "vni": c.integer("flannel_vxlan_vni", v.get("flannel_vxlan_vni", 1), 1, 16777215),
        "port": c.integer("flannel_vxlan_port", v.get("flannel_vxlan_port", 8472), *PORT_RANGE),
        "mtu": _mtu(c, backend, v),
    }

    domain = v.get("netmend_cluster_domain", "cluster.local")
    if not isinstance(domain, str) or not domain or any(
            not label or not label.replace("-", "").isalnum() for label in domain.split(".")):
        c.fail("netmend_cluster_domain", f"{domain!r} is not a DNS domain such as cluster.local")

    svc_net = networks.get("netmend_service_cidr")
    dns = c.address("netmend_cluster_dns", v.get("netmend_cluster_dns"))
    if dns and svc_net and dns not in svc_net:
        c.fail("netmend_cluster_dns", f"{dns} is outside netmend_service_cidr {svc_net}")

    nodes = _nodes(c, hosts, networks, subnet_len, v)
    # Every inventory host, also one already reported bad, so its replicas are not misreported as unknown.
    node_names = list(dict.fromkeys(name for name, _, _ in (hosts or [])))
    services = _services(c, v.get("netmend_services", []), svc_net, dns, node_names)

    if c.problems:
        raise SpecError(c.problems)
    cluster = Cluster(nodes=nodes, pod_cidr=str(pod_net), service_cidr=str(svc_net),
                      node_cidr=str(networks["netmend_node_cidr"]), cluster_domain=domain,
                      cluster_dns=str(dns), flannel=flannel, services=services)
    cluster.pods = _place_pods(c, cluster)
    if c.problems:
        raise SpecError(c.problems)
    return cluster


def _mtu(c, backend, v):
    """The pod MTU: flannel_mtu ('auto' or a number) checked against netmend_underlay_mtu."""
    if backend is None:
        return None
    try:
        return mtu_for(backend, v.get("flannel_mtu", "auto"), v.get("netmend_underlay_mtu", 1500))
    except FlannelError as exc:
        c.problems += exc.problems
        return None


def _nodes(c, hosts, networks, subnet_len, v):
    pod_net = networks.get("netmend_pod_cidr")
    node_net = networks.get("netmend_node_cidr")
    gateway = v.get("lab_gateway")
    if not hosts:
        c.fail("hosts", f"the inventory has no nodes; put hosts in the groups {', '.join(NODE_GROUPS)}")
    capacity = None
    if pod_net is not None and subnet_len is not None:
        capacity = 2 ** (subnet_len - pod_net.prefixlen)
        if len(hosts) > capacity:
            c.fail("netmend_pod_cidr", f"{pod_net} holds {capacity} node subnets of /{subnet_len}, "
                   f"the inventory has {len(hosts)} nodes; use a larger pod CIDR or a longer flannel_subnet_len")
    seen_names, seen_addrs, nodes = {}, {}, []
    for index, (name, group, hv) in enumerate(hosts):
        where = f"hosts.{name}"
        if not isinstance(name, str) or not NODE_NAME.match(name):
            c.fail(where, "a node name is 1-40 lower-case letters, digits or inner dashes")
        if name in seen_names:
            c.fail(where, f"duplicate node name (also in {seen_names[name]})")
            continue
        seen_names[name] = group
        c.choice(f"{where}.group", group, NODE_GROUPS)
        addr = c.address(f"{where}.ansible_host", (hv or {}).get("ansible_host"))
        if addr is None:
            continue
        if node_net and addr not in node_net:
            c.fail(f"{where}.ansible_host", f"{addr} is outside netmend_node_cidr {node_net}")
        if node_net and addr in (node_net.network_address, node_net.broadcast_address):
            c.fail(f"{where}.ansible_host", f"{addr} is the network or broadcast address of {node_net}")
        if gateway and str(addr) == str(gateway):
            c.fail(f"{where}.ansible_host", f"{addr} is the lab_gateway address")
        if str(addr) in seen_addrs:
            c.fail(f"{where}.ansible_host", f"duplicate address {addr} (also {seen_addrs[str(addr)]})")
            continue
        seen_addrs[str(addr)] = name
        subnet = ""
        if capacity is not None and index < capacity:
            first = int(pod_net.network_address) + index * 2 ** (32 - subnet_len)
            subnet = str(ipaddress.ip_network((first, subnet_len)))
        nodes.append(Node(name=name, index=index, address=str(addr),
                          role="control-plane" if group == "control_plane" else "worker", subnet=subnet))
    return nodes


def _services(c, specs, svc_net, dns, node_names):
    if not isinstance(specs, list):
        c.fail("netmend_services", "must be a list of services")
        return []
    check = _ServiceChecker(c, svc_net, dns, node_names)
    services = (check.service(f"netmend_services[{i}]", s) for i, s in enumerate(specs))
    return [svc for svc in services if svc is not None]


class _ServiceChecker:
    """Checks netmend_services entries in order; names, cluster IPs and node ports must be unique across them."""

    def __init__(self, c, svc_net, dns, node_names):
        self.c, self.svc_net, self.dns, self.node_names = c, svc_net, dns, node_names
        self.seen_ips, self.seen_names, self.node_ports = {}, set(), {}

    def service(self, where, s):
        """The Service of one entry, or None when it has no usable name or is not a mapping."""
        c = self.c
        if not isinstance(s, dict):
            c.fail(where, "must be a mapping with name, cluster_ip, ports and replicas")
            return None
        unknown = sorted(set(s) - set(SERVICE_KEYS))
        if unknown:
            c.fail(where, f"unknown keys {', '.join(unknown)}; accepted: {', '.join(SERVICE_KEYS)}")
        name = s.get("name")
        if not isinstance(name, str) or not name:
            c.fail(f"{where}.name", "is missing; a service name is required")
            return None
        namespace = s.get("namespace", "default")
        if (namespace, name) in self.seen_names:
            c.fail(f"{where}.name", f"duplicate service {namespace}/{name}")
        self.seen_names.add((namespace, name))
        ip = self._cluster_ip(f"{where}.cluster_ip", s.get("cluster_ip"), name)
        stype = c.choice(f"{where}.type", s.get("type", "ClusterIP"), SERVICE_TYPES)
        host_network = s.get("host_network", False)
        if not isinstance(host_network, bool):
            c.fail(f"{where}.host_network", f"{host_network!r} is not a boolean")
        replicas = self._replicas(f"{where}.replicas", s.get("replicas", []), host_network)
        raw_ports = s.get("ports")
        if not isinstance(raw_ports, list) or not raw_ports:
            c.fail(f"{where}.ports", "must be a non-empty list of ports")
            raw_ports = []
        ports = [self._port(f"{where}.ports[{j}]", p, stype, name) for j, p in enumerate(raw_ports)]
        return Service(name=name, namespace=namespace, cluster_ip=str(ip), type=stype or "ClusterIP",
                       host_network=bool(host_network), app=s.get("app", name),
                       replicas=tuple(replicas), ports=tuple(p for p in ports if p is not None))

    def _cluster_ip(self, fieldname, value, name):
        c = self.c
        ip = c.address(fieldname, value)
        if ip is None:
            return None
        if self.svc_net and ip not in self.svc_net:
            c.fail(fieldname, f"{ip} is outside netmend_service_cidr {self.svc_net}")
        if str(ip) in self.seen_ips:
            c.fail(fieldname, f"{ip} is already used by {self.seen_ips[str(ip)]}")
        self.seen_ips[str(ip)] = name
        if name == "kube-dns" and self.dns and ip != self.dns:
            c.fail(fieldname, f"kube-dns must have netmend_cluster_dns ({self.dns}), not {ip}")
        return ip

    def _replicas(self, fieldname, replicas, host_network):
        c = self.c
        if not isinstance(replicas, list) or not replicas:
            c.fail(fieldname, "must be a non-empty list of node names, one per pod")
            return []
        for j, node in enumerate(replicas):
            if node not in self.node_names:
                c.fail(f"{fieldname}[{j}]", f"{node!r} is not a node of the inventory "
                       f"({', '.join(self.node_names)})")
        if host_network and len(set(replicas)) != len(replicas):
            c.fail(fieldname, "host_network pods share the node's ports: one per node")
        return replicas

    def _port(self, pw, p, stype, name):
        """The Port of one entry of a service's ports, or None when it is unusable."""
        c = self.c
        if not isinstance(p, dict):
            c.fail(pw, "must be a mapping with port, target_port and protocol")
            return None
        port = c.integer(f"{pw}.port", p.get("port"), *PORT_RANGE)
        target = c.integer(f"{pw}.target_port", p.get("target_port", p.get("port")), *PORT_RANGE)
        proto = c.choice(f"{pw}.protocol", p.get("protocol", "TCP"), PROTOCOLS)
        node_port = self._node_port(pw, p, stype, proto, name)
        pname = p.get("name", "")
        if not isinstance(pname, str):
            c.fail(f"{pw}.name", f"{pname!r} is not a string")
            pname = ""
        if None in (port, target, proto):
            return None
        return Port(name=pname, port=port, target_port=target, protocol=proto, node_port=node_port)

    def _node_port(self, pw, p, stype, proto, name):
        c = self.c
        if "node_port" not in p:
            if stype == "NodePort":
                c.fail(f"{pw}.node_port", f"is required for a NodePort service; accepted: "
                       f"{NODE_PORT_RANGE[0]}-{NODE_PORT_RANGE[1]}")
            return 0
        if stype != "NodePort":
            c.fail(f"{pw}.node_port", "is only accepted for services of type NodePort")
        node_port = c.integer(f"{pw}.node_port", p["node_port"], *NODE_PORT_RANGE) or 0
        if node_port and (node_port, proto) in self.node_ports:
            c.fail(f"{pw}.node_port", f"{node_port}/{proto} is already used by "
                   f"{self.node_ports[(node_port, proto)]}")
        self.node_ports[(node_port, proto)] = name
        return node_port


def _place_pods(c, cluster):
    """Every node runs a netcheck pod at .2; service pods follow in spec order."""
    pods, next_ip = [], {}
    for node in cluster.nodes:
        next_ip[node.name] = node.network.network_address + 2
        pods.append(Pod(name=f"{NETCHECK_APP}-{node.name}", namespace="default", node=node.name,
                        ip=str(next_ip[node.name]), app=NETCHECK_APP))
        next_ip[node.name] += 1
    for svc in cluster.services:
        for k, node_name in enumerate(svc.replicas):
            node = cluster.node(node_name)
            if svc.host_network:
                pods.append(Pod(name=f"{svc.app}-{k}", namespace=svc.namespace, node=node_name,
                                ip=node.address, app=svc.app, host_network=True))
                continue
            ip = next_ip[node_name]
            if ip >= node.network.broadcast_address:
                c.fail("netmend_services", f"node {node_name} has more pods than its subnet {node.subnet} holds")
                return pods
            pods.append(Pod(name=f"{svc.app}-{k}", namespace=svc.namespace, node=node_name,
                            ip=str(ip), app=svc.app))
            next_ip[node_name] += 1
    return pods


def truth(cluster, leases=(), pod_resolv_path="", hostnet_resolv_path=""):
    """What every node is checked against, computed once for the whole cluster (roles/health).

    leases: flannel's leases as read from etcd (netmend.flannel.parse_etcd_leases); each is matched to a
    node by its public IP, or by the subnet the cluster model gives the node. A node without one gets
    the model's subnet and its inventory address (and no VtepMAC). hostNetwork endpoints are the
    node's current public IP from its lease: kube-proxy's DNAT must follow the node when its IP changes.
    pod_resolv_path / hostnet_resolv_path: where a pod's resolv.conf is on its node, with {pod} for the
    pod's name ("" = not checked). Pods of the cluster DNS service keep the node's resolv.conf
    (dnsPolicy Default) and are left out.
    """
    by_ip = {lease["public_ip"]: lease for lease in leases}
    by_subnet = {lease["subnet"]: lease for lease in leases}
    node_leases = []
    for node in cluster.nodes:
        lease = by_ip.get(node.address) or by_subnet.get(node.subnet) or {}
        node_leases.append({"node": node.name, "subnet": lease.get("subnet", node.subnet),
                            "public_ip": lease.get("public_ip", node.address), "vtep_mac": lease.get("vtep_mac")})
    current_ip = {lease["node"]: lease["public_ip"] for lease in node_leases}
    services = []
    for svc in cluster.services:
        pods = cluster.service_pods(svc)
        for port in svc.ports:
            endpoints = [f"{current_ip[p.node] if p.host_network else p.ip}:{port.target_port}" for p in pods]
            services.append({"namespace": svc.namespace, "name": svc.name, "port_name": port.name,
                             "protocol": port.protocol, "cluster_ip": svc.cluster_ip, "port": port.port,
                             "endpoints": endpoints})
    dns_apps = {(s.namespace, s.app) for s in cluster.services if s.cluster_ip == cluster.cluster_dns}
    pods = {node.name: [] for node in cluster.nodes}
    for pod in cluster.pods:
        template = hostnet_resolv_path if pod.host_network else pod_resolv_path
        if template and (pod.namespace, pod.app) not in dns_apps:
            pods[pod.node].append({"name": pod.name, "namespace": pod.namespace, "host_network": pod.host_network,
                                   "path": template.replace("{pod}", pod.name)})
    return {"leases": node_leases, "services": services, "pods": pods,
            "flannel": {k: cluster.flannel[k] for k in ("backend", "vni", "port", "mtu")},
            "addresses": {node.name: node.address for node in cluster.nodes}}
