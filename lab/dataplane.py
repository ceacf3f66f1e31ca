"""The lab's stand-ins for flanneld, the CNI bridge plugin, kube-proxy, the kubelet and CoreDNS.

flanneld and kube-proxy cannot be installed here, so the lab programs what they would: cni0 and
the pod veths, flannel.1 with per-peer routes, neighbours and fdb entries from the leases in the
real etcd, /run/flannel/subnet.env, kube-proxy's iptables rules and flannel's MASQUERADE. Pods are
network namespaces inside a node with a small HTTP server; the cluster DNS is dnsmasq in a pod.
This is lab code: netmend's product code never depends on it.
"""

import base64
import hashlib
import json
import shlex
from concurrent.futures import ThreadPoolExecutor

from lab.kubeproxy import render_flannel_masq, render_rules
from lab.sh import LabError, in_node, ip_batch, run, write_node_file
from netmend import resolvconf
from netmend.coredns import render_corefile
from netmend.flannel import net_conf, render_subnet_env

AGENT = "/usr/local/lib/netmend-lab/agent.py"
CLUSTERDNS = "/usr/local/lib/netmend-lab/clusterdns.py"
POD_PREFIX = "nmlab-"
ETCD_URL = "http://127.0.0.1:2379"
FLANNEL_PREFIX = "/coreos.com/network"
HOSTNET_RESOLV = "/var/lib/kubelet/pods/{pod}/etc-resolv.conf"
DNS_PORT = 53
# kube-proxy and flanneld recreate their rules when something flushes them (a firewalld start or
# reload does): kube-proxy watches its KUBE-PROXY-CANARY chain. The lab's stand-in does the same,
# every second, from the rules it applied at `up`; it lives in the node and dies with the lab.
RULES = "/var/lib/netmend-lab/kube-proxy.rules"
CANARY = "*mangle\n:KUBE-PROXY-CANARY - [0:0]\nCOMMIT\n"
KUBE_PROXY_PID = "/run/netmend-lab-kube-proxy.pid"  # stop it to model a kube-proxy replaced by another mode
RESYNC = (f"echo $$ > {KUBE_PROXY_PID}; while sleep 1; do "
          f"iptables -w 5 -t mangle -S KUBE-PROXY-CANARY >/dev/null 2>&1 || iptables-restore -w 5 --noflush {RULES}; "
          "done")


def node_resolv_conf(variables):
    """The node's own resolv.conf, as DHCP would write it: the outside DNS server."""
    return (f"nameserver {variables.get('lab_outside_host', '203.0.113.10')}\n"
            f"search {variables.get('lab_search_domain', 'lab.example')}\n")


def pod_resolv_conf(cluster, namespace, variables):
    """dnsPolicy ClusterFirst (and ClusterFirstWithHostNet), as the kubelet writes it (netmend.resolvconf)."""
    return resolvconf.pod_resolv_conf(cluster.cluster_dns, namespace, cluster.cluster_domain,
                                      [variables.get("lab_search_domain", "lab.example")])


def corefile_path(variables):
    """Where the dns role writes the Corefile on control-plane nodes; the lab's cluster DNS reads it there."""
    return f"{variables.get('netmend_manifest_dir', '/etc/kubernetes/netmend')}/coredns/Corefile"


def initial_corefile(cluster, variables):
    """The Corefile a fresh cluster has (kubeadm's), from the inventory's DNS settings."""
    return render_corefile(cluster.cluster_domain, variables.get("dns_upstreams", []),
                           cache_ttl=variables.get("dns_cache_ttl", 30))


def veth_name(pod_name):
    return "veth" + hashlib.sha256(pod_name.encode()).hexdigest()[:8]


def lease_key(subnet):
    return f"{FLANNEL_PREFIX}/subnets/{subnet.replace('/', '-')}"


def network_config(cluster):
    """flannel's network config, exactly as the flannel role writes it (automatic MTU)."""
    f = cluster.flannel
    return net_conf(cluster.pod_cidr, f["subnet_len"], f["backend"], f["vni"], f["port"])


def subnet_env(cluster, node):
    return render_subnet_env(cluster.pod_cidr, f"{node.gateway}/{node.network.prefixlen}", cluster.flannel["mtu"])


def build(cluster, variables, pids, log=print):
    with ThreadPoolExecutor(max_workers=8) as pool:
        macs = pool.map(lambda n: _node_devices(cluster, n, pids[n.name]), cluster.nodes)
        vtep_macs = dict(zip([n.name for n in cluster.nodes], macs, strict=True))
    etcd_node = next(n for n in cluster.nodes if n.role == "control-plane")
    _start_etcd(etcd_node, pids[etcd_node.name])
    leases = _publish_leases(cluster, pids[etcd_node.name], vtep_macs)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda n: _node_peers_and_pods(cluster, variables, n, pids[n.name], leases), cluster.nodes))


def _node_devices(cluster, node, pid):
    """cni0, flannel.1 and the node's sysctls. Returns flannel.1's MAC (the VtepMAC)."""
    mtu = cluster.flannel["mtu"]
    cmds = ["link add cni0 type bridge", f"link set cni0 mtu {mtu}",
            f"addr add {node.gateway}/{node.network.prefixlen} dev cni0", "link set cni0 up"]
    vxlan = cluster.flannel["backend"] == "vxlan"
    if vxlan:
        cmds += [f"link add flannel.1 type vxlan id {cluster.flannel['vni']} local {node.address} dev eth0 "
                 f"dstport {cluster.flannel['port']} nolearning",
                 f"link set flannel.1 mtu {mtu}", f"addr add {node.vtep_ip}/32 dev flannel.1",
                 "link set flannel.1 up"]
    ip_batch(POD_PREFIX + node.name, cmds)
    run(["nsenter", f"--net=/run/netns/{POD_PREFIX}{node.name}", "sysctl", "-qw", "net.ipv4.ip_forward=1",
         "net.ipv4.conf.all.forwarding=1", "net.bridge.bridge-nf-call-iptables=1",
         "net.bridge.bridge-nf-call-ip6tables=1"])
    if not vxlan:
        return None
    out = run(["ip", "-n", POD_PREFIX + node.name, "-j", "link", "show", "flannel.1"]).stdout
    return json.loads(out)[0]["address"]


def _start_etcd(node, pid):
    write_node_file(pid, "/etc/default/etcd", f"""\
# netmend lab: a single-member etcd holding flannel's network config and subnet leases.
ETCD_LISTEN_CLIENT_URLS="http://127.0.0.1:2379,http://{node.address}:2379"
ETCD_ADVERTISE_CLIENT_URLS="http://{node.address}:2379"
ETCD_LISTEN_PEER_URLS="http://{node.address}:2380"
ETCD_INITIAL_ADVERTISE_PEER_URLS="http://{node.address}:2380"
ETCD_INITIAL_CLUSTER="{node.name}=http://{node.address}:2380"
ETCD_ENABLE_V2="true"
""")
    in_node(pid, ["service", "etcd", "start"])
    script = f"""for i in $(seq 1 100); do
  etcdctl --endpoints={ETCD_URL} --command-timeout=1s endpoint health >/dev/null 2>&1 && exit 0
  sleep 0.1
done
echo 'etcd did not become healthy in 10 s' >&2; exit 1"""
    in_node(pid, ["sh", "-c", script], timeout=30)


def _publish_leases(cluster, pid, vtep_macs):
    """Write the network config and one lease per node, then read the leases back as flanneld does."""
    puts = [(f"{FLANNEL_PREFIX}/config", json.dumps(network_config(cluster)))]
    for node in cluster.nodes:
        lease = {"PublicIP": node.address, "PublicIPv6": None, "BackendType": cluster.flannel["backend"]}
        if vtep_macs[node.name]:
            lease["BackendData"] = {"VNI": cluster.flannel["vni"], "VtepMAC": vtep_macs[node.name]}
        puts.append((lease_key(node.subnet), json.dumps(lease)))
    script = "set -e\n" + "".join(
        f"etcdctl --endpoints={ETCD_URL} put '{k}' '{v}' >/dev/null\n" for k, v in puts)
    in_node(pid, ["sh", "-c", script], timeout=120)
    out = in_node(pid, ["etcdctl", f"--endpoints={ETCD_URL}", "get", "--prefix", f"{FLANNEL_PREFIX}/subnets/",
                        "-w", "json"]).stdout
    leases = {}
    for kv in json.loads(out).get("kvs", []):
        key = base64.b64decode(kv["key"]).decode()
        leases[key.rsplit("/", 1)[1].replace("-", "/")] = json.loads(base64.b64decode(kv["value"]))
    if len(leases) != len(cluster.nodes):
        raise LabError(f"etcd holds {len(leases)} leases for {len(cluster.nodes)} nodes")
    return leases


def _peer_commands(cluster, node, leases):
    """(ip commands, bridge commands) for every peer's lease, as flanneld programs them."""
    cmds, fdb = [], []
    for subnet, lease in sorted(leases.items()):
        if subnet == node.subnet:
            continue
        if cluster.flannel["backend"] == "vxlan":
            vtep = subnet.split("/")[0]
            mac = lease["BackendData"]["VtepMAC"]
            cmds += [f"route add {subnet} via {vtep} dev flannel.1 onlink",
                     f"neigh add {vtep} lladdr {mac} dev flannel.1 nud permanent"]
            fdb.append(f"fdb add {mac} dev flannel.1 dst {lease['PublicIP']} self permanent")
        else:
            cmds.append(f"route add {subnet} via {lease['PublicIP']} dev eth0")
    return cmds, fdb


def _node_peers_and_pods(cluster, variables, node, pid, leases):
    routes, fdb = _peer_commands(cluster, node, leases)
    ip_batch(POD_PREFIX + node.name, routes)
    ip_batch(POD_PREFIX + node.name, fdb, tool="bridge")
    write_node_file(pid, "/run/flannel/subnet.env", subnet_env(cluster, node))
    write_node_file(pid, RULES, render_rules(cluster, node, "") + render_flannel_masq(cluster, node, "") + CANARY)
    in_node(pid, ["iptables-restore", "-w", "5", "--noflush", RULES])
    in_node(pid, ["sh", "-c", f"setsid sh -c {shlex.quote(RESYNC)} >/dev/null 2>&1 </dev/null &"])
    in_node(pid, ["sh", "-c", _pods_script(cluster, variables, node)], timeout=60)


def _pods_script(cluster, variables, node):
    """One shell script that creates the node's pods and starts their processes."""
    lines = ["set -e", "mkdir -p /var/log/pods"]
    services = {s.app: s for s in cluster.services}
    for pod in cluster.pods_on(node.name):
        svc = services.get(pod.app)
        ports = sorted({p.target_port for p in svc.ports if p.protocol == "TCP"}) if svc else [8080]
        logf = f"/var/log/pods/{pod.name}.log"
        if pod.host_network:
            resolv = HOSTNET_RESOLV.format(pod=pod.name)
            lines += [f"mkdir -p {resolv.rsplit('/', 1)[0]}",
                      f"cat > {resolv} <<'EOF'\n{pod_resolv_conf(cluster, pod.namespace, variables)}EOF",
                      f"setsid python3 {AGENT} serve --name {pod.name} --http {_csv(ports)} "
                      f">{logf} 2>&1 </dev/null &"]
            continue
        ns, veth = POD_PREFIX + pod.name, veth_name(pod.name)
        mtu = cluster.flannel["mtu"]
        dns_pod = svc is not None and svc.cluster_ip == cluster.cluster_dns
        resolv = node_resolv_conf(variables) if dns_pod else pod_resolv_conf(cluster, pod.namespace, variables)
        lines += [
            f"ip netns add {ns}",
            f"ip link add {veth} mtu {mtu} type veth peer name eth0 mtu {mtu} netns {ns}",
            f"ip link set {veth} master cni0 up",
            f"ip link set {veth} type bridge_slave hairpin on",
            f"ip -n {ns} link set lo up",
            f"ip -n {ns} addr add {pod.ip}/{node.network.prefixlen} dev eth0",
            f"ip -n {ns} link set eth0 up",
            f"ip -n {ns} route add default via {node.gateway}",
            f"mkdir -p /etc/netns/{ns}",
            f"cat > /etc/netns/{ns}/resolv.conf <<'EOF'\n{resolv}EOF",
        ]
        http_ports = [p for p in ports if p != DNS_PORT]
        if http_ports:
            lines.append(f"setsid ip netns exec {ns} python3 {AGENT} serve --name {pod.name} "
                         f"--http {_csv(http_ports)} >{logf} 2>&1 </dev/null &")
        if dns_pod:
            corefile = corefile_path(variables)
            lines += [f"mkdir -p {corefile.rsplit('/', 1)[0]}",
                      f"[ -e {corefile} ] || cat > {corefile} <<'EOF'\n{initial_corefile(cluster, variables)}EOF",
                      f"setsid ip netns exec {ns} {_clusterdns(cluster, corefile)} "
                      f">/var/log/pods/{pod.name}-dns.log 2>&1 </dev/null &"]
    return "\n".join(lines) + "\n"


def _csv(ports):
    return ",".join(str(p) for p in ports)


def _clusterdns(cluster, corefile):
    """CoreDNS's part: the lab's stand-in (lab/clusterdns.py) runs dnsmasq as the Corefile says, answering
    <svc>.<ns>.svc.<domain> with the ClusterIP and NXDOMAIN for the rest of the cluster domain."""
    d = cluster.cluster_domain
    records = " ".join(f"--record={s.name}.{s.namespace}.svc.{d},{s.cluster_ip}" for s in cluster.services)
    return f"python3 {CLUSTERDNS} --corefile {corefile} {records}"
