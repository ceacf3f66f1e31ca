"""netmend.kmod: the parsers on real files, status decisions, modules_for and render."""

import re
from pathlib import Path

import pytest

from netmend import kmod
from netmend.kmod import (
    EVIDENCE,
    DictProbe,
    FileProbe,
    modules_for,
    parse_kernel_config,
    parse_modules_builtin,
    parse_modules_load,
    parse_proc_modules,
    render,
    status,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kmod"
# Captured on the development machine: everything built in, no /proc/modules, no /lib/modules.
HOST = FIXTURES / "host-6.18"
# A Debian 12 node on the stock 6.1 kernel; see fixtures/kmod/README.md for what is captured and what written.
DEBIAN = FIXTURES / "debian12"
DEBIAN_RELEASE = "6.1.0-56-amd64"
DEBIAN_BUILTIN = DEBIAN / "lib" / "modules" / DEBIAN_RELEASE / "modules.builtin"


def debian_files(**changes):
    """The Debian node as DictProbe files, with changes ({path: text, True or None to drop})."""
    files = {
        "/proc/sys/kernel/osrelease": f"{DEBIAN_RELEASE}\n",
        "/proc/modules": (DEBIAN / "proc" / "modules").read_text(),
        f"/lib/modules/{DEBIAN_RELEASE}/modules.builtin": DEBIAN_BUILTIN.read_text(),
        f"/boot/config-{DEBIAN_RELEASE}": (DEBIAN / "boot" / f"config-{DEBIAN_RELEASE}").read_text(),
    }
    for path, value in changes.items():
        files.pop(path, None) if value is None else files.__setitem__(path, value)
    return files


# A kernel with everything built in and no /lib/modules, like the development machine, as a dict.
BARE = {"/proc/sys/kernel/osrelease": "6.18.0-test\n"}


# --- parsers ------------------------------------------------------------------------------------------


def test_parse_proc_modules_on_a_debian_node():
    modules = parse_proc_modules((DEBIAN / "proc" / "modules").read_text())
    assert len(modules) == 37
    assert list(modules)[:4] == ["ip_vs_sh", "ip_vs_wrr", "ip_vs_rr", "ip_vs"]
    bridge = modules["bridge"]
    assert (bridge.size, bridge.refcount, bridge.used_by, bridge.state) == (307200, 1, ("br_netfilter",), "Live")
    assert modules["br_netfilter"].used_by == ()
    assert modules["nf_conntrack"].used_by == ("ip_vs", "xt_conntrack", "xt_MASQUERADE", "nf_conntrack_netlink",
                                               "nf_nat")
    assert modules["xt_MASQUERADE"].address == "0x0000000000000000"


def test_parse_proc_modules_taints_states_and_kernels_without_unload():
    modules = parse_proc_modules(
        "vboxdrv 696320 2 vboxnetadp,vboxnetflt, Live 0xffffffffc0a00000 (OE)\n"
        "going 16384 0 - Unloading 0xffffffffc0900000\n"
        "\n"
        "fixed 16384 - - Live 0xffffffffc0800000\n")
    assert modules["vboxdrv"].taints == "OE" and modules["vboxdrv"].used_by == ("vboxnetadp", "vboxnetflt")
    assert modules["going"].state == "Unloading"
    assert modules["fixed"].refcount is None


@pytest.mark.parametrize("line", ["broken line", "br_netfilter 32768 0 - Live", "br_netfilter big 0 - Live 0x0",
                                  "br_netfilter 32768 0 - Asleep 0x0", "br_netfilter 32768 0 - Live 0x0 OE"])
def test_parse_proc_modules_names_the_source_and_line_of_a_malformed_line(line):
    with pytest.raises(ValueError, match=r"^/proc/modules:2: .* is not 'name size refcount deps state offset'"):
        parse_proc_modules(f"overlay 163840 14 - Live 0x0000000000000000\n{line}\n")


def test_parse_modules_builtin_on_debian_12():
    modules = parse_modules_builtin(DEBIAN_BUILTIN.read_text())
    assert len(modules) == 186
    assert modules["unix"] == "kernel/net/unix/unix.ko"
    # - and _ are the same to the kernel: names are kept with _, paths as written.
    assert modules["input_core"] == "kernel/drivers/input/input-core.ko"
    assert "input-core" not in modules
    for name in ("br_netfilter", "overlay", "nf_conntrack", "nf_tables", "ip_vs", "vxlan"):
        assert name not in modules, f"{name} is a loadable module on Debian"


def test_parse_modules_builtin_of_a_kernel_with_networking_built_in():
    text = ("kernel/fs/overlayfs/overlay.ko\nkernel/net/bridge/br_netfilter.ko\n"
            "kernel/net/netfilter/nf_conntrack.ko\nkernel/drivers/net/wireguard/wireguard.ko\n")
    assert list(parse_modules_builtin(text)) == ["overlay", "br_netfilter", "nf_conntrack", "wireguard"]


@pytest.mark.parametrize("line", ["kernel/net/bridge/br_netfilter", "br_netfilter", "kernel/net/a b.ko"])
def test_parse_modules_builtin_names_the_source_and_line_of_a_bad_line(line):
    with pytest.raises(ValueError, match=r"^/lib/modules/x/modules.builtin:2: .* is not a module path"):
        parse_modules_builtin(f"kernel/net/unix/unix.ko\n{line}\n", "/lib/modules/x/modules.builtin")


def test_parse_modules_load_skips_comments_and_blank_lines():
    text = ("# Load bridge netfilter at boot\n; an old-style comment\n\nbr_netfilter\n  overlay  \n"
            "\tnf-conntrack\nxt_MASQUERADE\n   # indented comment\n")
    assert parse_modules_load(text, "/etc/modules-load.d/k8s.conf") == [
        "br_netfilter", "overlay", "nf-conntrack", "xt_MASQUERADE"]
    assert parse_modules_load("", "/etc/modules-load.d/empty.conf") == []


@pytest.mark.parametrize("line", ["br netfilter", "overlay # for containerd", "ip_vs sched=rr", "nf_conntrack;",
                                  "kernel/fs/overlayfs/overlay.ko"])
def test_parse_modules_load_names_the_file_and_line_of_a_malformed_line(line):
    with pytest.raises(ValueError, match=r"^/etc/modules-load.d/k8s.conf:3: .* is not a module name"):
        parse_modules_load(f"# k8s\noverlay\n{line}\n", "/etc/modules-load.d/k8s.conf")


def test_parse_kernel_config():
    config = parse_kernel_config((DEBIAN / "boot" / f"config-{DEBIAN_RELEASE}").read_text())
    assert config["BRIDGE_NETFILTER"] == "m"
    assert config["MODULES"] == "y"
    assert config["IKCONFIG"] is None
    assert parse_kernel_config('CONFIG_LOCALVERSION="-fc"\n')["LOCALVERSION"] == "-fc"


def test_file_probe_reads_gzip_and_answers_missing_files():
    probe = FileProbe(HOST)
    assert "CONFIG_BRIDGE_NETFILTER=y" in probe.read("/proc/config.gz")
    assert probe.read("/proc/modules") is None
    assert probe.read("/proc/sys/net/bridge") is None, "a directory has no text"
    assert probe.exists("/proc/sys/net/bridge") and not probe.exists("/proc/net/ip_vs")


def test_dict_probe_paths_under_a_key_exist():
    probe = DictProbe({"/sys/module/vxlan/parameters/udp_port": "8472\n", "/proc/net/ip_vs": True})
    assert probe.exists("/sys/module/vxlan") and probe.exists("/sys/module/vxlan/")
    assert not probe.exists("/sys/module/vx")
    assert probe.read("/proc/net/ip_vs") is None and probe.exists("/proc/net/ip_vs")


# --- status -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "files", "state", "evidence"), [
    ("br_netfilter", debian_files(), "loaded", "/proc/modules lists br_netfilter (Live)"),
    ("br-netfilter", debian_files(), "loaded", "/proc/modules lists br_netfilter (Live)"),
    ("unix", debian_files(), "builtin", f"/lib/modules/{DEBIAN_RELEASE}/modules.builtin lists kernel/net/unix/unix.ko"),
    ("input-core", debian_files(), "builtin", "modules.builtin lists kernel/drivers/input/input-core.ko"),
    # Loadable but not loaded: the config says so, and the task will modprobe it.
    ("wireguard", debian_files(), "absent", f"/boot/config-{DEBIAN_RELEASE} has CONFIG_WIREGUARD=m (a loadable"),
    ("overlay", debian_files(**{"/proc/modules": "overlay 163840 0 - Unloading 0x0000000000000000\n"}),
     "absent", "/proc/modules does not list overlay (it is unloading)"),
    # modules.builtin is the authority where it exists: a file left behind proves nothing then.
    ("br_netfilter", debian_files(**{"/proc/modules": "", "/proc/sys/net/bridge/bridge-nf-call-iptables": "1\n"}),
     "absent", "modules.builtin does not list br_netfilter"),
    ("vxlan", debian_files(**{"/proc/modules": None, "/sys/module/vxlan/initstate": "live\n"}),
     "loaded", "/sys/module/vxlan/initstate exists (a loaded module)"),
    # Built in, no modules.builtin: each kind of proof.
    ("br_netfilter", {**BARE, "/proc/sys/net/bridge/bridge-nf-call-iptables": "1\n"}, "builtin",
     "/proc/sys/net/bridge exists"),
    ("nf_conntrack", {**BARE, "/proc/sys/net/netfilter/nf_conntrack_max": "262144\n"}, "builtin",
     "/proc/sys/net/netfilter/nf_conntrack_max exists"),
    ("overlay", {**BARE, "/proc/filesystems": "nodev\tsysfs\nnodev\toverlay\n\text4\n"}, "builtin",
     "/proc/filesystems lists overlay"),
    ("ip_vs", {**BARE, "/proc/net/ip_vs": "IP Virtual Server version 1.2.1 (size=4096)\n"}, "builtin",
     "/proc/net/ip_vs exists"),
    ("vxlan", {**BARE, "/sys/module/vxlan/parameters/udp_port": "0\n"}, "builtin",
     "/sys/module/vxlan exists without initstate (built in)"),
    ("nf_tables", {**BARE, "/proc/config.gz": "CONFIG_NF_TABLES=y\n"}, "builtin",
     "/proc/config.gz has CONFIG_NF_TABLES=y"),
    ("ip_vs_rr", {**BARE, "/boot/config-6.18.0-test": "CONFIG_IP_VS_RR=y\n"}, "builtin",
     "/boot/config-6.18.0-test has CONFIG_IP_VS_RR=y"),
    # Not there.
    ("overlay", {**BARE, "/proc/filesystems": "nodev\tsysfs\n\text4\n"}, "absent",
     "/proc/filesystems does not list overlay"),
    ("ip_vs", {**BARE, "/proc/config.gz": "# CONFIG_IP_VS is not set\n"}, "absent",
     "/proc/config.gz has '# CONFIG_IP_VS is not set' (the kernel was built without it)"),
    ("ip_vs_rr", BARE, "absent", "no kernel config (/proc/config.gz, /boot/config-6.18.0-test"),
    ("dummy", {}, "absent", "/lib/modules/$(uname -r)/modules.builtin is missing"),
])
def test_status(name, files, state, evidence):
    result = status(name, files)
    assert result.state == state, result.evidence
    assert evidence in result.evidence
    assert result.name == name
    if state == "absent":
        assert result.evidence == "; ".join(result.checked)
    else:
        assert result.checked[-1] == result.evidence


def test_status_of_an_absent_module_lists_everything_checked():
    result = status("ip_vs", FileProbe(HOST))
    assert result.state == "absent"
    assert result.checked == (
        "/proc/modules is missing (a kernel without loadable modules)",
        "/lib/modules/6.18.44-fc-v595/modules.builtin is missing",
        "/sys/module/ip_vs is missing",
        "/proc/net/ip_vs is missing",
        "/proc/config.gz has '# CONFIG_IP_VS is not set' (the kernel was built without it)",
    )


@pytest.mark.parametrize(("name", "state", "evidence"), [
    ("br_netfilter", "builtin", "/proc/sys/net/bridge exists"),
    ("overlay", "builtin", "/sys/module/overlay exists without initstate (built in)"),
    ("nf_conntrack", "builtin", "/sys/module/nf_conntrack exists without initstate (built in)"),
    ("nf_tables", "builtin", "/proc/config.gz has CONFIG_NF_TABLES=y"),
    ("vxlan", "builtin", "/sys/module/vxlan exists without initstate (built in)"),
    ("bridge", "builtin", "/sys/module/bridge exists without initstate (built in)"),
    ("ip_vs", "absent", "/proc/config.gz has '# CONFIG_IP_VS is not set'"),
    ("ip_vs_rr", "absent", "/proc/config.gz has no CONFIG_IP_VS_RR"),
    ("ipip", "absent", "/proc/config.gz has '# CONFIG_NET_IPIP is not set'"),
    ("wireguard", "absent", "/proc/config.gz has '# CONFIG_WIREGUARD is not set'"),
])
def test_status_on_the_development_machine(name, state, evidence):
    result = status(name, FileProbe(HOST))
    assert (result.state, evidence in result.evidence) == (state, True), result.evidence


@pytest.mark.parametrize(("name", "state"), [
    ("br_netfilter", "loaded"), ("overlay", "loaded"), ("nf_conntrack", "loaded"), ("nf_tables", "loaded"),
    ("ip_vs", "loaded"), ("ip_vs_rr", "loaded"), ("ip_vs_wrr", "loaded"), ("ip_vs_sh", "loaded"),
    ("vxlan", "loaded"), ("ip_vs_lc", "absent"), ("wireguard", "absent"), ("unix", "builtin"),
])
def test_status_on_a_debian_node(name, state):
    assert status(name, FileProbe(DEBIAN)).state == state


def test_the_snapshot_matches_this_machine():
    """The host-6.18 fixture stays true to the machine it was captured on."""
    if kmod.kernel_release(FileProbe("/")) != kmod.kernel_release(FileProbe(HOST)):
        pytest.skip("not the machine the host-6.18 fixture was captured on")
    for name in ("br_netfilter", "overlay", "nf_conntrack", "nf_tables", "vxlan", "ip_vs", "ipip", "wireguard"):
        assert status(name, FileProbe("/")).state == status(name, FileProbe(HOST)).state, name


def test_malformed_proc_modules_is_reported():
    with pytest.raises(ValueError, match="/proc/modules:1"):
        status("overlay", {"/proc/modules": "garbage\n"})


def test_every_evidence_entry_names_a_known_kind():
    assert {proof.kind for proof in EVIDENCE.values() if proof} == {"exists", "filesystem"}
    assert {f"ip_vs_{s}" for s in kmod.IPVS_SCHEDULERS} <= {name for name, proof in EVIDENCE.items() if proof is None}


# --- modules_for and render -----------------------------------------------------------------------------


def test_modules_for_each_mode():
    base = ["br_netfilter", "overlay", "nf_conntrack"]
    assert modules_for("iptables") == base
    assert modules_for("nftables") == [*base, "nf_tables"]
    assert modules_for("ipvs") == [*base, "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh"]
    assert modules_for("ipvs", "") == modules_for("ipvs", None) == modules_for("ipvs")


@pytest.mark.parametrize("scheduler", kmod.IPVS_SCHEDULERS)
def test_modules_for_each_ipvs_scheduler(scheduler):
    names = modules_for("ipvs", scheduler)
    assert names[:7] == ["br_netfilter", "overlay", "nf_conntrack", "ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh"]
    assert names.count(f"ip_vs_{scheduler}") == 1
    assert len(names) == (7 if scheduler in ("rr", "wrr", "sh") else 8)
    assert modules_for("iptables", scheduler) == ["br_netfilter", "overlay", "nf_conntrack"]


def test_modules_for_extras_come_last_without_repeats():
    assert modules_for("nftables", extras=["vxlan", "nf_tables", "br-netfilter", "vxlan", "wireguard"]) == [
        "br_netfilter", "overlay", "nf_conntrack", "nf_tables", "vxlan", "wireguard"]
    assert modules_for("iptables", extras=("veth",)) == ["br_netfilter", "overlay", "nf_conntrack", "veth"]


@pytest.mark.parametrize(("args", "message"), [
    (("userspace",), "proxy_mode 'userspace' is not accepted; choose one of: iptables, ipvs, nftables"),
    (("IPVS",), "proxy_mode 'IPVS'"),
    (("ipvs", "random"), "ipvs_scheduler 'random' is not accepted; choose one of: rr, lc, dh, sh, sed, nq, wrr, wlc"),
    (("ipvs", "ip_vs_rr"), "ipvs_scheduler 'ip_vs_rr'"),
    (("iptables", "rr", ["br netfilter"]), "extras[0] 'br netfilter' is not a module name"),
    (("iptables", "rr", "vxlan"), "extras 'vxlan' must be a list"),
])
def test_modules_for_bad_input(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        modules_for(*args)


def test_modules_for_reports_every_bad_value():
    with pytest.raises(ValueError) as err:
        modules_for("ipvs2", "fast", ["ok", "NotOk"])
    assert "proxy_mode 'ipvs2'" in str(err.value) and "ipvs_scheduler 'fast'" in str(err.value)
    assert "extras[1] 'NotOk'" in str(err.value)


def test_render_writes_a_header_and_one_name_a_line():
    text = render(["br_netfilter", "overlay", "nf_conntrack"])
    assert text == ("# Managed by netmend (netmend_kmod): local changes are overwritten.\n"
                    "# Kernel modules this Kubernetes node needs; systemd-modules-load loads them at boot.\n"
                    "br_netfilter\noverlay\nnf_conntrack\n")


def test_render_reads_back_and_drops_repeats():
    names = modules_for("ipvs", "wlc", ["vxlan"])
    assert parse_modules_load(render(names), "netmend.conf") == names
    assert parse_modules_load(render(["overlay", "overlay", "br-netfilter", "br_netfilter"]), "x") == [
        "overlay", "br-netfilter"]


def test_render_rejects_what_modprobe_would_not_take():
    with pytest.raises(ValueError, match=r"names\[1\] 'br netfilter' is not a module name"):
        render(["overlay", "br netfilter"])
