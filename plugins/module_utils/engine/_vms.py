# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""VM rows: the definition (vm, vm_nic, vm_disk) and the runtime (vm_runtime), read in bulk."""

from __future__ import annotations

import uuid

from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _rows

# one row per VM with everything a re-apply compares: its NICs and disks folded in, its runtime beside it
SELECT = (
    "SELECT v.*, c.name AS cluster, c.datacenter_id, d.name AS datacenter, c.cpu_model AS cluster_cpu_model,"
    " r.status, r.status_reason, r.status_changed_at, r.run_host_id, r.reserved_vcpus, r.reserved_memory_mib,"
    " r.job_id, r.console, r.guest_addresses, r.running_config, r.saved_state, h.name AS host,"
    " h.libvirt_uri AS host_uri, h.address AS host_address,"
    " COALESCE((SELECT json_agg(json_build_object('name', n.name, 'network', ln.name, 'mac', n.mac::text,"
    "   'model', n.model) ORDER BY n.position, n.name) FROM vm_nic n JOIN logical_network ln ON ln.id = n.network_id"
    "   WHERE n.vm_id = v.id), '[]') AS nics,"
    " COALESCE((SELECT json_agg(json_build_object('name', k.name, 'storage_domain', s.name, 'bus', vd.bus,"
    "   'target', vd.target, 'bootable', vd.bootable, 'format', k.format, 'volume', k.volume_name,"
    "   'disk_id', k.id, 'status', k.status, 'storage_domain_id', s.id, 'size_bytes', k.size_bytes)"
    "   ORDER BY vd.target) FROM vm_disk vd JOIN disk k ON k.id = vd.disk_id"
    "   JOIN storage_domain s ON s.id = k.storage_domain_id WHERE vd.vm_id = v.id), '[]') AS disks"
    " FROM vm v JOIN cluster c ON c.id = v.cluster_id JOIN datacenter d ON d.id = c.datacenter_id"
    " JOIN vm_runtime r ON r.vm_id = v.id LEFT JOIN host h ON h.id = r.run_host_id")


def find(cur, name, lock=False, now=False):
    """The VM's row (None: no such VM); ``lock``: locked until the transaction ends; ``now``: with the transaction's
    time (``now``) read in the same statement."""
    send_find(cur, name, lock, now)
    return cur.fetchone()


def send_find(cur, name, lock=False, now=False):
    """``find``'s statement, sent: ``cur.fetchone()`` reads its answer (in pipeline mode, with what was sent with
    it; psycopg before 3.2 then needs the cursor to have no other answer unread)."""
    select = "SELECT now() AS now, " + SELECT[len("SELECT "):] if now else SELECT
    cur.execute(select + " WHERE v.name = %s" + (" FOR UPDATE OF v, r" if lock else ""), (name,))


def by_names(cur, names):
    """{name: row} of the VMs of these names: what a bulk apply reads, in one query."""
    cur.execute(SELECT + " WHERE v.name = ANY(%s)", (list(names),))
    return {r["name"]: r for r in cur.fetchall()}


def listed(cur, names=None, cluster=None, host=None, tags=None, statuses=None):
    clauses, args = [], []
    for clause, value in (("v.name = ANY(%s)", names), ("c.name = %s", cluster), ("h.name = %s", host),
                          ("v.tags && %s", tags), ("r.status = ANY(%s)", statuses)):
        if value:
            clauses.append(clause)
            args.append(list(value) if isinstance(value, (list, tuple, set)) else value)
    cur.execute(SELECT + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY v.name", args)
    return cur.fetchall()


def insert(cur, values):
    row = _rows.insert(cur, "vm", values)
    cur.execute("INSERT INTO vm_runtime (vm_id) VALUES (%s)", (row["id"],))
    return row


def update(cur, vm_id, changes):
    return _rows.update(cur, "vm", vm_id, changes)


def delete(cur, vm_id):
    _rows.delete(cur, "vm", vm_id)


def set_runtime(cur, vm_id, **changes):
    """Change the runtime (status, host, reservation, job ...); a status change is timed."""
    assignments = ", ".join("%s = %%s" % column for column in sorted(changes))
    values = [_rows._adapt(changes[c]) for c in sorted(changes)]  # pylint: disable=protected-access
    timed = ", status_changed_at = CASE WHEN status IS DISTINCT FROM %s THEN now() ELSE status_changed_at END" \
        if "status" in changes else ""
    cur.execute("UPDATE vm_runtime SET " + assignments + timed + ", updated_at = now() WHERE vm_id = %s",
                values + ([changes["status"]] if timed else []) + [vm_id])


def set_tags(cur, vm_id, tags):
    cur.execute("UPDATE vm SET tags = %s::text[] WHERE id = %s", (list(tags), vm_id))


def set_nics(cur, vm_id, nics):
    """The VM's NICs become ``nics`` ({name, network_id, mac, model})."""
    cur.execute("DELETE FROM vm_nic WHERE vm_id = %s", (vm_id,))
    for position, nic in enumerate(nics):
        cur.execute("INSERT INTO vm_nic (vm_id, name, network_id, mac, model, position) VALUES (%s, %s, %s, %s, %s,"
                    " %s)", (vm_id, nic["name"], nic["network_id"], nic["mac"], nic["model"], position))


def networks(cur, datacenter_id, names):
    """{name: id} of these logical networks of the data center."""
    cur.execute("SELECT id, name FROM logical_network WHERE datacenter_id = %s AND name = ANY(%s)",
                (datacenter_id, list(names)))
    return {r["name"]: r["id"] for r in cur.fetchall()}


def macs_in_use(cur, macs, vm_id):
    """{mac: vm name} of these MACs held by other VMs."""
    cur.execute("SELECT n.mac::text AS mac, v.name FROM vm_nic n JOIN vm v ON v.id = n.vm_id"
                " WHERE n.mac = ANY(%s::macaddr[]) AND n.vm_id IS DISTINCT FROM %s", (list(macs), vm_id))
    return {r["mac"]: r["name"] for r in cur.fetchall()}


def mac_pool(cur, datacenter_id):
    cur.execute("SELECT range_start::text AS start, range_end::text AS end FROM mac_pool WHERE datacenter_id = %s",
                (datacenter_id,))
    return cur.fetchone()


def macs_in_range(cur, start, end):
    cur.execute("SELECT mac::text AS mac FROM vm_nic WHERE mac BETWEEN %s::macaddr AND %s::macaddr", (start, end))
    return {r["mac"] for r in cur.fetchall()}


# a host as placement weighs it: capacity, what running VMs reserve, what is realized (``h``: host, ``c``: cluster)
_PLACEMENT_HOST = (
    "SELECT h.id, h.name, h.status, h.status_reason, h.libvirt_uri, h.address, h.domain_type, h.memory_mib,"
    " h.cpu_count, h.reserved_memory_mib, h.reserved_cpus, h.schedulable_memory_mib, h.schedulable_cpus,"
    " c.memory_overcommit_percent, c.cpu_overcommit_ratio,"
    " held.committed_memory_mib, held.committed_vcpus, held.vms, held.ha_memory_mib, held.ha_vms,"
    " COALESCE((SELECT st.cpu_percent FROM host_statistics st WHERE st.host_id = h.id), 0)::float"
    "   AS cpu_load_percent,"
    " ARRAY(SELECT jsonb_array_elements_text(h.cpu_features)) AS cpu_features, h.cpu_models,"
    " ARRAY(SELECT n.name::text FROM host_network hn JOIN logical_network n ON n.id = hn.network_id"
    "   WHERE hn.host_id = h.id AND hn.realized) AS networks,"
    " ARRAY(SELECT s.name::text FROM storage_domain_host sh JOIN storage_domain s ON s.id = sh.storage_domain_id"
    "   WHERE sh.host_id = h.id AND sh.active AND s.state = 'active') AS storage_domains"
    " FROM host h JOIN cluster c ON c.id = h.cluster_id"
    # what the host's VMs hold, in one pass over them
    " CROSS JOIN LATERAL (SELECT COALESCE(sum(r.reserved_memory_mib), 0)::bigint AS committed_memory_mib,"
    "   COALESCE(sum(r.reserved_vcpus), 0)::integer AS committed_vcpus, count(*) AS vms,"
    "   COALESCE(sum(r.reserved_memory_mib) FILTER (WHERE v.ha_enabled), 0)::bigint AS ha_memory_mib,"
    "   count(*) FILTER (WHERE v.ha_enabled) AS ha_vms"
    # (a VM migrating to the host holds its reservation there too, until the migration ends)
    "   FROM vm_runtime r JOIN vm v ON v.id = r.vm_id WHERE r.run_host_id = h.id"
    "   OR r.migrating_to_host_id = h.id) held")


def placement_hosts(cur, cluster_id, host_ids=None):
    """The cluster's hosts (of ``host_ids``, when given) with what placement weighs: capacity, what running VMs
    reserve, what is realized."""
    cur.execute(_PLACEMENT_HOST + " WHERE h.cluster_id = %s AND (%s::uuid[] IS NULL OR h.id = ANY(%s::uuid[]))"
                " ORDER BY h.name", (cluster_id, host_ids, host_ids))
    return cur.fetchall()


def placement_locations(cur, cluster_id, host_ids=None):
    """{VM name: host name} of the cluster's VMs that hold a host (of ``host_ids``, when given)."""
    cur.execute("SELECT v.name, h.name AS host FROM vm v JOIN vm_runtime r ON r.vm_id = v.id"
                " JOIN host h ON h.id = r.run_host_id WHERE v.cluster_id = %s"
                " AND (%s::uuid[] IS NULL OR h.id = ANY(%s::uuid[]))", (cluster_id, host_ids, host_ids))
    return {r["name"]: r["host"] for r in cur.fetchall()}


def placement_changes(cur, cluster_id, snapshot=None, own=None):
    """What changed for the cluster's placement since ``snapshot`` (a pg_snapshot's text, and ``own``: the id of
    the transaction that took it, whose own changes it saw as made): {snapshot, own: the current ones,
    everything: whether the whole cluster must be read again, hosts: ids of the hosts to read again}."""
    cur.execute(
        "SELECT pg_current_snapshot()::text AS snapshot, pg_current_xact_id_if_assigned()::text AS own,"
        " COALESCE(bool_or(c.host_id IS NULL), false) AS everything,"
        " COALESCE(array_agg(DISTINCT c.host_id) FILTER (WHERE c.host_id IS NOT NULL), '{}') AS hosts"
        " FROM (SELECT 1) one LEFT JOIN placement_change c ON %(snap)s::pg_snapshot IS NOT NULL"
        "  AND (c.cluster_id = %(cluster)s OR c.cluster_id IS NULL)"
        "  AND c.xid >= pg_snapshot_xmin(%(snap)s::pg_snapshot)"
        "  AND (NOT pg_visible_in_snapshot(c.xid, %(snap)s::pg_snapshot) OR c.xid = %(own)s::xid8)",
        {"snap": snapshot, "cluster": cluster_id, "own": own})
    return cur.fetchone()


def send_placement_update(cur, cluster_id, snapshot, own):
    """``placement_changes`` and what changed, asked in one statement (one snapshot) on ``cur``;
    ``placement_update_answer(cur)`` reads the answer (in pipeline mode, with what was sent with it): {snapshot,
    own, everything, hosts: ids of the hosts to read again, entries: those of them still in the cluster (as
    ``placement_hosts`` returns them), locations: {VM name: host name} of the VMs on them, deltas: [host id, VM
    name, memory MiB, vCPUs, HA, sign] of the reservations that came (sign 1) or went (-1) on the other hosts, in
    order}; entries, locations and deltas are None when everything must be read again."""
    cur.execute(
        "WITH changed AS (SELECT c.id, c.host_id, c.vm_name, c.memory_mib, c.vcpus, c.ha, c.sign"
        "  FROM placement_change c WHERE (c.cluster_id = %(cluster)s OR c.cluster_id IS NULL)"
        "  AND c.xid >= pg_snapshot_xmin(%(snap)s::pg_snapshot)"
        "  AND (NOT pg_visible_in_snapshot(c.xid, %(snap)s::pg_snapshot) OR c.xid = %(own)s::xid8)),"
        " found AS (SELECT EXISTS (SELECT 1 FROM changed WHERE host_id IS NULL) AS everything,"
        "  ARRAY(SELECT DISTINCT host_id FROM changed WHERE host_id IS NOT NULL AND sign IS NULL) AS ids)"
        " SELECT pg_current_snapshot()::text AS snapshot, pg_current_xact_id_if_assigned()::text AS own,"
        " f.everything, f.ids AS hosts,"
        # reservations that came or went on the hosts not read again, in the order they were made
        " CASE WHEN NOT f.everything THEN COALESCE((SELECT jsonb_agg(jsonb_build_array(d.host_id, d.vm_name,"
        "   d.memory_mib, d.vcpus, d.ha, d.sign) ORDER BY d.id) FROM changed d WHERE d.sign IS NOT NULL"
        "   AND d.host_id <> ALL(f.ids)), '[]') END AS deltas,"
        # the changed hosts by their keys (ANY of an array: an index scan whatever the statistics say); CASE
        # evaluates a branch only when taken, so that a question without hosts to read again reads none
        " CASE WHEN f.everything THEN NULL WHEN cardinality(f.ids) = 0 THEN '[]' ELSE COALESCE((SELECT"
        "   jsonb_agg(to_jsonb(e)) FROM (" + _PLACEMENT_HOST +
        "   WHERE h.id = ANY(f.ids) AND h.cluster_id = %(cluster)s) e), '[]') END AS entries,"
        " CASE WHEN f.everything THEN NULL WHEN cardinality(f.ids) = 0 THEN '{}' ELSE COALESCE((SELECT"
        "   jsonb_object_agg(v.name, h.name) FROM vm_runtime r JOIN host h ON h.id = r.run_host_id"
        "   JOIN vm v ON v.id = r.vm_id WHERE r.run_host_id = ANY(f.ids) AND v.cluster_id = %(cluster)s), '{}') END"
        " AS locations"
        " FROM found f", {"snap": snapshot, "cluster": cluster_id, "own": own})


def placement_update_answer(cur):
    row = cur.fetchone()
    if row["entries"] is not None:
        for entry in row["entries"]:
            entry["id"] = uuid.UUID(entry["id"])
    return row


def prune_placement_changes(cur, keep_seconds):
    with cur.connection.cursor() as own:  # its answer is not read: a cursor of its own (see _db.Engine.lock)
        own.execute("DELETE FROM placement_change WHERE created_at < clock_timestamp() - %s * interval '1 second'",
                    (keep_seconds,))


def placement_context(cur, cluster_id):
    """What the scheduler needs of the cluster besides its hosts: its policy, the HA reservation, its CPU model,
    where its VMs run ({name: host}) and its affinity groups with their VMs and hosts."""
    cur.execute("SELECT scheduling_policy, ha_reservation, cpu_model FROM cluster WHERE id = %s", (cluster_id,))
    cluster = cur.fetchone()
    locations = placement_locations(cur, cluster_id)
    cur.execute("SELECT g.name, g.vm_rule, g.vm_enforcing, g.host_rule, g.host_enforcing, g.priority,"
                " ARRAY(SELECT v.name::text FROM affinity_group_vm gv JOIN vm v ON v.id = gv.vm_id"
                "   WHERE gv.group_id = g.id ORDER BY v.name) AS vms,"
                " ARRAY(SELECT h.name::text FROM affinity_group_host gh JOIN host h ON h.id = gh.host_id"
                "   WHERE gh.group_id = g.id ORDER BY h.name) AS hosts"
                " FROM affinity_group g WHERE g.cluster_id = %s ORDER BY g.name", (cluster_id,))
    return {"policy": cluster["scheduling_policy"], "ha_reservation": cluster["ha_reservation"],
            "cpu_model": cluster["cpu_model"], "vms": locations, "groups": cur.fetchall()}


def largest_host(cur, cluster_id):
    """(memory MiB, CPUs) the cluster's largest host gives VMs — what it reported, at most its cap, less its
    reserve (as ``scheduler.capacity`` counts them) — or None without a host that reported them."""
    cur.execute("SELECT max(GREATEST(0, LEAST(memory_mib, NULLIF(schedulable_memory_mib, 0)) - reserved_memory_mib))"
                "   AS memory_mib,"
                " COALESCE(max(GREATEST(0, LEAST(cpu_count, NULLIF(schedulable_cpus, 0)) - reserved_cpus)), 0)"
                "   AS cpu_count"
                " FROM host WHERE cluster_id = %s AND memory_mib IS NOT NULL", (cluster_id,))
    row = cur.fetchone()
    return row if row and row["memory_mib"] is not None else None


def disk_owner(cur, disk_id):
    cur.execute("SELECT v.name FROM vm_disk vd JOIN vm v ON v.id = vd.vm_id WHERE vd.disk_id = %s", (disk_id,))
    row = cur.fetchone()
    return row["name"] if row else None


def datacenter_name(cur, datacenter_id):
    cur.execute("SELECT name FROM datacenter WHERE id = %s", (datacenter_id,))
    return cur.fetchone()["name"]


def host_in_cluster(cur, host_name, cluster_id):
    cur.execute("SELECT 1 FROM host WHERE name = %s AND cluster_id = %s", (host_name, cluster_id))
    return cur.fetchone() is not None


def run_host_of(cur, vm_id):
    """The VM's name and the host its runtime names (None when it has none)."""
    cur.execute("SELECT v.name, h.id AS host_id, h.name AS host, h.libvirt_uri FROM vm v JOIN vm_runtime r"
                " ON r.vm_id = v.id LEFT JOIN host h ON h.id = r.run_host_id WHERE v.id = %s", (vm_id,))
    return cur.fetchone()
