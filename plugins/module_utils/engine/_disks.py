# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disk rows (each one volume of a storage domain) and their attachment to VMs."""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _rows

SELECT = ("SELECT k.*, s.name AS storage_domain, s.type AS domain_type, s.params AS domain_params,"
          " s.state AS domain_state, s.host_id AS domain_host_id, d.name AS datacenter,"
          " v.name AS vm, vd.bus, vd.target, vd.bootable, t.name AS template"
          " FROM disk k JOIN storage_domain s ON s.id = k.storage_domain_id"
          " LEFT JOIN template t ON t.id = k.template_id"
          " JOIN datacenter d ON d.id = s.datacenter_id"
          " LEFT JOIN vm_disk vd ON vd.disk_id = k.id LEFT JOIN vm v ON v.id = vd.vm_id")


def find(cur, name, domain_id):
    cur.execute(SELECT + " WHERE k.name = %s AND k.storage_domain_id = %s", (name, domain_id))
    return cur.fetchone()


def by_id(cur, disk_id):
    cur.execute(SELECT + " WHERE k.id = %s", (disk_id,))
    return cur.fetchone()


def listed(cur, domain_name=None):
    cur.execute(SELECT + " WHERE (%s::text IS NULL OR s.name = %s) ORDER BY s.name, k.name", (domain_name, domain_name))
    return cur.fetchall()


def with_lun(cur, domain_id, lun):
    cur.execute("SELECT name FROM disk WHERE storage_domain_id = %s AND lun = %s", (domain_id, lun))
    row = cur.fetchone()
    return row["name"] if row else None


def insert(cur, values):
    return _rows.insert(cur, "disk", values)


def clones_of(cur, disk_id):
    """Names of the disks that stand on this one (thin clones)."""
    return _rows.names(cur, "SELECT name FROM disk WHERE backing_disk_id = %s ORDER BY name", (disk_id,))


def update(cur, disk_id, changes):
    return _rows.update(cur, "disk", disk_id, changes)


def delete(cur, disk_id):
    _rows.delete(cur, "disk", disk_id)


def hosts_with_pool(cur, domain_id):
    """Serving hosts that have the domain's pool active."""
    cur.execute("SELECT h.* FROM storage_domain_host sh JOIN host h ON h.id = sh.host_id"
                " WHERE sh.storage_domain_id = %s AND sh.active AND h.status IN ('Up', 'NonOperational')"
                " ORDER BY h.name", (domain_id,))
    return cur.fetchall()


def running_guest(cur, disk_id):
    """Where the disk is in use by a VM that holds a host (running, starting, migrating ...): its name, status,
    target and host; else None."""
    cur.execute("SELECT v.name AS vm, r.status, vd.target, vd.bus, h.id AS host_id, h.name AS host, h.libvirt_uri"
                " FROM vm_disk vd JOIN vm v ON v.id = vd.vm_id JOIN vm_runtime r ON r.vm_id = v.id"
                " JOIN host h ON h.id = r.run_host_id WHERE vd.disk_id = %s AND r.status NOT IN ('Down', 'Suspended')",
                (disk_id,))
    return cur.fetchone()


def vm_for_disks(cur, name, lock=False):
    """The VM ``name`` with its runtime (status, host), for attaching disks."""
    cur.execute("SELECT v.*, c.name AS cluster, r.status, r.run_host_id, r.job_id FROM vm v"
                " JOIN cluster c ON c.id = v.cluster_id"
                " JOIN vm_runtime r ON r.vm_id = v.id WHERE v.name = %s" + (" FOR UPDATE OF v" if lock else ""),
                (name,))
    return cur.fetchone()


def domain_serves_cluster(cur, domain_id, cluster_id):
    cur.execute("SELECT 1 FROM storage_domain_cluster WHERE storage_domain_id = %s AND cluster_id = %s",
                (domain_id, cluster_id))
    return cur.fetchone() is not None


def targets_of_vm(cur, vm_id):
    cur.execute("SELECT target FROM vm_disk WHERE vm_id = %s", (vm_id,))
    return {r["target"] for r in cur.fetchall()}


def attach(cur, vm_id, disk_id, bus, target, bootable):
    cur.execute("INSERT INTO vm_disk (vm_id, disk_id, bus, target, bootable) VALUES (%s, %s, %s, %s, %s)",
                (vm_id, disk_id, bus, target, bootable))


def detach(cur, disk_id):
    cur.execute("DELETE FROM vm_disk WHERE disk_id = %s", (disk_id,))
