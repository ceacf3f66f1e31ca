"""Run netmend's Ansible modules for real, inside a throwaway network and mount namespace.

`unshare --net --mount` gives each test its own iptables rules, net.* sysctls and private tmpfs
directories, so modules change real kernel state without touching this machine's own.
"""

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE = ROOT / ".venv" / "bin" / "ansible"


def can_sandbox():
    if os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "--net", "--mount", "true"], check=False).returncode == 0


def ansible_env(**extra):
    """The environment for `ansible` ad-hoc runs of netmend's modules, with JSON results on stdout."""
    return {**os.environ, "ANSIBLE_MODULE_UTILS": str(ROOT / "module_utils"), "ANSIBLE_STDOUT_CALLBACK": "json",
            "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
            "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), **extra}


def module_cmd(module, args, check=False, diff=False):
    """A shell command that runs one module on localhost and prints its result as one JSON line."""
    argv = [str(ANSIBLE), "localhost", "-c", "local", "-i", "localhost,", "-M", str(ROOT / "library"),
            "-m", module, "-a", json.dumps(args)]
    argv += ["--check"] * check + ["--diff"] * diff
    return " ".join(shlex.quote(a) for a in argv)


def run_in_sandbox(script, private_dirs=(), path_prefix=None, timeout=120):
    """Run a shell script in a new network and mount namespace with tmpfs over private_dirs."""
    mounts = "".join(f"mount -t tmpfs tmpfs {shlex.quote(d)} && " for d in private_dirs)
    env = ansible_env()
    if path_prefix:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    proc = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "sh", "-ec",
                           f"{mounts}true\n{script}"], capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)
    return proc


def json_docs(stdout):
    """Every JSON object printed in a script's output, in order."""
    found, decoder, i = [], json.JSONDecoder(), 0
    while (start := stdout.find("{", i)) != -1:
        try:
            doc, i = decoder.raw_decode(stdout, start)
        except ValueError:
            i = start + 1
            continue
        found.append(doc)
    return found


def results(stdout):
    """The per-host module results of every `ansible` run in a script's output, in order."""
    return [doc["plays"][0]["tasks"][0]["hosts"]["localhost"] for doc in json_docs(stdout)
            if isinstance(doc, dict) and "plays" in doc]


def result_file(out, name):
    """The module result a run saved as OUT/NAME.json (the JSON callback's host entry); its stderr is NAME.err."""
    raw = (out / f"{name}.json").read_text()
    try:
        return json.loads(raw)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError) as exc:
        raise AssertionError(f"{name}: no result\n{raw}\n{(out / f'{name}.err').read_text()}") from exc


def legacy_iptables(tmp_path, tools=("iptables", "iptables-save", "iptables-restore")):
    """A PATH directory whose iptables tools are the legacy backend's; pytest.skip without it."""
    bindir = tmp_path / "legacy"
    bindir.mkdir()
    for tool in tools:
        legacy = f"/usr/sbin/{tool.replace('tables', 'tables-legacy', 1)}"
        if not os.path.exists(legacy):
            pytest.skip("iptables-legacy is not installed")
        (bindir / tool).symlink_to(legacy)
    return str(bindir)
