"""Running commands on the host, in lab network namespaces and in lab nodes."""

import os
import subprocess

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


class LabError(RuntimeError):
    pass


def run(argv, input=None, check=True, timeout=60):
    proc = subprocess.run(argv, input=input, capture_output=True, text=True, env=ENV, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def ip_batch(netns, commands, tool="ip"):
    """Run `ip` (or `bridge`) commands in one process, inside netns (None: the caller's namespace)."""
    if not commands:
        return
    argv = [tool] + (["-n", netns] if netns else []) + ["-batch", "-"]
    run(argv, input="\n".join(commands) + "\n")


def in_node(pid, argv, input=None, check=True, timeout=60):
    """Run argv inside a node: its network, mount, UTS and PID namespaces."""
    return run(["nsenter", "-t", str(pid), "-n", "-m", "-u", "-p", "--", *argv],
               input=input, check=check, timeout=timeout)


def node_path(pid, path):
    """A path inside a node's mount namespace, as the host reaches it."""
    return f"/proc/{pid}/root{path}"


def write_node_file(pid, path, text, mode=0o644):
    full = node_path(pid, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(full, mode)


def alive(pid):
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError, TypeError):
        return False


def netns_inode(pid):
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None
