"""The typed plan a check returns, and the one executor every front end runs it with.

Stdlib only; it runs on the node. A plan is a list of Actions in the order they must run. Each front
end (the Ansible modules, the pyinfra deploy, the lab, the tests) hands `execute` a host adapter:

    host.run(argv, data=None) -> (rc, stdout, stderr)   argv[0] a bare tool name; LC_ALL=C is the host's job
    host.tool(name) -> the tool's path, or None
    host.replace_file(path, text, mode) -> the backup's path, or None (the file did not exist or no backup)
    host.restore_file(path, backup) -> None             put a backup back (rollback)
    host.write(path, text) -> None                      a /proc/sys key

Every step touches only what Kubernetes or netmend owns; `owned_only` is checked before anything runs.
When a step fails, the steps already done are rolled back where that is possible (files from their
backups, /proc/sys keys to their old values) and the error names the step.
"""

from dataclasses import dataclass, field

from .iptables import owned

LOCK_WAIT = "5"  # seconds iptables-restore waits for the xtables lock
KINDS = ("proc", "file", "iptables", "ip", "bridge", "command", "firewalld")


@dataclass
class Action:
    """One change that fixes (part of) a finding.

    kind proc: write `payload` to the /proc/sys file `target`; file: back up and replace the file `target`
    with `payload`; iptables: `iptables-restore -w --noflush` of `payload` into table `target`
    (ip6tables-restore for family ipv6); ip / bridge: `ip -batch` / `bridge -batch` of the `payload` lines;
    command: the argv lists in `payload` ("@service NAME VERB" is the host's service manager);
    firewalld: firewall-cmd changes (`payload` {want, state_file, steps, commands}, run by the host's firewalld
    hook, which reads the zones again when the step is reached: netmend.firewalld.reconcile).
    """

    finding: str
    kind: str
    target: str
    payload: object
    before: str = ""
    after: str = ""
    mode: int = 0o644
    family: str = "ipv4"
    label: str = ""  # what the diff headers name, when not the target

    def describe(self):
        if self.kind == "proc":
            return f"{self.finding}: write {self.payload} to {self.target}"
        if self.kind == "file":
            return f"{self.finding}: rewrite {self.target} (backed up)"
        if self.kind == "iptables":
            tables = "tables" if "," in self.target else "table"
            return f"{self.finding}: {self.restore_tool()} --noflush into the {self.target} {tables}"
        if self.kind in ("ip", "bridge"):
            return f"{self.finding}: {self.kind} " + "; ".join(self.payload)
        if self.kind == "firewalld":
            return f"{self.finding}: firewall-cmd, no reload: " + "; ".join(self.payload.get("steps", ()))
        return f"{self.finding}: " + "; ".join(" ".join(a) for a in self.payload)

    def diff(self):
        name = self.label or self.target
        return {"before_header": f"{name} (before)", "after_header": f"{name} (after)",
                "before": self.before, "after": self.after}

    def restore_tool(self):
        return "ip6tables-restore" if self.family == "ipv6" else "iptables-restore"

    def argvs(self):
        """The commands this step runs, with their standard input: [(argv, stdin or None)]. proc, file and
        firewalld steps are done by the host adapter and have none."""
        if self.kind == "iptables":
            return [([self.restore_tool(), "-w", LOCK_WAIT, "--noflush"], self.payload)]
        if self.kind in ("ip", "bridge"):
            return [([self.kind, "-batch", "-"], "\n".join(self.payload) + "\n")]
        if self.kind == "command":
            return [(list(argv), None) for argv in self.payload]
        return []


@dataclass
class Result:
    findings: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    checks: list = field(default_factory=list)  # the finding IDs this node was checked for
    skipped: list = field(default_factory=list)  # (check, why)


def owned_only(action):
    """Whether an iptables action touches only chains netmend may write (a safety net under every fix)."""
    if action.kind != "iptables":
        return True
    for line in action.payload.splitlines():
        words = line.split()
        if line.startswith(":") and not owned(line[1:].split()[0]):
            return False
        if words[:1] in (["-A"], ["-X"]) and not owned(words[1]):
            return False
    return True


def refusal(action):
    """Why netmend does not run this step (an unknown kind, or an iptables payload that touches a chain
    netmend does not own), or None. Every front end's executor asks before anything of a plan runs."""
    if action.kind not in KINDS:
        return f"unknown plan step kind {action.kind!r} ({action.describe()})"
    if not owned_only(action):
        return f"refusing {action.describe()}: it touches a chain netmend does not own"
    return None


class ExecutionError(RuntimeError):
    """A step of a plan failed; `done` is what ran before it, `rolled_back` what was undone, `step` the
    Action that failed (None when the plan was refused before anything ran)."""

    def __init__(self, message, done=(), rolled_back=(), step=None):
        super().__init__(message)
        self.done, self.rolled_back, self.step = list(done), list(rolled_back), step


def execute(actions, host, firewalld=None):
    """Run the plan on `host` in order. Returns the backups made. Raises ExecutionError naming the failed
    step after rolling back what can be undone. firewalld(payload) runs a firewalld step (its own
    transaction of firewall-cmd calls); a plan with such a step and no hook is refused before anything runs.
    """
    for action in actions:
        why = refusal(action)
        if why:
            raise ExecutionError(why)
        if action.kind == "firewalld" and firewalld is None:
            raise ExecutionError(f"{action.describe()}: this front end cannot change firewalld")
    backups, undo, done = [], [], []
    for action in actions:
        try:
            _step(action, host, firewalld, backups, undo)
        except Exception as exc:
            rolled = _rollback(undo, host)
            message = f"{action.describe()} failed: {exc}" + (f"; rolled back: {', '.join(rolled)}" if rolled else "")
            raise ExecutionError(message, done, rolled, action) from exc
        done.append(action.describe())
    return backups


def _step(action, host, firewalld, backups, undo):
    if action.kind == "proc":
        host.write(action.target, str(action.payload))
        old = action.before.rpartition("= ")[2].strip() if action.before else ""
        if old:
            undo.append(("proc", action.target, old))
    elif action.kind == "file":
        backup = host.replace_file(action.target, action.payload, action.mode)
        if backup:
            backups.append(backup)
            undo.append(("file", action.target, backup))
    elif action.kind == "firewalld":
        firewalld(action.payload)
    else:
        for words, data in action.argvs():
            argv = host.service(words[1], words[2]) if words[0] == "@service" else words
            rc, out, err = host.run(argv, data)
            if rc != 0:
                raise RuntimeError(f"{' '.join(argv)} (rc {rc}): {(err or out).strip()[:300]}")


def _rollback(undo, host):
    rolled = []
    for kind, target, value in reversed(undo):
        try:
            if kind == "proc":
                host.write(target, value)
            else:
                host.restore_file(target, value)
            rolled.append(target)
        except Exception:
            continue
    return rolled
