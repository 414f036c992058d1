# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hypervisor hosts: registration, capabilities read from libvirt, and reachability status."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import (
    ConflictError,
    HypervisorError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import (
    validate_name,
    validate_pattern,
    validate_timeout,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _events
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_CLUSTER, Engine
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _cluster, _hosts
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import (
    Outcome,
    changed_fields,
    insert_row,
    plain,
    update_row,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _client

FACTS = ("hardware_uuid", "hostname", "hypervisor_type", "domain_type", "libvirt_version", "cpu_arch",
         "cpu_model", "cpu_vendor", "cpu_sockets", "cpu_cores", "cpu_threads", "cpu_count", "cpu_mhz",
         "memory_mib", "numa_cells")
# What moves with the machine rather than with its configuration (the current clock, memory that is
# hot-added or onlined over time): refreshed on every check, never reported as a change.
MONITORED = ("cpu_mhz", "memory_mib", "numa_cells")
# Shown in results and diffs: the configuration by name, the status, and what libvirt reported.
VISIBLE = ("cluster", "address", "libvirt_uri", "domain_type_setting", "network_nic", "status",
           "status_reason") + FACTS


_SELECT = ("SELECT h.*, c.name AS cluster, d.name AS datacenter FROM host h"
           " JOIN cluster c ON c.id = h.cluster_id JOIN datacenter d ON d.id = c.datacenter_id")


def find(cur, name, lock=False):
    cur.execute(_SELECT + " WHERE h.name = %s" + (" FOR UPDATE OF h" if lock else ""), (name,))
    return cur.fetchone()


def view(row):
    result = {k: plain(row.get(k)) for k in VISIBLE}
    result["libvirt_uri"] = _client.redact_uri(result["libvirt_uri"])
    result.update(id=plain(row.get("id")), name=row["name"], datacenter=row.get("datacenter"),
                  last_seen_at=plain(row.get("last_seen_at")),
                  status_changed_at=plain(row.get("status_changed_at")))
    return result


def _vms_on(cur, host_id):
    cur.execute("SELECT name FROM vm WHERE run_host_id = %s OR migrating_to_host_id = %s ORDER BY name",
                (host_id, host_id))
    return [r["name"] for r in cur.fetchall()]


def probe(engine, host, timeout, domain_type="auto"):
    """(facts, None) when the libvirt of ``host`` (name, libvirt_uri) answers, (None, reason) when not."""
    try:
        return _client.read_host_facts(_hosts.connect(engine, host, timeout), domain_type), None
    except HypervisorError as exc:
        return None, str(exc)


def probe_all(engine, rows, timeout):
    """``probe`` of every host row at once: a dead host costs ``timeout`` once, in parallel with the rest."""
    outcomes = _hosts.on_hosts(engine, rows, lambda conn, r: _client.read_host_facts(conn, r["domain_type_setting"]),
                               timeout)
    return [outcomes[r["name"]] for r in rows]


def observed_status(row_status, facts, reason, problems=()):
    """The status a probe implies; Maintenance is an administrator's decision and stays.

    ``problems`` are what the host lacks of its cluster's storage domains and required networks:
    such a host answers but is not used (NonOperational) until they are fixed.
    """
    if facts is None:
        return "NonResponsive", reason
    if row_status in ("Maintenance", "PreparingForMaintenance"):
        return row_status, ""
    if problems:
        return "NonOperational", "; ".join(problems)
    return "Up", ""


def converge(engine, cur, host, check_mode=False, timeout=15):
    """Realize the cluster's storage domains and networks on the host: (actions, problems)."""
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _network, _storage

    try:
        conn = _hosts.connect(engine, host, timeout)
    except HypervisorError as exc:
        return [], [str(exc)]
    actions, problems = _storage.realize_on_host(cur, conn, host, check_mode)
    net_actions, net_problems = _network.realize_on_host(cur, conn, host, check_mode)
    return actions + net_actions, problems + net_problems


def _same_machine(cur, facts, name):
    if not facts or facts["hypervisor_type"] == "TEST" or not facts.get("hardware_uuid"):
        return None
    cur.execute("SELECT name FROM host WHERE hardware_uuid = %s AND name <> %s", (facts["hardware_uuid"], name))
    other = cur.fetchone()
    return other["name"] if other else None


_NIC = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def validate_address(field, value):
    """A management address: a host name or an IP address, matched whole."""
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    return validate_pattern(field, value, _HOSTNAME, "a host name or an IP address")


def ensure_present(engine, name, cluster=None, libvirt_uri=None, address=None, domain_type=None,
                   probe_timeout=15, check_mode=False, network_nic=None):
    validate_name("name", name)
    if network_nic is not None:
        validate_pattern("network_nic", network_nic, _NIC, "a network interface name (1-15 letters, digits, '.', "
                                                           "'_' or '-')")
    if cluster is not None:
        validate_name("cluster", cluster)
    address = validate_address("address", address)
    validate_timeout("probe_timeout", probe_timeout)
    if libvirt_uri is not None:
        _client.validate_uri(libvirt_uri, allow_test_driver=engine.allow_test_driver)
    with engine.transaction() as cur:
        current = find(cur, name)
    action = "update host '%s'" % name if current else "register host '%s'" % name
    if current is None:
        for field, value in (("cluster", cluster), ("libvirt_uri", libvirt_uri)):
            if value is None:
                raise ValidationError(field, "is required to %s" % action)
    uri = libvirt_uri or current["libvirt_uri"]
    setting = domain_type or (current["domain_type_setting"] if current else "auto")
    # Talk to the host before taking any lock: a dead host must not stall other writers.
    facts, reason = probe(engine, {"name": name, "libvirt_uri": uri}, probe_timeout, setting)
    if current is None and facts is None:
        raise HypervisorError("Cannot register host '%s': %s" % (name, reason))
    if current is not None and uri != current["libvirt_uri"] and facts is None:
        # as for a registration: a URI that does not answer is not taken, the host keeps the one it has
        raise HypervisorError("Cannot %s: %s; it keeps libvirt URI %s"
                              % (action, reason, _client.redact_uri(current["libvirt_uri"])))
    if address is None and current is None:
        address = validate_address("libvirt_uri", urlsplit(uri).hostname)
    with engine.transaction() as cur:
        cluster_name = cluster or current["cluster"]
        Engine.lock(cur, LOCK_CLUSTER, cluster_name)
        # read after the lock: a cluster removed meanwhile is reported, not hit as a foreign key
        target = _cluster.require(cur, cluster_name, action, lock=True)
        row = find(cur, name, lock=True)
        twin = _same_machine(cur, facts, name)
        if twin:
            raise ConflictError("Cannot %s: libvirt at %s is the same machine as host '%s' (host UUID %s)"
                                % (action, uri, twin, facts["hardware_uuid"]))
        if row is None:
            return _register(engine, cur, name, target, uri, address, setting, facts, check_mode, probe_timeout,
                             network_nic)
        # before converge: moving the host, or its networks to another NIC, would pull them from under its VMs
        nic_change = network_nic is not None and network_nic != row["network_nic"]
        vms = _vms_on(cur, row["id"]) if row["cluster_id"] != target["id"] or nic_change else []
        if vms and row["cluster_id"] != target["id"]:
            raise ConflictError("Cannot move host '%s' to cluster '%s': VMs %s run on it; migrate them or "
                                "stop them first" % (name, target["name"], ", ".join(vms)))
        if vms:
            raise ConflictError("Cannot change the network NIC of host '%s' from %s to %s: VMs %s run on it and "
                                "their networks would move under them; migrate them or stop them first"
                                % (name, row["network_nic"] or "(none)", network_nic, ", ".join(vms)))
        converged = ([], [])
        if facts is not None and row["status"] not in ("Maintenance", "PreparingForMaintenance"):
            moved = dict(row, cluster_id=target["id"], libvirt_uri=uri, network_nic=network_nic or row["network_nic"])
            converged = converge(engine, cur, moved, check_mode, probe_timeout)
        return _update(cur, row, target, dict(libvirt_uri=uri, address=address, domain_type_setting=setting,
                                              network_nic=network_nic),
                       facts, reason, check_mode, converged)


def _register(engine, cur, name, cluster, uri, address, setting, facts, check_mode, timeout=15, network_nic=None):
    values = dict(facts, name=name, cluster_id=cluster["id"], libvirt_uri=uri, address=address,
                  domain_type_setting=setting, network_nic=network_nic, status="Up", status_reason="")
    after = view(dict(values, cluster=cluster["name"], datacenter=cluster["datacenter"]))
    after.pop("id")
    resource = dict(after, id=None)
    actions = ["register"]
    if not check_mode:
        row = insert_row(cur, "host", dict(values, last_seen_at=_now(cur)))
        # the cluster's storage domains and networks come to the new host now
        realized, problems = converge(engine, cur, row, False, timeout)
        actions += realized
        if problems:
            status, status_reason = observed_status("Up", facts, None, problems)
            row = update_row(cur, "host", row["id"], {"status": status, "status_reason": status_reason})
            after.update(status=status, status_reason=status_reason)
        resource = view(dict(row, cluster=cluster["name"], datacenter=cluster["datacenter"]))
        _events.record(cur, "HOST_ADDED", "Host %s was added to cluster %s (%s, %d CPUs, %d MiB)"
                       % (name, cluster["name"], facts["domain_type"], facts["cpu_count"], facts["memory_mib"]),
                       object_type="host", object_id=row["id"], object_name=name,
                       datacenter=cluster["datacenter"], cluster=cluster["name"], host=name)
    visible = {k: after[k] for k in VISIBLE}
    return Outcome(True, {}, visible, resource, actions)


def _now(cur):
    cur.execute("SELECT now() AS now")
    return cur.fetchone()["now"]


def _update(cur, row, cluster, config, facts, reason, check_mode, converged=([], [])):
    """Apply ``config`` (None values: keep) and what the probe found (``facts`` or ``reason``).

    ``converged`` is what realizing the cluster's resources did and found missing (actions, problems).
    """
    name = row["name"]
    realized, problems = converged
    status, status_reason = observed_status(row["status"], facts, reason, problems)
    observed = {k: v for k, v in (facts or {}).items() if k not in MONITORED}
    desired = dict(observed, cluster_id=cluster["id"], status=status, status_reason=status_reason, **config)
    changes = changed_fields(row, desired)
    monitored = changed_fields(row, {k: v for k, v in (facts or {}).items() if k in MONITORED and k != "cpu_mhz"})
    if "cluster_id" in changes:
        vms = _vms_on(cur, row["id"])
        if vms:
            raise ConflictError("Cannot move host '%s' to cluster '%s': VMs %s run on it; migrate them or stop "
                                "them first" % (name, cluster["name"], ", ".join(vms)))
    shown_row = dict(row)
    shown_new = dict(row, **changes, cluster=cluster["name"], datacenter=cluster["datacenter"])
    before = {k: plain(shown_row.get(k)) for k in VISIBLE if plain(shown_row.get(k)) != plain(shown_new.get(k))}
    after = {k: plain(shown_new.get(k)) for k in before}
    if not changes:
        if facts is not None and not check_mode:
            if monitored:
                row = dict(row, **update_row(cur, "host", row["id"], monitored))
            cur.execute("UPDATE host SET last_seen_at = now() WHERE id = %s", (row["id"],))
        return Outcome(bool(realized), resource=view(row), actions=list(realized))
    if not check_mode:
        if "status" in changes:
            changes["status_changed_at"] = _now(cur)
        if facts is not None:
            changes["last_seen_at"] = _now(cur)
        updated = update_row(cur, "host", row["id"], dict(changes, **monitored))
        shown_new = dict(updated, cluster=cluster["name"], datacenter=cluster["datacenter"])
        _record_update(cur, row, cluster, before, after)
    actions = ["update"] if set(changes) - {"status", "status_reason", "status_changed_at", "last_seen_at"} else []
    actions += realized
    if "status" in before:
        actions.append("status %s -> %s" % (before["status"], after["status"]))
    return Outcome(True, before, after, view(shown_new), actions)


def _record_update(cur, row, cluster, before, after):
    name = row["name"]
    context = dict(object_type="host", object_id=row["id"], object_name=name, datacenter=cluster["datacenter"],
                   cluster=cluster["name"], host=name)
    if "status" in after:
        severity = "normal" if after["status"] == "Up" else "warning"
        message = "Host %s is %s" % (name, after["status"])
        if after.get("status_reason"):
            message += ": %s" % after["status_reason"]
        _events.record(cur, "HOST_STATUS_CHANGED", message, severity=severity,
                       details={"from": before["status"], "to": after["status"]}, **context)
    config = sorted(set(after) - {"status", "status_reason"})
    if config:
        _events.record(cur, "HOST_UPDATED", "Host %s was updated: %s" % (name, ", ".join(config)),
                       details={"before": {k: before[k] for k in config}, "after": {k: after[k] for k in config}},
                       **context)


def ensure_absent(engine, name, check_mode=False):
    validate_name("name", name)
    with engine.transaction() as cur:
        row = find(cur, name)
        if row is None:
            return Outcome(False)
        Engine.lock(cur, LOCK_CLUSTER, row["cluster"])
        row = find(cur, name, lock=True)
        vms = _vms_on(cur, row["id"])
        if vms:
            raise ConflictError("Cannot remove host '%s': VMs %s run on it; migrate them or stop them first"
                                % (name, ", ".join(vms)))
        cur.execute("SELECT name FROM storage_domain WHERE host_id = %s ORDER BY name", (row["id"],))
        local = [r["name"] for r in cur.fetchall()]
        if local:
            raise ConflictError("Cannot remove host '%s': it holds the 'dir' storage domains %s; remove them first"
                                % (name, ", ".join(local)))
        before = view(row)
        if not check_mode:
            cur.execute("DELETE FROM host WHERE id = %s", (row["id"],))
            _events.record(cur, "HOST_REMOVED", "Host %s was removed from cluster %s" % (name, row["cluster"]),
                           object_type="host", object_id=row["id"], object_name=name,
                           datacenter=row["datacenter"], cluster=row["cluster"], host=name)
        return Outcome(True, before, {}, None, ["remove"])


def _rows(cur, names=None, cluster=None):
    clauses, args = [], []
    if names:
        clauses.append("h.name = ANY(%s)")
        args.append(list(names))
    if cluster:
        clauses.append("c.name = %s")
        args.append(cluster)
    cur.execute(_SELECT + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY h.name", args)
    return cur.fetchall()


def host_info(engine, names=None, cluster=None, refresh=False, probe_timeout=15, check_mode=False):
    """Hosts with status and capabilities; with ``refresh``, check each host now and record changes.

    Returns (changed, hosts). The checks run in parallel and before any lock is taken, so one
    dead host costs ``probe_timeout`` once, not once per host.
    """
    for host_name in names or []:
        validate_name("name", host_name)
    if cluster is not None:
        validate_name("cluster", cluster)
    validate_timeout("probe_timeout", probe_timeout)
    with engine.transaction() as cur:
        rows = _rows(cur, names, cluster)
    missing = sorted(set(names or []) - {r["name"] for r in rows})
    if missing:
        raise NotFoundError("host", ", ".join(missing))
    if not refresh:
        return False, [view(r) for r in rows]
    probes = probe_all(engine, rows, probe_timeout)
    changed, hosts = False, []
    for row, (facts, reason) in zip(rows, probes):  # noqa: B905 - same length; strict= needs Python 3.10
        with engine.transaction() as cur:
            Engine.lock(cur, LOCK_CLUSTER, row["cluster"])
            current = find(cur, row["name"], lock=True)
            if current is None:
                continue  # removed meanwhile
            cluster_row = {"id": current["cluster_id"], "name": current["cluster"],
                           "datacenter": current["datacenter"]}
            converged = ([], [])
            if facts is not None and current["status"] not in ("Maintenance", "PreparingForMaintenance"):
                converged = converge(engine, cur, current, check_mode, probe_timeout)
            outcome = _update(cur, current, cluster_row, {}, facts, reason, check_mode, converged)
        changed = changed or outcome.changed
        hosts.append(outcome.resource)
    return changed, hosts
