# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Data center rows, their MAC pools and what stands on them."""

from __future__ import annotations

import hashlib

from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _rows


def find(cur, name, lock=False):
    cur.execute("SELECT * FROM datacenter WHERE name = %s" + (" FOR UPDATE" if lock else ""), (name,))
    return cur.fetchone()


def default_mac_pool(datacenter_id):
    """The MAC range a new data center gets: as schema version 7 gave the ones it found."""
    digest = hashlib.md5(str(datacenter_id).encode("ascii")).hexdigest()  # noqa: S324 - a spread, not a secret
    prefix = "56:6f:%s:%s" % (digest[0:2], digest[2:4])
    return prefix + ":00:00", prefix + ":ff:ff"


def insert(cur, values):
    row = _rows.insert(cur, "datacenter", values)
    start, end = default_mac_pool(row["id"])
    cur.execute("INSERT INTO mac_pool (datacenter_id, range_start, range_end) VALUES (%s, %s, %s)",
                (row["id"], start, end))
    return row


def update(cur, row_id, changes):
    return _rows.update(cur, "datacenter", row_id, changes)


def delete(cur, row_id):
    _rows.delete(cur, "datacenter", row_id)


def mac_pool(cur, datacenter_id):
    cur.execute("SELECT range_start::text AS start, range_end::text AS end FROM mac_pool WHERE datacenter_id = %s",
                (datacenter_id,))
    return cur.fetchone()


def cluster_names(cur, datacenter_id):
    return _rows.names(cur, "SELECT name FROM cluster WHERE datacenter_id = %s ORDER BY name", (datacenter_id,))


def clusters(cur, datacenter_id):
    """{cluster name: id} of the data center."""
    cur.execute("SELECT id, name FROM cluster WHERE datacenter_id = %s ORDER BY name", (datacenter_id,))
    return {r["name"]: r["id"] for r in cur.fetchall()}


def dependants(cur, datacenter_id):
    """What keeps the data center from being removed, by kind."""
    found = []
    for label, table in (("clusters", "cluster"), ("storage domains", "storage_domain"),
                         ("logical networks", "logical_network"), ("templates", "template")):
        found.append((label, _rows.names(cur, "SELECT name FROM %s WHERE datacenter_id = %%s ORDER BY name" % table,
                                         (datacenter_id,))))
    return found
