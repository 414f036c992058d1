# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only views of the engine: counts, statuses, the data center tree, the audit log, jobs."""

from __future__ import annotations

_COUNTED = ("datacenter", "cluster", "host", "vm", "storage_domain", "logical_network", "disk", "template",
            "snapshot", "affinity_group", "event")


def counts(cur):
    cur.execute("SELECT " + ", ".join("(SELECT count(*) FROM %s) AS %s" % (t, t) for t in _COUNTED))
    return {k + "s": v for k, v in cur.fetchone().items()}


def hosts_by_status(cur):
    cur.execute("SELECT status, count(*) AS n FROM host GROUP BY status ORDER BY status")
    return {r["status"]: r["n"] for r in cur.fetchall()}


def vms_by_status(cur):
    cur.execute("SELECT r.status, count(*) AS n FROM vm v JOIN vm_runtime r ON r.vm_id = v.id"
                " GROUP BY r.status ORDER BY r.status")
    return {r["status"]: r["n"] for r in cur.fetchall()}


def tree_rows(cur):
    """(data centers, clusters, hosts) rows for the data center > cluster > host tree."""
    cur.execute("SELECT id, name, description, storage_type FROM datacenter ORDER BY name")
    datacenters = cur.fetchall()
    cur.execute("SELECT c.id, c.name, c.datacenter_id, c.scheduling_policy,"
                " (SELECT count(*) FROM vm WHERE vm.cluster_id = c.id) AS vms FROM cluster c ORDER BY c.name")
    clusters = cur.fetchall()
    cur.execute("SELECT name, cluster_id, status, status_reason, libvirt_uri, domain_type, cpu_count,"
                " memory_mib FROM host ORDER BY name")
    return datacenters, clusters, cur.fetchall()


def jobs(cur, statuses=None, object_type=None, object_name=None, limit=100):
    """Jobs, newest first, with whether a running one has outlived its lease (its run died)."""
    cur.execute("SELECT id, action, description, status, object_type, object_name, progress, actor, owner,"
                " started_at, ended_at, heartbeat_at, lease_seconds, result,"
                " (status = 'running' AND heartbeat_at + lease_seconds * interval '1 second' < clock_timestamp())"
                " AS expired"
                " FROM job WHERE (%s::text[] IS NULL OR status = ANY(%s)) AND (%s::text IS NULL OR object_type = %s)"
                " AND (%s::text IS NULL OR object_name = %s) ORDER BY started_at DESC LIMIT %s",
                (statuses, statuses, object_type, object_type, object_name, object_name, limit))
    return cur.fetchall()


def events(cur, severity=None, object_type=None, object_name=None, code=None, since=None, limit=100):
    """The audit log, newest first, filtered."""
    clauses, args = [], []
    for column, value in (("object_type", object_type), ("object_name", object_name), ("code", code)):
        if value is not None:
            clauses.append("%s = %%s" % column)
            args.append(value)
    if severity:
        clauses.append("severity = ANY(%s)")
        args.append(list(severity))
    if since is not None:
        clauses.append("occurred_at >= %s")
        args.append(since)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    cur.execute("SELECT id, occurred_at, severity, code, message, object_type, object_name, datacenter_name,"
                " cluster_name, host_name, vm_name, actor, correlation_id, details, job_id FROM event" + where
                + " ORDER BY id DESC LIMIT %s", args + [limit])
    return cur.fetchall()
