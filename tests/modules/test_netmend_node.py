"""netmend_node on a real mini node, in a throwaway network and mount namespace (tests/modules/sandbox.py).

Each test builds lab w1's networking inside `unshare --net --mount`: a veth underlay (eth0 198.51.100.12;
this kernel has no dummy links), the cni0 bridge, flannel.1 (VXLAN 1, dstport 8472, w1's VtepMAC), the
peer routes, neighbours and fdb entries of cp1 and w2, kube-proxy's and flannel's rules captured on w1
(tests/fixtures/drift/w1-iptables-save, iptables legacy), /run/flannel/subnet.env, the node's and two
pods' resolv.conf, and a DNS server on 127.0.0.1 for the node's nameserver check. /etc is an overlay and
/run a tmpfs, so nothing of this machine changes. A lab fault is injected with real commands; check mode
must report exactly its finding and change nothing, a normal run must bring back the clean state (backing
up the files it rewrites), a second run must change nothing, and the host's own rules and files (the
canary) must stay byte-identical throughout.
"""

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from netmend import resolvconf, sysctl
from netmend.kubeproxy import endpoint_chain
from tests.modules.sandbox import ROOT, can_sandbox, legacy_iptables, module_cmd, result_file, run_in_sandbox
from tests.unit.test_audit import SYSCTL_FILE, SYSCTLS, lab_want

pytestmark = pytest.mark.skipif(not can_sandbox(), reason="needs root and `unshare --net --mount`")

FIXTURES = ROOT / "tests" / "fixtures" / "drift"
CHECKS = ["kernel", "firewall", "forward", "masquerade", "flannel", "kube-proxy", "kube-proxy-chains",
          "kube-proxy-mode", "node-dns", "pod-dns", "conntrack"]
W1_MAC, CP1_MAC, W2_MAC = "22:a6:e6:f2:81:7e", "36:af:94:c6:36:5c", "66:7a:f1:bb:3f:9f"
RESOLV = "nameserver 127.0.0.1\nsearch lab.example\noptions timeout:1 attempts:1\n"
POD_RESOLV = resolvconf.pod_resolv_conf("10.96.0.10", "default", "cluster.local", ["lab.example"])
UPSTREAM_RESOLV = "nameserver 198.51.100.1\nsearch lab.example\n"
DROPIN = "50-netmend-dns.conf"
HOST_SYSCTL = "# the host's own\nnet.ipv4.conf.all.rp_filter = 1\nkernel.sysrq = 16\n"
# A DNS server that answers every query (REFUSED, with the query's ID) on 127.0.0.1:53, for 600 s at most
# (a sandbox lasts well under that; the bound keeps a stray server from outliving the test run). It creates
# the file named by its argument once it holds the port: the script waits for that file, never probing the
# port by binding it (a probe that wins the race would leave the server without its port).
DNS_SERVER = """
import pathlib, socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
s.settimeout(0.5)
pathlib.Path(sys.argv[1]).touch()
end = time.monotonic() + 600
while time.monotonic() < end:
    try:
        data, peer = s.recvfrom(512)
    except OSError:
        continue
    s.sendto(data[:2] + struct.pack(">HHHHH", 0x8185, 1, 0, 0, 0) + data[12:], peer)
"""
NODE = f"""
ip link set lo up
ip link add eth0 type veth peer name uplink0
ip addr add 198.51.100.12/24 dev eth0
ip link set eth0 up && ip link set uplink0 up
ip link add cni0 type bridge && ip link set cni0 mtu 1450
ip addr add 10.244.1.1/24 dev cni0 && ip link set cni0 up
ip link add flannel.1 address {W1_MAC} type vxlan id 1 local 198.51.100.12 dev eth0 dstport 8472 nolearning
ip link set flannel.1 mtu 1450 && ip addr add 10.244.1.0/32 dev flannel.1 && ip link set flannel.1 up
ip route replace 10.244.0.0/24 via 10.244.0.0 dev flannel.1 onlink
ip route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink
ip neigh replace 10.244.0.0 lladdr {CP1_MAC} dev flannel.1 nud permanent
ip neigh replace 10.244.2.0 lladdr {W2_MAC} dev flannel.1 nud permanent
bridge fdb replace {CP1_MAC} dev flannel.1 dst 198.51.100.11 self permanent
bridge fdb replace {W2_MAC} dev flannel.1 dst 198.51.100.13 self permanent
for key in net/ipv4/ip_forward net/ipv4/conf/all/forwarding net/ipv6/conf/all/forwarding; do
    echo 1 > /proc/sys/$key
done
iptables-restore < {FIXTURES / "w1-iptables-save"}
iptables -A INPUT -p icmp -j LOG --log-prefix "host-canary: "
iptables -A FORWARD -p icmp -j LOG --log-prefix "host-canary: "
iptables -N HOST-CANARY && iptables -A HOST-CANARY -s 192.0.2.0/24 -j RETURN
mkdir -p /run/flannel && cp {FIXTURES / "w1-subnet.env"} /run/flannel/subnet.env
nft add table inet host-own && nft add chain inet host-own input '{{ type filter hook input priority 0; }}'
nft add rule inet host-own input ip saddr 192.0.2.0/24 counter accept
ipset create host-allow hash:net && ipset add host-allow 192.0.2.0/24
"""
# What is compared before and after: the built-in chains' policies and the owned chains, flannel.1 and its
# peer entries, cni0's address and the files netmend may rewrite; the canary is the host's own.
SNAPSHOT = r"""
owned() {
    iptables-save -t "$1" | sed -e 's/ \[[0-9]*:[0-9]*\]$//' \
        | grep -E '^:(INPUT|FORWARD|OUTPUT|PREROUTING|POSTROUTING) |^(:|-A ).*(KUBE-|FLANNEL-|NETMEND-)'
}
snap() {
    owned filter > "$OUT/$1.filter"
    owned nat > "$OUT/$1.nat"
    ip -d link show flannel.1 2>&1 | sed -e 's/^[0-9]*: //' > "$OUT/$1.link"
    { ip route show; ip neigh show dev flannel.1 | sort; bridge fdb show dev flannel.1 | sort;
      ip -4 -o addr show dev cni0; ip -4 -o addr show dev flannel.1; } 2>&1 | sed -e 's/^[0-9]*: //' > "$OUT/$1.ip"
    { iptables-save | grep -E 'HOST-CANARY|host-canary'; cat /etc/sysctl.d/99-host.conf;
      nft list table inet host-own; ipset list host-allow; } > "$OUT/$1.canary"
    { nft list tables; ipset list -n; } 2>&1 | sort > "$OUT/$1.kp"
    { for f in /run/flannel/subnet.env /etc/resolv.conf $PODS; do echo "== $f"; cat "$f"; done
      for k in $SYSCTLS; do echo "$k = $(cat /proc/sys/$k)"; done; } > "$OUT/$1.files"
}
"""
STATE = ("filter", "nat", "link", "ip", "files", "kp")


class Node:
    """A script for one namespace: the mini node, then module runs and snapshots whose results land in out."""

    def __init__(self, tmp_path):
        self.root, self.out = tmp_path / "root", tmp_path / "out"
        self.root.mkdir()
        self.out.mkdir()
        self.bindir = legacy_iptables(tmp_path)
        self.pods = {"netcheck-w1": f"{self.root}/pods/netcheck-w1/resolv.conf",
                     "hello-hostnet-0": f"{self.root}/kubelet/hello-hostnet-0/etc-resolv.conf"}
        ovl = tmp_path / "ovl"
        ovl.mkdir()
        self.lines = [
            f"mount -t tmpfs tmpfs {ovl} && mkdir {ovl}/upper {ovl}/work",
            f"mount -t overlay overlay -o lowerdir=/etc,upperdir={ovl}/upper,workdir={ovl}/work /etc",
            "mount -t tmpfs tmpfs /run",
            f"export OUT={self.out} ANSIBLE_LOCAL_TEMP={tmp_path}/al ANSIBLE_REMOTE_TEMP={tmp_path}/ar "
            "ANSIBLE_LOCALHOST_WARNING=0",
            NODE,
            f"rm -f /etc/resolv.conf && printf %s {shlex.quote(RESOLV)} > /etc/resolv.conf",
            f"mkdir -p /etc/sysctl.d && printf %s {shlex.quote(sysctl.render(SYSCTLS))} > {SYSCTL_FILE}",
            f"printf %s {shlex.quote(HOST_SYSCTL)} > /etc/sysctl.d/99-host.conf",
            *(f"mkdir -p {shlex.quote(p.rsplit('/', 1)[0])} && printf %s {shlex.quote(POD_RESOLV)} > {shlex.quote(p)}"
              for p in self.pods.values()),
            # The kubelet's DNS drop-in as the dns role writes it, with a resolvConf that lists an upstream
            # (the node's own /etc/resolv.conf names the loopback DNS server above).
            f"printf %s {shlex.quote(UPSTREAM_RESOLV)} > {self.root}/upstream-resolv.conf",
            f"mkdir -p {self.root}/kubelet.conf.d && printf %s "
            f"{shlex.quote(kubelet_dropin(f'{self.root}/upstream-resolv.conf'))} > {self.root}/kubelet.conf.d/{DROPIN}",
            f"python3 -c {shlex.quote(DNS_SERVER)} {self.out}/dns.ready >{self.out}/dns.err 2>&1 & DNS_PID=$!",
            "trap 'kill \"$DNS_PID\" 2>/dev/null || true' EXIT",
            f"for i in $(seq 300); do [ -e {self.out}/dns.ready ] && break; sleep 0.1; done",
            f"[ -e {self.out}/dns.ready ] || {{ echo 'no DNS server:'; cat {self.out}/dns.err; exit 1; }}",
            f"export PODS={shlex.quote(' '.join(self.pods.values()))}",
            "export SYSCTLS=" + shlex.quote(" ".join(k.replace(".", "/") for k in SYSCTLS)),
            SNAPSHOT,
        ]
        self.want = lab_want()
        self.want["firewall"]["mode"] = "unmanaged"
        for key in ("modules_file", "modules_text"):
            del self.want[key]
        self.want["dns"]["kubelet"].update(path=f"{self.root}/kubelet.conf.d/{DROPIN}",
                                           resolv_conf=f"{self.root}/upstream-resolv.conf")
        self.want["dns"]["pods"] = [{**p, "path": self.pods[p["name"]]} for p in self.want["dns"]["pods"]
                                    if p["name"] in self.pods]

    def sh(self, text):
        self.lines.append(text)

    def run(self, name, want=None, check=False, checks=CHECKS):
        args = {"want": want or self.want, "checks": checks}
        cmd = module_cmd("netmend_node", args, check=check, diff=check)
        self.lines.append(f"{cmd} > {self.out}/{name}.json 2> {self.out}/{name}.err || true")

    def snap(self, name):
        self.lines.append(f"snap {name}")

    def go(self):
        proc = run_in_sandbox("\n".join(self.lines) + "\n", private_dirs=[str(self.root)], path_prefix=self.bindir,
                              timeout=300)
        assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
        return self

    def result(self, name):
        return result_file(self.out, name)

    def text(self, name):
        return (self.out / name).read_text()

    def state(self, name):
        return {part: self.text(f"{name}.{part}") for part in STATE}


def kubelet_dropin(resolv_conf):
    return resolvconf.render_kubelet_config({"clusterDNS": ["10.96.0.10"], "clusterDomain": "cluster.local",
                                             "resolvConf": resolv_conf})


def _host_state():
    """What a leak out of the namespace would change first on this machine."""
    etc = Path("/etc/resolv.conf")
    return (etc.read_bytes() if etc.exists() else None, sorted(os.listdir("/etc/sysctl.d")),
            Path("/proc/sys/net/ipv4/ip_forward").read_text(), os.path.exists("/run/flannel"),
            subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout)


@pytest.fixture
def node(tmp_path):
    before = _host_state()
    yield Node(tmp_path)
    assert _host_state() == before, "the host's resolv.conf, sysctl.d, ip_forward, /run/flannel or links changed"


def test_the_mini_node_audits_clean_and_a_run_changes_nothing(node):
    node.snap("before")
    node.run("check", check=True)
    node.run("run")
    node.snap("after")
    node.go()
    check, run = node.result("check"), node.result("run")
    assert check["findings"] == [] and not check["changed"], check
    assert check["skipped_checks"] == [] and len(check["checks"]) == 35  # every ID but COREDNS-LOOPBACK-UPSTREAM's
    assert "COREDNS-LOOPBACK-UPSTREAM" not in check["checks"]
    assert run["findings"] == [] and not run["changed"] and run["backups"] == []
    assert node.state("before") == node.state("after")
    assert f"link/ether {W1_MAC}" in node.text("before.link") and "vxlan id 1 " in node.text("before.link")
    assert "dstport 8472" in node.text("before.link")
    assert "-A KUBE-SEP-HPQWDY4QHTNUGDXX -p tcp -m tcp -j DNAT --to-destination 10.244.1.5:8080" in node.text(
        "before.nat")


POD = "{root}/pods/netcheck-w1/resolv.conf"
# hello-world-single's endpoint chain as kube-proxy names it for an old pod IP (lab fault stale-dnat-pod).
STALE_SEP = endpoint_chain("default", "hello-world-single", "", "TCP", "10.244.1.105:8080")
FORWARD_TAG = "-m comment --comment 'netmend: pod CIDR forwarding'"
MASQ = '-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" ' \
       "-j MASQUERADE --random-fully"
# The lab's faults (lab/faults.py), injected with real commands: (name, commands, the finding IDs in check
# order, the file the fix rewrites).
FAULTS = [
    ("forward-drop", f"iptables -P FORWARD DROP && iptables -D FORWARD {FORWARD_TAG} -j NETMEND-FORWARD && "
                     "iptables -F NETMEND-FORWARD && iptables -X NETMEND-FORWARD", "FORWARD-POLICY-DROP", None),
    # The one-judge case: the forward role repairs a chain that lost the masquerade-mark accept; so does the audit.
    ("forward-mark-lost", f"iptables -P FORWARD DROP && iptables -D NETMEND-FORWARD -m mark --mark 0x4000/0x4000 "
                          f"{FORWARD_TAG} -j ACCEPT", "FORWARD-POLICY-DROP", None),
    ("masquerade-missing", f"iptables -t nat -D {MASQ[3:]}", "MASQUERADE-MISSING", None),
    ("stale-dnat-pod",
     "iptables -t nat -F KUBE-SVC-EDVMF3IXK2ZILKRW && iptables -t nat -F KUBE-SEP-HPQWDY4QHTNUGDXX && "
     "iptables -t nat -X KUBE-SEP-HPQWDY4QHTNUGDXX && iptables -t nat -N {stale} && "
     "iptables -t nat -A {stale} -s 10.244.1.105/32 -j KUBE-MARK-MASQ && "
     "iptables -t nat -A {stale} -p tcp -m tcp -j DNAT --to-destination 10.244.1.105:8080 && "
     "iptables -t nat -A KUBE-SVC-EDVMF3IXK2ZILKRW -j {stale}", "DNAT-STALE-POD-IP", None),
    # kubernetes issue 114537's corrupt DNAT beside a missing MASQUERADE: both are reported, both fixed.
    ("corrupt-dnat", "iptables -t nat -F KUBE-SEP-HPQWDY4QHTNUGDXX && "
     "iptables -t nat -A KUBE-SEP-HPQWDY4QHTNUGDXX -s 10.244.1.5/32 -j KUBE-MARK-MASQ && "
     "iptables -t nat -A KUBE-SEP-HPQWDY4QHTNUGDXX -p tcp -m tcp -j DNAT --to-destination :0 && "
     f"iptables -t nat -D {MASQ[3:]}", "MASQUERADE-MISSING DNAT-CORRUPT", None),
    # The new finding: kube-proxy's masquerade chain emptied (a stray `iptables -t nat -F`).
    ("masq-chains-flushed", "iptables -t nat -F KUBE-POSTROUTING", "KUBE-PROXY-MASQ-CHAINS-BROKEN", None),
    ("cni0-address", "ip addr del 10.244.1.1/24 dev cni0 && ip addr add 10.244.200.1/24 dev cni0",
     "CNI0-ADDRESS-MISMATCH", None),
    ("flannel-vni",
     f"ip link del flannel.1 && ip link add flannel.1 address {W1_MAC} type vxlan id 2 local 198.51.100.12 dev eth0 "
     "dstport 8472 nolearning && ip link set flannel.1 mtu 1450 && ip addr add 10.244.1.0/32 dev flannel.1 && "
     "ip link set flannel.1 up && "
     "ip route replace 10.244.0.0/24 via 10.244.0.0 dev flannel.1 onlink && "
     "ip route replace 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink && "
     f"ip neigh replace 10.244.0.0 lladdr {CP1_MAC} dev flannel.1 nud permanent && "
     f"ip neigh replace 10.244.2.0 lladdr {W2_MAC} dev flannel.1 nud permanent && "
     f"bridge fdb replace {CP1_MAC} dev flannel.1 dst 198.51.100.11 self permanent && "
     f"bridge fdb replace {W2_MAC} dev flannel.1 dst 198.51.100.13 self permanent", "FLANNEL-VXLAN-VNI", None),
    ("peer-fdb-missing", f"bridge fdb del {W2_MAC} dev flannel.1 dst 198.51.100.13 self",
     "FLANNEL-PEER-FDB-MISSING", None),
    ("subnet-env-mismatch", "sed -i 's#FLANNEL_SUBNET=10.244.1.1/24#FLANNEL_SUBNET=10.244.7.1/24#' "
     "/run/flannel/subnet.env", "FLANNEL-SUBNET-ENV-MISMATCH", "/run/flannel/subnet.env"),
    ("pod-resolv-no-cluster-dns", "cp /etc/resolv.conf " + POD, "POD-RESOLV-NO-CLUSTER-DNS", POD),
    ("resolv-dead-nameserver", "sed -i 's/^nameserver 127.0.0.1$/nameserver 127.0.0.1\\nnameserver 127.0.0.2/' "
     "/etc/resolv.conf", "RESOLV-NAMESERVER-DEAD", "/etc/resolv.conf"),
    # kube-proxy's tables from an earlier nftables mode, and an ipset of an earlier ipvs mode, next to the
    # iptables mode that runs: field guide failure mode 9.
    ("kube-proxy-nftables-leftovers", f"nft -f {ROOT / 'tests' / 'fixtures' / 'kube-proxy' / 'nftables-mode.nft'}",
     "KUBE-PROXY-MODE-LEFTOVERS", None),
    ("kube-proxy-ipvs-ipset",
     "ipset create KUBE-CLUSTER-IP hash:ip,port && ipset add KUBE-CLUSTER-IP 10.96.0.10,udp:53",
     "KUBE-PROXY-MODE-LEFTOVERS", None),
]


@pytest.mark.parametrize(("name", "inject", "fid", "path"), FAULTS, ids=[f[0] for f in FAULTS])
def test_a_fault_is_reported_in_check_mode_and_fixed_by_a_run(node, name, inject, fid, path):
    path = path and path.replace("{root}", str(node.root))
    node.snap("clean")
    if path:
        node.sh(f"cp {shlex.quote(path)} $OUT/clean.file")
    node.sh(inject.replace("{stale}", STALE_SEP).replace("{root}", str(node.root)))
    node.snap("fault")
    if path:
        node.sh(f"cp {shlex.quote(path)} $OUT/fault.file")
    node.run("check", check=True)
    node.snap("checked")
    node.run("fix")
    node.snap("fixed")
    node.run("again")
    node.snap("again")
    if path:
        node.sh(f"for f in {shlex.quote(path)}.*~; do cat \"$f\"; done > $OUT/backup 2>&1")
    node.go()
    check, fix, again = node.result("check"), node.result("fix"), node.result("again")
    clean, fault = node.state("clean"), node.state("fault")
    assert fault != clean, "the fault changed nothing"
    assert [f["id"] for f in check["findings"]] == fid.split(), check
    assert check["changed"] and check["actions"] and check["diff"]
    assert node.state("checked") == fault, "check mode changed something"
    assert not fix.get("failed"), fix
    assert fix["changed"] and [f["id"] for f in fix["findings"]] == fid.split() and fix["remaining"] == []
    assert not again["changed"] and again["findings"] == [] and again["backups"] == []
    fixed = node.state("fixed")
    if "FORWARD-POLICY-DROP" in fid:  # the policy is the host's: netmend's accept chain goes back in front
        lines = fixed["filter"].splitlines()
        assert ":NETMEND-FORWARD -" in lines and ":FORWARD DROP" in lines
        assert next(line for line in lines if line.startswith("-A FORWARD ")) == (
            '-A FORWARD -m comment --comment "netmend: pod CIDR forwarding" -j NETMEND-FORWARD')
        clean["filter"] = clean["filter"].replace(":FORWARD ACCEPT\n", ":FORWARD DROP\n")
    assert fixed == clean
    assert node.state("again") == node.state("fixed")
    for step in ("fault", "checked", "fixed", "again"):
        assert node.text(f"{step}.canary") == node.text("clean.canary"), step
    assert "host-canary" in node.text("clean.canary") and "HOST-CANARY" in node.text("clean.canary")
    if path:
        (diff,) = check["diff"]
        assert diff["before"] == node.text("fault.file") and diff["after"] == node.text("clean.file")
        assert len(fix["backups"]) == 1 and fix["backups"][0].startswith(path + ".")
        assert node.text("backup") == node.text("fault.file")
    else:
        assert fix["backups"] == []


def test_a_stale_conntrack_dns_entry_is_deleted_exactly(node):
    flow = ("-p udp -s 10.244.1.2 -d 10.96.0.10 --sport {sport} --dport 53 -r {reply} -q 10.244.1.2 "
            "--reply-port-src 53 --reply-port-dst {sport} -t 300")
    node.sh("conntrack -I " + flow.format(sport=43567, reply="10.244.0.250") + " 2>/dev/null")
    node.sh("conntrack -I " + flow.format(sport=43999, reply="10.244.0.3") + " 2>/dev/null")
    node.sh("conntrack -L -p udp > $OUT/before.ct 2>/dev/null")
    node.run("check", check=True, checks=["conntrack"])
    node.run("fix", checks=["conntrack"])
    node.sh("conntrack -L -p udp > $OUT/after.ct 2>/dev/null")
    node.go()
    if "10.244.0.250" not in node.text("before.ct"):
        pytest.skip("conntrack -I cannot create entries here")
    check, fix = node.result("check"), node.result("fix")
    assert [f["id"] for f in check["findings"]] == ["CONNTRACK-STALE-DNS"]
    assert fix["changed"] and fix["remaining"] == []
    after = node.text("after.ct")
    assert "10.244.0.250" not in after and "sport=43999" in after


def test_a_bad_want_fails_naming_the_field_and_changes_nothing(node):
    bad = json.loads(json.dumps(node.want))
    bad["pod_cidr"] = "10.244.0.0"
    bad["flannel"]["vni"] = 0
    node.sh("iptables -P FORWARD DROP")
    node.snap("before")
    node.run("bad", bad)
    node.snap("after")
    node.go()
    bad_result = node.result("bad")
    assert bad_result.get("failed") and not bad_result.get("changed")
    assert "want.pod_cidr" in bad_result["msg"] and "want.flannel.vni" in bad_result["msg"]
    assert "nothing was checked or changed" in bad_result["msg"]
    assert {p["field"] for p in bad_result["problems"]} == {"want.pod_cidr", "want.flannel.vni"}
    assert node.state("before") == node.state("after")
    assert node.text("before.canary") == node.text("after.canary")


def test_unreadable_iptables_save_output_skips_only_the_checks_that_read_it(node):
    """Malformed command output names the command and the line; the node's other checks still run and
    still find what is wrong (here ip_forward, in the sandbox's own network namespace)."""
    save = f"{node.bindir}/iptables-save"
    node.sh(f"rm {save} && printf '%s\\n' '#!/bin/sh' "
            f"'/usr/sbin/iptables-legacy-save \"$@\" | sed \"2a -Z not-a-rule\"' > {save} && chmod +x {save}")
    node.sh("echo 0 > /proc/sys/net/ipv4/ip_forward")
    node.run("check", check=True)
    node.go()
    check = node.result("check")
    assert not check.get("failed"), check
    assert [f["id"] for f in check["findings"]] == ["SYSCTL-IP-FORWARD-OFF"]
    skipped = dict(line.split(": ", 1) for line in check["skipped_checks"])
    assert sorted(skipped) == ["forward", "kube-proxy", "kube-proxy-chains", "kube-proxy-mode", "masquerade"]
    assert skipped["forward"] == ("iptables: `iptables-save` printed what netmend cannot read: line 3: "
                                  "'-Z not-a-rule' is not a table, chain, rule or COMMIT line")
    assert "FLANNEL-VXLAN-VNI" in check["checks"] and "CONNTRACK-STALE-DNS" in check["checks"]
