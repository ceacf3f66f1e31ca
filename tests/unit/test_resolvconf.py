"""resolv.conf parsing and rendering, pod resolv.conf, the kubelet's resolvConf choice (netmend.resolvconf)."""

from pathlib import Path

import pytest
import yaml

from netmend.errors import ProblemsError
from netmend.resolvconf import (
    ResolvChoiceError,
    ResolvConfError,
    check_in_service_cidr,
    check_resolv_conf,
    choose_resolv_conf,
    is_local,
    kubelet_config_dir,
    kubelet_dns_settings,
    parse,
    pod_resolv_conf,
    render,
    render_kubelet_config,
    systemd_unit,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dns"
ETC, RESOLVED = "/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"


def fixture(name):
    return (FIXTURES / name).read_text()


SEED_POD = fixture("seed000-pod-resolv.conf")
SEED_HOSTNET = fixture("seed000-hostnet-resolv.conf")
STUB = fixture("resolved-stub-resolv.conf")
STUB_FOCAL = fixture("resolved-stub-resolv-focal.conf")
UPLINK = fixture("resolved-uplink-resolv.conf")
UPLINK_EMPTY = fixture("resolved-uplink-no-servers.conf")


# Parsing real files


def test_parse_seed_pod_file():
    conf = parse(SEED_POD)
    assert conf.addresses == ["10.96.0.10"]
    assert conf.search == ["default.svc.cluster.local", "svc.cluster.local", "cluster.local", "hz.ali.com"]
    assert conf.options == ["ndots:5"] and conf.ndots == 5
    assert conf.local_addresses == []
    assert [ns.line for ns in conf.nameservers] == [1]


def test_parse_seed_hostnet_file_is_the_hosts_own():
    conf = parse(SEED_HOSTNET)
    assert conf.addresses == ["30.14.129.245", "30.14.128.82", "10.65.0.201"]
    assert conf.upstream_addresses == conf.addresses
    assert conf.search == ["hz.ali.com"] and conf.search_domains == ["hz.ali.com"]
    assert conf.ndots == 1  # the resolver's default: no options line


def test_parse_systemd_resolved_stub():
    conf = parse(STUB, "/run/systemd/resolve/stub-resolv.conf")
    assert conf.addresses == ["127.0.0.53"] and conf.local_addresses == ["127.0.0.53"]
    assert conf.upstream_addresses == []
    assert conf.options == ["edns0", "trust-ad"]
    assert conf.search == ["."] and conf.search_domains == []  # `search .` means no search domain
    assert conf.nameservers[0].line == 21


def test_parse_systemd_resolved_stub_focal_and_uplink_files():
    focal = parse(STUB_FOCAL)
    assert focal.local_addresses == ["127.0.0.53"] and focal.search_domains == ["Home"]
    uplink = parse(UPLINK)
    assert uplink.addresses == ["192.168.2.1", "100.81.99.197"] and uplink.local_addresses == []
    assert uplink.search_domains == ["netbird.cloud"]
    assert parse(UPLINK_EMPTY).nameservers == []


def test_parse_comments_inline_comments_tabs_crlf_and_last_search_or_domain_wins():
    text = ("; semicolon comment\r\n"
            "   # indented comment\r\n"
            "nameserver\t192.0.2.1   # our resolver\r\n"
            "nameserver 2001:db8::53\r\n"
            "nameserver fe80::1%eth0\r\n"
            "search a.example b.example ; old list\r\n"
            "domain corp.example\r\n"
            "options ndots:2 timeout:1\r\n"
            "options rotate ndots:40 attempts:9\r\n"
            "sortlist 130.155.160.0/255.255.240.0 130.155.0.0\r\n")
    conf = parse(text)
    assert conf.addresses == ["192.0.2.1", "2001:db8::53", "fe80::1%eth0"]
    assert conf.domain == "corp.example" and conf.search == ["corp.example"]
    assert conf.options == ["ndots:2", "timeout:1", "rotate", "ndots:40", "attempts:9"]
    assert conf.ndots == 15 and conf.option("attempts") == 5 and conf.option("timeout") == 1  # glibc's caps
    assert conf.sortlist == ["130.155.160.0/255.255.240.0", "130.155.0.0"]
    assert parse("domain x.example\nsearch y.example z.example\n").search == ["y.example", "z.example"]


def test_parse_canonicalises_addresses_and_empty_text_is_an_empty_file():
    assert parse("nameserver 2001:DB8:0::53\n").addresses == ["2001:db8::53"]
    empty = parse("")
    assert empty.nameservers == [] and empty.search == [] and empty.ndots == 1
    assert parse("# only\n\n; comments\n").nameservers == []


@pytest.mark.parametrize(("text", "line", "words"), [
    ("nameserver\n", 1, "without an address"),
    ("nameserver # none\n", 1, "without an address"),
    ("search a.example\nnameserver 10.96.0\n", 2, "'10.96.0' is not an IPv4 or IPv6 address"),
    ("nameserver dns.example\n", 1, "not an IPv4 or IPv6 address"),
    ("nameserver 192.0.2.1:5353\n", 1, "not an IPv4 or IPv6 address"),
    ("nameserver 192.0.2.1 192.0.2.2\n", 1, "unexpected '192.0.2.2'"),
    ("nameserver 192.0.2.1%eth0\n", 1, "not an IPv4 or IPv6 address"),
    ("options ndots:x\n", 1, "ndots takes a non-negative integer"),
    ("options ndots\n", 1, "ndots takes a non-negative integer"),
    ("options ndots:-1\n", 1, "ndots takes a non-negative integer"),
    ("options timeout:\n", 1, "timeout takes a non-negative integer"),
    ("options\n", 1, "options without a value"),
    ("search\n", 1, "search without a value"),
    ("domain a.example b.example\n", 1, "unexpected 'b.example' after the domain"),
    ("# ok\n  nameserver 192.0.2.1\n", 2, "starts with whitespace"),
    ("lookup file bind\n", 1, "unknown keyword 'lookup'"),
    ("nameserver1.2.3.4\n", 1, "unknown keyword"),
    ("nameserver 192.0.2.1\n\0\0\0", 2, "NUL byte"),
])
def test_malformed_lines_fail_with_the_line_number(text, line, words):
    with pytest.raises(ResolvConfError) as caught:
        parse(text, "/etc/resolv.conf")
    assert caught.value.line == line and words in caught.value.reason
    assert str(caught.value).startswith(f"/etc/resolv.conf, line {line}: ")


def test_truncated_files_fail_or_parse_what_is_there():
    # Cut inside the address: an error, never a shorter address.
    with pytest.raises(ResolvConfError, match="line 1"):
        parse(SEED_POD[:len("nameserver 10.96.0")])
    with pytest.raises(ResolvConfError, match="ndots takes"):
        parse(SEED_POD[:-2])  # "options ndots:"
    # Every cut of the seed file at a line end is a valid file with the lines before it.
    lines = SEED_POD.splitlines(keepends=True)
    for n in range(len(lines) + 1):
        assert parse("".join(lines[:n])).addresses == (["10.96.0.10"] if n else [])


def test_parse_rejects_what_is_not_text():
    with pytest.raises(ResolvConfError, match="is not text"):
        parse(b"nameserver 192.0.2.1\n")


def test_is_local():
    assert all(is_local(a) for a in ("127.0.0.53", "127.0.0.1", "127.1.2.3", "::1", "0.0.0.0", "::",
                                     "::ffff:127.0.0.1"))
    assert not any(is_local(a) for a in ("10.96.0.10", "192.0.2.1", "2001:db8::1", "169.254.20.10"))


# Rendering


def test_render_round_trips_and_keeps_the_kubelets_order():
    text = render(["10.96.0.10"], ["default.svc.cluster.local", "svc.cluster.local", "cluster.local", "hz.ali.com"],
                  ["ndots:5"])
    assert text == SEED_POD
    conf = parse(render(["192.0.2.1", "2001:db8::53"], ["example.com"], ["edns0", "ndots:2"], header=["x", ""]))
    assert conf.addresses == ["192.0.2.1", "2001:db8::53"] and conf.search == ["example.com"]
    assert conf.options == ["edns0", "ndots:2"]
    assert render() == ""


def test_render_names_every_bad_value():
    with pytest.raises(ProblemsError) as caught:
        render(["192.0.2.1", "not-an-ip"], ["ok.example", "bad domain"], ["ndots:x", "edns0", "two words"])
    fields = [f for f, _ in caught.value.problems]
    assert fields == ["nameservers[1]", "search[1]", "options[0]", "options[2]"]


# What pods get


def test_pod_resolv_conf_is_seed_000s_clusterfirst_file():
    assert pod_resolv_conf("10.96.0.10", "default", "cluster.local", ["hz.ali.com"]) == SEED_POD


def test_pod_resolv_conf_drops_systemd_resolveds_root_search_and_duplicates():
    host = parse(STUB).search  # ["."]
    assert pod_resolv_conf("10.96.0.10", "kube-system", "cluster.local", host) == (
        "nameserver 10.96.0.10\nsearch kube-system.svc.cluster.local svc.cluster.local cluster.local\n"
        "options ndots:5\n")
    text = pod_resolv_conf(["10.96.0.10"], "default", "cluster.local", ["cluster.local.", "lab.example."], ndots=2)
    assert parse(text).search == ["default.svc.cluster.local", "svc.cluster.local", "cluster.local", "lab.example"]
    assert parse(text).ndots == 2


@pytest.mark.parametrize(("args", "fieldname"), [
    (("10.96.0", "default", "cluster.local", []), "cluster_dns[0]"),
    (("10.96.0.10", "Default", "cluster.local", []), "namespace"),
    (("10.96.0.10", "default", "cluster..local", []), "domain"),
    (("10.96.0.10", "default", "cluster.local", "hz.ali.com"), "host_search"),
    (("10.96.0.10", "default", "cluster.local", [], 16), "ndots"),
    (("10.96.0.10", "default", "cluster.local", [], True), "ndots"),
])
def test_pod_resolv_conf_bad_input_names_the_field(args, fieldname):
    with pytest.raises(ProblemsError) as caught:
        pod_resolv_conf(*args)
    assert [f for f, _ in caught.value.problems] == [fieldname]


# The kubelet's resolvConf


def test_plain_resolv_conf_is_kept():
    choice = choose_resolv_conf(SEED_HOSTNET, UPLINK)
    assert choice.path == ETC
    assert choice.reason == "/etc/resolv.conf lists upstream nameservers 30.14.129.245, 30.14.128.82, 10.65.0.201"
    assert choice.conf.addresses == ["30.14.129.245", "30.14.128.82", "10.65.0.201"]


@pytest.mark.parametrize("stub", [STUB, STUB_FOCAL])
def test_systemd_resolved_stub_chooses_the_uplink_file(stub):
    choice = choose_resolv_conf(stub, UPLINK)
    assert choice.path == RESOLVED
    assert "127.0.0.53 (systemd-resolved's stub)" in choice.reason
    assert choice.conf.addresses == ["192.168.2.1", "100.81.99.197"]


def test_any_loopback_nameserver_counts_and_a_missing_or_empty_etc_file_too():
    mixed = "nameserver 127.0.0.1\nnameserver 192.0.2.1\n"
    assert choose_resolv_conf(mixed, UPLINK).path == RESOLVED
    assert choose_resolv_conf(None, UPLINK).path == RESOLVED
    assert "does not exist" in choose_resolv_conf(None, UPLINK).reason
    assert choose_resolv_conf("", UPLINK).path == RESOLVED


@pytest.mark.parametrize(("resolved", "words"), [
    (None, "/run/systemd/resolve/resolv.conf does not exist"),
    (UPLINK_EMPTY, "/run/systemd/resolve/resolv.conf lists no nameserver"),
    (STUB, "/run/systemd/resolve/resolv.conf lists loopback nameservers 127.0.0.53"),
])
def test_only_loopback_and_nothing_better_fails_naming_the_variable(resolved, words):
    with pytest.raises(ResolvChoiceError) as caught:
        choose_resolv_conf(STUB, resolved)
    ((fieldname, message),) = caught.value.problems
    assert fieldname == "resolv_conf"
    assert "/etc/resolv.conf lists loopback nameservers 127.0.0.53" in message and words in message
    assert "dns_kubelet_resolv_conf" in message and "loop plugin halts CoreDNS" in message


def test_malformed_files_stop_the_choice():
    with pytest.raises(ResolvConfError, match=r"/etc/resolv\.conf, line 1"):
        choose_resolv_conf("nameserver 10.96.0\n", UPLINK)
    with pytest.raises(ResolvConfError, match=r"/run/systemd/resolve/resolv\.conf, line 2"):
        choose_resolv_conf(STUB, "nameserver 192.0.2.1\nbogus\n")


def test_an_explicit_resolv_conf_must_exist_and_list_only_upstreams():
    choice = check_resolv_conf("/etc/kubernetes/resolv.conf", UPLINK)
    assert choice.path == "/etc/kubernetes/resolv.conf" and choice.conf.addresses[0] == "192.168.2.1"
    for text, words in ((None, "does not exist"), (STUB, "loopback nameservers 127.0.0.53"),
                        (UPLINK_EMPTY, "lists no nameserver")):
        with pytest.raises(ResolvChoiceError) as caught:
            check_resolv_conf("/etc/kubernetes/resolv.conf", text)
        assert words in str(caught.value) and "dns_kubelet_resolv_conf" in str(caught.value)


# The kubelet's configuration


def test_kubelet_drop_in_is_a_kubelet_configuration_with_the_three_fields():
    settings = kubelet_dns_settings(["10.96.0.10"], "cluster.local", RESOLVED)
    doc = yaml.safe_load(render_kubelet_config(settings))
    assert doc == {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
                   "clusterDNS": ["10.96.0.10"], "clusterDomain": "cluster.local", "resolvConf": RESOLVED}
    assert render_kubelet_config(settings).startswith("# Managed by netmend")
    dual = kubelet_dns_settings(["10.96.0.10", "fd00:10:96::a"], "k8s.example", '/etc/odd "name".conf')
    assert yaml.safe_load(render_kubelet_config(dual))["resolvConf"] == '/etc/odd "name".conf'
    assert yaml.safe_load(render_kubelet_config(dual))["clusterDNS"] == ["10.96.0.10", "fd00:10:96::a"]


@pytest.mark.parametrize(("args", "fieldnames"), [
    (([], "cluster.local", ETC), ["cluster_dns"]),
    ("10.96.0.10", ["cluster_dns"]),
    ((["10.96.0.300"], "cluster.local", ETC), ["cluster_dns[0]"]),
    ((["10.96.0.10"], "cluster_local.", ETC), ["cluster_domain"]),
    ((["10.96.0.10"], "cluster.local", "resolv.conf"), ["resolv_conf"]),
    ((["x"], "", ""), ["cluster_dns[0]", "cluster_domain", "resolv_conf"]),
])
def test_kubelet_settings_name_every_bad_field(args, fieldnames):
    if isinstance(args, str):
        args = (args, "cluster.local", ETC)
    with pytest.raises(ProblemsError) as caught:
        kubelet_dns_settings(*args)
    assert [f for f, _ in caught.value.problems] == fieldnames


def test_cluster_dns_must_be_in_the_service_cidr():
    assert check_in_service_cidr("cluster_dns", ["10.96.0.10"], "10.96.0.0/12") == []
    assert check_in_service_cidr("cluster_dns", ["10.96.0.10", "fd00:10:96::a"], "10.96.0.0/12,fd00:10:96::/108") == []
    assert check_in_service_cidr("cluster_dns", ["10.112.0.10"], "") == []
    ((fieldname, message),) = check_in_service_cidr("cluster_dns", ["10.96.0.10", "10.112.0.10"], "10.96.0.0/12")
    assert fieldname == "cluster_dns[1]" and message.startswith("10.112.0.10 is outside the service CIDR 10.96.0.0/12")
    ((fieldname, _),) = check_in_service_cidr("cluster_dns", ["fd00:10:96::a"], "10.96.0.0/12")
    assert fieldname == "cluster_dns[0]"
    for bad in ("10.96.0.1/12", "services", "10.96.0.0/12,"):
        assert [f for f, _ in check_in_service_cidr("cluster_dns", ["10.96.0.10"], bad)] == ["service_cidr"]


@pytest.mark.parametrize(("argv", "expected"), [
    (["/usr/bin/kubelet", "--config=/var/lib/kubelet/config.yaml", "--config-dir=/etc/kubernetes/kubelet.conf.d/"],
     "/etc/kubernetes/kubelet.conf.d"),
    (["kubelet", "--config-dir", "/etc/kubernetes/kubelet.conf.d"], "/etc/kubernetes/kubelet.conf.d"),
    (["/usr/bin/kubelet", "--kubeconfig=/etc/kubernetes/kubelet.conf"], ""),
    (["/usr/bin/kubelet", "--config-dir"], ""),
    (["/usr/bin/python3", "kubelet", "--config-dir=/x"], None),
    ([], None),
])
def test_kubelet_config_dir_from_the_command_line(argv, expected):
    assert kubelet_config_dir(argv) == expected


def test_systemd_unit_from_proc_cgroup():
    assert systemd_unit("0::/system.slice/kubelet.service\n") == "kubelet.service"
    assert systemd_unit("12:cpu,cpuacct:/system.slice/kubelet.service\n"
                        "1:name=systemd:/system.slice/kubelet.service\n") == "kubelet.service"
    assert systemd_unit("0::/user.slice/user-0.slice/session-3.scope\n") == ""
    assert systemd_unit("0::/\n") == "" and systemd_unit("") == ""
