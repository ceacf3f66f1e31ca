"""netmend_etcd_key against a real etcd (Debian's etcd-server 3.4), in a throwaway network namespace.

etcd and etcdctl come from Debian's .debs, downloaded with `apt-get download` and unpacked with
`dpkg-deb -x` into .cache/debs (never installed). Each test starts its own etcd on 127.0.0.1 inside
`unshare --net --mount` (tests/modules/sandbox.py) with its data on a tmpfs, and kills it by its PID
when the script ends; `timeout` bounds it if the script is killed first.
"""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from lab.dataplane import network_config
from netmend.cluster import build_cluster
from netmend.flannel import net_conf, parse_etcdctl_get, parse_net_conf
from tests.modules.sandbox import ROOT, can_sandbox, module_cmd, result_file, run_in_sandbox

pytestmark = pytest.mark.skipif(not can_sandbox(), reason="needs root and `unshare --net --mount`")

CACHE = ROOT / ".cache" / "debs"
KEY = "/coreos.com/network/config"
SEED_VALUE = '{"Network":"172.16.0.0/16", "Backend": {"Type": "vxlan"}}'  # seed 003, as etcdctl printed it
START = """
ip link set lo up
timeout 120 etcd --name netmend-test --data-dir "$DATA/etcd" \\
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \\
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \\
    --initial-cluster netmend-test=http://127.0.0.1:2380 > "$OUT/etcd.log" 2>&1 &
ETCD=$!
trap 'kill $ETCD 2>/dev/null; wait $ETCD 2>/dev/null || true' EXIT
i=0
until etcdctl --dial-timeout=1s --command-timeout=1s endpoint health >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -ge 100 ]; then echo "etcd was not healthy after 10 s" >&2; cat "$OUT/etcd.log" >&2; exit 1; fi
    sleep 0.1
done
"""


def _download_etcd():
    """The directory holding etcd and etcdctl, unpacked from Debian's .debs; (None, reason) when impossible.

    Only the two binaries (and the package versions) are kept, in .cache/debs/etcd/bin: the packages'
    other files (documentation with YAML in it) would otherwise be linted with the repository.
    """
    bindir = CACHE / "etcd" / "bin"
    if (bindir / "etcd").exists() and (bindir / "etcdctl").exists():
        return bindir, ""
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        return None, "apt-get and dpkg-deb are needed to fetch etcd-server and etcd-client"
    CACHE.mkdir(parents=True, exist_ok=True)
    ignore = CACHE.parent / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# Downloaded test dependencies (tests/modules/test_netmend_etcd_key.py).\n*\n")
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        try:
            proc = subprocess.run(["apt-get", "download", "etcd-server", "etcd-client"], cwd=tmp, capture_output=True,
                                  text=True, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            return None, "apt-get download etcd-server etcd-client took more than 300 s"
        debs = sorted(Path(tmp).glob("*.deb"))
        if proc.returncode != 0 or len(debs) != 2:  # the two packages
            return None, f"apt-get download etcd-server etcd-client failed: {(proc.stderr or proc.stdout).strip()}"
        unpacked, stage = Path(tmp) / "unpacked", Path(tmp) / "etcd"
        (stage / "bin").mkdir(parents=True)
        versions = []
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True, timeout=120)
            versions.append(deb.name)
        for name in ("etcd", "etcdctl"):
            binary = unpacked / "usr" / "bin" / name
            if not binary.exists():
                return None, f"the etcd-server/etcd-client packages hold no usr/bin/{name}"
            shutil.move(str(binary), str(stage / "bin" / name))
        (stage / "PACKAGES").write_text("\n".join(versions) + "\n")
        try:
            os.rename(stage, CACHE / "etcd")
        except OSError:  # another run unpacked it first
            pass
    return bindir, ""


@pytest.fixture(scope="module")
def etcd_bin():
    bindir, reason = _download_etcd()
    if bindir is None:
        pytest.skip(f"no etcd binaries: {reason}")
    return str(bindir)


class Etcd:
    """One namespace run: etcd up, then the script; results and files land in out."""

    def __init__(self, tmp_path, bindir):
        self.data, self.out, self.bindir = tmp_path / "data", tmp_path / "out", bindir
        self.data.mkdir()
        self.out.mkdir()
        self.lines = [f'DATA={self.data}; OUT={self.out}', START]

    def run(self, name, args, check=False, diff=False):
        cmd = module_cmd("netmend_etcd_key", args, check=check, diff=diff)
        self.lines.append(f'{cmd} > "$OUT/{name}.json" 2> "$OUT/{name}.err" || true')

    def get(self, name, key=KEY):
        self.lines.append(f'etcdctl get {key} -w json > "$OUT/{name}.get"')

    def put(self, value, key=KEY):
        self.lines.append(f"printf '%s' '{value}' | etcdctl put {key} > /dev/null")

    def go(self, timeout=240):
        proc = run_in_sandbox("\n".join(self.lines) + "\n", private_dirs=[str(self.data)], path_prefix=self.bindir,
                              timeout=timeout)
        assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
        return self

    def result(self, name):
        return result_file(self.out, name)

    def stored(self, name, key=KEY):
        """The value etcdctl read back, or None when the key was absent."""
        return parse_etcdctl_get((self.out / f"{name}.get").read_text(), key)


@pytest.fixture
def etcd(tmp_path, etcd_bin):
    return Etcd(tmp_path, etcd_bin)


def test_absent_key_check_mode_writes_nothing_then_put_once(etcd):
    value = net_conf("10.244.0.0/16", 24, "vxlan", 1, 8472, False)
    args = {"key": KEY, "value": value}
    etcd.run("check", args, check=True, diff=True)
    etcd.get("after-check")
    etcd.run("first", args)
    etcd.get("after-first")
    etcd.run("second", args)
    etcd.go()
    check, first, second = etcd.result("check"), etcd.result("first"), etcd.result("second")
    assert check["changed"] and check["before"] is None
    assert check["diff"]["before_header"] == f"{KEY} (absent)" and check["diff"]["before"] == ""
    assert json.loads(check["diff"]["after"]) == value
    assert etcd.stored("after-check") is None  # check mode wrote nothing
    assert first["changed"] and not second["changed"]
    stored = etcd.stored("after-first")
    assert stored == json.dumps(value, separators=(",", ":"))  # compact, keys in flannel's order
    assert parse_net_conf(stored, source=KEY)["backend"] == "vxlan"


def test_the_same_document_written_differently_is_unchanged_and_another_is_replaced(etcd):
    lab = build_cluster([("cp1", "control_plane", {"ansible_host": "198.51.100.11"})],
                        {"netmend_pod_cidr": "10.244.0.0/16", "netmend_service_cidr": "10.96.0.0/12",
                         "netmend_node_cidr": "198.51.100.0/24", "netmend_cluster_dns": "10.96.0.10"})
    etcd.put(SEED_VALUE)
    etcd.run("reordered", {"key": KEY, "value": {"Backend": {"Type": "vxlan"}, "Network": "172.16.0.0/16"}})
    etcd.get("seed")
    etcd.run("replace", {"key": KEY, "value": net_conf("172.16.0.0/16")}, diff=True)
    etcd.get("replaced")
    etcd.put(json.dumps(network_config(lab)))  # how the lab writes it: spaces after separators
    etcd.run("lab", {"key": KEY, "value": net_conf("10.244.0.0/16", 24, "vxlan", 1, 8472, False)})
    etcd.run("text", {"key": KEY, "value": json.dumps(network_config(lab), indent=4)})
    etcd.go()
    assert not etcd.result("reordered")["changed"]
    assert etcd.stored("seed") == SEED_VALUE  # left exactly as it was
    replace = etcd.result("replace")
    assert replace["changed"] and replace["before"] == SEED_VALUE
    assert json.loads(replace["diff"]["before"]) == json.loads(SEED_VALUE)
    assert json.loads(etcd.stored("replaced")) == net_conf("172.16.0.0/16")
    assert not etcd.result("lab")["changed"] and not etcd.result("text")["changed"]


def test_a_value_that_is_not_json_is_replaced_with_a_warning(etcd):
    etcd.put("Network=10.244.0.0/16")
    etcd.run("fix", {"key": KEY, "value": net_conf("10.244.0.0/16")}, diff=True)
    etcd.get("fixed")
    etcd.go()
    fix = etcd.result("fix")
    assert fix["changed"] and fix["diff"]["before"] == "Network=10.244.0.0/16\n"
    assert any("not JSON" in w for w in fix.get("warnings", []))
    assert json.loads(etcd.stored("fixed")) == net_conf("10.244.0.0/16")


def test_bad_arguments_fail_naming_the_option_and_write_nothing(etcd):
    good = net_conf("10.244.0.0/16")
    cases = {"relative": {"key": "coreos.com/network/config", "value": good},
             "spaces": {"key": "/coreos.com/net work", "value": good},
             "notjson": {"key": KEY, "value": "{Network: 10.244.0.0/16"},
             "scalar": {"key": KEY, "value": 5},
             "endpoint": {"key": KEY, "value": good, "endpoints": ["127.0.0.1:2379"]},
             "certonly": {"key": KEY, "value": good, "cert_file": "/etc/etcd/client.crt"}}
    for name, args in cases.items():
        etcd.run(name, args)
    etcd.get("after")
    etcd.go()
    words = {"relative": "key:", "spaces": "key:", "notjson": "value: is not a JSON document",
             "scalar": "value: 5", "endpoint": "endpoints: '127.0.0.1:2379'", "certonly": "cert_file"}
    for name, word in words.items():
        result = etcd.result(name)
        assert result.get("failed") and not result.get("changed"), name
        assert word in result["msg"], (name, result["msg"])
    assert etcd.stored("after") is None


def test_unreachable_etcd_fails_with_the_endpoint_in_bounded_time(etcd):
    etcd.run("down", {"key": KEY, "value": net_conf("10.244.0.0/16"), "endpoints": ["http://127.0.0.1:2999"],
                      "timeout": 1})
    etcd.lines.append('date +%s > "$OUT/end"')
    etcd.lines.insert(2, 'date +%s > "$OUT/start"')
    etcd.go(timeout=120)
    down = etcd.result("down")
    assert down.get("failed") and "http://127.0.0.1:2999" in down["msg"] and "etcdctl get" in down["msg"]
    elapsed = int((etcd.out / "end").read_text()) - int((etcd.out / "start").read_text())
    assert elapsed < 60
