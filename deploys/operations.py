"""The plan's steps as pyinfra commands, and `netmend_node`, the operation that yields them.

`netmend_node(want, checks)` does what the Ansible module netmend_node does in a normal run: it gathers the
node's facts (deploys.node), runs the core's checks (netmend.checks.audit) and yields, for each Action of the
plan in order, exactly the commands that carry it out, then one read-only callback that audits the node again
and fails the operation when a finding that had a fix is still there. A clean node yields nothing
(host.noop). The plan is refused before anything runs when a step has an unknown kind or an iptables payload
touches a chain netmend does not own (netmend.plan.owned_only), as netmend.plan.execute refuses it.

How each kind of step runs (`Steps.commands`):

- iptables, ip, bridge, command: the core's own argv (`Action.argvs()`) with LC_ALL=C; a payload is uploaded to
  a temp file and fed on standard input (`< file`), then removed. `@service NAME VERB` is `systemctl VERB NAME` on
  a node with /run/systemd/system, else `service NAME VERB` (ModuleHost.service's choice).
- proc: `printf %s VALUE > /proc/sys/...`.
- file: the new text uploaded, then one shell: the directory made, the old file copied to `PATH.<time>.netmend~`
  when it exists and differs, the new one given the old one's mode and owner (or the step's mode) and moved into
  place (a rename, atomic).
- firewalld: netmend.firewalld.reconcile over the zones as the node shows them when the step is reached (the
  wanted zones and those netmend's record names): one `firewall-cmd` per change, runtime and permanent, then
  netmend's record (the state file), as the Ansible modules' hook (ModuleHost.firewalld) does.

Unlike netmend.plan.execute, nothing is rolled back when a step fails: pyinfra stops the operation at the
failed command; files rewritten before it keep their backups (docs/pyinfra.md).
"""

import hashlib
import json
import posixpath
import shlex
import time
from io import StringIO

from pyinfra import host, logger
from pyinfra.api import FileUploadCommand, FunctionCommand, OperationError, StringCommand, operation

from netmend import firewalld
from netmend.checks import CHECKS, audit
from netmend.errors import ProblemsError
from netmend.plan import refusal
from netmend.want import check_want

from .node import NodeHost, gather, pyinfra_fetch

STATE_FILE = "/var/lib/netmend/firewalld.json"  # the firewall role's default (firewall_state_file)
SYSTEMD_DIR = "/run/systemd/system"


class PlanRefused(OperationError):
    """A plan netmend does not run (a step of an unknown kind, or an iptables payload that touches a chain
    netmend does not own). Nothing of it ran."""


def refuse(actions):
    """Raise PlanRefused for the first step netmend.plan.execute would refuse (firewalld steps are run here)."""
    for action in actions:
        why = refusal(action)
        if why:
            raise PlanRefused(f"{why}; nothing ran")


def shell(argv):
    return " ".join(shlex.quote(str(a)) for a in argv)


def digest(*parts):
    return hashlib.sha1("\0".join(str(p) for p in parts).encode(), usedforsecurity=False).hexdigest()[:16]


class Steps:
    """Renders plan steps as pyinfra commands for one node.

    node: a NodeHost (the reads a step needs when it is reached: the service manager, firewalld's zones and
    netmend's record); temp(key): a temp path on the node for an upload; stamp: the backup files' suffix
    time; backup: whether files are backed up before they are rewritten (health_backup)."""

    def __init__(self, node, temp, stamp, backup=True):
        self.node, self.temp, self.stamp, self.backup = node, temp, stamp, backup
        self.backups = []

    def commands(self, action):
        """The pyinfra commands of one step, in order (a generator: a firewalld step reads the node when
        it is reached, after the steps before it ran)."""
        if action.kind == "proc":
            yield StringCommand(f"printf %s {shlex.quote(str(action.payload))} > {shlex.quote(action.target)}")
        elif action.kind == "file":
            mode = action.mode
            yield from self.file(action.target, action.payload, mode, self.backup)
        elif action.kind == "firewalld":
            yield from self.firewalld(action.payload)
        else:
            for i, (words, data) in enumerate(action.argvs()):
                argv = self.service(words[1], words[2]) if words[0] == "@service" else words
                line = f"LC_ALL=C {shell(argv)}"
                if data is None:
                    yield StringCommand(line)
                    continue
                path = self.temp(digest(action.finding, action.kind, action.target, i, data))
                yield FileUploadCommand(StringIO(data), path)
                yield StringCommand(f"{line} < {path}; r=$?; rm -f {path}; exit $r")

    def service(self, name, verb):
        """The node's service manager, as ModuleHost.service picks it."""
        self.node.prefetch([("isdir", SYSTEMD_DIR), ("tool", "systemctl")])
        if self.node.isdir(SYSTEMD_DIR) and self.node.tool("systemctl"):
            return ["systemctl", verb, name]
        return ["service", name, verb]

    def file(self, path, text, mode, backup):
        """Upload `text`, then one shell: back the file up when it exists and differs, keep its mode and owner
        (a new file gets `mode`), move the new text into place."""
        upload = self.temp(digest("file", path, text))
        directory = posixpath.dirname(path) or "/"
        staged = posixpath.join(directory, f".{posixpath.basename(path)}.netmend.tmp")
        saved = f"{path}.{self.stamp}.netmend~"
        p, s, d = shlex.quote(path), shlex.quote(staged), shlex.quote(directory)
        lines = [f"mkdir -p {d}", f"cp {upload} {s}", f"rm -f {upload}", f"if [ -e {p} ]; then"]
        if backup:
            lines.append(f"  cmp -s {s} {p} || cp -p {p} {shlex.quote(saved)}")
            self.backups.append(saved)
        lines += [f"  chmod --reference={p} {s}", f"  chown --reference={p} {s}",
                  f"else chmod {mode:o} {s}; fi", f"mv -f {s} {p}"]
        yield FileUploadCommand(StringIO(text), upload)
        yield StringCommand("set -e\n" + "\n".join(lines))

    def firewalld(self, payload):
        """Exactly the missing entries, runtime and permanent, from the zones as the node shows them now;
        then netmend's record of what it added (the firewall role's state file)."""
        path = payload.get("state_file") or STATE_FILE

        def lists(owned):  # the zones reconcile reads: the wanted ones and those netmend's record names
            return [("run", ("firewall-cmd", *(["--permanent"] if permanent else []), f"--zone={z}", "--list-all"), ())
                    for config, permanent in firewalld.CONFIGS
                    for z in dict.fromkeys([*payload["want"], *(owned.get(config) or {})])]

        self.node.prefetch([("read", path), *lists({})])
        owned = firewalld.load_owned(self.node.read(path), path)
        self.node.prefetch(lists(owned))  # a zone netmend no longer manages, read in a second round

        def list_zone(zone, permanent):
            rc, out, err = self.node.run(["firewall-cmd", *(["--permanent"] if permanent else []),
                                          f"--zone={zone}", "--list-all"])
            if rc != 0:
                raise RuntimeError(f"firewall-cmd --zone={zone} --list-all (rc {rc}): {(err or out).strip()}")
            return out

        argvs, new_owned, _before, _after = firewalld.reconcile(payload["want"], owned, list_zone)
        for argv in argvs:
            yield StringCommand(f"LC_ALL=C {shell(['firewall-cmd', *argv])}")
        if new_owned != owned:
            yield from self.file(path, json.dumps(new_owned, indent=2, sort_keys=True) + "\n", 0o644, False)


def audit_node(node, want, checks, extra=()):
    """The core's audit of one node through `node` (a NodeHost): netmend.checks.audit over its facts
    (`extra`: more requests to read in gather's first round)."""
    return audit(gather(node, want, checks, extra), want, checks)


def _stamp():
    return time.strftime("%Y-%m-%d@%H:%M:%S")


@operation(is_idempotent=True)
def netmend_node(want, checks=None, backup=True, python="python3", record=None):
    """Audit the node against `want` and fix what the audit finds: for each step of the plan, in order, the
    commands that carry it out, then a read-only audit that fails the operation when a finding that had a fix
    has it planned again. `record` (a dict) receives the audit before (`before`), the steps done (`done`), the backup
    files made (`backups`), the audit after (`after`) and the findings whose fix is planned again (`stuck`)."""
    record = record if record is not None else {}
    try:
        check_want(want)
    except ProblemsError as exc:
        raise OperationError(f"want is not valid, nothing was checked or changed: {exc}") from exc
    names = list(checks or CHECKS)
    fetch = pyinfra_fetch(host, python)
    before = audit_node(NodeHost(fetch), want, names)
    refuse(before.actions)
    record.update(before=before, done=[], backups=[], after=None, stuck=[])
    if not before.actions:
        record["after"] = before
        host.noop("clean: the audit found nothing to fix")
        return
    steps = Steps(NodeHost(fetch), host.get_temp_filename, _stamp(), backup)
    for action in before.actions:
        yield from steps.commands(action)
        record["done"].append(action.describe())

    def verify(state, host):
        node = NodeHost(pyinfra_fetch(host, python))
        after = audit_node(node, want, names, [("isfile", path) for path in steps.backups])
        fixable = {a.finding for a in before.actions}
        record.update(after=after, stuck=sorted({a.finding for a in after.actions if a.finding in fixable}),
                      backups=[path for path in steps.backups if node.isfile(path)])
        if record["stuck"]:
            logger.error(f"{host.print_prefix}the fix did not take for {', '.join(record['stuck'])}")
            return False
        return True

    yield FunctionCommand(verify, (), {})
