# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a host must have of its cluster — storage pools and networks — as steps, planned once.

The same functions serve every operation that realizes something on a host: a host being
registered or refreshed (all of its cluster's domains and networks), a storage domain or a
logical network being applied (that one resource on every host). Each step is planned from what
the host reported (``observe``), so check mode lists exactly the steps a real run takes; a real
run then applies them and records what each host has, from which its status follows.
"""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import HypervisorError
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _events, _rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _hosts as host_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _networks as network_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _storage_domains as domain_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import plain
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _network, _storage

NO_NIC = "the host has no network NIC (set network_nic on the host) to carry it"


class Step:
    """One change on one host: what it is called in ``actions``, and how to make it."""

    def __init__(self, description, apply, kind, resource):
        self.description = description
        self.apply = apply  # apply(conn) -> None; raises HypervisorError
        self.kind = kind  # "domain" or "network"
        self.resource = resource  # the row it is about


# -- storage domains -------------------------------------------------------------------------

def domain_spec(domain, host):
    return _storage.pool_spec(domain["type"], plain(domain["params"]), host["name"])


def domain_step(domain, host, observed):
    """The step that brings ``domain`` to ``host`` given the host's (spec, view) of its pool; None if none."""
    pool = _storage.pool_name(domain["name"])
    spec = domain_spec(domain, host)
    current, view = observed if observed else (None, None)
    if domain["state"] == "active":
        if current == spec and view and view["active"] and view["autostart"]:
            return None
        verb = "define pool" if current is None else "redefine pool" if current != spec else "start pool"
        return Step(verb, lambda conn: _storage.realize_pool(conn, pool, spec), "domain", domain)
    if view and view["active"]:
        return Step("stop pool", lambda conn: _storage.deactivate_pool(conn, pool), "domain", domain)
    return None


# -- logical networks ------------------------------------------------------------------------

def network_step(net, host, observed):
    """(step or None, problem or None) for network row ``net`` (with ``required``) on ``host``."""
    lv_name = _network.libvirt_name(net["name"])
    current, active = observed if observed else (None, False)
    if net.get("required") is None:  # not (or no longer) assigned to the host's cluster
        if current is None:
            return None, None
        return Step("remove network", lambda conn: _network.remove_network(conn, lv_name), "network", net), None
    nic = host.get("network_nic")
    if net["mode"] == "bridge" and not nic:
        return None, NO_NIC
    spec = _network.network_spec(net, nic)
    if current == spec and active:
        return None, None
    return Step("realize network", lambda conn: _network.realize_network(conn, lv_name, spec), "network", net), None


# -- a whole host ----------------------------------------------------------------------------

def host_plan(cur, host):
    """The rows a host must realize: its cluster's domains and every network of its data center."""
    return {"domains": domain_rows.of_host(cur, host), "networks": network_rows.of_host_datacenter(cur, host)}


def observe_host(conn):
    """What the host has, in one pass: its pools and its networks."""
    return {"pools": _storage.pools_of_host(conn), "networks": _network.networks_of_host(conn)}


def undo_vanished(conn, steps, errors, gone):
    """Take from the host what this run realized of resources that were removed meanwhile."""
    for step in steps:
        if errors.get(id(step)) or step.description in ("stop pool", "remove network"):
            continue
        try:
            if step.kind == "domain" and step.resource["id"] in gone[0]:
                _storage.remove_pool(conn, _storage.pool_name(step.resource["name"]))
            elif step.kind == "network" and step.resource["id"] in gone[1]:
                _network.remove_network(conn, _network.libvirt_name(step.resource["name"]))
        except HypervisorError:
            pass  # the next check of the host finds it; nothing the engine knows depends on it


def host_steps(host, plan, observed):
    """(steps, problems known before anything is done) for the whole host."""
    steps, problems = [], {}
    for domain in plan["domains"]:
        step = domain_step(domain, host, observed["pools"].get(_storage.pool_name(domain["name"])))
        if step:
            steps.append(step)
    for net in plan["networks"]:
        step, problem = network_step(net, host, observed["networks"].get(_network.libvirt_name(net["name"])))
        if step:
            steps.append(step)
        if problem:
            problems[net["name"]] = problem
    return steps, problems


def describe(step):
    what = "storage domain" if step.kind == "domain" else "network"
    if step.description == "stop pool":
        return "stop storage domain %s (maintenance)" % step.resource["name"]
    if step.description == "remove network":
        return "remove network %s" % step.resource["name"]
    return "realize %s %s" % (what, step.resource["name"])


def apply_steps(conn, steps, check_mode):
    """Apply the steps in order: ({id(step): error} of those that failed, {pool name: view} of the pools
    they changed, read after them). A failure does not stop the rest; nothing here holds a database lock."""
    errors, views = {}, {}
    if check_mode:
        return errors, views
    for step in steps:
        try:
            step.apply(conn)
        except HypervisorError as exc:
            errors[id(step)] = str(exc)
            continue
        if step.kind == "domain":
            pool = _storage.pool_name(step.resource["name"])
            try:
                views[pool] = _storage.pool_state(conn, pool)[1]
            except HypervisorError as exc:
                errors[id(step)] = str(exc)
    return errors, views


def vanished(cur, plan):
    """(domain ids, network ids) of the plan that are gone since it was made (a failed apply released them)."""
    return (domain_rows.missing(cur, [d["id"] for d in plan["domains"]]),
            network_rows.missing(cur, [n["id"] for n in plan["networks"]]))


def record_host(cur, host, plan, observed, steps, errors, net_problems, views=None, gone=(set(), set())):
    """Store what the host has of each domain and network now; the problems that keep it NonOperational.

    ``views``: the pools the steps changed, as read after them; ``gone``: resources removed meanwhile.
    """
    by_resource = {(s.kind, s.resource["id"]): s for s in steps}
    problems = []
    for domain in plan["domains"]:
        if domain["id"] in gone[0]:
            continue
        pool = _storage.pool_name(domain["name"])
        step = by_resource.get(("domain", domain["id"]))
        error = errors.get(id(step), "") if step else ""
        view = (views or {}).get(pool) or observed["pools"].get(pool, (None, None))[1]
        if error and domain["state"] == "active":
            problems.append("storage domain %s: %s" % (domain["name"], error))
        domain_rows.record_view(cur, domain["id"], host["id"], pool, view, error)
    for net in plan["networks"]:
        if net["id"] in gone[1]:
            continue
        step = by_resource.get(("network", net["id"]))
        lv_name = _network.libvirt_name(net["name"])
        if net.get("required") is None:
            if step and not errors.get(id(step)):
                network_rows.forget_on_host(cur, host["id"], net["id"])
            continue
        error = net_problems.get(net["name"]) or (errors.get(id(step), "") if step else "")
        if error and net["required"]:
            problems.append("required network %s is not realized: %s" % (net["name"], error))
        network_rows.record_on_host(cur, host["id"], net["id"], host.get("network_nic"), not error, error, lv_name)
    return problems


def status_of(row_status, reachable, reason, problems):
    """The status a check implies; Maintenance is an administrator's decision and stays, whether the host
    answers or not (a host in maintenance may well be switched off)."""
    if row_status in ("Maintenance", "PreparingForMaintenance"):
        return row_status, "" if reachable else reason
    if not reachable:
        return "NonResponsive", reason
    if problems:
        return "NonOperational", "; ".join(problems)
    return "Up", ""


def recompute_status(cur, host_ids):
    """Hosts whose records changed: Up or NonOperational again from what they now have.

    Returns [(host row, old status, new status, reason)] of those whose status changed.
    """
    changed = []
    for host_id in host_ids:
        host = host_rows.by_id(cur, host_id, lock=True)
        if host is None or host["status"] not in ("Up", "NonOperational"):
            continue
        status, reason = status_of(host["status"], True, "", host_rows.problems(cur, host_id))
        if (status, reason) != (host["status"], host["status_reason"]):
            host_rows.update(cur, host_id, {"status": status, "status_reason": reason,
                                            "status_changed_at": _rows.now(cur)})
            record_status_change(cur, host, host["status"], status, reason)
            changed.append((host, host["status"], status, reason))
    return changed


def record_status_change(cur, host, before, after, reason):
    message = "Host %s is %s" % (host["name"], after)
    if reason:
        message += ": %s" % reason
    _events.record(cur, "HOST_STATUS_CHANGED", message, severity="normal" if after == "Up" else "warning",
                   details={"from": before, "to": after}, object_type="host", object_id=host["id"],
                   object_name=host["name"], datacenter=host.get("datacenter"), cluster=host.get("cluster"),
                   host=host["name"])
