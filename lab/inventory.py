"""Read an Ansible YAML inventory directory into the cluster model.

The lab has no topology of its own: it reads the same inventory Ansible uses (hosts.yml plus
group_vars/ and host_vars/), and refuses duplicate keys, which YAML would otherwise merge silently.
"""

from pathlib import Path

import yaml

from netmend.cluster import NODE_GROUPS, SpecError, build_cluster

LAB_NETWORKS = ("lab_outside_cidr",)


class _StrictLoader(yaml.SafeLoader):
    pass


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise SpecError([(str(key), f"duplicate key at line {key_node.start_mark.line + 1} "
                              f"of {key_node.start_mark.name}; each name may appear once")])
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _load(path):
    with open(path, encoding="utf-8") as fh:
        try:
            return yaml.load(fh, Loader=_StrictLoader) or {}
        except yaml.YAMLError as exc:
            raise SpecError([(str(path), f"is not valid YAML: {exc}")]) from None


def _vars_dir(base, name):
    """group_vars/NAME.yml and every file in group_vars/NAME/, merged in name order."""
    merged = {}
    for candidate in (base / f"{name}.yml", base / f"{name}.yaml"):
        if candidate.is_file():
            merged.update(_load(candidate))
    folder = base / name
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            if f.suffix in (".yml", ".yaml"):
                merged.update(_load(f))
    return merged


def _walk(group_name, group, out, path):
    """Collect (host, group, hostvars) below a group, remembering the node group each host is in."""
    if group is None:
        return
    if not isinstance(group, dict):
        raise SpecError([(path, "must be a mapping with hosts, children or vars")])
    for host, hv in (group.get("hosts") or {}).items():
        out.append((host, group_name, hv or {}))
    for child, sub in (group.get("children") or {}).items():
        _walk(child, sub, out, f"{path}.children.{child}")


def read(inventory_dir):
    """Return (hosts, variables) for build_cluster: hosts in inventory order."""
    inv = Path(inventory_dir)
    hosts_file = next((inv / n for n in ("hosts.yml", "hosts.yaml") if (inv / n).is_file()), None)
    if hosts_file is None:
        raise SpecError([(str(inv), "has no hosts.yml; the lab reads a YAML inventory directory")])
    data = _load(hosts_file)
    found = []
    _walk("all", data.get("all", data), found, "all")
    groups = {}
    hosts = []
    for host, group, hv in found:
        if group not in NODE_GROUPS:
            continue
        groups.setdefault(host, []).append(group)
        if len(groups[host]) > 1:
            raise SpecError([(f"hosts.{host}", f"is in both {' and '.join(groups[host])}; "
                              "a node is in exactly one of control_plane, workers")])
        merged = dict(_vars_dir(inv / "host_vars", host))
        merged.update(hv)
        hosts.append((host, group, merged))
    variables = _vars_dir(inv / "group_vars", "all")
    for group in ("k8s_cluster",):
        variables.update(_vars_dir(inv / "group_vars", group))
    return hosts, variables


def load_cluster(inventory_dir):
    hosts, variables = read(inventory_dir)
    extra = {k: variables[k] for k in LAB_NETWORKS if k in variables}
    return build_cluster(hosts, variables, extra_networks=extra), variables
