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
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _reports
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import schema_version
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import plain
from ansible_collections.virtplane.kvm.plugins.module_utils.virt._client import redact_uri

# one page of the audit log; more is paged with since
EVENT_LIMIT_MAX = 10000
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def engine_summary(engine):
    """Everything at a glance: counts, statuses and the data center > cluster > host tree."""
    with engine.transaction() as cur:
        counts = _reports.counts(cur)
        hosts_by_status = _reports.hosts_by_status(cur)
        vms_by_status = _reports.vms_by_status(cur)
        dc_rows, cluster_rows, hosts = _reports.tree_rows(cur)
        version = schema_version(engine.conn)
    datacenters = [dict(r, clusters=[]) for r in dc_rows]
    clusters = [dict(r, hosts=[]) for r in cluster_rows]
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


def jobs(engine, statuses=None, object_type=None, object_name=None, limit=100):
    """The engine's jobs (reservations of long work), newest first."""
    validate_range("limit", limit, 1, EVENT_LIMIT_MAX)
    if object_name is not None:
        validate_name("object_name", object_name)
    with engine.transaction() as cur:
        return plain(_reports.jobs(cur, list(statuses) if statuses else None, object_type, object_name, limit))


def events(engine, severity=None, object_type=None, object_name=None, code=None, since=None, limit=100):
    """The audit log, newest first, filtered."""
    validate_range("limit", limit, 1, EVENT_LIMIT_MAX)
    if object_name is not None:
        validate_name("object_name", object_name)
    if code is not None:
        validate_pattern("code", code, _CODE, "an event code (upper-case letters, digits and '_', e.g. HOST_ADDED)")
    since_ts = _parse_since(since)
    with engine.transaction() as cur:
        return plain(_reports.events(cur, severity, object_type, object_name, code, since_ts, limit))
