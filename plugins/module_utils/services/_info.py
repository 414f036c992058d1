# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only views of the engine: the data center tree with counts, and the audit log."""

from __future__ import annotations

import datetime
import re

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import (
    shown,
    validate_name,
    validate_pattern,
    validate_range,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import schema_version
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import plain
from ansible_collections.virtplane.kvm.plugins.module_utils.virt._client import redact_uri

# one page of the audit log; more is paged with since
EVENT_LIMIT_MAX = 10000
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_COUNTED = ("datacenter", "cluster", "host", "vm", "storage_domain", "logical_network", "disk", "template",
            "snapshot", "affinity_group", "event")


def engine_summary(engine):
    """Everything at a glance: counts, statuses and the data center > cluster > host tree."""
    with engine.transaction() as cur:
        cur.execute("SELECT " + ", ".join("(SELECT count(*) FROM %s) AS %s" % (t, t) for t in _COUNTED))
        counts = {k + "s": v for k, v in cur.fetchone().items()}
        cur.execute("SELECT status, count(*) AS n FROM host GROUP BY status ORDER BY status")
        hosts_by_status = {r["status"]: r["n"] for r in cur.fetchall()}
        cur.execute("SELECT status, count(*) AS n FROM vm GROUP BY status ORDER BY status")
        vms_by_status = {r["status"]: r["n"] for r in cur.fetchall()}
        cur.execute("SELECT id, name, description, storage_type FROM datacenter ORDER BY name")
        datacenters = [dict(r, clusters=[]) for r in cur.fetchall()]
        cur.execute("SELECT c.id, c.name, c.datacenter_id, c.scheduling_policy,"
                    " (SELECT count(*) FROM vm WHERE vm.cluster_id = c.id) AS vms FROM cluster c ORDER BY c.name")
        clusters = [dict(r, hosts=[]) for r in cur.fetchall()]
        cur.execute("SELECT name, cluster_id, status, status_reason, libvirt_uri, domain_type, cpu_count,"
                    " memory_mib FROM host ORDER BY name")
        hosts = cur.fetchall()
        version = schema_version(engine.conn)
    by_cluster = {c["id"]: c for c in clusters}
    for host in hosts:
        by_cluster[host.pop("cluster_id")]["hosts"].append(host)
    by_dc = {d["id"]: d for d in datacenters}
    for cluster in clusters:
        by_dc[cluster.pop("datacenter_id")]["clusters"].append(cluster)
    tree = plain(datacenters)
    for dc in tree:
        dc.pop("id")
        for cluster in dc["clusters"]:
            cluster.pop("id")
    return {
        "schema_version": version,
        "counts": counts,
        "hosts_by_status": hosts_by_status,
        "vms_by_status": vms_by_status,
        "datacenters": tree,
        "summary": summary_lines(version, counts, tree),
    }


def summary_lines(version, counts, tree):
    lines = ["engine schema v%d: %d data centers, %d clusters, %d hosts, %d VMs, %d storage domains, "
             "%d logical networks" % (version, counts["datacenters"], counts["clusters"], counts["hosts"],
                                      counts["vms"], counts["storage_domains"], counts["logical_networks"])]
    for dc in tree:
        lines.append("data center %s (%s storage)" % (dc["name"], dc["storage_type"]))
        for cluster in dc["clusters"]:
            lines.append("  cluster %s: %d hosts, %d VMs, scheduling %s"
                         % (cluster["name"], len(cluster["hosts"]), cluster["vms"], cluster["scheduling_policy"]))
            for host in cluster["hosts"]:
                line = "    host %s: %s, %s CPUs, %s MiB, %s via %s" % (
                    host["name"], host["status"], host["cpu_count"], host["memory_mib"], host["domain_type"],
                    redact_uri(host["libvirt_uri"]))
                if host["status_reason"]:
                    line += " (%s)" % host["status_reason"]
                lines.append(line)
    return lines


def _parse_since(value):
    if value is None:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError("since", "%s is not an ISO 8601 timestamp (e.g. 2026-01-31T08:00:00+00:00)"
                              % shown(value))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)  # noqa: UP017 - datetime.UTC needs Python 3.11
    return parsed


def events(engine, severity=None, object_type=None, object_name=None, code=None, since=None, limit=100):
    """The audit log, newest first, filtered."""
    validate_range("limit", limit, 1, EVENT_LIMIT_MAX)
    if object_name is not None:
        validate_name("object_name", object_name)
    if code is not None:
        validate_pattern("code", code, _CODE, "an event code (upper-case letters, digits and '_', e.g. HOST_ADDED)")
    clauses, args = [], []
    for column, value in (("object_type", object_type), ("object_name", object_name), ("code", code)):
        if value is not None:
            clauses.append("%s = %%s" % column)
            args.append(value)
    if severity:
        clauses.append("severity = ANY(%s)")
        args.append(list(severity))
    since_ts = _parse_since(since)
    if since_ts is not None:
        clauses.append("occurred_at >= %s")
        args.append(since_ts)
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    with engine.transaction() as cur:
        cur.execute("SELECT id, occurred_at, severity, code, message, object_type, object_name, datacenter_name,"
                    " cluster_name, host_name, vm_name, actor, correlation_id, details FROM event" + where
                    + " ORDER BY id DESC LIMIT %s", args + [limit])
        return plain(cur.fetchall())
