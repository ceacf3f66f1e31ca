"""netmend_flannel run through Ansible in a throwaway mount namespace (tests/modules/sandbox.py).

Each test's files live under a tmpfs mounted over tmp_path/root inside `unshare --net --mount`, so
nothing outside the namespace is written; what the test inspects is copied to tmp_path/out.
"""

import json
import shlex

import kubernetes_validate
import pytest
import yaml

from netmend.flannel import (
    cni_conflist,
    manifests,
    net_conf,
    parse_etcdctl_get,
    render_json,
    render_manifests,
    settings,
)
from tests.modules.sandbox import ROOT, can_sandbox, module_cmd, result_file, run_in_sandbox

pytestmark = pytest.mark.skipif(not can_sandbox(), reason="needs root and `unshare --net --mount`")

CIDR = "10.244.0.0/16"


class Sandbox:
    """Paths inside the namespace (under root) and a script builder whose results land in out."""

    def __init__(self, tmp_path):
        self.root, self.out = tmp_path / "root", tmp_path / "out"
        self.root.mkdir()
        self.out.mkdir()
        self.lines = []

    def path(self, name):
        return str(self.root / name)

    def args(self, **extra):
        return {"pod_cidr": CIDR, "net_conf_path": self.path("kube-flannel/net-conf.json"),
                "cni_conf_path": self.path("cni/net.d/10-flannel.conflist"), **extra}

    def run(self, name, args, check=False, diff=False):
        cmd = module_cmd("netmend_flannel", args, check=check, diff=diff)
        self.lines.append(f"{cmd} > {self.out}/{name}.json 2> {self.out}/{name}.err || true")

    def sh(self, line):
        self.lines.append(line)

    def go(self):
        proc = run_in_sandbox("\n".join(self.lines) + "\n", private_dirs=[str(self.root)])
        assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
        self.lines = []
        return self

    def result(self, name):
        return result_file(self.out, name)

    def text(self, name):
        return (self.out / name).read_text()

    def copy(self, path, name):
        """Copy a file (or 'absent') and its mode out of the namespace."""
        q = shlex.quote(path)
        self.sh(f"if [ -e {q} ]; then cp {q} {self.out}/{name}; stat -c %a {q} > {self.out}/{name}.mode; "
                f"else echo absent > {self.out}/{name}; fi")


def expected(**variables):
    """The texts the module must write for these role variables."""
    s = settings({"flannel_pod_cidr": CIDR, **variables})
    conf = render_json(net_conf(s["pod_cidr"], s["subnet_len"], s["backend"], s["vni"], s["port"],
                                s["direct_routing"], mtu=s["explicit_mtu"]))
    cni = render_json(cni_conflist(s["explicit_mtu"]))
    return conf, cni, s


@pytest.fixture
def box(tmp_path):
    return Sandbox(tmp_path)


def test_check_mode_writes_nothing_then_a_run_writes_every_file_and_a_second_changes_nothing(box):
    manifest = box.path("kubernetes/netmend/kube-flannel.yml")
    args = box.args(manifest_path=manifest)
    box.run("check", args, check=True, diff=True)
    box.sh(f"find {box.root} -mindepth 1 > {box.out}/after-check")
    box.run("first", args, diff=True)
    box.run("second", args)
    for path, name in ((args["net_conf_path"], "net-conf"), (args["cni_conf_path"], "conflist"),
                       (manifest, "manifest")):
        box.copy(path, name)
    box.sh(f"find {box.root} -type f | sort > {box.out}/files")
    box.go()
    conf, cni, s = expected(flannel_cni_conf_path=args["cni_conf_path"])
    check, first, second = box.result("check"), box.result("first"), box.result("second")
    assert check["changed"] and box.text("after-check") == ""  # not even a directory
    assert check["mtu"] == 1450 and check["net_conf"] == json.loads(conf)
    assert [d["after_header"] for d in check["diff"]] == [args["net_conf_path"], args["cni_conf_path"], manifest]
    assert [d["before_header"].endswith("(absent)") for d in check["diff"]] == [True, True, True]
    assert check["diff"][0]["after"] == conf and check["diff"][1]["after"] == cni
    assert first["changed"] and all(f["changed"] for f in first["files"].values())
    assert not any("backup_file" in f for f in first["files"].values())  # nothing to back up
    assert not second["changed"] and not any(f["changed"] for f in second["files"].values())
    assert box.text("net-conf") == conf and box.text("conflist") == cni
    assert box.text("net-conf.mode").strip() == box.text("manifest.mode").strip() == "644"
    docs = list(yaml.safe_load_all(box.text("manifest")))
    assert docs == manifests(conf, cni, s) == first["manifests"]
    assert box.text("manifest") == render_manifests(docs)
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)
    assert box.text("files").split() == sorted([args["net_conf_path"], args["cni_conf_path"], manifest])


def test_a_change_backs_up_every_rewritten_file_and_shows_the_diff(box):
    manifest = box.path("manifests/kube-flannel.yml")
    old = box.args(manifest_path=manifest)
    new = {**old, "backend": "host-gw", "mtu": 1400, "iface": ["eth1"]}
    box.run("old", old)
    box.sh(f"chmod 600 {old['net_conf_path']}")
    box.run("new", new, diff=True)
    box.run("again", new)
    box.copy(old["net_conf_path"], "net-conf")
    box.copy(old["cni_conf_path"], "conflist")
    box.sh(f"for f in $(find {box.root} -name '*~'); do echo \"$f\"; done | sort > {box.out}/backups")
    box.sh(f"cat {old['net_conf_path']}.*~ > {box.out}/net-conf.backup")
    box.go()
    old_conf, old_cni, _ = expected()
    conf, cni, _ = expected(flannel_backend_type="host-gw", flannel_mtu=1400)
    change = box.result("new")
    assert change["changed"] and not box.result("again")["changed"]
    assert change["mtu"] == 1400
    assert json.loads(conf) == {"Network": CIDR, "SubnetLen": 24, "Backend": {"Type": "host-gw"}}
    assert json.loads(cni)["plugins"][0]["delegate"]["mtu"] == 1400
    assert box.text("net-conf") == conf and box.text("conflist") == cni
    assert box.text("net-conf.mode").strip() == "644"
    diffs = {d["after_header"]: d for d in change["diff"]}
    assert diffs[old["net_conf_path"]]["before"] == old_conf and diffs[old["net_conf_path"]]["after"] == conf
    assert diffs[old["cni_conf_path"]]["before"] == old_cni
    assert "--iface=eth1" in diffs[manifest]["after"] and "--iface=eth1" not in diffs[manifest]["before"]
    backups = box.text("backups").split()
    assert len(backups) == 3 and {b.rsplit(".", 2)[0] for b in backups} >= {old["net_conf_path"]}
    assert all(change["files"][p]["backup_file"] in backups for p in (old["net_conf_path"], old["cni_conf_path"],
                                                                         manifest))
    assert box.text("net-conf.backup") == old_conf


def test_only_the_mode_differs_fixes_the_mode_without_a_backup(box):
    args = box.args()
    box.run("first", args)
    box.sh(f"chmod 600 {args['cni_conf_path']}")
    box.run("mode", args)
    box.copy(args["cni_conf_path"], "conflist")
    box.sh(f"find {box.root} -name '*~' | wc -l > {box.out}/backups")
    box.go()
    mode = box.result("mode")
    assert mode["changed"] and mode["files"][args["cni_conf_path"]]["changed"]
    assert not mode["files"][args["net_conf_path"]]["changed"]
    assert box.text("conflist.mode").strip() == "644" and box.text("backups").strip() == "0"


def test_no_manifest_without_manifest_path_and_no_conflist_when_disabled(box):
    args = box.args(write_cni_conf=False, net_conf_path="")
    box.run("none", args)
    box.sh(f"find {box.root} -mindepth 1 | wc -l > {box.out}/count")
    box.go()
    none = box.result("none")
    assert not none["changed"] and none["files"] == {}
    assert [d["kind"] for d in none["manifests"]][-1] == "DaemonSet"  # still returned, for kubernetes.core.k8s
    assert box.text("count").strip() == "0"


def test_etcd_store_renders_etcd_args_and_warns_about_loopback(box):
    args = box.args(store="etcd", manifest_path=box.path("m/kube-flannel.yml"))
    box.run("etcd", args)
    box.go()
    etcd = box.result("etcd")
    daemonset = etcd["manifests"][-1]
    assert daemonset["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "--ip-masq", "--etcd-endpoints=http://127.0.0.1:2379", "--etcd-prefix=/coreos.com/network"]
    assert any("loopback" in w for w in etcd.get("warnings", []))


@pytest.mark.parametrize(("extra", "words"), [
    ({"mtu": 1451}, ["mtu (flannel_mtu)", "576-1450"]),
    ({"mtu": 1400, "underlay_mtu": 1400}, ["mtu (flannel_mtu)", "576-1350"]),
    ({"mtu": "jumbo"}, ["flannel_mtu", "'auto'"]),
    ({"backend": "host-gw", "mtu": 1501}, ["flannel_mtu", "576-1500"]),
    ({"iface": ["eth0"], "iface_regex": ["^ens"]}, ["iface (flannel_iface)", "not both"]),
    ({"subnet_len": 16}, ["subnet_len (flannel_subnet_len)", "18-28"]),
    ({"pod_cidr": "10.244.0.1/16"}, ["pod_cidr (flannel_pod_cidr)", "CIDR"]),
    ({"vni": 0}, ["vni (flannel_vxlan_vni)", "1-16777215"]),
    ({"store": "etcd", "etcd_endpoints": ["127.0.0.1:2379"]}, ["etcd_endpoints (flannel_etcd_endpoints[0])"]),
    ({"backend": "udp"}, ["backend", "vxlan, host-gw"]),
    ({"cni_conf_path": "/etc/cni/net.d/10-flannel.conf"}, ["cni_conf_path (flannel_cni_conf_path)", ".conflist"]),
])
def test_bad_arguments_fail_naming_the_option_and_write_nothing(box, extra, words):
    box.run("bad", box.args(manifest_path=box.path("m/kube-flannel.yml"), **extra))
    box.sh(f"find {box.root} -mindepth 1 | wc -l > {box.out}/count")
    box.go()
    bad = box.result("bad")
    assert bad.get("failed") and not bad.get("changed")
    for word in words:
        assert word in bad["msg"], bad["msg"]
    assert box.text("count").strip() == "0"


def test_a_symlinked_or_non_regular_target_is_refused_and_left_alone(box):
    args = box.args()
    box.sh(f"mkdir -p {box.root}/kube-flannel {box.root}/elsewhere && echo keep > {box.root}/elsewhere/file && "
           f"ln -s {box.root}/elsewhere/file {args['net_conf_path']}")
    box.run("link", args)
    box.sh(f"rm {args['net_conf_path']} && mkdir {args['net_conf_path']}")
    box.run("dir", args)
    box.copy(f"{box.root}/elsewhere/file", "target")
    box.sh(f"[ -e {args['cni_conf_path']} ] && echo yes > {box.out}/cni || echo no > {box.out}/cni")
    box.go()
    assert box.result("link").get("failed") and "symlink" in box.result("link")["msg"]
    assert box.result("dir").get("failed") and "not a regular file" in box.result("dir")["msg"]
    assert box.text("target") == "keep\n" and box.text("cni").strip() == "no"


# The role, end to end: two hosts (a control-plane host and a worker, both local) in one namespace, the etcd
# store against a real etcd, check mode first, then a run and a second run that changes nothing.

PLAYBOOK = """
- name: Validate
  hosts: k8s_cluster
  gather_facts: false
  tasks:
    - name: Validate | flannel
      ansible.builtin.include_role:
        name: flannel
        tasks_from: validate
- name: Flannel
  hosts: k8s_cluster
  gather_facts: false
  roles:
    - flannel
"""


def _inventory(root, **extra):
    variables = {"netmend_pod_cidr": CIDR, "flannel_backend_type": "vxlan", "flannel_subnet_len": 24,
                 "flannel_vxlan_vni": 1, "flannel_vxlan_port": 8472, "flannel_mtu": "auto",
                 "flannel_net_conf_path": f"{root}/{{{{ inventory_hostname }}}}/kube-flannel/net-conf.json",
                 "flannel_cni_conf_path": f"{root}/{{{{ inventory_hostname }}}}/cni/net.d/10-flannel.conflist",
                 "netmend_manifest_dir": f"{root}/{{{{ inventory_hostname }}}}/manifests",
                 "flannel_store": "etcd", **extra}
    local = {"ansible_connection": "local"}
    return {"all": {"vars": variables, "children": {"k8s_cluster": {"children": {
        "control_plane": {"hosts": {"cp1": local}}, "workers": {"hosts": {"w1": local}}}}}}}


def _playbook_cmd(tmp_path, inventory, name, check=False):
    inv = tmp_path / f"{name}-inventory.yml"
    inv.write_text(yaml.safe_dump(inventory))
    play = tmp_path / "site.yml"
    play.write_text(PLAYBOOK)
    argv = [str(ROOT / ".venv/bin/ansible-playbook"), "-i", str(inv), str(play)] + ["--check", "--diff"] * check
    out = tmp_path / "out"
    return " ".join(shlex.quote(a) for a in argv) + f" > {out}/{name}.json 2> {out}/{name}.err || true"


def _stats(box, name):
    raw = box.text(f"{name}.json")
    try:
        return json.loads(raw)["stats"]
    except (ValueError, KeyError) as exc:
        raise AssertionError(f"{name}: no playbook result\n{raw}\n{box.text(name + '.err')}") from exc


def test_the_role_writes_node_files_manifests_on_the_control_plane_and_the_etcd_config(box, tmp_path):
    from tests.modules.test_netmend_etcd_key import START, _download_etcd  # noqa: PLC0415 - only this test needs etcd

    bindir, reason = _download_etcd()
    if bindir is None:
        pytest.skip(f"no etcd binaries: {reason}")
    root = box.root
    inventory = _inventory(root)
    box.sh(f"DATA={root}; OUT={box.out}")
    box.sh(START)
    box.sh(_playbook_cmd(tmp_path, inventory, "check", check=True))
    box.sh(f"find {root} -path {root}/etcd -prune -o -type f -print > {box.out}/after-check")
    box.sh('etcdctl get /coreos.com/network/config -w json > "$OUT/check.get"')
    box.sh(_playbook_cmd(tmp_path, inventory, "first"))
    box.sh(_playbook_cmd(tmp_path, inventory, "second"))
    box.sh('etcdctl get /coreos.com/network/config -w json > "$OUT/first.get"')
    box.sh(f"find {root} -path {root}/etcd -prune -o -type f -print | sort > {box.out}/files")
    box.sh(f"cp {root}/cp1/manifests/kube-flannel.yml {box.out}/manifest")
    box.sh(f"cp {root}/w1/kube-flannel/net-conf.json {box.out}/w1-net-conf")
    bad = _inventory(f"{root}/bad", flannel_mtu=1451)
    box.sh(_playbook_cmd(tmp_path, bad, "bad"))
    box.sh(f"[ -e {root}/bad ] && echo yes > {box.out}/bad-files || echo no > {box.out}/bad-files")
    proc = run_in_sandbox("\n".join(box.lines) + "\n", private_dirs=[str(root)], path_prefix=str(bindir), timeout=600)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    check, first, second = _stats(box, "check"), _stats(box, "first"), _stats(box, "second")
    assert all(check[h]["failures"] == 0 and check[h]["changed"] > 0 for h in ("cp1", "w1")), check
    assert box.text("after-check") == ""
    assert parse_etcdctl_get(box.text("check.get"), "/coreos.com/network/config") is None
    assert all(first[h]["failures"] == 0 and first[h]["changed"] > 0 for h in ("cp1", "w1")), first
    assert all(second[h]["failures"] == 0 and second[h]["changed"] == 0 for h in ("cp1", "w1")), second
    conf, _, _ = expected()
    stored = parse_etcdctl_get(box.text("first.get"), "/coreos.com/network/config")
    assert json.loads(stored) == json.loads(conf)
    assert box.text("w1-net-conf") == conf
    assert box.text("files").split() == sorted([
        f"{root}/cp1/cni/net.d/10-flannel.conflist", f"{root}/cp1/kube-flannel/net-conf.json",
        f"{root}/cp1/manifests/kube-flannel.yml", f"{root}/w1/cni/net.d/10-flannel.conflist",
        f"{root}/w1/kube-flannel/net-conf.json"])  # the manifest only on the control-plane host
    docs = list(yaml.safe_load_all(box.text("manifest")))
    assert docs[-1]["spec"]["template"]["spec"]["containers"][0]["args"][1] == \
        "--etcd-endpoints=http://127.0.0.1:2379"
    bad_stats = _stats(box, "bad")
    assert bad_stats["cp1"]["failures"] == 1 and bad_stats["cp1"]["changed"] == 0
    assert "flannel_mtu: 1451 is not accepted" in box.text("bad.json")
    assert box.text("bad-files").strip() == "no"
