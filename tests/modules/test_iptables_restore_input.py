"""kube-proxy's restore input, applied to real iptables in a throwaway network namespace: netmend reads the input
as the table iptables-save prints back afterwards (chains declared, rules grouped by chain, a chain deleted
with -X gone), with the legacy and the nf_tables backend."""

from pathlib import Path

import pytest

from netmend.iptables import parse_save
from tests.modules.sandbox import can_sandbox, legacy_iptables, run_in_sandbox

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "iptables" / "kube-proxy-restore-input.txt"

pytestmark = pytest.mark.skipif(not can_sandbox(), reason="needs root and `unshare --net --mount`")


@pytest.mark.parametrize("backend", ["nf_tables", "legacy"])
def test_restore_input_reads_as_the_real_table_it_makes(tmp_path, backend):
    prefix = legacy_iptables(tmp_path) if backend == "legacy" else None
    proc = run_in_sandbox(f"iptables -V\niptables-restore -w 5 --noflush < {FIXTURE}\niptables-save -t nat",
                          path_prefix=prefix)
    assert proc.returncode == 0, proc.stderr
    version, _, save = proc.stdout.partition("\n")
    assert f"({backend})" in version
    saved = parse_save(save)["nat"]
    read = parse_save(FIXTURE.read_text())["nat"]
    assert {chain: saved.index()[chain] for chain in read.policies} == read.index()
    assert set(saved.policies) - set(read.policies) == {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"}
    assert "KUBE-SEP-PWWYKIKD4XBAYBXK" not in saved.policies
