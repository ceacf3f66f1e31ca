"""The lab's stand-in for CoreDNS: dnsmasq configured from a real Corefile, reloaded when it changes.

CoreDNS cannot be installed here. This process runs in the cluster DNS pod, reads the Corefile the
dns role writes (as a CoreDNS pod reads its ConfigMap), and runs dnsmasq with what the Corefile
says: the kubernetes plugin's zone answered from the services' records (NXDOMAIN for other names in
it), everything else forwarded to the `forward .` targets (addresses, or the servers of the
resolv.conf it names), cache TTL capped as `cache` says. Like the `reload` plugin it checks the
Corefile every second and restarts dnsmasq when the text changes; a Corefile it cannot parse keeps
the running configuration, as CoreDNS does. It is lab code, run with the node's python3; it dies
with the lab.

    clusterdns.py --corefile PATH [--record NAME,IP ...]
"""

import argparse
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # netmend/ is copied next to this file

from netmend.coredns import CorefileError, root_settings

POLL_S = 1.0


def dnsmasq_argv(corefile_text, records):
    """dnsmasq's command line for a Corefile (raises CorefileError when it cannot be used)."""
    s = root_settings(corefile_text)
    argv = ["dnsmasq", "--keep-in-foreground", "--log-facility=-", "--pid-file", "--user=root", "--group=root",
            "--no-hosts"]
    if s["cluster_domain"]:  # the reverse zones fall through to the upstreams, as kubeadm's Corefile says
        argv.append(f"--local=/{s['cluster_domain']}/")
    argv += [f"--host-record={r}" for r in records]
    root = next((f for f in s["forward"] if f["from"] == "."), None)
    addresses = [t for t in (root["targets"] if root else []) if t["kind"] == "address"]
    if addresses:
        argv.append("--no-resolv")
        argv += [f"--server={t['address']}#{t['port']}" for t in addresses]
    elif s["forward_resolv_conf"]:
        argv.append(f"--resolv-file={s['forward_resolv_conf']}")
    else:
        argv.append("--no-resolv")  # no forward: only the cluster zone answers
    if s["cache_ttl"]:
        argv.append(f"--max-cache-ttl={s['cache_ttl']}")
    return argv


def read(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError:
        return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corefile", required=True)
    parser.add_argument("--record", action="append", default=[], help="NAME,IP for the cluster zone")
    args = parser.parse_args(argv)
    child, text = None, None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            current = read(args.corefile)
            if current is not None and current != text:
                try:
                    command = dnsmasq_argv(current, args.record)
                except CorefileError as exc:
                    print(f"clusterdns: {exc}; keeping the running configuration", flush=True)
                else:
                    if child is not None:
                        child.terminate()
                        child.wait(timeout=5)
                    print(f"clusterdns: {' '.join(command)}", flush=True)
                    child = subprocess.Popen(command)
                text = current
            time.sleep(POLL_S)
    finally:
        if child is not None:
            child.terminate()


if __name__ == "__main__":
    sys.exit(main())
