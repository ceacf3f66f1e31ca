"""netmend.firewalld: firewall-cmd output parsed from real firewalld 1.3.3 output, the ports, the plan."""

from pathlib import Path

import pytest

from netmend.firewalld import (
    FirewalldError,
    apply_changes,
    check_port,
    check_want,
    commands,
    host_network_ports,
    node_ports,
    parse_list_all,
    parse_zones,
    plan,
    reconcile,
    render,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "firewalld"
SERVICES = [
    {"name": "kubernetes", "host_network": True, "replicas": ["cp1"],
     "ports": [{"port": 443, "target_port": 6443, "protocol": "TCP"}]},
    {"name": "hello-hostnet", "host_network": True, "replicas": ["w1"],
     "ports": [{"port": 4000, "target_port": 8081}]},
    {"name": "hello", "replicas": ["w1"], "ports": [{"port": 4000, "target_port": 8080}]},
]


def fixture(name):
    return (FIXTURES / name).read_text()


def want(ports=("10250/tcp",), masquerade=True):
    return check_want({"zone": "public", "trusted_zone": "trusted", "ports": list(ports),
                       "trusted_interfaces": ["cni0", "flannel.1"], "trusted_sources": ["10.244.0.0/16"],
                       "masquerade": masquerade})


def test_parses_a_zone_with_rich_rules_forward_ports_and_services():
    zone = parse_list_all(fixture("public-rich-rules.txt"))
    assert zone["zone"] == "public" and zone["target"] == "default" and not zone["active"]
    assert zone["services"] == ["dhcpv6-client", "http", "ssh"]
    assert "30000-32767/udp" in zone["ports"] and "8472/udp" in zone["ports"]
    assert zone["masquerade"] is True and zone["forward"] is True
    assert zone["forward-ports"] == ["port=8080:proto=tcp:toport=80:toaddr="]
    assert zone["rich rules"][0] == 'rule family="ipv4" source address="192.0.2.7" reject'
    assert len(zone["rich rules"]) == 2


def test_parses_the_active_trusted_zone_and_every_zone():
    trusted = parse_list_all(fixture("trusted-netmend.txt"))
    assert trusted["active"] and trusted["target"] == "ACCEPT"
    assert trusted["interfaces"] == ["cni0", "flannel.1"]
    assert trusted["sources"] == ["10.244.0.0/16", "10.96.0.0/12"]
    zones = parse_zones(fixture("list-all-zones.txt"))
    assert list(zones) == ["block", "dmz", "drop", "external", "home", "internal", "public", "trusted", "work"]
    assert zones["block"]["target"] == "%%REJECT%%" and zones["external"]["masquerade"] is True


@pytest.mark.parametrize(("text", "words"), [
    ("", "empty output"),
    ("  target: default\n", "line 1"),
    ("public\n  target: default\n  interfaces: \n", "truncated"),
    ("public\n  interfaces: \n  sources: \n  ports: \n  masquerade: maybe\n", "not yes/no"),
    ("public\n  interfaces: \n  colour: blue\n", "line 3: unexpected"),
    ("public\n\trule family=ipv4 accept\n", "line 2: unexpected"),
])
def test_malformed_output_is_a_clear_error(text, words):
    with pytest.raises(FirewalldError, match=words):
        parse_list_all(text)


def test_node_ports_by_role():
    worker = node_ports(control_plane=False, dns=False, vxlan_port=8472)
    assert worker == ["10250/tcp", "10256/tcp", "30000-32767/tcp", "30000-32767/udp", "8472/udp"]
    cp = node_ports(control_plane=True, dns=True, vxlan_port=None, host_network=["6443/tcp"], extra=["9100/tcp"])
    assert cp[:5] == ["6443/tcp", "2379-2380/tcp", "10250/tcp", "10257/tcp", "10259/tcp"]
    assert cp.count("6443/tcp") == 1 and cp.count("10250/tcp") == 1
    assert "8472/udp" not in cp and {"53/udp", "53/tcp", "9153/tcp", "9100/tcp"} <= set(cp)


def test_host_network_ports_are_the_target_ports_on_the_replica_nodes():
    assert host_network_ports(SERVICES, "cp1") == ["6443/tcp"]
    assert host_network_ports(SERVICES, "w1") == ["8081/tcp"]
    assert host_network_ports(SERVICES, "w2") == []


@pytest.mark.parametrize("port", ["8472", "0/udp", "70000/tcp", "30000-30000/tcp", "53/icmp", "x/tcp", ""])
def test_bad_ports_name_the_field(port):
    with pytest.raises(FirewalldError, match=r"ports: .* is not a port such as 8472/udp"):
        check_port(port)


def test_bad_wanted_settings_name_every_option():
    with pytest.raises(FirewalldError) as exc:
        check_want({"zone": "pub lic", "trusted_zone": "trusted", "ports": ["1/xyz"],
                    "trusted_interfaces": ["an-interface-name-too-long"], "trusted_sources": ["10.244.0.1/16"],
                    "masquerade": "yes"})
    fields = [f for f, _ in exc.value.problems]
    assert fields == ["zone", "ports", "trusted_interfaces", "trusted_sources", "masquerade"]
    with pytest.raises(FirewalldError, match="trusted_zone: must differ"):
        check_want({"zone": "trusted", "trusted_zone": "trusted", "ports": [], "trusted_interfaces": [],
                    "trusted_sources": [], "masquerade": True})


def test_plan_on_the_default_zone_adds_everything_once():
    current = {"public": parse_list_all(fixture("public-rich-rules.txt")) | {"ports": [], "masquerade": False},
               "trusted": {"zone": "trusted", "interfaces": [], "sources": [], "ports": []}}
    changes, owned = plan(want(["10250/tcp", "8472/udp"]), current, {})
    assert changes == [("public", "add", "ports", ["10250/tcp", "8472/udp"]), ("public", "add", "masquerade", []),
                       ("trusted", "change", "interfaces", ["cni0", "flannel.1"]),
                       ("trusted", "change", "sources", ["10.244.0.0/16"])]
    assert commands(changes, permanent=True)[0] == ["--permanent", "--zone=public", "--add-port=10250/tcp",
                                                   "--add-port=8472/udp"]
    assert commands(changes, permanent=False)[1] == ["--zone=public", "--add-masquerade"]
    assert owned["public"] == {"ports": ["10250/tcp", "8472/udp"], "interfaces": [], "sources": [],
                               "masquerade": True}
    after = {z: apply_changes(current[z], changes) for z in current}
    assert plan(want(["10250/tcp", "8472/udp"]), after, owned) == ([], owned)
    assert "ports: 10250/tcp 8472/udp" in render(after["public"])
    assert after["public"]["services"] == ["dhcpv6-client", "http", "ssh"], "the operator's services stay"


def test_plan_removes_only_what_netmend_added():
    current = {"public": {"zone": "public", "ports": ["22/tcp", "8472/udp", "10250/tcp"], "interfaces": [],
                          "sources": [], "masquerade": True},
               "trusted": {"zone": "trusted", "interfaces": ["cni0", "flannel.1"], "sources": ["10.244.0.0/16"]}}
    owned = {"public": {"ports": ["10250/tcp"], "masquerade": False},
             "trusted": {"interfaces": ["cni0", "flannel.1"], "sources": ["10.244.0.0/16"]}}
    # host-gw now: flannel.1 and 8472 are no longer wanted; 8472 was the operator's, masquerade too.
    w = want(["10250/tcp"], masquerade=False)
    w["trusted"]["interfaces"] = ["cni0"]
    changes, new = plan(w, current, owned)
    assert changes == [("trusted", "remove", "interfaces", ["flannel.1"])]
    assert new["trusted"]["interfaces"] == ["cni0"] and new["public"]["ports"] == ["10250/tcp"]
    owned["public"]["masquerade"] = True
    changes, new = plan(w, current, owned)
    assert ("public", "remove", "masquerade", []) in changes
    assert "masquerade" not in new["public"]


def test_a_zone_netmend_no_longer_manages_loses_what_netmend_added_there_and_nothing_else():
    """firewall_zone moved from public to internal: public keeps the operator's 22/tcp, loses netmend's port and
    masquerade; cni0, which netmend bound to the old trusted zone, is moved to the new one, not removed."""
    current = {"public": {"zone": "public", "ports": ["22/tcp", "10250/tcp"], "interfaces": [], "sources": [],
                          "masquerade": True},
               "internal": {"zone": "internal", "ports": [], "interfaces": [], "sources": [], "masquerade": False},
               "trusted": {"zone": "trusted", "ports": [], "interfaces": ["cni0"], "sources": []},
               "pods": {"zone": "pods", "ports": [], "interfaces": [], "sources": []}}
    owned = {"public": {"ports": ["10250/tcp"], "masquerade": True}, "trusted": {"interfaces": ["cni0"]},
             "gone": {"ports": ["1/tcp"]}}
    w = check_want({"zone": "internal", "trusted_zone": "pods", "ports": ["10250/tcp"],
                    "trusted_interfaces": ["cni0"], "trusted_sources": [], "masquerade": True})
    changes, new = plan(w, current, owned)
    assert changes == [("internal", "add", "ports", ["10250/tcp"]), ("internal", "add", "masquerade", []),
                       ("pods", "change", "interfaces", ["cni0"]),
                       ("public", "remove", "ports", ["10250/tcp"]), ("public", "remove", "masquerade", [])]
    assert set(new) == {"internal", "pods"}, "the old zones leave the record; a zone firewalld lacks is not planned"


def test_reconcile_reads_the_zones_netmend_s_record_names_in_each_configuration():
    zones = {"public": "public\n  interfaces: \n  sources: \n  ports: 10250/tcp\n  masquerade: yes\n",
             "internal": "internal\n  interfaces: \n  sources: \n  ports: \n  masquerade: no\n",
             "trusted": "trusted\n  interfaces: cni0\n  sources: \n  ports: \n  masquerade: no\n"}
    read = []

    def list_zone(zone, permanent):
        read.append((zone, permanent))
        return zones[zone]

    w = check_want({"zone": "internal", "trusted_zone": "trusted", "ports": ["10250/tcp"],
                    "trusted_interfaces": ["cni0"], "trusted_sources": [], "masquerade": False})
    owned = {"permanent": {"public": {"ports": ["10250/tcp"]}}}
    argvs, new, before, after = reconcile(w, owned, list_zone)
    assert read == [("internal", False), ("trusted", False), ("internal", True), ("trusted", True), ("public", True)]
    assert argvs == [["--zone=internal", "--add-port=10250/tcp"], ["--permanent", "--zone=internal",
                     "--add-port=10250/tcp"], ["--permanent", "--zone=public", "--remove-port=10250/tcp"]]
    assert "public" not in new["permanent"] and new["permanent"]["internal"]["ports"] == ["10250/tcp"]
    assert before.split("# permanent\n")[1].endswith("public\n  interfaces: \n  sources: \n  ports: 10250/tcp\n"
                                                     "  masquerade: yes\n")
    assert "ports: 10250/tcp" not in after.split("# permanent\n")[1].split("public\n")[1]


def test_reconcile_leaves_a_recorded_zone_it_cannot_list_alone_and_keeps_its_record():
    zone = "public\n  interfaces: \n  sources: \n  ports: 10250/tcp\n  masquerade: no\n"

    def list_zone(name, _permanent):
        if name == "gone":
            raise RuntimeError("firewall-cmd (rc 112): Error: INVALID_ZONE: gone")
        return zone.replace("public", name, 1)

    w = check_want({"zone": "public", "trusted_zone": "trusted", "ports": ["10250/tcp"], "trusted_interfaces": [],
                    "trusted_sources": [], "masquerade": False})
    owned = {"runtime": {"gone": {"ports": ["8472/udp"]}}}
    argvs, new, _before, _after = reconcile(w, owned, list_zone)
    assert argvs == [] and new["runtime"]["gone"] == {"ports": ["8472/udp"]}
