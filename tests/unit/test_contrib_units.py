"""The systemd units in contrib/: parsed as systemd reads them, checked for what matters (one lock for
every netmend run, oneshot services, persistent timers), and their commands run for real against a
stand-in ansible-playbook, in a temporary directory, to prove the order and the stop on failure.

`systemd-analyze verify` runs too when the machine has it (it needs no running systemd).
"""

import configparser
import fcntl
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "contrib" / "systemd"
PULL = ROOT / "contrib" / "ansible-pull"
LOCK = "/run/lock/netmend.lock"
SERVICES = [SYSTEMD / "netmend-audit.service", SYSTEMD / "netmend-remediate.service", PULL / "netmend-pull.service"]
TIMERS = [SYSTEMD / "netmend-audit.timer", SYSTEMD / "netmend-remediate.timer", PULL / "netmend-pull.timer"]


def load(path):
    """The unit as systemd sees it: backslash-newline joined into one line, then sections and keys.
    Returns {section: {key: [values]}} (systemd allows a key more than once)."""
    text = path.read_text(encoding="utf-8")
    assert "\t" not in text, f"{path.name}: tabs"
    joined = re.sub(r"\\\n", " ", text)
    units, section = {}, None
    for number, raw in enumerate(joined.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"{path.name}:{number}: {line!r}"
            section = units.setdefault(line[1:-1], {})
            continue
        assert section is not None and "=" in line, f"{path.name}:{number}: {line!r} is not key=value in a section"
        key, value = line.split("=", 1)
        section.setdefault(key.strip(), []).append(value.strip())
    # configparser agrees on the sections (it reads systemd's syntax closely enough once lines are joined)
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#", ";"))
    parser.optionxform = str
    parser.read_string(joined)
    assert set(parser.sections()) == set(units), path.name
    return units


def one(unit, section, key):
    values = unit[section].get(key, [])
    assert len(values) == 1, f"{key} in [{section}]: {values}"
    return values[0]


def argv(command):
    """An Exec line's argv, without systemd's prefix characters (- @ : + !)."""
    return shlex.split(command.lstrip("-@:+!"))


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.name)
def test_services_are_oneshot_and_locked(path):
    unit = load(path)
    assert one(unit, "Service", "Type") == "oneshot"
    assert "network-online.target" in one(unit, "Unit", "After")
    starts = unit["Service"]["ExecStart"]
    assert starts, "no ExecStart"
    for start in starts:
        words = argv(start)
        assert words[0] == "/usr/bin/flock", f"ExecStart must run under flock: {start}"
        assert "--exclusive" in words and LOCK in words, start
        assert "--nonblock" not in words and "--wait" in words, "a run waits for the other one, boundedly"
        assert int(words[words.index("--wait") + 1]) > 0
    assert "Install" not in unit, "services are started by their timers, not enabled themselves"


@pytest.mark.parametrize("path", TIMERS, ids=lambda p: p.name)
def test_timers_are_persistent_and_randomised(path):
    unit = load(path)
    assert one(unit, "Timer", "OnCalendar")
    assert one(unit, "Timer", "Persistent") == "true"
    assert re.fullmatch(r"\d+(min|s|h)", one(unit, "Timer", "RandomizedDelaySec"))
    assert one(unit, "Install", "WantedBy") == "timers.target"
    assert path.with_suffix(".service").exists(), "a timer starts the service of the same name"


def test_remediation_runs_hourly_and_audit_more_often():
    assert one(load(SYSTEMD / "netmend-remediate.timer"), "Timer", "OnCalendar") == "hourly"
    assert one(load(SYSTEMD / "netmend-audit.timer"), "Timer", "OnCalendar") == "*:0/15"
    assert one(load(PULL / "netmend-pull.timer"), "Timer", "OnBootSec"), "the pull timer also runs after a boot"


def test_pull_unit_defines_what_it_expands():
    unit = load(PULL / "netmend-pull.service")
    env = dict(e.split("=", 1) for e in unit["Service"]["Environment"])
    words = argv(one(unit, "Service", "ExecStart"))
    used = set(re.findall(r"\$\{(\w+)\}", " ".join(words)))
    assert used and used <= set(env), f"undefined: {used - set(env)}"
    pull = words[words.index(LOCK) + 1:]
    assert pull[0].endswith("/ansible-pull") and pull[-1] == "playbooks/remediate.yml"
    extra = [pull[i + 1] for i, w in enumerate(pull) if w == "--extra-vars"]
    assert set(extra) == {"netmend_local=true", "ansible_connection=local", "ansible_become=false"}
    assert "--inventory" in pull and "--clean" in pull


def _fake_checkout(tmp_path, fail_playbook=None):
    """A checkout whose .venv/bin/ansible-playbook logs its arguments and fails for `fail_playbook`."""
    checkout = tmp_path / "opt-netmend"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    log = tmp_path / "calls.log"
    fake = checkout / ".venv" / "bin" / "ansible-playbook"
    fake.write_text("#!/bin/sh\n"
                    f'echo "$*" >> {shlex.quote(str(log))}\n'
                    + (f'case "$1" in {fail_playbook}) exit 2;; esac\n' if fail_playbook else "")
                    + "exit 0\n", encoding="utf-8")
    fake.chmod(0o755)
    return checkout, log


def _localised(command, tmp_path, checkout):
    """The Exec line with the machine paths moved into tmp_path."""
    for old, new in (("/opt/netmend", str(checkout)), (LOCK, str(tmp_path / "netmend.lock")),
                     ("/var/lib/netmend", str(tmp_path / "state")),
                     ("/var/lib/node_exporter/textfile_collector", str(tmp_path / "textfile"))):
        command = command.replace(old, new)
    return argv(command)


def _run(words, cwd):
    return subprocess.run(words, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.skipif(not shutil.which("flock"), reason="flock (util-linux) is not installed")
def test_remediation_sequence_audits_fixes_audits(tmp_path):
    unit = load(SYSTEMD / "netmend-remediate.service")
    checkout, log = _fake_checkout(tmp_path)
    done = _run(_localised(one(unit, "Service", "ExecStart"), tmp_path, checkout), checkout)
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["playbooks/audit.yml", "playbooks/remediate.yml", "playbooks/audit.yml"]
    assert "netmend_audit_fail_at=never" in calls[0] and "/state/before" in calls[0]
    assert "netmend_audit_fail_at=error" in calls[2] and "/state/audit" in calls[2]


@pytest.mark.skipif(not shutil.which("flock"), reason="flock (util-linux) is not installed")
def test_remediation_stops_when_the_fix_fails(tmp_path):
    unit = load(SYSTEMD / "netmend-remediate.service")
    checkout, log = _fake_checkout(tmp_path, fail_playbook="playbooks/remediate.yml")
    done = _run(_localised(one(unit, "Service", "ExecStart"), tmp_path, checkout), checkout)
    assert done.returncode != 0
    assert [c.split()[0] for c in log.read_text().splitlines()] == ["playbooks/audit.yml", "playbooks/remediate.yml"]


@pytest.mark.skipif(not shutil.which("flock"), reason="flock (util-linux) is not installed")
def test_a_held_lock_keeps_a_second_run_out(tmp_path):
    unit = load(SYSTEMD / "netmend-audit.service")
    checkout, log = _fake_checkout(tmp_path)
    words = _localised(one(unit, "Service", "ExecStart"), tmp_path, checkout)
    words[words.index("--wait") + 1] = "1"  # do not wait an hour in a test
    with open(tmp_path / "netmend.lock", "w", encoding="utf-8") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another netmend run holds the lock (flock(2), as flock(1) takes it)
        done = _run(words, checkout)
    assert done.returncode != 0 and not log.exists(), "the audit ran while another netmend run held the lock"
    again = _run(words, checkout)
    assert again.returncode == 0 and log.read_text().startswith("playbooks/audit.yml")


@pytest.mark.parametrize("path", [SYSTEMD / "netmend-audit.service", SYSTEMD / "netmend-remediate.service"],
                         ids=lambda p: p.name)
def test_textfile_is_published_atomically(tmp_path, path):
    unit = load(path)
    words = _localised(one(unit, "Service", "ExecStopPost"), tmp_path, tmp_path)
    assert one(unit, "Service", "ExecStopPost").startswith("-"), "publishing must not fail the unit"
    (tmp_path / "textfile").mkdir()
    assert _run(words, tmp_path).returncode == 0, "no report yet: nothing to publish, no error"
    assert not any((tmp_path / "textfile").iterdir())
    report = tmp_path / "state" / "audit"
    report.mkdir(parents=True)
    (report / "netmend.prom").write_text("netmend_last_run_success 1\n")
    done = _run(words, tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(tmp_path / "textfile")) == ["netmend.prom"]
    assert (tmp_path / "textfile" / "netmend.prom").read_text() == "netmend_last_run_success 1\n"
    assert oct((tmp_path / "textfile" / "netmend.prom").stat().st_mode & 0o777) == "0o644"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_analyze_verify():
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *map(str, SERVICES + TIMERS)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr.lower() and "unknown" not in done.stderr.lower(), done.stderr
