"""The checks, one module per concern, and the audit that runs them on one node's facts.

Each check declares the facts it needs and the findings it can report (their Specs: the catalog), and
judges facts against the want, returning findings with the plan that fixes each. The provisioning
modules and the audit run the same checks: site.yml applies the plan, the audit reports it.

A check is isolated: one whose facts could not be read, or that fails, becomes a skipped check with
the reason; every other check of the node still runs.
"""

from ..plan import Result
from . import conntrack, dnat, dns, firewall, flannel, forward, kernel, kube_proxy_chains, masquerade, proxy_mode
from .base import Audit

# The order fixes run in: the kernel and the firewall first, the data path, then DNS and conntrack.
ALL = (*kernel.CHECKS, *firewall.CHECKS, *forward.CHECKS, *masquerade.CHECKS, *flannel.CHECKS, *dnat.CHECKS,
       *kube_proxy_chains.CHECKS, *proxy_mode.CHECKS, *dns.CHECKS, *conntrack.CHECKS)
BY_NAME = {check.name: check for check in ALL}
CATALOG = {spec.id: spec for check in ALL for spec in check.findings}  # finding ID -> Spec
CHECKS = {check.name: check.ids for check in ALL}  # check -> the finding IDs it can report


def audit(facts, want, checks=None):
    """Run the checks (default: all, in fix order) on one node's facts. Returns a Result whose actions
    are in the order they must run. facts["errors"] ({fact: why}) names the facts that could not be read."""
    names = [c.name for c in ALL if checks is None or c.name in checks]
    a = Audit(want, facts, CATALOG)
    errors = facts.get("errors") or {}
    for name in names:
        check = BY_NAME[name]
        missing = [f"{fact}: {errors[fact]}" for fact in check.needs if fact in errors]
        if missing:
            a.skip(name, "; ".join(missing))
            continue
        found, acted, skipped = len(a.result.findings), len(a.result.actions), len(a.result.skipped)
        try:
            check.run(a)
        except Exception as exc:
            del a.result.findings[found:], a.result.actions[acted:], a.result.skipped[skipped:]
            a.skip(name, f"the check failed, nothing of it was planned: {type(exc).__name__}: {exc}")
            continue
        if len(a.result.skipped) == skipped:
            a.result.checks.extend(check.ids)
    return Result(a.result.findings, a.result.actions, a.result.checks, a.result.skipped)
