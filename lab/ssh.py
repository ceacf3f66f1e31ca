"""Lab ssh: lab-only keys, per-node host keys, an sshd config per node and the client's ssh_config.

sshd runs in inetd mode (`sshd -i`), started inside the node's namespaces by the ProxyCommand,
so no sshd listens anywhere and the host gains no service. Host keys are verified.
"""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lab.sh import run

SSHD_CONFIG = """\
# netmend lab node: sshd runs in inetd mode (sshd -i), started by the lab's ProxyCommand.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile .ssh/authorized_keys
AcceptEnv LANG LC_*
PrintMotd no
LogLevel ERROR
Subsystem sftp internal-sftp
"""


def _keygen(path, comment):
    if not Path(path).exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return Path(f"{path}.pub").read_text().split()[:2]


def make_keys(directory, node_names):
    """A lab client key and one host key per node. Returns {"client": path, "hosts": {name: (type, b64)}}."""
    d = Path(directory)
    (d / "hosts").mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    client = d / "id_ed25519"
    _keygen(client, "netmend-lab")
    with ThreadPoolExecutor(max_workers=8) as pool:
        keys = pool.map(lambda n: _keygen(d / "hosts" / n, f"root@{n}"), node_names)
        host_keys = dict(zip(node_names, keys, strict=True))
    return {"dir": d, "client": client, "hosts": host_keys}


def install_node(upper, name, keys):
    """Write sshd's config, the node's host key and root's authorized_keys into the node's upper layer."""
    etc_ssh = Path(upper) / "etc" / "ssh"
    etc_ssh.mkdir(parents=True, exist_ok=True)
    (etc_ssh / "sshd_config").write_text(SSHD_CONFIG)
    src = keys["dir"] / "hosts" / name
    for suffix, mode in (("", 0o600), (".pub", 0o644)):
        dst = etc_ssh / f"ssh_host_ed25519_key{suffix}"
        dst.write_bytes(Path(f"{src}{suffix}").read_bytes())
        dst.chmod(mode)
    dot_ssh = Path(upper) / "root" / ".ssh"
    dot_ssh.mkdir(parents=True, exist_ok=True)
    dot_ssh.chmod(0o700)
    auth = dot_ssh / "authorized_keys"
    auth.write_text(Path(f"{keys['client']}.pub").read_text())
    auth.chmod(0o600)


def write_client_config(directory, cluster, proxy, keys):
    """ssh_config and known_hosts for Ansible, pyinfra (paramiko) and testinfra."""
    d = Path(directory)
    known = []
    for node in cluster.nodes:
        ktype, key = keys["hosts"][node.name]
        known.append(f"{node.name},{node.address} {ktype} {key}")
    (d / "known_hosts").write_text("\n".join(known) + "\n")
    names = " ".join(f"{n.name} {n.address}" for n in cluster.nodes)
    (d / "ssh_config").write_text(f"""\
# Written by `python -m lab up`: reach lab nodes by name or underlay address.
Host {names}
  User root
  IdentityFile {keys['client']}
  IdentitiesOnly yes
  UserKnownHostsFile {d / 'known_hosts'}
  StrictHostKeyChecking yes
  ProxyCommand {proxy} %h
  LogLevel ERROR
""")
