"""The kube-proxy check's repair, applied to real iptables in a throwaway network namespace: the node's tables of a
check case are restored, the planned `iptables-restore --noflush` runs, and what iptables-save prints afterwards
audits clean. Real iptables refuses what the replay in tests/checkcases.py cannot: deleting a chain that is still
jumped to (a KUBE-SVL chain, externalTrafficPolicy: Local), or a rule naming a chain that does not exist."""

import shlex

import pytest

from tests.checkcases import CASES, Case, FixtureHost, run
from tests.modules.sandbox import can_sandbox, legacy_iptables, run_in_sandbox

REPAIRED = ["stale-pod-ip", "stale-host-ip", "stale-one-of-two", "corrupt-dnat", "stale-with-session-affinity",
            "two-stale-services-one-transaction", "stale-external-traffic-local"]
MARK = "--- after ---"

pytestmark = pytest.mark.skipif(not can_sandbox(), reason="needs root and `unshare --net --mount`")


def _planned(tmp_path, name):
    """A kube-proxy case, its node's iptables-save and its one planned --noflush payload, as files."""
    case = Case(CASES / "kube-proxy" / name)
    host = case.host()
    gathered, result = case.run()
    [action] = [a for a in result.actions if a.kind == "iptables"]
    state, payload = tmp_path / "state", tmp_path / "payload"
    state.write_text(host.commands["iptables-save"][1])
    payload.write_text(action.payload)
    return case, host, gathered, action, state, payload


@pytest.mark.parametrize("backend", ["nf_tables", "legacy"])
@pytest.mark.parametrize("name", REPAIRED)
def test_the_repair_runs_on_real_iptables_and_audits_clean(tmp_path, name, backend):
    case, host, _before, action, state, payload = _planned(tmp_path, name)
    script = (f"iptables-restore < {shlex.quote(str(state))}\n"
              f"iptables-restore -w 5 --noflush < {shlex.quote(str(payload))}\necho '{MARK}'\niptables-save")
    proc = run_in_sandbox(script, path_prefix=legacy_iptables(tmp_path) if backend == "legacy" else None)
    assert proc.returncode == 0, f"{name}: real iptables refused the repair:\n{proc.stderr}\n{action.payload}"
    after = proc.stdout.split(f"{MARK}\n", 1)[1]
    fixed = FixtureHost({**host.commands, "iptables-save": (0, after, "")}, host.files, dns=host.dns)
    assert run(fixed, case.want, ["kube-proxy"])[1].findings == []


@pytest.mark.parametrize(("held", "repaired"), [(1, True), (8, False)])
def test_the_repair_waits_for_another_writer_and_changes_nothing_when_it_cannot(tmp_path, held, repaired):
    """Another writer (kube-proxy's own sync) holding the xtables lock: the repair waits for it (-w 5) and then
    runs; held longer, the repair fails with iptables' own message and the table is as it was. Legacy backend,
    which takes the lock; /run is private to the sandbox."""
    case, host, before, _action, state, payload = _planned(tmp_path, "stale-pod-ip")
    script = (f"iptables-restore < {shlex.quote(str(state))}\n"
              f"flock /run/xtables.lock sleep {held} & sleep 0.3\n"
              f"rc=0; iptables-restore -w 5 --noflush < {shlex.quote(str(payload))} || rc=$?\n"
              f"wait; echo \"rc=$rc\"; echo '{MARK}'\niptables-save")
    proc = run_in_sandbox(script, private_dirs=["/run"], path_prefix=legacy_iptables(tmp_path), timeout=60)
    assert proc.returncode == 0, proc.stderr
    status, after = proc.stdout.split(f"{MARK}\n", 1)
    gathered, audited = run(FixtureHost({**host.commands, "iptables-save": (0, after, "")}, host.files, dns=host.dns),
                            case.want, ["kube-proxy"])
    if repaired:
        assert "rc=0" in status and audited.findings == []
    else:
        assert "rc=4" in status and "xtables lock" in proc.stderr
        assert gathered["iptables"]["nat"].index() == before["iptables"]["nat"].index()
        assert [f.id for f in audited.findings] == ["DNAT-STALE-POD-IP"]
