"""netmend.iproute on real iproute2 output: a flannel node captured in a namespace (fixtures/iproute/capture.sh)
and the seeds' nodes; malformed, truncated and empty output fail with the command named."""

import json
from pathlib import Path

import pytest

from netmend.errors import ProblemsError
from netmend.iproute import (
    Addr,
    Fdb,
    IprouteError,
    Link,
    Neigh,
    Nexthop,
    Route,
    Vxlan,
    parse_addrs,
    parse_fdb,
    parse_fdb_text,
    parse_links,
    parse_links_text,
    parse_neighs,
    parse_neighs_text,
    parse_routes,
    parse_routes_text,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "iproute"


def fixture(name):
    return (FIXTURES / name).read_text()


def by_name(links):
    return {link.name: link for link in links}


def problem(excinfo):
    return str(excinfo.value)


# --- links ------------------------------------------------------------------------------------------


def test_links_of_the_flannel_node():
    links = parse_links(fixture("link-detail.json"))
    assert [link.name for link in links] == ["lo", "uplink0", "eth0", "cni0", "veth3f2a9c1d", "flannel.1",
                                             "kube-ipvs0"]
    named = by_name(links)
    assert named["flannel.1"] == Link(
        name="flannel.1", index=7, kind="vxlan", mtu=1450, operstate="UNKNOWN",
        flags=("BROADCAST", "MULTICAST", "UP", "LOWER_UP"), master=None, address="3a:5e:8c:1d:f2:12", link=None,
        vxlan=Vxlan(id=1, local="198.51.100.12", port=8472, dev="eth0", learning=False))
    assert named["flannel.1"].up and named["flannel.1"].lower_up
    assert (named["cni0"].kind, named["cni0"].mtu, named["cni0"].address) == ("bridge", 1450, "0a:58:0a:f4:01:01")
    # The pod's host-side veth: a port of cni0, its peer (index 5) in the pod's namespace.
    veth = named["veth3f2a9c1d"]
    assert (veth.kind, veth.master, veth.slave_kind, veth.link, veth.mtu) == ("veth", "cni0", "bridge", "if5", 1450)
    # The underlay: one half of a veth pair whose peer is in the same namespace.
    assert (named["eth0"].kind, named["eth0"].link, named["eth0"].mtu) == ("veth", "uplink0", 1500)
    assert named["lo"].kind is None and named["lo"].vxlan is None
    # kube-ipvs0 is a bridge here: the capture kernel has no dummy links (README.md); kube-proxy keeps it down.
    assert named["kube-ipvs0"].kind == "bridge"
    assert not named["kube-ipvs0"].up and named["kube-ipvs0"].operstate == "DOWN"


def test_links_text_form_matches_the_json_form():
    assert parse_links_text(fixture("link-detail.txt")) == parse_links(fixture("link-detail.json"))


def test_links_of_seed003_flannel_nodes():
    # flannel 0.5.5's flannel.1 on an iproute2 that printed "port <low> <high>" (the source port range)
    # and no dstport: the port is unknown, not 8472 and not 0.
    (master,) = parse_links_text(fixture("seed003-link-detail-master.txt"))
    (minion,) = parse_links_text(fixture("seed003-link-detail-minion.txt"))
    assert (master.index, master.name, master.kind, master.mtu, master.address) == (
        4, "flannel.1", "vxlan", 1450, "b6:bf:4c:81:cf:3b")
    assert master.vxlan == Vxlan(id=1, local="10.46.181.145", port=None, dev="eth0", learning=False)
    assert minion.index == 349 and minion.address == "d6:51:2e:80:5c:69"
    assert minion.vxlan == Vxlan(id=1, local="10.46.181.146", port=None, dev="eth0", learning=False)
    assert minion.operstate == "UNKNOWN" and minion.up


def test_links_without_details_are_refused():
    with pytest.raises(IprouteError) as excinfo:
        parse_links(fixture("link-brief.json"))
    assert "ip -j -d link show: link 6 (flannel.1): has no details" in problem(excinfo)
    assert "-d" in problem(excinfo)
    assert len(excinfo.value.problems) == 7  # every link, all at once
    with pytest.raises(IprouteError, match=r"line 11 \(flannel.1\): has no details .*`ip -d link show`"):
        parse_links_text(fixture("link-brief.txt"))


def test_links_and_addrs_of_ip_addr_with_details():
    # `ip -d -j addr show`, pretty-printed, captured for the kube-proxy fixtures (kube-ipvs0 with ClusterIPs).
    text = (FIXTURES.parent / "kube-proxy" / "ip-addr-bridge.json").read_text()
    links = by_name(parse_links(text, command="ip -d -j addr show"))
    assert (links["kube-ipvs0"].kind, links["kube-ipvs0"].up, links["lo"].kind) == ("bridge", False, None)
    assert [a.cidr for a in parse_addrs(text) if a.ifname == "kube-ipvs0"] == [
        "10.96.0.1/32", "10.96.0.10/32", "10.96.103.220/32"]


# --- addresses --------------------------------------------------------------------------------------


def test_addrs_of_the_flannel_node():
    addrs = parse_addrs(fixture("addr.json"))
    inet = [(a.ifname, a.cidr, a.scope) for a in addrs if a.family == "inet"]
    assert inet == [("lo", "127.0.0.1/8", "host"), ("eth0", "198.51.100.12/24", "global"),
                    ("cni0", "10.244.1.1/24", "global"), ("flannel.1", "10.244.1.0/32", "global"),
                    ("kube-ipvs0", "10.96.0.10/32", "global")]
    flannel6 = [a for a in addrs if a.ifname == "flannel.1" and a.family == "inet6"]
    assert flannel6 == [Addr("flannel.1", "inet6", "fe80::385e:8cff:fe1d:f212", 64, "link")]
    assert [a for a in addrs if a.ifname == "kube-ipvs0"] == [
        Addr("kube-ipvs0", "inet", "10.96.0.10", 32, "global", label="kube-ipvs0")]


def test_addr_flags_are_the_ones_set():
    doc = json.loads(fixture("addr.json"))
    eth0 = next(link for link in doc if link["ifname"] == "eth0")
    eth0["addr_info"][1].update(tentative=True, noprefixroute=True)
    (v6,) = [a for a in parse_addrs(json.dumps(doc)) if a.ifname == "eth0" and a.family == "inet6"]
    assert v6.flags == ("tentative", "noprefixroute")


def test_addrs_refuse_link_output():
    with pytest.raises(IprouteError, match=r"ip -j addr show: link 1 \(lo\): has no addr_info"):
        parse_addrs(fixture("link-brief.json"))


# --- routes -----------------------------------------------------------------------------------------


def test_routes_of_the_flannel_node():
    routes = parse_routes(fixture("route.json"))
    assert [(r.dst, r.gateway, r.dev, r.flags) for r in routes] == [
        ("default", "198.51.100.1", "eth0", ()),
        ("10.244.0.0/24", "10.244.0.0", "flannel.1", ("onlink",)),
        ("10.244.1.0/24", None, "cni0", ()),
        ("10.244.2.0/24", "10.244.2.0", "flannel.1", ("onlink",)),
        ("198.51.100.0/24", None, "eth0", ()),
    ]
    # What iproute2 leaves out is filled in; what it prints is kept.
    assert routes[1] == Route("10.244.0.0/24", "10.244.0.0", "flannel.1", type="unicast", protocol="boot",
                              scope="global", table="main", prefsrc=None, metric=0, flags=("onlink",))
    assert (routes[2].protocol, routes[2].scope, routes[2].prefsrc) == ("kernel", "link", "10.244.1.1")


def test_routes_with_details_equal_the_defaults_filled_in():
    # `ip -d` prints type, protocol and scope on every route: the same values the parser fills in.
    assert parse_routes(fixture("route-detail.json")) == parse_routes(fixture("route.json"))


def test_routes_of_all_tables():
    routes = parse_routes(fixture("route-table-all.json"), command="ip -j route show table all")
    assert routes[:5] == parse_routes(fixture("route.json"))
    local = {(r.type, r.dst, r.dev) for r in routes if r.table == "local"}
    assert ("local", "10.96.0.10", "kube-ipvs0") in local
    assert ("local", "10.244.1.0", "flannel.1") in local
    assert ("broadcast", "10.244.1.255", "cni0") in local
    assert ("multicast", "ff00::/8", "flannel.1") in local
    v6 = [r for r in routes if r.dst == "fe80::/64" and r.dev == "flannel.1"]
    assert v6 == [Route("fe80::/64", None, "flannel.1", protocol="kernel", metric=256)]


def test_routes_of_another_table_need_the_table_named():
    # `ip route show table 100` prints no table on its routes.
    routes = parse_routes(fixture("route-table-100.json"), table="100")
    assert {r.table for r in routes} == {"100"}
    assert routes[0] == Route("10.244.8.0/24", "198.51.100.1", "eth0", table="100", prefsrc="198.51.100.12",
                              metric=100)
    assert (routes[1].type, routes[1].dst, routes[1].dev, routes[1].protocol) == (
        "blackhole", "10.244.9.0/24", None, "static")
    assert (routes[2].type, routes[2].dst) == ("unreachable", "192.0.2.0/24")
    assert routes[3].dev is None and routes[3].nexthops == (
        Nexthop("198.51.100.1", "eth0", 1), Nexthop("198.51.100.2", "eth0", 2))


@pytest.mark.parametrize(("text", "json_name", "table"), [
    ("route.txt", "route.json", "main"),
    ("route-table-all.txt", "route-table-all.json", "main"),
    ("route-table-100.txt", "route-table-100.json", "100"),
])
def test_routes_text_form_matches_the_json_form(text, json_name, table):
    assert parse_routes_text(fixture(text), table=table) == parse_routes(fixture(json_name), table=table)


def test_routes_of_seed003_flannel_nodes():
    # An old iproute2 (two spaces between words): flannel 0.5.5 put the whole network on flannel.1.
    master = parse_routes_text(fixture("seed003-route-master.txt"))
    assert master == [
        Route("172.16.0.0/16", None, "flannel.1", protocol="kernel", scope="link", prefsrc="172.16.99.0"),
        Route("172.16.99.0/24", None, "docker0", protocol="kernel", scope="link", prefsrc="172.16.99.1")]
    minion = parse_routes_text(fixture("seed003-route-minion.txt"))
    assert minion[0] == Route("172.16.0.0/16", None, "flannel.1")  # added by flanneld: protocol boot
    pod = parse_routes_text(fixture("seed003-route-pod.txt"))
    assert (pod[0].dst, pod[0].gateway, pod[0].dev) == ("default", "172.16.99.1", "eth0")


def test_routes_of_seed000_and_seed001():
    (local,) = parse_routes_text(fixture("seed000-route-k8s-n-1.txt"))
    assert (local.dst, local.dev, local.protocol, local.prefsrc) == ("10.244.1.0/24", "cni0", "kernel", "10.244.1.1")
    (remote,) = parse_routes_text(fixture("seed000-route-k8s-n-2.txt"))
    assert remote == Route("10.244.1.0/24", "10.244.1.0", "flannel.1", flags=("onlink",))
    calico = parse_routes_text(fixture("seed001-route-calico.txt"))
    assert calico[0] == Route("10.92.77.163", None, "cali93a8a799fe1", scope="link")
    assert [(r.dst, r.gateway, r.dev, r.protocol) for r in calico[1:3]] == [
        ("10.92.160.0/23", "10.106.65.2", "bond0", "bird"), ("10.92.203.0/23", "10.100.1.2", "eth0", "bird")]
    assert len(calico) == 6


# --- neighbours and fdb ------------------------------------------------------------------------------


def test_neighbours_of_the_flannel_node():
    neighs = parse_neighs(fixture("neigh.json"))
    assert sorted((n.dst, n.lladdr) for n in neighs if n.dev == "flannel.1" and n.permanent) == [
        ("10.244.0.0", "3a:5e:8c:1d:f2:11"), ("10.244.2.0", "3a:5e:8c:1d:f2:13")]
    assert Neigh("198.51.100.99", "eth0", None, ("FAILED",)) in neighs
    assert Neigh("198.51.100.1", "eth0", "52:54:00:00:00:01", ("REACHABLE",)) in neighs
    assert parse_neighs_text(fixture("neigh.txt")) == neighs


def test_neighbour_of_seed003():
    assert parse_neighs_text(fixture("seed003-neigh-master.txt")) == [
        Neigh("172.16.57.15", "flannel.1", "d6:51:2e:80:5c:69", ("REACHABLE",))]


def test_fdb_of_the_flannel_node():
    entries = parse_fdb(fixture("fdb.json"))
    flannel = [e for e in entries if e.dev == "flannel.1"]
    assert flannel == [Fdb("3a:5e:8c:1d:f2:13", "flannel.1", "198.51.100.13", ("self",), "permanent"),
                       Fdb("3a:5e:8c:1d:f2:11", "flannel.1", "198.51.100.11", ("self",), "permanent")]
    assert all(e.permanent for e in flannel)
    # The pod's MAC, learnt on its veth: no state (reachable), the bridge as master.
    learnt = [e for e in entries if e.mac == "0a:58:0a:f4:01:02"]
    assert learnt == [Fdb("0a:58:0a:f4:01:02", "veth3f2a9c1d", None, (), None, master="cni0")]
    assert not learnt[0].permanent
    assert parse_fdb_text(fixture("fdb.txt")) == entries


def test_fdb_filtered_on_a_device_needs_it_named():
    assert parse_fdb(fixture("fdb-dev-flannel.1.json"), dev="flannel.1") == [
        e for e in parse_fdb(fixture("fdb.json")) if e.dev == "flannel.1"]
    assert parse_fdb_text(fixture("fdb-dev-flannel.1.txt"), dev="flannel.1") == parse_fdb(
        fixture("fdb-dev-flannel.1.json"), dev="flannel.1")
    with pytest.raises(IprouteError, match=r"fdb entry 1 \(3a:5e:8c:1d:f2:13\): has no dev; .* dev=X"):
        parse_fdb(fixture("fdb-dev-flannel.1.json"))
    with pytest.raises(IprouteError, match=r"bridge fdb show: line 1: there is no dev"):
        parse_fdb_text(fixture("fdb-dev-flannel.1.txt"))
    with pytest.raises(IprouteError, match=r"is on uplink0, but the command was filtered on dev flannel\.1"):
        parse_fdb(fixture("fdb.json"), dev="flannel.1")


def test_fdb_of_seed003():
    assert parse_fdb_text(fixture("seed003-fdb-dev-flannel.1-master.txt"), dev="flannel.1") == [
        Fdb("d6:51:2e:80:5c:69", "flannel.1", "10.46.181.146", ("self",), "permanent")]


def test_fdb_json_of_iproute2_before_4_17_names_the_device_dev():
    doc = json.loads(fixture("fdb.json"))
    for entry in doc:
        entry["dev"] = entry.pop("ifname")
    assert parse_fdb(json.dumps(doc)) == parse_fdb(fixture("fdb.json"))


# --- empty, truncated and malformed output -----------------------------------------------------------

JSON_PARSERS = [(parse_links, "ip -j -d link show", "link-detail.json"), (parse_addrs, "ip -j addr show", "addr.json"),
                (parse_routes, "ip -j route show", "route-table-all.json"),
                (parse_neighs, "ip -j neigh show", "neigh.json"), (parse_fdb, "bridge -j fdb show", "fdb.json")]
TEXT_PARSERS = [(parse_links_text, "ip -d link show", "link-detail.txt"),
                (parse_routes_text, "ip route show", "route-table-all.txt"),
                (parse_neighs_text, "ip neigh show", "neigh.txt"), (parse_fdb_text, "bridge fdb show", "fdb.txt")]
JSON_COMMANDS = {command for _, command, _ in JSON_PARSERS}


@pytest.mark.parametrize(("parse", "command", "_name"), JSON_PARSERS)
@pytest.mark.parametrize("text", ["", "  \n"])
def test_empty_json_output_is_an_error(parse, command, _name, text):
    with pytest.raises(IprouteError) as excinfo:
        parse(text)
    assert problem(excinfo).startswith(f"{command}: the output is empty; the command prints []")


@pytest.mark.parametrize(("parse", "command", "name"), JSON_PARSERS)
def test_truncated_json_output_is_an_error(parse, command, name):
    text = fixture(name)
    with pytest.raises(IprouteError, match=f"^{command}: the output is not complete JSON .*truncated"):
        parse(text[: len(text) // 2])


def test_ip_output_for_a_missing_table_is_truncated_json():
    # `ip -j route show table 200` (no such table) prints "[" and fails.
    assert fixture("route-table-missing.json") == "["
    with pytest.raises(IprouteError, match="not complete JSON"):
        parse_routes(fixture("route-table-missing.json"), table="200")


@pytest.mark.parametrize(("parse", "command", "_name"), JSON_PARSERS)
@pytest.mark.parametrize(("text", "what"), [('{"ifname": "eth0"}', "dict"), ('"x"', "str"), ("null", "NoneType")])
def test_json_output_that_is_not_a_list_is_an_error(parse, command, _name, text, what):
    with pytest.raises(IprouteError, match=f"^{command}: the output is a JSON {what}, not the list"):
        parse(text)


@pytest.mark.parametrize(("parse", "_command", "_name"), JSON_PARSERS)
def test_entries_that_are_not_objects_are_errors(parse, _command, _name):
    with pytest.raises(IprouteError, match=r"1 is str \"eth0\", not an object"):
        parse('["eth0"]')


@pytest.mark.parametrize(("parse", "_command", "_name"), JSON_PARSERS + TEXT_PARSERS)
def test_output_must_be_text(parse, _command, _name):
    with pytest.raises(ProblemsError, match="expected the command's output as text, got bytes"):
        parse(b"[]")


def edited(name, index, **changes):
    doc = json.loads(fixture(name))
    for key, value in changes.items():
        if value is None:
            doc[index].pop(key)
        else:
            doc[index][key] = value
    return json.dumps(doc)


@pytest.mark.parametrize(("name", "parse", "index", "changes", "message"), [
    ("link-detail.json", parse_links, 5, {"mtu": "1450"}, 'link 6 (flannel.1): mtu is str "1450", not an integer'),
    ("link-detail.json", parse_links, 5, {"mtu": True}, "link 6 (flannel.1): mtu is bool true, not an integer"),
    ("link-detail.json", parse_links, 5, {"mtu": None}, "link 6 (flannel.1): mtu is missing"),
    ("link-detail.json", parse_links, 5, {"ifname": None}, "link 6: ifname is missing"),
    ("link-detail.json", parse_links, 5, {"flags": "UP"}, "link 6 (flannel.1): flags is str \"UP\", not a list"),
    ("link-detail.json", parse_links, 5, {"flags": [1]}, "link 6 (flannel.1): flags is not a list of strings"),
    ("link-detail.json", parse_links, 5, {"linkinfo": {"info_kind": "vxlan"}},
     "link 6 (flannel.1): is a vxlan link without linkinfo.info_data"),
    ("link-detail.json", parse_links, 5, {"linkinfo": {"info_kind": "vxlan", "info_data": {"local": "x"}}},
     "link 6 (flannel.1): linkinfo.info_data: id is missing"),
    ("link-detail.json", parse_links, 5, {"linkinfo": {"info_kind": "vxlan", "info_data": {"id": 1, "local": "x"}}},
     "linkinfo.info_data: local 'x' is not an IP address"),
    ("addr.json", parse_addrs, 5, {"addr_info": [{"family": "inet", "local": "10.244.1.0", "scope": "global"}]},
     "link 6 (flannel.1): addr_info 1: prefixlen is missing"),
    ("addr.json", parse_addrs, 5, {"addr_info": [{"family": "inet", "local": "10.244.1", "prefixlen": 32,
                                                  "scope": "global"}]},
     "addr_info 1: local '10.244.1' is not an IP address"),
    ("addr.json", parse_addrs, 5, {"addr_info": [{"family": "inet", "local": "10.244.1.0", "prefixlen": 33,
                                                  "scope": "global"}]},
     "link 6 (flannel.1): addr_info 1: prefixlen 33 does not fit the address 10.244.1.0"),
    ("route.json", parse_routes, 1, {"dst": None}, "route 2: dst is missing"),
    ("route.json", parse_routes, 1, {"dst": "10.244.0.0/33"}, "route 2 (10.244.0.0/33): dst '10.244.0.0/33' is not"),
    ("route.json", parse_routes, 1, {"gateway": "flannel.1"}, "gateway 'flannel.1' is not an IP address"),
    ("route.json", parse_routes, 1, {"type": "wormhole"}, "type 'wormhole' is not a route type"),
    ("route.json", parse_routes, 1, {"metric": "100"}, 'metric is str "100", not an integer'),
    ("route.json", parse_routes, 1, {"flags": "onlink"}, 'flags is str "onlink", not a list'),
    ("neigh.json", parse_neighs, 0, {"state": None}, "neighbour 1 (10.244.0.0): state is missing"),
    ("neigh.json", parse_neighs, 0, {"state": ["PERMANENTLY"]}, "state PERMANENTLY is not a neighbour state"),
    ("neigh.json", parse_neighs, 0, {"dev": None}, "neighbour 1 (10.244.0.0): has no dev"),
    ("fdb.json", parse_fdb, 0, {"mac": "33:33:00:00:00"}, "mac '33:33:00:00:00' is not a MAC address"),
    ("fdb.json", parse_fdb, 0, {"dst": 198}, "dst is int 198, not a string"),
])
def test_entries_with_missing_or_wrong_fields_are_errors(name, parse, index, changes, message):
    with pytest.raises(IprouteError) as excinfo:
        parse(edited(name, index, **changes))
    assert message in problem(excinfo)
    assert {field for field, _ in excinfo.value.problems} <= JSON_COMMANDS



def test_every_problem_is_reported_at_once_and_named_by_the_command():
    doc = json.loads(fixture("route.json"))
    doc[0].pop("dst")
    doc[3]["gateway"] = "nowhere"
    with pytest.raises(IprouteError) as excinfo:
        parse_routes(json.dumps(doc), command="ip -j route show table main")
    assert excinfo.value.problems == [
        ("ip -j route show table main", "route 1: dst is missing"),
        ("ip -j route show table main", "route 4 (10.244.2.0/24): gateway 'nowhere' is not an IP address")]
    assert isinstance(excinfo.value, ValueError)


@pytest.mark.parametrize(("parse", "command", "_name"), TEXT_PARSERS)
@pytest.mark.parametrize("text", ["", "\n \n"])
def test_empty_text_output_is_an_error(parse, command, _name, text):
    with pytest.raises(IprouteError, match=f"^{command}: the output is empty: .* which prints"):
        parse(text)


@pytest.mark.parametrize(("parse", "text", "message"), [
    # cut in the middle of a line
    (parse_routes_text, "10.244.0.0/24 via 10.244.", "line 1: the gateway (via) '10.244.' is not an IP address"),
    (parse_routes_text, "10.244.0.0/24 via", "line 1: the gateway (via) is missing at the end"),
    (parse_routes_text, "default via 198.51.100.1 dev", "line 1: the value of dev is missing at the end"),
    (parse_neighs_text, "10.244.0.0 dev flannel.1 lladdr 3a:5e:8c:1d:f2:11", "line 1: the state is missing"),
    (parse_fdb_text, "3a:5e:8c:1d:f2:13 dev flannel.1 dst 198.51.", "line 1: the dst address '198.51.' is not"),
    (parse_fdb_text, "3a:5e:8c:1d:f2", "line 1: '3a:5e:8c:1d:f2' is not a MAC address"),
    (parse_links_text, fixture("link-detail.txt").split("\n    link/ether 3a")[0],
     r"line 16 (flannel.1): the 'link/<type>' line is missing: the output is truncated"),
    (parse_links_text, "7: flannel.1: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu",
     "line 1 (flannel.1): the header has no 'mtu <number>' or no 'state <state>'"),
    # not this command's output
    (parse_routes_text, fixture("neigh.txt"), "line 1: 'lladdr' is not a word `ip route` prints"),
    (parse_neighs_text, fixture("route.txt"), "line 1: the neighbour address 'default' is not an IP address"),
    (parse_fdb_text, fixture("neigh.txt"), "line 1: '10.244.0.0' is not a MAC address"),
    (parse_links_text, fixture("route.txt"), "line 1: 'default via 198.51.100.1 dev eth0' is not a link header"),
    (parse_links_text, "    link/ether 3a:5e:8c:1d:f2:12", "line 1: 'link/ether 3a:5e:8c:1d:f2:12' comes before"),
    (parse_routes_text, "\tnexthop via 198.51.100.1 dev eth0 weight 1", "an indented line is not a 'nexthop' line"),
    (parse_routes_text, "10.244.0.0/24 via 10.244.0.0 dev flannel.1 onlink\n... ...",
     "line 2: the destination '...' is not an IP prefix"),
    (parse_fdb_text, "3a:5e:8c:1d:f2:13 dev flannel.1 permanent self", "the state 'permanent' is not the last word"),
])
def test_malformed_text_is_an_error_naming_the_line(parse, text, message):
    with pytest.raises(IprouteError) as excinfo:
        parse(text)
    assert message in problem(excinfo)


def test_a_bad_text_line_fails_the_whole_output():
    text = fixture("route.txt").replace("10.244.2.0/24 via 10.244.2.0", "10.244.2.0/24 by 10.244.2.0")
    with pytest.raises(IprouteError) as excinfo:
        parse_routes_text(text)
    assert excinfo.value.problems == [("ip route show", "line 4: 'by' is not a word `ip route` prints in "
                                                        "'10.244.2.0/24 by 10.244.2.0 dev flannel.1 onlink'")]


def test_vxlan_text_with_a_bad_port_is_an_error():
    text = fixture("seed003-link-detail-minion.txt").replace("port 0 0", "dstport eighty")
    with pytest.raises(IprouteError, match=r"line 1 \(flannel.1\): the vxlan line has no 'id <VNI>' or a dstport"):
        parse_links_text(text)
