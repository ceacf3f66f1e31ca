"""kube-proxy leftovers and cleanup plans (netmend.proxymode, with netmend.iptables and netmend.kubeproxy
additions), on output captured from kube-proxy's rules of each mode in a network namespace."""

from pathlib import Path

import pytest

from netmend.iptables import IptablesSaveError, Table, delete_payload, jumps_into, parse_save, rule_target
from netmend.kubeproxy import IPTABLES_MODE_CHAINS, IPVS_MODE_CHAINS, KUBELET_CHAINS, is_service_chain, mode_chains
from netmend.proxymode import (
    Link,
    Snapshot,
    StateError,
    VirtualServer,
    evidence,
    nft_delete_script,
    parse_ip_vs,
    parse_ipset_save,
    parse_link,
    parse_nft_tables,
    plan,
    previous_modes,
    read_snapshot,
    view,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kube-proxy"
HOST_RULES = [
    '-A INPUT -p icmp -j LOG --log-prefix "liuye-input: "',
    '-A FORWARD -p icmp -j LOG --log-prefix "liuye-forward: "',
    '-A OUTPUT -p icmp -j LOG --log-prefix "liuye-output: "',
    '-A PREROUTING -p icmp -j LOG --log-prefix "liuye-prerouting: "',
    '-A POSTROUTING -p icmp -j LOG --log-prefix "liuye-postrouting: "',
    "-A INPUT -j HOST-OWN", "-A HOST-OWN -s 192.0.2.0/24 -j RETURN",
    "-A INPUT -j KUBE-FIREWALL", "-A OUTPUT -j KUBE-FIREWALL", "-A KUBE-MARK-DROP -j MARK --set-xmark 0x8000/0x8000",
]


def read(name):
    return (FIXTURES / name).read_text()


def iptables_node():
    """kube-proxy in iptables mode (seed 000's service), kubelet's chains and the host's own rules."""
    return Snapshot(iptables={"ipv4": parse_save(read("iptables-mode-save.txt")),
                              "ipv6": parse_save(read("iptables-mode-ip6-save.txt"))},
                    nft_tables=[("ip", "nat"), ("ip", "filter"), ("inet", "filter")],
                    ipsets=parse_ipset_save("create host-allow hash:net family inet\nadd host-allow 192.0.2.0/24\n"),
                    link=None, ipvs=None)


def ipvs_node(link="ip-addr-dummy.json", ipvs=None):
    """kube-proxy in ipvs mode, plus the nftables tables a run in nftables mode left, kubelet and the host."""
    return Snapshot(iptables={"ipv4": parse_save(read("ipvs-mode-save.txt")), "ipv6": {}},
                    nft_tables=parse_nft_tables(read("nft-list-tables.txt")),
                    ipsets=parse_ipset_save(read("ipvs-mode-ipset-save.txt")),
                    link=parse_link(read(link)), ipvs=ipvs)


def payload_lines(p, family="ipv4"):
    return p.payloads.get(family, "").splitlines()


# What the node shows.

def test_evidence_of_iptables_mode_is_its_own_chains_only():
    found = evidence(iptables_node())
    assert set(found) == {"iptables"}
    assert "ipv4 nat chain KUBE-SVC-5MRENC7Q6ZQR6GKR" in found["iptables"]
    assert "ipv4 nat chain KUBE-NODEPORTS" in found["iptables"]
    assert "ipv6 mangle chain KUBE-PROXY-CANARY" in found["iptables"]
    assert not any("KUBE-FIREWALL" in r or "KUBE-MARK-DROP" in r or "KUBE-MARK-MASQ" in r for r in found["iptables"])


def test_evidence_of_ipvs_and_nftables_modes():
    found = evidence(ipvs_node())
    assert set(found) == {"ipvs", "nftables"}
    assert "dummy link kube-ipvs0" in found["ipvs"] and "ipset KUBE-CLUSTER-IP" in found["ipvs"]
    assert "ipv4 nat chain KUBE-NODE-PORT" in found["ipvs"] and "ipv4 filter chain KUBE-IPVS-FILTER" in found["ipvs"]
    assert "ipset host-allow" not in found["ipvs"]
    assert found["nftables"] == ["nft table ip kube-proxy", "nft table ip6 kube-proxy"]
    assert "dummy link kube-ipvs0" not in evidence(ipvs_node(link="ip-addr-bridge.json"))["ipvs"]


@pytest.mark.parametrize(("configured", "recorded", "evident", "expected"), [
    ("iptables", None, {"iptables"}, []),
    ("nftables", None, {"iptables"}, ["iptables"]),
    ("iptables", None, {"ipvs", "nftables", "iptables"}, ["ipvs", "nftables"]),
    ("iptables", "ipvs", set(), ["ipvs"]),
    ("iptables", "ipvs", {"nftables"}, ["ipvs", "nftables"]),
    ("iptables", "iptables", {"ipvs"}, []),
])
def test_which_modes_are_cleaned_up(configured, recorded, evident, expected):
    assert previous_modes(configured, recorded, evident) == expected


# iptables -> nftables: everything of kube-proxy's iptables mode, in both families, and nothing else.

def test_iptables_to_nftables_removes_kube_proxy_chains_and_jumps_only():
    p = plan(iptables_node(), "nftables")
    assert p.previous == ["iptables"]
    assert p.chains["ipv4"] == {
        "filter": ["KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD", "KUBE-NODEPORTS", "KUBE-PROXY-CANARY",
                   "KUBE-PROXY-FIREWALL", "KUBE-SERVICES"],
        "nat": ["KUBE-MARK-MASQ", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-PROXY-CANARY",
                "KUBE-SEP-AFBU56PEPWZ4VPIJ", "KUBE-SEP-NQUZNNDG4S4UQTZI", "KUBE-SEP-XYEBSHB6XMTA6LVQ", "KUBE-SERVICES",
                "KUBE-SVC-5MRENC7Q6ZQR6GKR"],
        "mangle": ["KUBE-PROXY-CANARY"],
    }
    assert p.chains["ipv6"]["nat"] == ["KUBE-MARK-MASQ", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-PROXY-CANARY",
                                       "KUBE-SERVICES"]
    lines = payload_lines(p)
    assert [line for line in lines if line.startswith("*")] == ["*filter", "*nat", "*mangle"]
    assert lines.count("COMMIT") == 3
    deleted = [line for line in lines if line.startswith("-D ")]
    assert len(deleted) == 9 + 3  # filter INPUT/FORWARD/OUTPUT jumps, nat PREROUTING/OUTPUT/POSTROUTING
    assert all(rule_target("-A " + line[3:]).startswith("KUBE-") for line in deleted)
    assert not any(chain in line for line in lines for chain in ("KUBE-FIREWALL", "KUBE-MARK-DROP", "KUBELET"))
    for host_rule in HOST_RULES:
        assert host_rule[3:] not in "\n".join(lines), host_rule
    assert not any(line.startswith("-A") or line.startswith("-I") for line in lines)
    assert not p.kept and not p.ipsets and p.link is None and not p.nft_tables


def test_kubelet_chains_are_never_planned():
    p = plan(iptables_node(), "nftables")
    for family in p.chains.values():
        for table, chains in family.items():
            assert not set(chains) & set(KUBELET_CHAINS.get(table, ()))


def test_view_before_and_after():
    snap = iptables_node()
    p = plan(snap, "nftables")
    before, after = view(snap), view(snap, p)
    assert "# iptables ipv4 nat" in before and ":KUBE-SVC-5MRENC7Q6ZQR6GKR -" in before
    assert '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES' in before
    assert "KUBE-FIREWALL" not in before and "liuye" not in before and "HOST-OWN" not in before
    assert after == ""


def test_nothing_to_do_when_the_mode_is_unchanged():
    p = plan(iptables_node(), "iptables")
    assert p.previous == [] and not p.removes and p.steps() == []
    p = plan(iptables_node(), "nftables", recorded="nftables")
    assert not p.removes and p.leftovers == {"iptables": evidence(iptables_node())["iptables"]}


# ipvs -> iptables.

def test_ipvs_to_iptables_removes_ipvs_chains_sets_link_and_nothing_else():
    p = plan(ipvs_node(), "iptables", recorded="ipvs")
    assert p.previous == ["ipvs", "nftables"]
    assert p.chains["ipv4"] == {
        "filter": ["KUBE-FORWARD", "KUBE-IPVS-FILTER", "KUBE-IPVS-OUT-FILTER", "KUBE-NODE-PORT",
                   "KUBE-PROXY-FIREWALL", "KUBE-SOURCE-RANGES-FIREWALL"],
        "nat": ["KUBE-LOAD-BALANCER", "KUBE-MARK-MASQ", "KUBE-NODE-PORT", "KUBE-POSTROUTING", "KUBE-SERVICES"],
    }
    assert p.ipsets == ["KUBE-CLUSTER-IP", "KUBE-EXTERNAL-IP", "KUBE-EXTERNAL-IP-LOCAL", "KUBE-HEALTH-CHECK-NODE-PORT",
                        "KUBE-IPVS-IPS", "KUBE-LOAD-BALANCER", "KUBE-LOAD-BALANCER-FW", "KUBE-LOOP-BACK",
                        "KUBE-NODE-PORT-TCP"]
    assert p.link == "kube-ipvs0"
    assert p.nft_tables == [("ip", "kube-proxy"), ("ip6", "kube-proxy")]
    assert nft_delete_script(p.nft_tables) == "delete table ip kube-proxy\ndelete table ip6 kube-proxy\n"
    assert "/proc/net/ip_vs does not exist (ip_vs is not loaded): there are no ipvs virtual servers" in p.notes
    steps = p.steps()
    assert steps[0] == "ip link delete kube-ipvs0"
    assert steps[1].startswith("iptables-restore -w 5 --noflush <<EOF\n*filter\n")
    assert steps[2:11] == [f"ipset destroy {name}" for name in p.ipsets]
    assert steps[-1].startswith("nft -f - <<EOF\ndelete table ip kube-proxy")


def test_a_kube_ipvs0_that_is_not_a_dummy_is_kept():
    p = plan(ipvs_node(link="ip-addr-bridge.json"), "iptables", recorded="ipvs")
    assert p.link is None
    assert ("link kube-ipvs0", "it is a bridge, not the dummy kube-proxy creates") in p.kept
    assert p.ipsets  # the rest of ipvs mode still goes


def test_switching_to_a_running_ipvs_keeps_the_shared_chains():
    """iptables -> ipvs with kube-proxy already in ipvs mode: the five shared chain names are ipvs's now."""
    snap = ipvs_node()
    legacy = parse_save(read("iptables-mode-save.txt"))
    for name in ("filter", "nat", "mangle"):  # the iptables mode's own chains are still there too
        table = snap.iptables["ipv4"].setdefault(name, Table(name, {"INPUT": "ACCEPT"}))
        for chain, policy in legacy[name].policies.items():
            if chain.startswith("KUBE-") and chain not in table.policies:
                table.policies[chain] = policy
                table.rules += [(c, line) for c, line in legacy[name].rules if c == chain]
    p = plan(snap, "ipvs", recorded="iptables")
    assert p.previous == ["iptables", "nftables"]
    nat = p.chains["ipv4"]["nat"]
    assert "KUBE-SVC-5MRENC7Q6ZQR6GKR" in nat and "KUBE-NODEPORTS" in nat and "KUBE-PROXY-CANARY" in nat
    assert "KUBE-SERVICES" not in nat and "KUBE-MARK-MASQ" not in nat and "KUBE-POSTROUTING" not in nat
    assert "KUBE-FORWARD" not in p.chains["ipv4"]["filter"]
    kept = dict(p.kept)
    assert kept["ipv4 nat chain KUBE-SERVICES"].startswith("ipvs mode runs (it shows:")
    assert not p.ipsets and p.link is None  # ipvs is the configured mode: its own state stays


def test_a_chain_the_host_still_refers_to_is_kept_with_what_it_needs():
    snap = iptables_node()
    nat = snap.iptables["ipv4"]["nat"]
    nat.policies["HOST-DNAT"] = "-"
    nat.rules.append(("HOST-DNAT", "-A HOST-DNAT -j KUBE-SVC-5MRENC7Q6ZQR6GKR"))
    p = plan(snap, "nftables")
    kept = dict(p.kept)
    svc = "KUBE-SVC-5MRENC7Q6ZQR6GKR"
    assert kept[f"ipv4 nat chain {svc}"] == f"still referred to by '-A HOST-DNAT -j {svc}'"
    seps = ("KUBE-SEP-AFBU56PEPWZ4VPIJ", "KUBE-SEP-NQUZNNDG4S4UQTZI", "KUBE-SEP-XYEBSHB6XMTA6LVQ")
    for needed in (*seps, "KUBE-MARK-MASQ"):
        assert needed not in p.chains["ipv4"]["nat"]
    assert "KUBE-SERVICES" in p.chains["ipv4"]["nat"]  # its rule into KUBE-SVC goes with it
    delete_payload(nat, p.chains["ipv4"]["nat"])  # consistent: raises if a kept rule referred to a deleted chain


def test_an_ipset_a_remaining_rule_matches_is_kept():
    snap = ipvs_node()
    flt = snap.iptables["ipv4"]["filter"]
    flt.rules.append(("INPUT", "-A INPUT -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT"))
    p = plan(snap, "iptables", recorded="ipvs")
    assert "KUBE-CLUSTER-IP" not in p.ipsets and "KUBE-LOOP-BACK" in p.ipsets
    assert ("ipset KUBE-CLUSTER-IP", "a remaining iptables rule matches it") in p.kept


def test_nftables_mode_with_only_shared_chains_left_removes_them():
    table = Table("nat", {"PREROUTING": "ACCEPT", "KUBE-SERVICES": "-", "KUBE-MARK-MASQ": "-"},
                  [("PREROUTING", '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES')])
    p = plan(Snapshot(iptables={"ipv4": {"nat": table}}), "nftables")
    assert p.evident == {"iptables": ["shared kube-proxy chains (KUBE-SERVICES, KUBE-POSTROUTING, ...)"]}
    assert p.chains["ipv4"]["nat"] == ["KUBE-MARK-MASQ", "KUBE-SERVICES"]


def test_unreadable_sources_are_reported():
    p = plan(Snapshot(iptables={"ipv4": {}}), "iptables", recorded="ipvs")
    assert "ipv6: iptables rules could not be read; none removed there" in p.notes
    assert "ipset is not installed: kube-proxy's ipsets cannot be read; none removed" in p.notes
    p = plan(Snapshot(), "iptables", recorded="nftables")
    assert "nft is not installed: nftables leftovers cannot be read; none removed" in p.notes


@pytest.mark.parametrize(("configured", "recorded", "words"), [
    ("userspace", None, "mode 'userspace'"), ("iptables", "kernelspace", "recorded mode 'kernelspace'")])
def test_unknown_modes_are_refused(configured, recorded, words):
    with pytest.raises(ValueError, match=words):
        plan(Snapshot(), configured, recorded)


# ipvs virtual servers.

def test_proc_net_ip_vs_is_parsed():
    services = parse_ip_vs(read("proc-net-ip_vs.txt"))
    assert [vs.text() for vs in services] == [
        "TCP 10.96.0.1:443 rr", "UDP 10.96.0.10:53 rr", "TCP 10.96.103.220:4000 rr", "TCP 198.51.100.12:30001 rr",
        "TCP 192.0.2.100:80 wlc", "FWM 0x1 rr", "TCP [fd00::1]:443 rr"]
    assert services[0].ipvsadm_delete() == ["-D", "-t", "10.96.0.1:443"]
    assert services[1].ipvsadm_delete() == ["-D", "-u", "10.96.0.10:53"]
    assert services[5].ipvsadm_delete() == ["-D", "-f", "1"]
    assert services[6].ipvsadm_delete() == ["-D", "-t", "[fd00::1]:443"]
    assert parse_ip_vs(read("proc-net-ip_vs.txt").split("TCP  0A6")[0]) == []


def test_only_kube_proxys_virtual_servers_are_removed():
    p = plan(ipvs_node(ipvs=parse_ip_vs(read("proc-net-ip_vs.txt"))), "iptables", recorded="ipvs")
    assert [vs.text() for vs in p.virtual_servers] == [
        "TCP 10.96.0.1:443 rr", "UDP 10.96.0.10:53 rr", "TCP 10.96.103.220:4000 rr", "TCP 198.51.100.12:30001 rr"]
    kept = [what for what, _ in p.kept]
    assert kept == ["ipvs virtual server TCP 192.0.2.100:80 wlc", "ipvs virtual server FWM 0x1 rr",
                    "ipvs virtual server TCP [fd00::1]:443 rr"]
    assert p.steps()[:4] == ["ipvsadm -D -t 10.96.0.1:443", "ipvsadm -D -u 10.96.0.10:53",
                             "ipvsadm -D -t 10.96.103.220:4000", "ipvsadm -D -t 198.51.100.12:30001"]
    assert p.steps()[4] == "ip link delete kube-ipvs0"


def test_without_kube_ipvs0_only_node_ports_are_recognised():
    snap = ipvs_node(ipvs=parse_ip_vs(read("proc-net-ip_vs.txt")))
    snap.link = None
    p = plan(snap, "iptables", recorded="ipvs")
    assert [vs.text() for vs in p.virtual_servers] == ["TCP 198.51.100.12:30001 rr"]


# Parsers on malformed, truncated and empty input.

def test_parsers_on_real_output():
    assert parse_nft_tables(read("nft-list-tables.txt"))[-2:] == [("ip", "kube-proxy"), ("ip6", "kube-proxy")]
    sets = parse_ipset_save(read("ipvs-mode-ipset-save.txt"))
    assert sets["KUBE-NODE-PORT-TCP"] == {"type": "bitmap:port", "members": ["30001"]}
    assert sorted(sets["KUBE-CLUSTER-IP"]["members"]) == ["10.96.0.1,tcp:443", "10.96.0.10,udp:53",
                                                          "10.96.103.220,tcp:4000"]
    assert parse_link(read("ip-addr-bridge.json")) == Link("kube-ipvs0", "bridge",
                                                           ["10.96.0.1/32", "10.96.0.10/32", "10.96.103.220/32"])
    assert parse_link(read("ip-addr-dummy.json")).kind == "dummy"
    assert parse_link(read("ip-addr-bridge.json"), "eth9") is None


def test_empty_output_means_nothing_there():
    assert parse_nft_tables("") == [] and parse_ipset_save("") == {} and parse_link("[]") is None


@pytest.mark.parametrize(("parser", "text", "words"), [
    (parse_nft_tables, "table ip kube-proxy\ngarbage\n", "line 2"),
    (parse_nft_tables, "table ip\n", "'table <family> <name>'"),
    (parse_ipset_save, "add KUBE-CLUSTER-IP 10.96.0.1,tcp:443\n", "created above"),
    (parse_ipset_save, "create KUBE-X\n", "line 1"),
    (parse_link, '[{"ifname": "kube-ipvs0"', "not JSON"),
    (parse_link, '{"ifname": "kube-ipvs0"}', "list of links"),
    (parse_link, '[{"name": "kube-ipvs0"}]', "ifname"),
    (parse_ip_vs, "", "header"),
    (parse_ip_vs, "Prot LocalAddress:Port Scheduler Flags\n", "header"),
    (parse_ip_vs, read("proc-net-ip_vs.txt") + "TCP  10.0.0.1:80 rr\n", "not a service line"),
    (parse_ip_vs, read("proc-net-ip_vs.txt") + "ICMP  0A000001:0050 rr\n", "not a service line"),
    (parse_ip_vs, read("proc-net-ip_vs.txt") + "TCP  [zz::1]:0050 rr\n", "not a service line"),
])
def test_malformed_output_is_an_error_naming_the_line(parser, text, words):
    with pytest.raises(StateError, match=words):
        parser(text)


def test_virtual_server_text():
    assert VirtualServer("SCTP", "10.0.0.1", 5000, "sh").ipvsadm_delete() == ["-D", "--sctp-service", "10.0.0.1:5000"]


# The additions to netmend.iptables and netmend.kubeproxy.

def test_rule_target():
    assert rule_target('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES') \
        == "KUBE-SERVICES"
    assert rule_target('-A X -m comment --comment "say -j NOPE" -g KUBE-SVC-A') == "KUBE-SVC-A"
    assert rule_target("-A KUBE-FORWARD -m conntrack --ctstate INVALID") is None
    with pytest.raises(IptablesSaveError, match="not a rule line"):
        rule_target('-A X -m comment --comment "unterminated -j Y')


def test_jumps_into_only_reads_built_in_chains():
    nat = parse_save(read("iptables-mode-save.txt"))["nat"]
    assert jumps_into(nat, {"KUBE-SERVICES"}) == [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES']
    assert jumps_into(nat, {"KUBE-SVC-5MRENC7Q6ZQR6GKR"}) == []  # only KUBE-SERVICES/KUBE-NODEPORTS refer to it


def test_delete_payload_refuses_what_netmend_does_not_own_or_cannot_delete():
    flt = parse_save(read("iptables-mode-save.txt"))["filter"]
    with pytest.raises(ValueError, match="HOST-OWN is not a chain netmend may delete"):
        delete_payload(flt, {"HOST-OWN"})
    with pytest.raises(ValueError, match="INPUT is not a chain netmend may delete"):
        delete_payload(Table("filter", {"INPUT": "ACCEPT"}), {"INPUT"})
    nat = parse_save(read("iptables-mode-save.txt"))["nat"]
    with pytest.raises(ValueError, match="refers to KUBE-SVC-5MRENC7Q6ZQR6GKR, which would be deleted"):
        delete_payload(nat, {"KUBE-SVC-5MRENC7Q6ZQR6GKR"})
    assert delete_payload(flt, {"KUBE-NOT-THERE"}) == ""


def test_delete_payload_deletes_every_copy_of_a_jump():
    jump = '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    nat = Table("nat", {"OUTPUT": "ACCEPT", "KUBE-SERVICES": "-"},
                [("OUTPUT", jump), ("OUTPUT", jump), ("KUBE-SERVICES", "-A KUBE-SERVICES -j RETURN")])
    assert delete_payload(nat, {"KUBE-SERVICES"}).splitlines() == [
        "*nat", ":KUBE-SERVICES - [0:0]", "-D " + jump[3:], "-D " + jump[3:], "-X KUBE-SERVICES", "COMMIT"]


def test_mode_chains():
    assert mode_chains("iptables", "nat", ["KUBE-SVC-X", "KUBE-SEP-Y", "KUBE-MARK-DROP", "KUBE-EXT-Z"]) == {
        *IPTABLES_MODE_CHAINS["nat"], "KUBE-SVC-X", "KUBE-SEP-Y", "KUBE-EXT-Z"}
    assert mode_chains("ipvs", "filter") == set(IPVS_MODE_CHAINS["filter"])
    assert mode_chains("nftables", "nat", ["KUBE-SVC-X"]) == set()
    assert is_service_chain("KUBE-SVL-ABC") and not is_service_chain("KUBE-SERVICES")
    for table, chains in KUBELET_CHAINS.items():
        assert not set(chains) & (mode_chains("iptables", table) | mode_chains("ipvs", table))


# Reading a node through the caller's command runner (netmend_node and netmend_kube_proxy_cleanup).

def _runner(outputs):
    calls = []

    def run(argv):
        calls.append(argv)
        return outputs[tuple(argv)]
    return run, calls


def test_read_snapshot_reads_every_source_once():
    run, calls = _runner({
        ("/sbin/iptables-save",): (0, read("iptables-mode-save.txt"), ""),
        ("/sbin/ip6tables-save",): (0, read("iptables-mode-ip6-save.txt"), ""),
        ("/usr/sbin/nft", "list", "tables"): (0, read("nft-list-tables.txt"), ""),
        ("/sbin/ipset", "save"): (0, read("ipvs-mode-ipset-save.txt"), ""),
        ("/bin/ip", "-d", "-j", "addr", "show"): (0, read("ip-addr-dummy.json"), ""),
    })
    tools = {"iptables-save": "/sbin/iptables-save", "ip6tables-save": "/sbin/ip6tables-save", "nft": "/usr/sbin/nft",
             "ipset": "/sbin/ipset", "ip": "/bin/ip"}
    snap = read_snapshot(run, tools.get)
    assert set(snap.iptables) == {"ipv4", "ipv6"} and "KUBE-NODEPORTS" in snap.iptables["ipv4"]["nat"].policies
    assert ("ip", "kube-proxy") in snap.nft_tables and "KUBE-CLUSTER-IP" in snap.ipsets
    assert snap.link.name == "kube-ipvs0" and snap.notes == []
    assert len(calls) == 5
    assert set(evidence(snap)) == {"iptables", "ipvs", "nftables"}


def test_read_snapshot_takes_the_callers_ipv4_tables_and_notes_what_it_cannot_read():
    run, calls = _runner({("ip6tables-save",): (1, "", "can't initialize ip6tables table `filter'"),
                          ("ip", "-d", "-j", "addr", "show"): (0, "[]", "")})
    ipv4 = parse_save(read("iptables-mode-save.txt"))
    snap = read_snapshot(run, {"ip6tables-save": "ip6tables-save", "ip": "ip"}.get, ipv4)
    assert snap.iptables == {"ipv4": ipv4} and snap.nft_tables is None and snap.ipsets is None and snap.link is None
    assert calls == [["ip6tables-save"], ["ip", "-d", "-j", "addr", "show"]]
    assert snap.notes == ["ip6tables-save failed (can't initialize ip6tables table `filter'): ipv6 rules not read"]
    snap = read_snapshot(_runner({})[0], {}.get)  # nothing installed
    assert snap.iptables == {} and snap.nft_tables is None and snap.link is None
    assert snap.notes == ["iptables-save is not installed: ipv4 rules not read",
                          "ip6tables-save is not installed: ipv6 rules not read",
                          "ip is not installed: the kube-ipvs0 link cannot be read"]


@pytest.mark.parametrize(("tool", "argv", "text", "words"), [
    ("nft", ("nft", "list", "tables"), "tables: ip nat\n", "nft list tables, line 1"),
    ("ipset", ("ipset", "save"), "add KUBE-X 10.0.0.1\n", "ipset save, line 1"),
    ("ip", ("ip", "-d", "-j", "addr", "show"), "[{", "ip -d -j addr show: not JSON"),
])
def test_read_snapshot_refuses_output_it_cannot_read(tool, argv, text, words):
    run, _ = _runner({("iptables-save",): (0, "", ""), ("ip6tables-save",): (0, "", ""), argv: (0, text, "")})
    with pytest.raises(StateError, match=words):
        read_snapshot(run, {"iptables-save": "iptables-save", "ip6tables-save": "ip6tables-save", tool: tool}.get)
