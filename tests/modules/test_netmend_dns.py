"""netmend_dns, netmend_coredns and the dns role, run for real in a throwaway mount namespace.

Each test runs in `unshare --net --mount` (tests/modules/sandbox.py) with a copy-on-write overlay over
/etc (its upper layer on a tmpfs) and a tmpfs over /run: the modules read and write the real paths
(/etc/resolv.conf, /run/systemd/resolve/resolv.conf, /etc/kubernetes/...) and nothing reaches the
host's own files (checked after every test).
"""

import json
import os
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from netmend.coredns import render_configmap, render_corefile, root_settings
from netmend.resolvconf import render_kubelet_config
from tests.modules.sandbox import ROOT, can_sandbox, module_cmd, results, run_in_sandbox

pytestmark = pytest.mark.skipif(not can_sandbox(), reason="needs root and `unshare --net --mount`")

FIXTURES = ROOT / "tests" / "fixtures" / "dns"
DROPIN = "/etc/kubernetes/kubelet.conf.d/50-netmend-dns.conf"
KUBEADM = "/etc/kubernetes/netmend/kubeadm/kubelet-dns.yaml"
COREFILE = "/etc/kubernetes/netmend/coredns/Corefile"
CONFIGMAP = "/etc/kubernetes/netmend/coredns/coredns-configmap.yaml"
RESOLVED = "/run/systemd/resolve/resolv.conf"
ARGS = {"cluster_dns": ["10.96.0.10"], "cluster_domain": "cluster.local"}
STUB = (FIXTURES / "resolved-stub-resolv.conf").read_text()
UPLINK = (FIXTURES / "resolved-uplink-resolv.conf").read_text()
UPLINK_EMPTY = (FIXTURES / "resolved-uplink-no-servers.conf").read_text()
PLAIN = (FIXTURES / "seed000-hostnet-resolv.conf").read_text()


def _host_state():
    etc = Path("/etc/resolv.conf")
    return (etc.read_bytes() if etc.exists() else None, os.path.exists("/etc/kubernetes"),
            sorted(os.listdir("/run/systemd")) if os.path.isdir("/run/systemd") else None)


def _put(path, text):
    return f"mkdir -p {shlex.quote(os.path.dirname(path))}\nprintf %s {shlex.quote(text)} > {shlex.quote(path)}\n"


def _show(label, path):
    """Print a file between markers (or MISSING) so the test can read it back."""
    return f"echo '<<{label}'; cat {shlex.quote(path)} 2>/dev/null || echo MISSING; echo '{label}>>'\n"


def _absent(label, path="/etc/kubernetes"):
    """Print whether path exists, between markers."""
    return f"echo '<<{label}'; test -e {shlex.quote(path)} && echo PRESENT || echo ABSENT; echo '{label}>>'\n"


def shown(stdout, label):
    return stdout.split(f"<<{label}\n", 1)[1].split(f"{label}>>", 1)[0]


@pytest.fixture
def sandbox(tmp_path):
    """sandbox(script, etc_resolv=None, resolved=None): run script after the overlay, /run tmpfs and files."""
    before = _host_state()

    def run(script, etc_resolv=None, resolved=None):
        ovl = tmp_path / "ovl"
        ovl.mkdir(exist_ok=True)
        setup = (f"mount -t tmpfs tmpfs {ovl}\nmkdir {ovl}/upper {ovl}/work\n"
                 f"mount -t overlay overlay -o lowerdir=/etc,upperdir={ovl}/upper,workdir={ovl}/work /etc\n"
                 "mount -t tmpfs tmpfs /run\nmkdir -p /run/systemd/resolve\nrm -f /etc/resolv.conf\n"
                 f"export ANSIBLE_LOCAL_TEMP={tmp_path}/al ANSIBLE_REMOTE_TEMP={tmp_path}/ar "
                 "ANSIBLE_LOCALHOST_WARNING=0\n")
        if etc_resolv is not None:
            setup += _put("/etc/resolv.conf", etc_resolv)
        if resolved is not None:
            setup += _put(RESOLVED, resolved)
        proc = run_in_sandbox(setup + "sha256sum /etc/resolv.conf > /run/etc-resolv.sum 2>/dev/null || true\n"
                              + script + "\nsha256sum -c --quiet /run/etc-resolv.sum 2>/dev/null "
                              "&& echo RESOLV-UNCHANGED || echo RESOLV-CHANGED\n", timeout=300)
        assert proc.returncode == 0, f"sandbox script failed:\n{proc.stdout}\n{proc.stderr}"
        out, marker = proc.stdout.rstrip("\n").rsplit("\n", 1)
        if etc_resolv is not None:
            assert marker == "RESOLV-UNCHANGED", "/etc/resolv.conf was modified"
        return out + "\n"

    yield run
    assert _host_state() == before, "the host's /etc/resolv.conf, /etc/kubernetes or /run/systemd changed"


def dns(args=None, check=False, diff=False, module="netmend_dns"):
    return module_cmd(module, {**ARGS, **(args or {})}, check=check, diff=diff) + " || true\n"


def coredns(args=None, check=False, diff=False):
    base = {"cluster_domain": "cluster.local", "corefile_path": COREFILE, "configmap_path": CONFIGMAP}
    return module_cmd("netmend_coredns", {**base, **(args or {})}, check=check, diff=diff) + " || true\n"


# netmend_dns: the kubelet's resolvConf


def test_systemd_resolved_stub_chooses_the_uplink_file_check_mode_first_then_once(sandbox):
    args = {"kubeadm_path": KUBEADM}
    out = sandbox(dns(args, check=True, diff=True) + _absent("after-check")
                  + dns(args) + _show("dropin", DROPIN) + _show("kubeadm", KUBEADM)
                  + dns(args, diff=True) + "ls -A /etc/kubernetes/kubelet.conf.d\n",
                  etc_resolv=STUB, resolved=UPLINK)
    check, first, second = results(out)
    expected = render_kubelet_config({"clusterDNS": ["10.96.0.10"], "clusterDomain": "cluster.local",
                                      "resolvConf": RESOLVED})
    assert check["changed"] and check["resolv_conf"] == RESOLVED
    assert [d["after"] for d in check["diff"]] == [expected, expected]
    assert check["diff"][0]["before_header"] == f"{DROPIN} (absent)" and check["diff"][0]["before"] == ""
    assert shown(out, "after-check") == "ABSENT\n"
    assert first["changed"] and not first.get("failed")
    assert first["reason"].startswith("/etc/resolv.conf lists loopback nameservers 127.0.0.53 (systemd-resolved's "
                                      "stub); /run/systemd/resolve/resolv.conf lists the upstream nameservers")
    assert first["nameservers"] == ["192.168.2.1", "100.81.99.197"] and first["search"] == ["netbird.cloud"]
    assert first["pod_resolv_conf"] == ("nameserver 10.96.0.10\nsearch default.svc.cluster.local svc.cluster.local "
                                        "cluster.local netbird.cloud\noptions ndots:5\n")
    assert shown(out, "dropin") == shown(out, "kubeadm") == expected
    assert yaml.safe_load(shown(out, "dropin"))["resolvConf"] == RESOLVED
    assert not second["changed"] and second["diff"][0]["before"] == second["diff"][0]["after"]
    assert first["backup_files"] == [] and out.rstrip().splitlines()[-1] == "50-netmend-dns.conf"


def test_check_mode_writes_nothing(sandbox):
    out = sandbox(dns({"kubeadm_path": KUBEADM}, check=True) + _absent("etc-kubernetes"), etc_resolv=PLAIN)
    (check,) = results(out)
    assert check["changed"] and check["resolv_conf"] == "/etc/resolv.conf"
    assert shown(out, "etc-kubernetes") == "ABSENT\n"


def test_a_plain_resolv_conf_is_kept_even_when_systemd_resolved_has_a_file(sandbox):
    out = sandbox(dns() + _show("dropin", DROPIN), etc_resolv=PLAIN, resolved=UPLINK)
    (result,) = results(out)
    assert result["changed"] and result["resolv_conf"] == "/etc/resolv.conf"
    assert result["nameservers"] == ["30.14.129.245", "30.14.128.82", "10.65.0.201"]
    assert result["pod_resolv_conf"] == (FIXTURES / "seed000-pod-resolv.conf").read_text()
    assert yaml.safe_load(shown(out, "dropin")) == {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "clusterDNS": ["10.96.0.10"], "clusterDomain": "cluster.local", "resolvConf": "/etc/resolv.conf"}


@pytest.mark.parametrize(("resolved", "words"), [
    (None, "/run/systemd/resolve/resolv.conf does not exist"),
    (UPLINK_EMPTY, "/run/systemd/resolve/resolv.conf lists no nameserver"),
])
def test_only_loopback_and_nothing_better_fails_naming_the_variable_and_writes_nothing(sandbox, resolved, words):
    out = sandbox(dns({"kubeadm_path": KUBEADM}) + _absent("etc-kubernetes"), etc_resolv=STUB, resolved=resolved)
    (result,) = results(out)
    assert result["failed"] and not result["changed"]
    assert result["msg"].startswith("resolv_conf (dns_kubelet_resolv_conf): no resolv.conf without loopback")
    assert words in result["msg"] and "loop plugin halts CoreDNS" in result["msg"]
    assert "nothing was changed" in result["msg"] and shown(out, "etc-kubernetes") == "ABSENT\n"


def test_an_explicit_resolv_conf(sandbox):
    mine = "/etc/kubernetes/resolv.conf"
    out = sandbox(_put(mine, UPLINK) + dns({"resolv_conf": mine}) + dns({"resolv_conf": "/etc/missing.conf"})
                  + _put("/etc/stub.conf", STUB) + dns({"resolv_conf": "/etc/stub.conf"}), etc_resolv=STUB)
    good, missing, stub = results(out)
    assert good["changed"] and good["resolv_conf"] == mine and "was chosen (dns_kubelet_resolv_conf)" in good["reason"]
    assert missing["failed"] and "/etc/missing.conf does not exist" in missing["msg"]
    assert stub["failed"] and "/etc/stub.conf lists loopback nameservers 127.0.0.53" in stub["msg"]
    assert "dns_kubelet_resolv_conf" in stub["msg"]


def test_a_malformed_resolv_conf_fails_with_its_line(sandbox):
    out = sandbox(dns() + _absent("etc-kubernetes"), etc_resolv="nameserver 10.255.255\n")
    (result,) = results(out)
    assert result["failed"] and "/etc/resolv.conf, line 1: nameserver '10.255.255' is not" in result["msg"]
    assert shown(out, "etc-kubernetes") == "ABSENT\n"


def test_a_changed_drop_in_is_backed_up_and_diffed(sandbox):
    old = render_kubelet_config({"clusterDNS": ["10.32.0.10"], "clusterDomain": "old.local",
                                 "resolvConf": "/etc/resolv.conf"})
    out = sandbox(_put(DROPIN, old) + f"chmod 600 {DROPIN}\n" + dns(diff=True) + "cd /etc/kubernetes/kubelet.conf.d "
                  "&& for f in *; do echo \"FILE $f\"; done && cat *~ && stat -c %a 50-netmend-dns.conf\n",
                  etc_resolv=PLAIN)
    (result,) = results(out)
    assert result["changed"] and result["diff"][0]["before"] == old
    assert "10.96.0.10" in result["diff"][0]["after"] and "10.32.0.10" not in result["diff"][0]["after"]
    (backup,) = result["backup_files"]
    assert backup.startswith(DROPIN + ".") and backup.endswith("~")  # not *.conf: the kubelet skips it
    files = [line[5:] for line in out.splitlines() if line.startswith("FILE ")]
    assert files == ["50-netmend-dns.conf", os.path.basename(backup)]
    assert old in out and out.rstrip().endswith("600")  # a rewritten file keeps its mode (the plan's executor)


@pytest.mark.parametrize(("args", "words"), [
    ({"cluster_dns": ["ten"]}, "cluster_dns[0] (dns_cluster_ip): 'ten' is not an IPv4 or IPv6 address"),
    ({"cluster_dns": []}, "cluster_dns (dns_cluster_ip): must be a non-empty list"),
    ({"cluster_domain": "cluster..local"}, "cluster_domain (dns_cluster_domain)"),
    ({"resolv_conf": "resolv.conf"}, "resolv_conf (dns_kubelet_resolv_conf): 'resolv.conf' is not accepted"),
    ({"ndots": 16}, "ndots (dns_ndots): 16 is not accepted; an integer 0-15"),
    ({"service_cidr": "10.96.0.0/12", "cluster_dns": ["10.112.0.10"]},
     "cluster_dns[0] (dns_cluster_ip): 10.112.0.10 is outside the service CIDR 10.96.0.0/12"),
    ({"service_cidr": "10.96.0.1/12"}, "service_cidr (dns_service_cidr): '10.96.0.1/12' is not a CIDR"),
    ({"path": "/etc/kubernetes/kubelet.conf.d/50-dns.yaml"}, "path (dns_kubelet_config_dir)"),
    ({"path": "/etc/resolv.conf"}, "netmend never writes resolv.conf files"),
    ({"kubeadm_path": "/run/systemd/resolve/resolv.conf"}, "kubeadm_path (dns_manifest_dir)"),
    ({"kubeadm_path": "kubelet.yaml"}, "kubeadm_path (dns_manifest_dir): 'kubelet.yaml' is not accepted"),
])
def test_bad_arguments_fail_naming_the_option_and_change_nothing(sandbox, args, words):
    out = sandbox(dns(args) + _absent("etc-kubernetes"), etc_resolv=PLAIN)
    (result,) = results(out)
    assert result["failed"] and result["msg"].startswith("invalid arguments, nothing was changed: ")
    assert words in result["msg"]
    assert shown(out, "etc-kubernetes") == "ABSENT\n"


def test_a_running_kubelet_without_the_config_dir_is_reported(sandbox):
    fake = ('python3 -c \'import os; os.execv("/usr/bin/python3", ["kubelet", "-c", "import time; time.sleep(60)", '
            '"--config-dir=/etc/kubernetes/other.d"])\' &\nfake=$!\nsleep 0.3\n')
    out = sandbox(fake + dns() + 'kill "$fake"\necho "FAKE $fake"\n', etc_resolv=PLAIN)
    (result,) = results(out)
    pid = int(out.split("FAKE ", 1)[1].split()[0])
    (kubelet,) = [k for k in result["kubelets"] if k["pid"] == pid]
    assert kubelet["config_dir"] == "/etc/kubernetes/other.d"
    assert any(f"the kubelet (pid {pid}) runs without --config-dir=/etc/kubernetes/kubelet.conf.d "
               "(it has /etc/kubernetes/other.d)" in w for w in result["warnings"])


# A DNS server on the sandbox's loopback: any query gets a reply (the QR bit set), as the probe wants.
RESPONDER = ("ip link set lo up\npython3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
             's.bind(("127.0.0.1", 53))\nwhile True:\n    d, a = s.recvfrom(512); '
             "s.sendto(d[:2] + bytes([d[2] | 128]) + d[3:], a)' &\nresponder=$!\nsleep 0.3\n")


def test_the_node_dns_check_is_the_judge_dead_nameservers_are_dropped_and_the_audit_ids_returned(sandbox):
    etc = "# dhcp\nnameserver 127.0.0.1\nnameserver 192.0.2.53\nsearch lab.example\n"
    out = sandbox(RESPONDER + _put("/etc/resolv.conf", etc) + dns(check=True, diff=True)
                  + _show("checked", "/etc/resolv.conf") + dns(diff=True) + _show("resolv", "/etc/resolv.conf")
                  + dns() + 'kill "$responder"\n',
                  resolved=UPLINK)
    check, first, second = results(out)
    assert check["findings"] == ["KUBELET-DNS-CONFIG-MISMATCH", "RESOLV-NAMESERVER-DEAD"] and check["changed"]
    assert shown(out, "checked") == etc  # check mode changes nothing
    assert [d["after_header"] for d in check["diff"]] == [DROPIN, "/etc/resolv.conf"]
    assert check["diff"][1]["after"] == "# dhcp\nnameserver 127.0.0.1\nsearch lab.example\n"
    assert first["changed"] and first["findings"] == check["findings"] and first["resolv_conf"] == RESOLVED
    assert shown(out, "resolv") == "# dhcp\nnameserver 127.0.0.1\nsearch lab.example\n"
    assert [os.path.dirname(b) for b in first["backup_files"]] == ["/etc"]  # the old resolv.conf; the drop-in was new
    assert not second["changed"] and second["findings"] == [] and not second.get("warnings")


def test_a_finding_without_a_fix_is_a_warning_and_changes_nothing(sandbox):
    out = sandbox(dns() + dns(), etc_resolv=PLAIN)  # no nameserver answers in the sandbox, no node_nameservers
    first, second = results(out)
    assert first["findings"] == ["KUBELET-DNS-CONFIG-MISMATCH", "RESOLV-NAMESERVER-DEAD"]
    assert any(w.startswith("RESOLV-NAMESERVER-DEAD: ") and "not fixed: no nameserver answers: set "
               "dns_node_nameservers" in w for w in first["warnings"])
    assert not second["changed"] and second["findings"] == ["RESOLV-NAMESERVER-DEAD"]


# netmend_coredns: the Corefile and the ConfigMap


def test_corefile_and_configmap_check_mode_then_once_then_unchanged(sandbox):
    out = sandbox(coredns(check=True, diff=True) + _absent("after-check") + coredns()
                  + _show("corefile", COREFILE) + _show("configmap", CONFIGMAP) + coredns()
                  + coredns({"cache_ttl": 60}, diff=True) + "ls /etc/kubernetes/netmend/coredns\n")
    check, first, second, third = results(out)
    corefile = render_corefile("cluster.local")
    assert check["changed"] and [d["after"] for d in check["diff"]] == [corefile, render_configmap(corefile)]
    assert shown(out, "after-check") == "ABSENT\n"
    assert first["changed"] and first["corefile"] == corefile == shown(out, "corefile")
    assert first["settings"] == root_settings(corefile)
    assert first["settings"]["forward_resolv_conf"] == "/etc/resolv.conf"
    doc = yaml.safe_load(shown(out, "configmap"))
    assert doc == first["configmap"] and doc["data"]["Corefile"] == corefile
    assert kubernetes_validate.validate(doc, "1.33.0", strict=True) == "1.33"
    assert not second["changed"] and second["backup_files"] == []
    assert third["changed"] and third["settings"]["cache_ttl"] == 60 and len(third["backup_files"]) == 2
    assert "cache 30" in third["diff"][0]["before"] and "cache 60" in third["diff"][0]["after"]
    backups = [os.path.basename(b) for b in third["backup_files"]]
    assert backups[0].startswith("Corefile.") and backups[1].startswith("coredns-configmap.yaml.")
    assert sorted(out.rstrip().splitlines()[-4:]) == sorted(["Corefile", "coredns-configmap.yaml", *backups])


def test_corefile_with_explicit_upstreams(sandbox):
    out = sandbox(coredns({"upstreams": ["192.0.2.53", "192.0.2.54:5353"], "configmap_path": ""})
                  + "ls /etc/kubernetes/netmend/coredns\n")
    (result,) = results(out)
    assert result["settings"]["forward_addresses"] == ["192.0.2.53", "192.0.2.54:5353"]
    assert result["settings"]["forward_resolv_conf"] == ""
    assert out.rstrip().splitlines()[-1] == "Corefile"


@pytest.mark.parametrize(("args", "words"), [
    ({"upstreams": ["127.0.0.53"]}, "upstreams[0] (dns_upstreams): '127.0.0.53' is a loopback address"),
    ({"upstreams": ["/etc/resolv.conf"]}, "upstreams[0] (dns_upstreams): '/etc/resolv.conf' is a file"),
    ({"cache_ttl": 0}, "cache_ttl (dns_cache_ttl): 0 is not accepted; an integer 1-86400"),
    ({"max_concurrent": 0}, "max_concurrent (dns_forward_max_concurrent)"),
    ({"cluster_domain": "-bad-"}, "cluster_domain (dns_cluster_domain)"),
    ({"corefile_path": "Corefile"}, "corefile_path: 'Corefile' is not an absolute path"),
    ({"configmap_path": COREFILE}, "configmap_path: must differ from corefile_path"),
])
def test_coredns_bad_arguments_fail_naming_the_option_and_change_nothing(sandbox, args, words):
    out = sandbox(coredns(args) + _absent("etc-kubernetes"))
    (result,) = results(out)
    assert result["failed"] and result["msg"].startswith("invalid arguments, nothing was changed: ")
    assert words in result["msg"]
    assert shown(out, "etc-kubernetes") == "ABSENT\n"


# The dns role


INVENTORY = {"all": {"children": {"k8s_cluster": {"children": {"control_plane": {"hosts": {"localhost": {
    "ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}}}}}},
    "vars": {"netmend_cluster_dns": "10.96.0.10", "netmend_cluster_domain": "cluster.local",
             "netmend_service_cidr": "10.96.0.0/12"}}}
PLAY = [{"name": "Dns", "hosts": "k8s_cluster", "gather_facts": False, "tasks": [
    {"name": "Validate", "ansible.builtin.include_role": {"name": "dns", "tasks_from": "validate"}},
    {"name": "Dns", "ansible.builtin.include_role": {"name": "dns"}}]}]


def playbook(tmp_path, extra=None, check=False):
    (tmp_path / "inventory.yml").write_text(json.dumps(INVENTORY))
    (tmp_path / "play.yml").write_text(json.dumps(PLAY))
    argv = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(tmp_path / "inventory.yml"),
            str(tmp_path / "play.yml"), "-e", json.dumps(extra or {})] + ["--check", "--diff"] * check
    return (f"ANSIBLE_ROLES_PATH={ROOT / 'roles'} ANSIBLE_LIBRARY={ROOT / 'library'} "
            + " ".join(shlex.quote(a) for a in argv) + " > /run/play.json || true\n"
            "python3 -c 'import json; d = json.load(open(\"/run/play.json\")); "
            "print(\"STATS\", json.dumps(d[\"stats\"][\"localhost\"]))'\n")


def stats(out):
    return [json.loads(line[6:]) for line in out.splitlines() if line.startswith("STATS ")]


def test_role_check_mode_then_converge_then_idempotent(sandbox, tmp_path):
    out = sandbox(playbook(tmp_path, check=True) + _absent("after-check") + playbook(tmp_path)
                  + "find /etc/kubernetes -type f | sort\n" + _show("dropin", DROPIN) + playbook(tmp_path),
                  etc_resolv=STUB, resolved=UPLINK)
    check, first, second = stats(out)
    assert check["changed"] == 2 and check["failures"] == 0
    assert shown(out, "after-check") == "ABSENT\n"
    assert first["changed"] == 2 and first["failures"] == 0
    assert second["changed"] == 0 and second["failures"] == 0
    written = sorted(line for line in out.splitlines() if line.startswith("/etc/kubernetes/"))
    assert written == sorted([DROPIN, CONFIGMAP, COREFILE, KUBEADM])
    assert yaml.safe_load(shown(out, "dropin"))["resolvConf"] == RESOLVED


def test_role_validation_stops_bad_variables_before_any_change(sandbox, tmp_path):
    extra = {"dns_upstreams": ["127.0.0.53", "192.0.2.1"], "dns_cache_ttl": 0, "dns_kubelet_resolv_conf": "rel"}
    out = sandbox(playbook(tmp_path, extra) + _absent("etc-kubernetes") + "cat /run/play.json\n", etc_resolv=PLAIN)
    (result,) = stats(out)
    assert result["failures"] == 1 and result["changed"] == 0
    assert "dns_upstreams: 127.0.0.53 is a loopback address" in out
    assert "dns_cache_ttl: 0 is not accepted" in out and "dns_kubelet_resolv_conf: rel is not accepted" in out
    assert shown(out, "etc-kubernetes") == "ABSENT\n"
