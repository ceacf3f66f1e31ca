#!/usr/bin/env python3
"""A stand-in for firewall-cmd (no firewalld runs outside the lab): the zones are real `--list-all-zones`
text (tests/fixtures/), kept per configuration in $FAKE_FIREWALLD/{runtime,permanent}.txt and edited the way
firewalld edits them. Every call is logged, one line each, to $FAKE_FIREWALLD/calls; $FAKE_FIREWALLD/stopped
makes it answer as a stopped firewalld does (rc 252, "not running").

Handles --state, --get-default-zone, [--permanent] --list-all-zones, [--permanent] --zone=Z --list-all and
[--permanent] --zone=Z with --add-port, --remove-port, --change-interface, --remove-interface,
--change-source, --remove-source, --add-masquerade, --remove-masquerade.
"""

import os
import sys
from pathlib import Path

FIELDS = {"port": "ports", "interface": "interfaces", "source": "sources"}


def blocks(text):
    out, block = [], []
    for line in text.splitlines():
        if line and not line.startswith((" ", "\t")) and block:
            out.append(block)
            block = []
        if line.strip():
            block.append(line)
    return out + ([block] if block else [])


def name(block):
    return block[0].split()[0]


def values(block, field):
    line = next(line for line in block if line.strip().startswith(f"{field}:"))
    return line.split(":", 1)[1].split()


def put(block, field, vals):
    return [f"  {field}: {' '.join(vals)}" if line.strip().startswith(f"{field}:") else line for line in block]


def render(bs):
    return "\n\n".join("\n".join(b) for b in bs) + "\n"


def main(argv):  # noqa: PLR0911 - one return per kind of firewall-cmd answer
    state = Path(os.environ["FAKE_FIREWALLD"])
    with open(state / "calls", "a", encoding="utf-8") as log:
        log.write(" ".join(argv) + "\n")
    if (state / "stopped").exists():
        print("not running")
        return 252
    if argv == ["--state"]:
        print("running")
        return 0
    if argv == ["--get-default-zone"]:
        print("public")
        return 0
    config = "permanent" if argv[:1] == ["--permanent"] else "runtime"
    args = argv[1:] if config == "permanent" else argv
    path = state / f"{config}.txt"
    bs = blocks(path.read_text(encoding="utf-8"))
    if args == ["--list-all-zones"]:
        sys.stdout.write(render(bs))
        return 0
    zone = args[0].partition("=")[2]
    if not args[0].startswith("--zone=") or zone not in [name(b) for b in bs]:
        print("Error: INVALID_ZONE", file=sys.stderr)
        return 112
    i = [name(b) for b in bs].index(zone)
    if args[1:] == ["--list-all"]:
        sys.stdout.write("\n".join(bs[i]) + "\n")
        return 0
    for arg in args[1:]:
        verb, _, value = arg[2:].partition("=")
        action, _, kind = verb.partition("-")
        if kind == "masquerade":
            bs[i] = [f"  masquerade: {'no' if action == 'remove' else 'yes'}" if line.strip().startswith("masquerade:")
                     else line for line in bs[i]]
            continue
        field = FIELDS[kind]
        if action == "change":
            bs = [put(b, field, [v for v in values(b, field) if v != value]) for b in bs]
        have = values(bs[i], field)
        bs[i] = put(bs[i], field, [v for v in have if v != value] if action == "remove"
                    else have + [value] * (value not in have))
    path.write_text(render(bs), encoding="utf-8")
    print("success")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
