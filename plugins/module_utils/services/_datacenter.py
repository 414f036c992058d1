# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Data centers: the top of the model; clusters, storage and networks belong to one."""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils._validation import (
    validate_description,
    validate_name,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _events
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_DATACENTER, Engine
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import (
    Outcome,
    changed_fields,
    insert_row,
    plain,
    refuse_dependants,
    update_row,
)

FIELDS = ("description", "storage_type")
DEFAULTS = {"description": "", "storage_type": "shared"}


def _view(row, clusters):
    return {"id": plain(row["id"]), "name": row["name"], "description": row["description"],
            "storage_type": row["storage_type"], "clusters": sorted(clusters)}


def _names(cur, sql, key):
    cur.execute(sql, (key,))
    return [r["name"] for r in cur.fetchall()]


def find(cur, name, lock=False):
    cur.execute("SELECT * FROM datacenter WHERE name = %s" + (" FOR UPDATE" if lock else ""), (name,))
    return cur.fetchone()


def ensure_present(engine, name, desired, check_mode=False):
    validate_name("name", name)
    validate_description("description", desired.get("description"))
    with engine.transaction() as cur:
        Engine.lock(cur, LOCK_DATACENTER, name)
        row = find(cur, name, lock=True)
        if row is None:
            after = dict(DEFAULTS, **{k: v for k, v in desired.items() if v is not None}, name=name)
            resource = {"id": None, "clusters": [], **after}
            if not check_mode:
                resource = _view(insert_row(cur, "datacenter", after), [])
                _events.record(cur, "DATACENTER_ADDED", "Data center %s was added" % name,
                               object_type="datacenter", object_id=resource["id"], object_name=name,
                               datacenter=name)
            return Outcome(True, {}, after, resource, ["create"])
        clusters = _names(cur, "SELECT name FROM cluster WHERE datacenter_id = %s", row["id"])
        changes = changed_fields(row, {k: desired.get(k) for k in FIELDS})
        if not changes:
            return Outcome(False, resource=_view(row, clusters))
        before = {k: plain(row[k]) for k in changes}
        if not check_mode:
            row = update_row(cur, "datacenter", row["id"], changes)
            _events.record(cur, "DATACENTER_UPDATED", "Data center %s was updated: %s"
                           % (name, ", ".join(sorted(changes))), object_type="datacenter",
                           object_id=row["id"], object_name=name, datacenter=name, details=changes)
        resource = _view(row, clusters)
        resource.update(changes)
        return Outcome(True, before, changes, resource, ["update"])


def ensure_absent(engine, name, check_mode=False):
    validate_name("name", name)
    with engine.transaction() as cur:
        Engine.lock(cur, LOCK_DATACENTER, name)
        row = find(cur, name, lock=True)
        if row is None:
            return Outcome(False)
        dc_id = row["id"]
        refuse_dependants("remove", "data center", name, [
            ("clusters", _names(cur, "SELECT name FROM cluster WHERE datacenter_id = %s", dc_id)),
            ("storage domains", _names(cur, "SELECT name FROM storage_domain WHERE datacenter_id = %s", dc_id)),
            ("logical networks", _names(cur, "SELECT name FROM logical_network WHERE datacenter_id = %s", dc_id)),
            ("templates", _names(cur, "SELECT name FROM template WHERE datacenter_id = %s", dc_id)),
        ])
        before = _view(row, [])
        if not check_mode:
            cur.execute("DELETE FROM datacenter WHERE id = %s", (dc_id,))
            _events.record(cur, "DATACENTER_REMOVED", "Data center %s was removed" % name,
                           object_type="datacenter", object_id=dc_id, object_name=name, datacenter=name)
        return Outcome(True, before, {}, None, ["remove"])
