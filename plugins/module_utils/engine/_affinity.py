# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Affinity group rows: a cluster's rules of which VMs share hosts, and which hosts they run on."""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import pgsql

SELECT = ("SELECT g.*, c.name AS cluster,"
          " ARRAY(SELECT v.name::text FROM affinity_group_vm gv JOIN vm v ON v.id = gv.vm_id"
          "   WHERE gv.group_id = g.id ORDER BY v.name) AS vms,"
          " ARRAY(SELECT h.name::text FROM affinity_group_host gh JOIN host h ON h.id = gh.host_id"
          "   WHERE gh.group_id = g.id ORDER BY h.name) AS hosts"
          " FROM affinity_group g JOIN cluster c ON c.id = g.cluster_id")


def find(cur, cluster_id, name):
    cur.execute(SELECT + " WHERE g.cluster_id = %s AND g.name = %s", (cluster_id, name))
    return cur.fetchone()


def of_cluster(cur, cluster_id):
    cur.execute(SELECT + " WHERE g.cluster_id = %s ORDER BY g.name", (cluster_id,))
    return cur.fetchall()


def listed(cur, cluster=None):
    cur.execute(SELECT + " WHERE (%s::text IS NULL OR c.name = %s) ORDER BY c.name, g.name", (cluster, cluster))
    return cur.fetchall()


def members(cur, cluster_id, table, names):
    """{name: (id, cluster name)} of these VMs or hosts (``table``: vm or host), whatever their cluster."""
    column = pgsql.Identifier(table)
    statement = pgsql.SQL("SELECT t.id, t.name, c.name AS cluster, t.cluster_id = %s AS here FROM {} t"
                          " JOIN cluster c ON c.id = t.cluster_id WHERE t.name = ANY(%s)").format(column)
    cur.execute(statement, (cluster_id, list(names)))
    return {r["name"]: r for r in cur.fetchall()}


def insert(cur, values):
    return _rows.insert(cur, "affinity_group", values)


def update(cur, group_id, changes):
    return _rows.update(cur, "affinity_group", group_id, changes, touch=False)


def set_members(cur, group_id, vm_ids, host_ids):
    cur.execute("DELETE FROM affinity_group_vm WHERE group_id = %s", (group_id,))
    cur.execute("DELETE FROM affinity_group_host WHERE group_id = %s", (group_id,))
    for vm_id in vm_ids:
        cur.execute("INSERT INTO affinity_group_vm (group_id, vm_id) VALUES (%s, %s)", (group_id, vm_id))
    for host_id in host_ids:
        cur.execute("INSERT INTO affinity_group_host (group_id, host_id) VALUES (%s, %s)", (group_id, host_id))


def delete(cur, group_id):
    _rows.delete(cur, "affinity_group", group_id)
