# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Storage domain rows, their cluster attachments and each host's view of them."""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _rows

SELECT = ("SELECT s.*, d.name AS datacenter, h.name AS host FROM storage_domain s"
          " JOIN datacenter d ON d.id = s.datacenter_id LEFT JOIN host h ON h.id = s.host_id")


def find(cur, name, datacenter=None):
    return _rows.by_name(cur, SELECT, "s", "storage domain", name, datacenter)


def by_id(cur, domain_id):
    cur.execute(SELECT + " WHERE s.id = %s", (domain_id,))
    return cur.fetchone()


def listed(cur, datacenter=None):
    cur.execute(SELECT + " WHERE (%s::text IS NULL OR d.name = %s) ORDER BY d.name, s.name", (datacenter, datacenter))
    return cur.fetchall()


def of_host(cur, host):
    """The domains the host's cluster uses (a 'dir' domain only on its own host)."""
    cur.execute(SELECT + " JOIN storage_domain_cluster sc ON sc.storage_domain_id = s.id"
                " WHERE sc.cluster_id = %s AND (s.host_id IS NULL OR s.host_id = %s) ORDER BY s.name",
                (host["cluster_id"], host.get("id")))
    return cur.fetchall()


def missing(cur, domain_ids):
    """Which of these domains no longer exist."""
    cur.execute("SELECT id FROM storage_domain WHERE id = ANY(%s)", (list(domain_ids),))
    return set(domain_ids) - {r["id"] for r in cur.fetchall()}


def cluster_names(cur, domain_id):
    return _rows.names(cur, "SELECT c.name FROM storage_domain_cluster sc JOIN cluster c ON c.id = sc.cluster_id"
                            " WHERE sc.storage_domain_id = %s ORDER BY c.name", (domain_id,))


def disk_names(cur, domain_id):
    return _rows.names(cur, "SELECT name FROM disk WHERE storage_domain_id = %s ORDER BY name", (domain_id,))


def host_views(cur, domain_id):
    cur.execute("SELECT h.name AS host, sh.pool_name, sh.active, sh.capacity_bytes, sh.allocation_bytes,"
                " sh.available_bytes, sh.error, sh.updated_at FROM storage_domain_host sh"
                " JOIN host h ON h.id = sh.host_id WHERE sh.storage_domain_id = %s ORDER BY h.name", (domain_id,))
    return cur.fetchall()


def holders(cur, domain_id):
    """Hosts that have a pool of the domain recorded."""
    cur.execute("SELECT h.* FROM host h JOIN storage_domain_host sh ON sh.host_id = h.id"
                " WHERE sh.storage_domain_id = %s ORDER BY h.name", (domain_id,))
    return cur.fetchall()


def insert(cur, values):
    return _rows.insert(cur, "storage_domain", values)


def update(cur, domain_id, changes):
    return _rows.update(cur, "storage_domain", domain_id, changes)


def set_job(cur, domain_id, job_id):
    cur.execute("UPDATE storage_domain SET job_id = %s WHERE id = %s", (job_id, domain_id))


def set_clusters(cur, domain_id, cluster_ids):
    cur.execute("DELETE FROM storage_domain_cluster WHERE storage_domain_id = %s", (domain_id,))
    for cluster_id in cluster_ids:
        cur.execute("INSERT INTO storage_domain_cluster (storage_domain_id, cluster_id) VALUES (%s, %s)",
                    (domain_id, cluster_id))


def delete(cur, domain_id):
    _rows.delete(cur, "storage_domain", domain_id)


def record_view(cur, domain_id, host_id, pool_name, view, error):
    """One host's view of the domain's pool (active, capacity, free, the error that keeps it inactive)."""
    view = view or {}
    cur.execute(
        "INSERT INTO storage_domain_host (storage_domain_id, host_id, pool_name, active, capacity_bytes,"
        " allocation_bytes, available_bytes, error, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())"
        " ON CONFLICT (storage_domain_id, host_id) DO UPDATE SET pool_name = EXCLUDED.pool_name,"
        " active = EXCLUDED.active, capacity_bytes = EXCLUDED.capacity_bytes,"
        " allocation_bytes = EXCLUDED.allocation_bytes, available_bytes = EXCLUDED.available_bytes,"
        " error = EXCLUDED.error, updated_at = now()",
        (domain_id, host_id, pool_name or "", bool(view.get("active")), view.get("capacity_bytes"),
         view.get("allocation_bytes"), view.get("available_bytes"), error or ""))


def forget_hosts(cur, domain_id, host_ids):
    cur.execute("DELETE FROM storage_domain_host WHERE storage_domain_id = %s AND host_id = ANY(%s)",
                (domain_id, list(host_ids)))


def vms_using(cur, domain_id, host_ids=None):
    """Running VMs with disks in the domain (on these hosts only, when given)."""
    return _rows.names(cur, "SELECT DISTINCT v.name FROM vm v JOIN vm_runtime r ON r.vm_id = v.id"
                            " JOIN vm_disk vd ON vd.vm_id = v.id JOIN disk k ON k.id = vd.disk_id"
                            " WHERE k.storage_domain_id = %s AND r.status NOT IN ('Down', 'Suspended')"
                            " AND (%s::uuid[] IS NULL OR r.run_host_id = ANY(%s)) ORDER BY v.name",
                       (domain_id, host_ids and list(host_ids), host_ids and list(host_ids)))
