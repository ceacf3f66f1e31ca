"""The kube_proxy role's filter: netmend.proxyconfig's checks, run on the controller before any host changes."""

import sys
from pathlib import Path

_MODULE_UTILS = str(Path(__file__).resolve().parents[3] / "module_utils")
if _MODULE_UTILS not in sys.path:
    sys.path.insert(0, _MODULE_UTILS)

from ansible.module_utils.parsing.convert_bool import boolean  # noqa: E402

from netmend.errors import ProblemsError  # noqa: E402
from netmend.proxyconfig import validate  # noqa: E402

INTS = ("conntrack_max_per_core", "conntrack_min")
BOOLS = ("ipvs_strict_arp",)


def _as_module_gets_it(settings):
    """The values as the module receives them: Ansible turns "32768" into 32768 and "yes" into true."""
    out = dict(settings)
    for key in INTS:
        if isinstance(out.get(key), str) and out[key].strip().lstrip("-").isdigit():
            out[key] = int(out[key])
    for key in BOOLS:
        try:
            out[key] = boolean(out[key], strict=True)
        except (TypeError, KeyError):
            pass
    return out


def kube_proxy_problems(settings, prefix="kube_proxy_"):
    """Every problem with the role's settings as "variable: message", or [] when kube-proxy accepts them."""
    try:
        validate(_as_module_gets_it(settings), prefix)
    except ProblemsError as exc:
        return [f"{name}: {message}" for name, message in exc.problems]
    return []


class FilterModule:
    def filters(self):
        return {"netmend_kube_proxy_problems": kube_proxy_problems}
