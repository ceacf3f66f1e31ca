"""The node image: one copy-on-write layer with the packages lab nodes run.

Packages whose install starts a daemon (openssh-server, firewalld, etcd-server) must never
land on the machine that runs the lab. They are installed by apt inside a private mount
namespace whose /etc, /usr and /var are overlays: every file they write goes to the layer,
and a policy-rc.d there forbids starting anything. Nodes stack the layer over the host's
directories. The layer is built once and rebuilt when the package list or the init changes.
"""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

PACKAGES = (
    "openssh-server", "firewalld", "etcd-server", "etcd-client", "dnsmasq-base",
    "iptables", "nftables", "conntrack", "ipset", "ipvsadm", "iproute2", "procps", "kmod",
    "iputils-ping", "tcpdump", "dbus", "cron", "prometheus-node-exporter",
)
LAYER_DIRS = ("etc", "usr", "var")

# PID 1 of every node. /usr/sbin/init points at it, so Ansible's service_mgr fact is
# sysvinit (not systemd) and ansible.builtin.service drives the init.d scripts.
INIT = '''#!/usr/bin/python3
"""PID 1 of a netmend lab node: reaps orphans; SIGTERM ends the node's PID namespace."""
import os, signal
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
signal.signal(signal.SIGCHLD, lambda *_: None)
while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    signal.sigtimedwait([signal.SIGCHLD], 5)
'''
INIT_PATH = "/usr/local/lib/netmend-lab/init"

# Debian ships firewalld with a systemd unit only; lab nodes run init.d scripts. The script
# starts the node's private D-Bus first and returns once firewalld answers on it.
FIREWALLD_INIT = r'''#!/bin/sh
### BEGIN INIT INFO
# Provides:          firewalld
# Required-Start:    $remote_fs dbus
# Required-Stop:     $remote_fs dbus
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: dynamic firewall daemon (netmend lab init script)
### END INIT INFO
PIDFILE=/run/firewalld.pid
. /lib/lsb/init-functions
wait_state() {
  i=0
  while [ $i -lt 60 ]; do
    firewall-cmd --state >/dev/null 2>&1 && return 0
    i=$((i + 1)); sleep 0.5
  done
  return 1
}
case "$1" in
  start)
    /etc/init.d/dbus status >/dev/null 2>&1 || /etc/init.d/dbus start >/dev/null
    if ! pidofproc -p $PIDFILE /usr/sbin/firewalld >/dev/null; then
      /usr/sbin/firewalld || exit 1
    fi
    wait_state ;;
  stop)
    start-stop-daemon --stop --quiet --oknodo --retry 10 --pidfile $PIDFILE
    rm -f $PIDFILE ;;
  restart)
    "$0" stop && "$0" start ;;
  reload|force-reload)
    firewall-cmd --reload ;;
  status)
    pidofproc -p $PIDFILE /usr/sbin/firewalld >/dev/null && firewall-cmd --state ;;
  *)
    echo "Usage: $0 {start|stop|restart|reload|status}" >&2; exit 3 ;;
esac
'''

BUILD = r'''
set -eu
img="$1"; shift
for d in etc usr var; do
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$img.new/$d,workdir=$img.new/work/$d" "/$d"
done
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold "$@"
apt-get clean
rm -f /usr/sbin/policy-rc.d
mkdir -p "$(dirname "$INIT_PATH")"
printf '%s' "$INIT" > "$INIT_PATH"
chmod 755 "$INIT_PATH"
ln -sfn "$INIT_PATH" /usr/sbin/init
printf '%s' "$FIREWALLD_INIT" > /etc/init.d/firewalld
chmod 755 /etc/init.d/firewalld
'''


def stamp():
    return hashlib.sha256(json.dumps([PACKAGES, INIT, FIREWALLD_INIT]).encode()).hexdigest()


def current(image_dir):
    stamp_file = Path(image_dir) / "stamp"
    return stamp_file.exists() and stamp_file.read_text() == stamp()


def ensure(image_dir, log=print):
    """Build the layer at image_dir unless it is current. Returns the layer path."""
    image = Path(image_dir)
    if current(image):
        return image
    stamp_file = image / "stamp"
    log(f"building the node image in {image} (apt, once)")
    new = Path(f"{image}.new")
    shutil.rmtree(new, ignore_errors=True)
    for d in LAYER_DIRS:
        (new / d).mkdir(parents=True)
        (new / "work" / d).mkdir(parents=True)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "INIT": INIT, "INIT_PATH": INIT_PATH,
           "FIREWALLD_INIT": FIREWALLD_INIT, "LC_ALL": "C"}
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", BUILD, "build",
                           str(image), *PACKAGES], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"node image build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    shutil.rmtree(new / "work")
    shutil.rmtree(image, ignore_errors=True)
    new.rename(image)
    stamp_file.write_text(stamp())
    return image
