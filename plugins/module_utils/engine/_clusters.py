# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cluster rows and what belongs to a cluster."""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _rows


def find(cur, name, lock=False):
    cur.execute("SELECT c.*, d.name AS datacenter FROM cluster c JOIN datacenter d ON d.id = c.datacenter_id"
                " WHERE c.name = %s" + (" FOR UPDATE OF c" if lock else ""), (name,))
    return cur.fetchone()


def insert(cur, values):
    return _rows.insert(cur, "cluster", values)


def update(cur, row_id, changes):
    return _rows.update(cur, "cluster", row_id, changes)


def host_names(cur, cluster_id):
    return _rows.names(cur, "SELECT name FROM host WHERE cluster_id = %s ORDER BY name", (cluster_id,))


def vm_names(cur, cluster_id):
    return _rows.names(cur, "SELECT name FROM vm WHERE cluster_id = %s ORDER BY name", (cluster_id,))


def storage_domain_names(cur, cluster_id):
    return _rows.names(cur, "SELECT s.name FROM storage_domain_cluster sc JOIN storage_domain s"
                            " ON s.id = sc.storage_domain_id WHERE sc.cluster_id = %s ORDER BY s.name", (cluster_id,))


def delete(cur, row_id):
    """The cluster and its storage domain attachments (with no host, no pool is realized for it)."""
    cur.execute("DELETE FROM storage_domain_cluster WHERE cluster_id = %s", (row_id,))
    _rows.delete(cur, "cluster", row_id)
