# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Template rows: a VM's definition kept for making VMs, and the disks copied for it."""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _rows

SELECT = ("SELECT t.*, d.name AS datacenter,"
          " COALESCE((SELECT json_agg(json_build_object('disk_id', k.id, 'name', k.name, 'storage_domain', s.name,"
          "   'storage_domain_id', s.id, 'format', k.format, 'size_bytes', k.size_bytes, 'volume', k.volume_name,"
          "   'status', k.status) ORDER BY k.name) FROM disk k JOIN storage_domain s ON s.id = k.storage_domain_id"
          "   WHERE k.template_id = t.id), '[]') AS disks"
          " FROM template t JOIN datacenter d ON d.id = t.datacenter_id")


def find(cur, name, datacenter=None):
    return _rows.by_name(cur, SELECT, "t", "template", name, datacenter)


def listed(cur, datacenter=None):
    cur.execute(SELECT + " WHERE (%s::text IS NULL OR d.name = %s) ORDER BY d.name, t.name", (datacenter, datacenter))
    return cur.fetchall()


def insert(cur, values):
    return _rows.insert(cur, "template", values)


def update(cur, template_id, changes):
    return _rows.update(cur, "template", template_id, changes, touch=False)


def delete(cur, template_id):
    _rows.delete(cur, "template", template_id)


def set_job(cur, template_id, job_id):
    cur.execute("UPDATE template SET job_id = %s WHERE id = %s", (job_id, template_id))


def vms_on(cur, template_id):
    """Names of the VMs whose disks stand on the template's (thin clones)."""
    return _rows.names(cur, "SELECT DISTINCT v.name FROM disk c JOIN disk k ON k.id = c.backing_disk_id"
                            " JOIN vm_disk vd ON vd.disk_id = c.id JOIN vm v ON v.id = vd.vm_id"
                            " WHERE k.template_id = %s ORDER BY v.name", (template_id,))


def clones(cur, template_id):
    """Names of the disks that stand on the template's disks."""
    return _rows.names(cur, "SELECT c.name FROM disk c JOIN disk k ON k.id = c.backing_disk_id"
                            " WHERE k.template_id = %s ORDER BY c.name", (template_id,))
