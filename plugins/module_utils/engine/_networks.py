# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logical network rows, their cluster assignments and their realization on each host."""

from __future__ import annotations

import ipaddress

from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _rows

SELECT = "SELECT n.*, d.name AS datacenter FROM logical_network n JOIN datacenter d ON d.id = n.datacenter_id"


def find(cur, name, datacenter=None):
    return _rows.by_name(cur, SELECT, "n", "logical network", name, datacenter)


def listed(cur, datacenter=None):
    cur.execute(SELECT + " WHERE (%s::text IS NULL OR d.name = %s) ORDER BY d.name, n.name", (datacenter, datacenter))
    return cur.fetchall()


def overlapping(cur, datacenter_id, network_id, subnet):
    """(name, subnet) of another network of the data center whose subnet overlaps ``subnet``."""
    cur.execute("SELECT name, subnet FROM logical_network WHERE datacenter_id = %s AND subnet && %s::cidr"
                " AND id IS DISTINCT FROM %s ORDER BY name LIMIT 1", (datacenter_id, subnet, network_id))
    row = cur.fetchone()
    return (row["name"], str(ipaddress.ip_network(row["subnet"]))) if row else None


_SEGMENT_QUERIES = {
    column: "SELECT name FROM logical_network WHERE datacenter_id = %%s AND %s = %%s AND id IS DISTINCT FROM %%s"
            % column for column in ("vlan_id", "vxlan_vni", "bridge")}


def on_segment(cur, datacenter_id, network_id, column, value):
    """The other network of the data center on this VLAN or VXLAN segment, or with this bridge."""
    cur.execute(_SEGMENT_QUERIES[column], (datacenter_id, value, network_id))
    row = cur.fetchone()
    return row["name"] if row else None


def missing(cur, network_ids):
    """Which of these networks no longer exist."""
    cur.execute("SELECT id FROM logical_network WHERE id = ANY(%s)", (list(network_ids),))
    return set(network_ids) - {r["id"] for r in cur.fetchall()}


def assignments(cur, network_id):
    cur.execute("SELECT c.name, cn.required FROM cluster_network cn JOIN cluster c ON c.id = cn.cluster_id"
                " WHERE cn.network_id = %s ORDER BY c.name", (network_id,))
    return [{"name": r["name"], "required": r["required"]} for r in cur.fetchall()]


def set_assignments(cur, network_id, cluster_ids_required):
    cur.execute("DELETE FROM cluster_network WHERE network_id = %s", (network_id,))
    for cluster_id, required in cluster_ids_required:
        cur.execute("INSERT INTO cluster_network (cluster_id, network_id, required) VALUES (%s, %s, %s)",
                    (cluster_id, network_id, required))


def host_views(cur, network_id):
    cur.execute("SELECT h.name AS host, h.status AS host_status, hn.nic, hn.realized, hn.error, hn.updated_at"
                " FROM host_network hn JOIN host h ON h.id = hn.host_id WHERE hn.network_id = %s ORDER BY h.name",
                (network_id,))
    return cur.fetchall()


def of_host_datacenter(cur, host):
    """Every network of the host's data center, with ``required`` True/False where its cluster has it, else None."""
    cur.execute("SELECT n.*, cn.required FROM logical_network n JOIN cluster c ON c.datacenter_id = n.datacenter_id"
                " LEFT JOIN cluster_network cn ON cn.network_id = n.id AND cn.cluster_id = c.id"
                " WHERE c.id = %s ORDER BY n.name", (host["cluster_id"],))
    return cur.fetchall()


def vms_with_nics(cur, network_id, cluster_names=None):
    return _rows.names(cur, "SELECT DISTINCT v.name FROM vm_nic n JOIN vm v ON v.id = n.vm_id JOIN cluster c"
                            " ON c.id = v.cluster_id WHERE n.network_id = %s AND (%s::text[] IS NULL"
                            " OR c.name = ANY(%s)) ORDER BY v.name",
                       (network_id, cluster_names and list(cluster_names), cluster_names and list(cluster_names)))


def insert(cur, values):
    return _rows.insert(cur, "logical_network", values)


def update(cur, network_id, changes):
    return _rows.update(cur, "logical_network", network_id, changes)


def set_job(cur, network_id, job_id):
    cur.execute("UPDATE logical_network SET job_id = %s WHERE id = %s", (job_id, network_id))


def delete(cur, network_id):
    cur.execute("DELETE FROM cluster_network WHERE network_id = %s", (network_id,))
    _rows.delete(cur, "logical_network", network_id)


def record_on_host(cur, host_id, network_id, nic, realized, error, libvirt_name):
    cur.execute("INSERT INTO host_network (host_id, network_id, nic, realized, error, libvirt_name, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, now()) ON CONFLICT (host_id, network_id) DO UPDATE SET"
                " nic = EXCLUDED.nic, realized = EXCLUDED.realized, error = EXCLUDED.error,"
                " libvirt_name = EXCLUDED.libvirt_name, updated_at = now()",
                (host_id, network_id, nic, realized, error or "", libvirt_name))


def forget_on_host(cur, host_id, network_id):
    cur.execute("DELETE FROM host_network WHERE host_id = %s AND network_id = %s", (host_id, network_id))
