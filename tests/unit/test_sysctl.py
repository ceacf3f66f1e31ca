"""sysctl.d parsing, systemd-sysctl's load order and conflicts with our file (netmend.sysctl)."""

from pathlib import Path

import pytest

from netmend.sysctl import (
    ETC_SYSCTL_CONF,
    SettingsError,
    SysctlFileError,
    check_settings,
    conflicts,
    effective,
    file_errors,
    load_order,
    masked_by,
    parse,
    parse_lenient,
    proc_path,
    render,
    same_value,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sysctl"
OURS = "/etc/sysctl.d/90-netmend.conf"


def fixture(name):
    return (FIXTURES / name).read_text()


DEBIAN_SYSCTL_CONF = fixture("debian12-etc-sysctl.conf")
PID_MAX = fixture("debian12-50-pid-max.conf")
PROTECT_LINKS = fixture("debian12-99-protect-links.conf")
SEED = fixture("seed000-sysctl.conf")


def debian12(sysctl_conf=DEBIAN_SYSCTL_CONF, **extra):
    """The sysctl files of a Debian 12 host as the module reads them (merged /usr: /lib is /usr/lib;
    /etc/sysctl.d/99-sysctl.conf is a symlink to ../sysctl.conf, so it reads the same text)."""
    files = {
        "/etc/sysctl.d/99-sysctl.conf": sysctl_conf,
        "/usr/lib/sysctl.d/50-pid-max.conf": PID_MAX,
        "/usr/lib/sysctl.d/99-protect-links.conf": PROTECT_LINKS,
        "/lib/sysctl.d/50-pid-max.conf": PID_MAX,
        "/lib/sysctl.d/99-protect-links.conf": PROTECT_LINKS,
        ETC_SYSCTL_CONF: sysctl_conf,
    }
    files.update(extra)
    return files


# Parsing


def test_parse_comments_blank_lines_and_whitespace():
    text = ("# a comment\n"
            "; another comment\n"
            "\n"
            "   # indented comment\n"
            "net.ipv4.ip_forward=1\n"
            "  net.ipv4.conf.all.forwarding   =   1  \n"
            "net.ipv4.tcp_rmem =\t4096 87380 6291456\n"
            "kernel.core_pattern = |/usr/bin/x %p = y\n")
    entries = parse(text, "/etc/sysctl.d/10-x.conf")
    assert [(e.key, e.value, e.line) for e in entries] == [
        ("net.ipv4.ip_forward", "1", 5),
        ("net.ipv4.conf.all.forwarding", "1", 6),
        ("net.ipv4.tcp_rmem", "4096 87380 6291456", 7),
        ("kernel.core_pattern", "|/usr/bin/x %p = y", 8),  # only the first '=' separates
    ]
    assert {e.source for e in entries} == {"/etc/sysctl.d/10-x.conf"}
    assert not any(e.ignore_errors for e in entries)


def test_parse_dash_prefix_ignores_errors():
    entries = parse("-net.bridge.bridge-nf-call-iptables = 1\n- net.ipv4.ip_forward=1\n", "f.conf")
    assert [(e.key, e.ignore_errors) for e in entries] == [
        ("net.bridge.bridge-nf-call-iptables", True), ("net.ipv4.ip_forward", True)]


def test_parse_slash_keys_become_dotted():
    entries = parse("net/ipv4/ip_forward = 1\n/net/ipv4/conf/all/rp_filter=2\n", "f.conf")
    assert [(e.key, e.value) for e in entries] == [("net.ipv4.ip_forward", "1"), ("net.ipv4.conf.all.rp_filter", "2")]


def test_parse_empty_value_is_an_assignment():
    assert parse("kernel.domainname =\n", "f.conf")[0].value == ""


@pytest.mark.parametrize(("line", "reason"), [
    ("net.ipv4.ip_forward 1", "not an assignment"),
    ("= 1", "the key is empty"),
    ("- = 1", "the key is empty"),
    ("net.ipv4 ip_forward = 1", "contains spaces"),
    ("net.ipv4.conf.*.rp_filter = 1", "glob"),
    ("net.ipv4.conf.eth?.rp_filter = 1", "glob"),
    ("net.ipv4.conf.eth0/100.rp_filter = 1", "mixes '/' and '.'"),
    ("net..ipv4.ip_forward = 1", "empty component"),
])
def test_parse_malformed_names_file_line_and_what_is_accepted(line, reason):
    with pytest.raises(SysctlFileError) as info:
        parse(f"# first\n\n{line}\nnet.ipv4.ip_forward = 1\n", "/etc/sysctl.d/60-bad.conf")
    err = info.value
    assert (err.source, err.line) == ("/etc/sysctl.d/60-bad.conf", 3)
    assert reason in err.reason
    assert str(err).startswith("/etc/sysctl.d/60-bad.conf, line 3: ")
    assert "accepted: " in str(err)


def test_parse_lenient_keeps_the_good_lines():
    entries, errors = parse_lenient("a.b = 1\nnonsense\nc.d.*.e = 2\nf.g = 3\n", "x.conf")
    assert [e.key for e in entries] == ["a.b", "f.g"]
    assert [(e.line, e.applied_at_boot) for e in errors] == [(2, False), (3, True)]


def test_parse_debian12_files():
    assert parse(DEBIAN_SYSCTL_CONF, ETC_SYSCTL_CONF) == []  # Debian's default: every line commented
    assert [(e.key, e.value) for e in parse(PID_MAX, "50-pid-max.conf")] == [("kernel.pid_max", "4194304")]
    assert [(e.key, e.value) for e in parse(PROTECT_LINKS, "99-protect-links.conf")] == [
        ("fs.protected_fifos", "1"), ("fs.protected_hardlinks", "1"),
        ("fs.protected_regular", "2"), ("fs.protected_symlinks", "1")]


def test_parse_seed_snippet():
    entries = parse(SEED, "seed000-sysctl.conf")
    assert [(e.key, e.value, e.line) for e in entries] == [
        ("net.bridge.bridge-nf-call-ip6tables", "1", 1),
        ("net.bridge.bridge-nf-call-iptables", "1", 2),
        ("net.ipv4.ip_forward", "1", 3),
        ("net.ipv4.conf.all.forwarding", "1", 4),
        ("net.ipv6.conf.all.forwarding", "1", 5),
    ]


# Load order


def test_load_order_is_lexical_by_basename_across_directories():
    files = {"/usr/lib/sysctl.d/10-a.conf": "", "/etc/sysctl.d/20-b.conf": "", "/run/sysctl.d/15-c.conf": "",
             "/usr/local/lib/sysctl.d/30-d.conf": "", "/lib/sysctl.d/05-e.conf": ""}
    assert load_order(files) == ["/lib/sysctl.d/05-e.conf", "/usr/lib/sysctl.d/10-a.conf",
                                 "/run/sysctl.d/15-c.conf", "/etc/sysctl.d/20-b.conf",
                                 "/usr/local/lib/sysctl.d/30-d.conf"]


def test_load_order_earlier_directory_masks_same_basename():
    files = {"/usr/lib/sysctl.d/50-pid-max.conf": PID_MAX, "/etc/sysctl.d/50-pid-max.conf": "",
             "/run/sysctl.d/60-x.conf": "", "/usr/lib/sysctl.d/60-x.conf": "",
             "/usr/local/lib/sysctl.d/70-y.conf": "", "/usr/lib/sysctl.d/70-y.conf": ""}
    assert load_order(files) == ["/etc/sysctl.d/50-pid-max.conf", "/run/sysctl.d/60-x.conf",
                                 "/usr/local/lib/sysctl.d/70-y.conf"]
    # An empty /etc file (or a symlink to /dev/null) masks the vendor's pid_max.
    assert "kernel.pid_max" not in effective(files)
    assert masked_by("/usr/lib/sysctl.d/50-pid-max.conf", files) == "/etc/sysctl.d/50-pid-max.conf"
    assert masked_by("/etc/sysctl.d/50-pid-max.conf", files) is None


def test_load_order_only_conf_files_in_known_directories():
    files = {"/etc/sysctl.d/README.sysctl": "x", "/etc/sysctl.d/90-netmend.conf.123.2024-01-01@10:00:00~": "",
             "/etc/sysctl.d/.netmend_sysctl.abc.tmp": "", "/etc/sysctl.d/.hidden.conf": "",
             "/etc/sysctl.d/sub/10-a.conf": "", "/tmp/10-a.conf": "", "/etc/sysctl.d/10-a.conf": ""}
    assert load_order(files) == ["/etc/sysctl.d/10-a.conf"]


def test_etc_sysctl_conf_is_read_last():
    files = {ETC_SYSCTL_CONF: "net.ipv4.ip_forward = 1\n", "/etc/sysctl.d/99-zz.conf": "net.ipv4.ip_forward = 0\n",
             "/usr/lib/sysctl.d/10-a.conf": ""}
    assert load_order(files) == ["/usr/lib/sysctl.d/10-a.conf", "/etc/sysctl.d/99-zz.conf", ETC_SYSCTL_CONF]
    assert effective(files)["net.ipv4.ip_forward"] == ("1", ETC_SYSCTL_CONF)


def test_systemd_only_order_reads_sysctl_conf_through_the_symlink():
    """Debian 12 boots with systemd-sysctl: /etc/sysctl.conf counts as 99-sysctl.conf, so 99-zz wins."""
    files = debian12(DEBIAN_SYSCTL_CONF + SEED, **{"/etc/sysctl.d/99-zz.conf": "net.ipv4.ip_forward = 0\n"})
    assert load_order(files, last=()) == [
        "/usr/lib/sysctl.d/50-pid-max.conf", "/usr/lib/sysctl.d/99-protect-links.conf",
        "/etc/sysctl.d/99-sysctl.conf", "/etc/sysctl.d/99-zz.conf"]
    assert effective(files, last=())["net.ipv4.ip_forward"] == ("0", "/etc/sysctl.d/99-zz.conf")
    assert effective(files)["net.ipv4.ip_forward"] == ("1", ETC_SYSCTL_CONF)  # sysctl --system


def test_debian12_effective_with_the_seed_appended():
    files = debian12(DEBIAN_SYSCTL_CONF + SEED)
    assert load_order(files) == ["/usr/lib/sysctl.d/50-pid-max.conf", "/usr/lib/sysctl.d/99-protect-links.conf",
                                 "/etc/sysctl.d/99-sysctl.conf", ETC_SYSCTL_CONF]
    boot = effective(files)
    assert boot["kernel.pid_max"] == ("4194304", "/usr/lib/sysctl.d/50-pid-max.conf")
    assert boot["fs.protected_regular"] == ("2", "/usr/lib/sysctl.d/99-protect-links.conf")
    for key in ("net.bridge.bridge-nf-call-ip6tables", "net.bridge.bridge-nf-call-iptables", "net.ipv4.ip_forward",
                "net.ipv4.conf.all.forwarding", "net.ipv6.conf.all.forwarding"):
        assert boot[key] == ("1", ETC_SYSCTL_CONF)
    assert "net.ipv4.ip_forward" not in effective(debian12())


def test_file_errors_name_file_and_line_of_files_read_at_boot():
    files = {"/etc/sysctl.d/60-bad.conf": "a.b = 1\noops\n", "/tmp/not-read.conf": "oops\n"}
    assert [(e.source, e.line) for e in file_errors(files)] == [("/etc/sysctl.d/60-bad.conf", 2)]
    assert effective(files) == {"a.b": ("1", "/etc/sysctl.d/60-bad.conf")}  # the bad line is skipped


# Conflicts


def test_later_file_with_another_value_is_a_conflict():
    files = debian12(**{OURS: render({"net.ipv4.ip_forward": "1"}),
                        "/etc/sysctl.d/99-zz.conf": "net.ipv4.ip_forward=0\n"})
    assert conflicts(OURS, {"net.ipv4.ip_forward": "1"}, files) == [
        {"key": "net.ipv4.ip_forward", "wanted": "1", "path": "/etc/sysctl.d/99-zz.conf", "value": "0"}]


def test_earlier_file_is_not_a_conflict():
    files = {OURS: render({"net.ipv4.ip_forward": "1"}), "/usr/lib/sysctl.d/10-early.conf": "net.ipv4.ip_forward=0\n",
             "/etc/sysctl.d/50-early.conf": "net.ipv4.ip_forward=0\n"}
    assert conflicts(OURS, {"net.ipv4.ip_forward": "1"}, files) == []


def test_equal_values_are_not_conflicts():
    files = {OURS: "", "/etc/sysctl.d/99-a.conf": "net.ipv4.ip_forward =  1 \n",
             "/etc/sysctl.d/99-b.conf": "net.ipv4.tcp_rmem = 4096\t87380   6291456\n",
             "/etc/sysctl.d/99-c.conf": "net.ipv4.conf.all.rp_filter = 01\n"}
    wanted = {"net.ipv4.ip_forward": "1", "net.ipv4.tcp_rmem": "4096 87380 6291456", "net.ipv4.conf.all.rp_filter": "1"}
    assert conflicts(OURS, wanted, files) == []


def test_multi_field_values_compare_field_by_field():
    files = {OURS: "", "/etc/sysctl.d/99-b.conf": "net.ipv4.tcp_rmem = 4096 87380 16777216\n"}
    assert conflicts(OURS, {"net.ipv4.tcp_rmem": "4096 87380 6291456"}, files) == [
        {"key": "net.ipv4.tcp_rmem", "wanted": "4096 87380 6291456", "path": "/etc/sysctl.d/99-b.conf",
         "value": "4096 87380 16777216"}]
    assert not same_value("4096 87380", "4096 87380 6291456")
    assert same_value("-1", " -1")
    assert not same_value("abc", "abd")


def test_a_file_counts_with_its_last_assignment():
    files = {OURS: "", "/etc/sysctl.d/99-a.conf": "net.ipv4.ip_forward = 0\nnet.ipv4.ip_forward = 1\n",
             "/etc/sysctl.d/99-b.conf": "net.ipv4.ip_forward = 1\nnet.ipv4.ip_forward = 0\n"}
    assert [c["path"] for c in conflicts(OURS, {"net.ipv4.ip_forward": "1"}, files)] == ["/etc/sysctl.d/99-b.conf"]


def test_seed_appended_to_sysctl_conf_conflicts_with_a_disabled_key():
    files = debian12(DEBIAN_SYSCTL_CONF + SEED, **{OURS: render({"net.ipv4.ip_forward": "0"})})
    found = conflicts(OURS, {"net.ipv4.ip_forward": "0", "net.ipv4.conf.all.rp_filter": "1"}, files)
    # Read twice: as /etc/sysctl.d/99-sysctl.conf (the symlink) and as /etc/sysctl.conf at the end.
    assert [(c["path"], c["key"], c["value"]) for c in found] == [
        ("/etc/sysctl.d/99-sysctl.conf", "net.ipv4.ip_forward", "1"),
        (ETC_SYSCTL_CONF, "net.ipv4.ip_forward", "1")]


def test_our_file_masked_means_every_other_value_wins():
    ours = "/usr/lib/sysctl.d/90-netmend.conf"
    files = {ours: "net.ipv4.ip_forward = 1\n", "/etc/sysctl.d/90-netmend.conf": "",
             "/etc/sysctl.d/10-early.conf": "net.ipv4.ip_forward = 0\n"}
    assert ours not in load_order(files)
    assert [c["path"] for c in conflicts(ours, {"net.ipv4.ip_forward": "1"}, files)] == ["/etc/sysctl.d/10-early.conf"]


# Render, settings, /proc/sys


def test_render_sorts_keys_under_a_header():
    text = render({"net.ipv4.tcp_rmem": "4096\t87380  6291456", "net.bridge.bridge-nf-call-iptables": 1,
                   "net.ipv4.ip_forward": "1"})
    lines = text.splitlines()
    assert lines[0].startswith("# ") and "netmend" in lines[0]
    assert [line for line in lines if not line.startswith("#")] == [
        "net.bridge.bridge-nf-call-iptables = 1", "net.ipv4.ip_forward = 1", "net.ipv4.tcp_rmem = 4096 87380 6291456"]
    assert text.endswith("\n")
    assert [(e.key, e.value) for e in parse(text, OURS)] == [
        ("net.bridge.bridge-nf-call-iptables", "1"), ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.tcp_rmem", "4096 87380 6291456")]


def test_render_custom_header():
    assert render({"a.b": 1}, "line one\n\nline two") == "# line one\n#\n# line two\na.b = 1\n"


def test_check_settings_normalises_values():
    assert check_settings({"net.ipv4.ip_forward": 1, "net.ipv4.tcp_rmem": " 4096  87380 6291456\n"}) == {
        "net.ipv4.ip_forward": "1", "net.ipv4.tcp_rmem": "4096 87380 6291456"}


def test_check_settings_reports_every_bad_key_and_value():
    with pytest.raises(SettingsError) as info:
        check_settings({"Net.IPv4.ip_forward": 1, "ip_forward": 1, "net/ipv4/ip_forward": 1,
                        "net.ipv4.conf.*.rp_filter": 1, "net.a": True, "net.b": 1.5, "net.c": "",
                        "net.d": "1\n2", "net.e": [1], "net.ok": 1})
    assert [k for k, _ in info.value.problems] == [
        "Net.IPv4.ip_forward", "ip_forward", "net/ipv4/ip_forward", "net.ipv4.conf.*.rp_filter",
        "net.a", "net.b", "net.c", "net.d", "net.e"]
    assert "accepted" in str(info.value)
    with pytest.raises(SettingsError, match="mapping"):
        check_settings(["net.ipv4.ip_forward"])
    with pytest.raises(SettingsError, match="empty"):
        check_settings({})


def test_proc_path():
    assert proc_path("net.ipv4.ip_forward") == "/proc/sys/net/ipv4/ip_forward"
    assert proc_path("net.bridge.bridge-nf-call-iptables") == "/proc/sys/net/bridge/bridge-nf-call-iptables"
