# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshot rows: a VM's snapshots as the engine took them."""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _rows

SELECT = ("SELECT s.*, v.name AS vm FROM snapshot s JOIN vm v ON v.id = s.vm_id")


def find(cur, vm_id, name, lock=False):
    cur.execute(SELECT + " WHERE s.vm_id = %s AND s.name = %s" + (" FOR UPDATE OF s" if lock else ""), (vm_id, name))
    return cur.fetchone()


def of_vm(cur, vm_id):
    cur.execute(SELECT + " WHERE s.vm_id = %s ORDER BY s.created_at, s.name", (vm_id,))
    return cur.fetchall()


def listed(cur, vm_names=None):
    cur.execute(SELECT + " WHERE (%s::text[] IS NULL OR v.name = ANY(%s)) ORDER BY v.name, s.created_at, s.name",
                (vm_names, vm_names))
    return cur.fetchall()


def by_id(cur, snapshot_id):
    cur.execute(SELECT + " WHERE s.id = %s", (snapshot_id,))
    return cur.fetchone()


def insert(cur, values):
    return _rows.insert(cur, "snapshot", values)


def update(cur, snapshot_id, changes):
    return _rows.update(cur, "snapshot", snapshot_id, changes, touch=False)


def delete(cur, snapshot_id):
    _rows.delete(cur, "snapshot", snapshot_id)


def disks(cur, disk_ids):
    """The disks of these ids that exist, as a VM row lists its disks, with the VM each is attached to."""
    cur.execute("SELECT k.id AS disk_id, k.name, s.name AS storage_domain, s.id AS storage_domain_id,"
                " k.volume_name AS volume, k.format, k.status, v.name AS vm FROM disk k"
                " JOIN storage_domain s ON s.id = k.storage_domain_id LEFT JOIN vm_disk vd ON vd.disk_id = k.id"
                " LEFT JOIN vm v ON v.id = vd.vm_id WHERE k.id = ANY(%s::uuid[]) ORDER BY k.name", (list(disk_ids),))
    return cur.fetchall()


def holding_disk(cur, disk_id):
    """The snapshots (``vm/snapshot``) that hold data of this disk: internal snapshots live in its image."""
    return _rows.names(cur, "SELECT v.name || '/' || s.name AS name FROM snapshot s JOIN vm v ON v.id = s.vm_id"
                            " WHERE s.disks @> jsonb_build_array(jsonb_build_object('disk_id', %s::text))"
                            " ORDER BY 1", (str(disk_id),))
