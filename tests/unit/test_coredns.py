"""Corefile parsing, rendering, the ConfigMap and loopback upstreams (netmend.coredns)."""

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from netmend.coredns import (
    CorefileError,
    configmap,
    forward_target,
    loopback_upstreams,
    parse_corefile,
    render_configmap,
    render_corefile,
    root_settings,
    settings,
    tokenize,
)
from netmend.errors import ProblemsError
from netmend.resolvconf import ResolvConfError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dns"
K8S_VERSION = "1.33.0"
KUBEADM = (FIXTURES / "kubeadm-Corefile").read_text()
STUBDOMAIN = (FIXTURES / "stubdomain-Corefile").read_text()
STUB_RESOLV = (FIXTURES / "resolved-stub-resolv.conf").read_text()
UPLINK_RESOLV = (FIXTURES / "resolved-uplink-resolv.conf").read_text()
PLUGINS = ["errors", "health", "ready", "kubernetes", "prometheus", "forward", "cache", "loop", "reload", "loadbalance"]


def shape(blocks):
    """The structure of a Corefile without line numbers: what two Corefiles must share to be the same config."""
    def strip(d):
        return (d.name, d.args, tuple(strip(s) for s in d.block))
    return [(b.keys, tuple(strip(d) for d in b.directives)) for b in blocks]


# Parsing real Corefiles


def test_parse_kubeadms_corefile():
    (block,) = parse_corefile(KUBEADM)
    assert block.keys == (".:53",) and block.line == 1
    assert [(z.zone, z.port, z.transport) for z in block.zones] == [(".", 53, "dns")]
    assert [d.name for d in block.directives] == PLUGINS
    health = block.plugin("health")
    assert health.args == () and [(s.name, s.args) for s in health.block] == [("lameduck", ("5s",))]
    kube = block.plugin("kubernetes")
    assert kube.args == ("cluster.local", "in-addr.arpa", "ip6.arpa") and kube.line == 7
    assert [(s.name, s.args) for s in kube.block] == [
        ("pods", ("insecure",)), ("fallthrough", ("in-addr.arpa", "ip6.arpa")), ("ttl", ("30",))]
    assert block.plugin("forward").sub("max_concurrent")[0].args == ("1000",)


def test_root_settings_of_kubeadms_corefile():
    s = root_settings(KUBEADM)
    assert s["forward_to"] == ["/etc/resolv.conf"] and s["forward_resolv_conf"] == "/etc/resolv.conf"
    assert s["forward_addresses"] == []
    assert s["kubernetes_zones"] == ["cluster.local", "in-addr.arpa", "ip6.arpa"]
    assert s["cluster_domain"] == "cluster.local" and s["cache_ttl"] == 30
    assert s["plugins"] == PLUGINS and s["port"] == 53 and s["zones"] == ["."]
    assert s["forward"][0]["options"] == {"max_concurrent": ["1000"]} and s["forward"][0]["line"] == 13


def test_parse_a_corefile_with_a_stub_domain_placeholders_and_nested_options():
    blocks = parse_corefile(STUBDOMAIN)
    assert [b.keys for b in blocks] == [(".:5353",), ("consul.local:5353",)]
    root, consul = blocks
    assert root.plugin("bind").args == ("{$POD_IP}",) and root.plugin("health").args == ("{$POD_IP}:8080",)
    assert root.plugin("cache").args == ("30",) and root.plugin("cache").sub("servfail")[0].args == ("5s",)
    assert consul.line == 20 and consul.zones[0].zone == "consul.local"
    with pytest.raises(CorefileError, match=r"no server block for the root zone \. on port 53"):
        root_settings(blocks)
    s = root_settings(blocks, port=5353)
    assert s["forward_resolv_conf"] == "/etc/resolv.conf" and s["cache_ttl"] == 30
    assert s["kubernetes_zones"] == ["cluster.local", "in-addr.arpa", "ip6.arpa"]
    stub = settings(consul)
    assert stub["forward_addresses"] == ["10.150.0.1"] and stub["kubernetes_zones"] == []
    assert stub["zones"] == ["consul.local"] and stub["port"] == 5353


def test_comments_quotes_one_line_blocks_and_key_lists():
    text = ('# header comment\n'
            'dns://.:53 example.org, # keys go on\n'
            '  example.com:53\n'
            '{\n'
            '    errors # inline\n'
            '    health { lameduck 5s }\n'
            '    log . "{remote} # not a comment {name}" {common}\n'
            '    hosts "/etc/my hosts" {\n'
            '        fallthrough\n'
            '    }\n'
            '    template IN A "multi\n'
            'line"\n'
            '    kubernetes {\n'
            '        pods verified\n'
            '    }\n'
            '    cache\n'
            '}\n')
    (block,) = parse_corefile(text)
    assert block.keys == ("dns://.:53", "example.org", "example.com:53") and block.line == 2
    assert [z.zone for z in block.zones] == [".", "example.org", "example.com"]
    assert [d.name for d in block.directives] == ["errors", "health", "log", "hosts", "template", "kubernetes",
                                                  "cache"]
    assert block.plugin("health").block[0].args == ("5s",)
    assert block.plugin("log").args == (".", "{remote} # not a comment {name}", "{common}")
    assert block.plugin("hosts").args == ("/etc/my hosts",)
    assert block.plugin("template").args == ("IN", "A", "multi\nline") and block.plugin("kubernetes").line == 13
    s = settings(block)
    assert s["kubernetes_zones"] == [".", "example.org", "example.com"]  # no zones: the block's
    assert s["cache_ttl"] == 3600 and s["forward"] == [] and s["forward_to"] == []
    assert parse_corefile(".:53 { errors\n    a { b { c } }\n}\n")[0].directives[1].block[0].block[0].name == "c"
    assert tokenize('"say \\"hi\\"" x\\y')[0].text == 'say "hi"' and tokenize('a\\b')[0].text == "a\\b"


def test_snippets_are_expanded_and_file_imports_kept():
    text = ("(upstream) {\n    forward . 127.0.0.53\n    cache 10\n}\n"
            ".:53 {\n    errors\n    import upstream\n    import /etc/coredns/custom/*.override\n}\n")
    (block,) = parse_corefile(text)
    assert [d.name for d in block.directives] == ["errors", "forward", "cache", "import"]
    assert block.plugin("import").args == ("/etc/coredns/custom/*.override",)
    s = root_settings(text)
    assert s["forward_addresses"] == ["127.0.0.53"] and s["cache_ttl"] == 10 and s["forward"][0]["line"] == 2
    assert [f["reaches"] for f in loopback_upstreams(text)] == ["itself"]
    with pytest.raises(CorefileError, match="declared twice"):
        parse_corefile("(a) {\n}\n(a) {\n}\n.:53 {\n}\n")
    with pytest.raises(CorefileError, match="only snippets"):
        parse_corefile("(a) {\n    errors\n}\n")
    with pytest.raises(CorefileError, match="import takes one argument"):
        parse_corefile(".:53 {\n    import\n}\n")


def test_server_block_keys_with_transports_and_reverse_zones():
    blocks = parse_corefile("tls://.:853 {\n  forward . 192.0.2.1\n}\n10.0.0.0/24:1053 {\n  whoami\n}\n"
                            "cluster.local. {\n  kubernetes\n}\n")
    assert [(z.zone, z.port, z.transport) for b in blocks for z in b.zones] == [
        (".", 853, "tls"), ("10.0.0.0/24", 1053, "dns"), ("cluster.local", 53, "dns")]
    assert settings(blocks[2])["cluster_domain"] == "cluster.local"


@pytest.mark.parametrize(("text", "line", "words"), [
    ("", 0, "is empty"),
    ("# only a comment\n\n", 0, "is empty"),
    (".:53 {\n    errors\n", 1, "is never closed"),
    (".:53 {\n    health {\n        lameduck 5s\n}\n", 1, "is never closed"),
    (".:53 {\n    errors\n}\n}\n", 4, "'}' without a matching '{'"),
    (".:53{\n    errors\n}\n", 1, "brace stuck to a word"),
    (".:53 {\n    errors}\n}\n", 2, "brace stuck to a word"),
    (".:53 {\n    errors }\n", 2, "must be on a line of its own"),
    (".:53 {\n    health { lameduck 5s } }\n", 2, "must be on a line of its own"),
    (".:53 {\n    log \"unclosed\n}\n", 2, "quoted word is never closed"),
    ("{\n    errors\n}\n", 1, "without server block keys"),
    ('"" {\n    errors\n}\n', 1, "without keys"),
    (".:53\n", 1, "has no '{' (truncated file?)"),
    (".:53\n    errors\n}\n", 1, "has no '{' after its keys"),
    ("hello world\nthis is not a Corefile\n", 1, "has no '{' after its keys"),
    ("a.example, {\n}\n", 1, "ends in ','"),
    (".:53 {\n    forward . 192.0.2.1\n    {\n    }\n}\n", 3, "'{' must end the line"),
    (".:53 {\n    health { lameduck 5s } extra\n}\n", 2, "'extra' after '}'"),
    (".:53 {\n}\n.:53 {\n}\n", 3, "already served by the block on line 1"),
    ("udp://.:53 {\n}\n", 1, "unknown transport udp://"),
    (".:99999 {\n}\n", 1, "'99999' is not a port"),
    ("bad,zone {\n}\n", 1, "is not a zone"),
    (".:53 {\n    errors\n}\n\0", 4, "NUL byte"),
])
def test_malformed_corefiles_fail_with_the_line(text, line, words):
    with pytest.raises(CorefileError) as caught:
        parse_corefile(text, "Corefile")
    assert caught.value.line == line and words in caught.value.reason, str(caught.value)
    if line:
        assert str(caught.value).startswith(f"Corefile, line {line}: ")


def test_every_truncation_of_kubeadms_corefile_is_an_error():
    end = KUBEADM.rindex("}") + 1
    for cut in range(end):
        with pytest.raises(CorefileError):
            parse_corefile(KUBEADM[:cut])
    assert parse_corefile(KUBEADM[:end])  # the whole file without its final newline


@pytest.mark.parametrize(("text", "words"), [
    (".:53 {\n    forward .\n}\n", "forward needs FROM and at least one TO"),
    (".:53 {\n    forward . 192.0.2.1:xx\n}\n", "'192.0.2.1:xx' is not an address"),
    (".:53 {\n    forward . udp://192.0.2.1\n}\n", "unknown protocol udp://"),
    (".:53 {\n    forward . " + " ".join(f"192.0.2.{i}" for i in range(1, 17)) + "\n}\n", "at most 15"),
    (".:53 {\n    cache 0\n}\n", "cache TTL must be a positive"),
])
def test_bad_plugin_arguments_fail_in_settings(text, words):
    with pytest.raises(CorefileError) as caught:
        root_settings(text)
    assert words in caught.value.reason and caught.value.line == 2


@pytest.mark.parametrize(("to", "expected"), [
    ("192.0.2.1", {"kind": "address", "protocol": "dns", "address": "192.0.2.1", "port": 53}),
    ("dns://192.0.2.1:5353", {"kind": "address", "protocol": "dns", "address": "192.0.2.1", "port": 5353}),
    ("[2001:db8::1]:53", {"kind": "address", "protocol": "dns", "address": "2001:db8::1", "port": 53}),
    ("2001:db8::1", {"kind": "address", "protocol": "dns", "address": "2001:db8::1", "port": 53}),
    ("tls://9.9.9.9", {"kind": "address", "protocol": "tls", "address": "9.9.9.9", "port": 853}),
    ("tls://9.9.9.9%dns.quad9.net:10853", {"kind": "address", "protocol": "tls", "address": "9.9.9.9",
                                           "port": 10853}),
    ("https://9.9.9.9", {"kind": "address", "protocol": "https", "address": "9.9.9.9", "port": 443}),
    ("/etc/resolv.conf", {"kind": "file", "path": "/etc/resolv.conf"}),
    ("dns.example.local", {"kind": "hostname", "protocol": "dns", "host": "dns.example.local", "port": 53}),
])
def test_forward_targets(to, expected):
    assert forward_target(to) == {"to": to, **expected}


# Loopback upstreams


def test_forwarding_to_systemd_resolveds_stub_loops_and_the_uplink_file_does_not():
    (found,) = loopback_upstreams(KUBEADM, {"/etc/resolv.conf": STUB_RESOLV})
    assert found == {"server": ".:53", "line": 13, "from": ".", "target": "/etc/resolv.conf",
                     "address": "127.0.0.53", "port": 53, "via": "/etc/resolv.conf", "reaches": "itself"}
    assert loopback_upstreams(KUBEADM, {"/etc/resolv.conf": UPLINK_RESOLV}) == []


def test_direct_loopback_upstreams_and_what_they_reach():
    text = (".:53 {\n    forward . 127.0.0.53 192.0.2.1 [::1]:53 127.0.0.1:5301 127.0.0.1:9005 localhost\n}\n"
            ".:5301 {\n    forward . tls://1.1.1.1\n}\n")
    found = loopback_upstreams(text)
    assert [(f["target"], f["address"], f["port"], f["reaches"]) for f in found] == [
        ("127.0.0.53", "127.0.0.53", 53, "itself"), ("[::1]:53", "::1", 53, "itself"),
        ("127.0.0.1:5301", "127.0.0.1", 5301, "block .:5301"), ("127.0.0.1:9005", "127.0.0.1", 9005, "nothing"),
        ("localhost", "127.0.0.1", 53, "itself")]
    assert {f["via"] for f in found} == {""}


def test_a_forwarded_file_must_be_given_to_check_it():
    with pytest.raises(CorefileError, match=r"forward reads /etc/resolv\.conf"):
        loopback_upstreams(KUBEADM)
    with pytest.raises(ResolvConfError, match="line 24: unknown keyword"):
        loopback_upstreams(KUBEADM, {"/etc/resolv.conf": STUB_RESOLV + "bogus line\n"})


# Rendering


def test_render_is_kubeadms_corefile():
    text = render_corefile("cluster.local")
    assert text.startswith("# Managed by netmend")
    assert shape(parse_corefile(text)) == shape(parse_corefile(KUBEADM))


@pytest.mark.parametrize(("kwargs", "forward_to", "addresses", "resolv_conf"), [
    ({}, ["/etc/resolv.conf"], [], "/etc/resolv.conf"),
    ({"resolv_conf": "/etc/coredns/resolv.conf"}, ["/etc/coredns/resolv.conf"], [], "/etc/coredns/resolv.conf"),
    ({"upstreams": ["192.0.2.53"]}, ["192.0.2.53"], ["192.0.2.53"], ""),
    ({"upstreams": ["192.0.2.53:5353", "[2001:db8::53]:53", "tls://9.9.9.9%dns.quad9.net"]},
     ["192.0.2.53:5353", "[2001:db8::53]:53", "tls://9.9.9.9%dns.quad9.net"],
     ["192.0.2.53:5353", "2001:db8::53", "tls://9.9.9.9:853"], ""),
])
def test_render_round_trips_through_parse(kwargs, forward_to, addresses, resolv_conf):
    s = root_settings(render_corefile("k8s.example.org", cache_ttl=120, max_concurrent=50, **kwargs))
    assert s["forward_to"] == forward_to and s["forward_addresses"] == addresses
    assert s["forward_resolv_conf"] == resolv_conf
    assert s["cluster_domain"] == "k8s.example.org" and s["cache_ttl"] == 120
    assert s["forward"][0]["options"] == {"max_concurrent": ["50"]}
    assert s["plugins"] == PLUGINS


def test_render_refuses_bad_arguments_naming_each():
    with pytest.raises(ProblemsError) as caught:
        render_corefile("cluster..local", ["127.0.0.53", "/etc/resolv.conf", "dns.example", "192.0.2.1:0", "::1"],
                        cache_ttl=0, max_concurrent=True)
    problems = dict(caught.value.problems)
    assert list(problems) == ["domain", "upstreams[0]", "upstreams[1]", "upstreams[2]", "upstreams[3]", "upstreams[4]",
                              "cache_ttl", "max_concurrent"]
    assert "loop plugin halts CoreDNS" in problems["upstreams[0]"] and "loopback" in problems["upstreams[4]"]
    assert "is a file" in problems["upstreams[1]"] and "is a host name" in problems["upstreams[2]"]
    with pytest.raises(ProblemsError, match="at most 15"):
        render_corefile("cluster.local", [f"192.0.2.{i}" for i in range(1, 17)])
    with pytest.raises(ProblemsError, match="resolv_conf"):
        render_corefile("cluster.local", resolv_conf="resolv.conf")
    with pytest.raises(ProblemsError, match="upstreams: must be a list"):
        render_corefile("cluster.local", "192.0.2.1")


# The ConfigMap


def test_configmap_holds_the_corefile_and_is_a_valid_configmap():
    corefile = render_corefile("cluster.local", ["192.0.2.53"])
    doc = yaml.safe_load(render_configmap(corefile))
    assert doc == configmap(corefile)
    assert doc["metadata"] == {"name": "coredns", "namespace": "kube-system"}
    assert doc["data"]["Corefile"] == corefile
    assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == "1.33"
    odd = "\tkubeadm indents with tabs\n.:53 {\n}\n\n"
    assert yaml.safe_load(render_configmap(odd))["data"]["Corefile"] == odd


@pytest.mark.parametrize("breakage", ["data-not-strings", "no-name", "unknown-field"])
def test_a_broken_configmap_fails_schema_validation(breakage):
    doc = configmap(render_corefile("cluster.local"))
    if breakage == "data-not-strings":
        doc["data"]["Corefile"] = {".:53": ["errors"]}
    elif breakage == "no-name":
        del doc["metadata"]["name"]
        doc["metadata"]["labels"] = ["not", "a", "map"]
    else:
        doc["spec"] = {"corefile": "x"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
