# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Data centers: the top of the model; clusters, storage and networks belong to one."""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils._validation import validate_description, validate_name
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _datacenters, _events
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_DATACENTER
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import (
    Outcome,
    Spec,
    changed_fields,
    plain,
    refuse_dependants,
)

FIELDS = ("description", "storage_type")
DEFAULTS = {"description": "", "storage_type": "shared"}


class DatacenterSpec(Spec):
    FIELDS = ("name", "description", "storage_type", "state")

    def validate(self):
        validate_name("name", self.name)
        validate_description("description", self.description)


def _view(row, clusters, mac_pool=None):
    view = {"id": plain(row["id"]), "name": row["name"], "description": row["description"],
            "storage_type": row["storage_type"], "clusters": sorted(clusters)}
    if mac_pool:
        view["mac_pool"] = {"start": mac_pool["start"], "end": mac_pool["end"]}
    return view


def find(cur, name, lock=False):
    return _datacenters.find(cur, name, lock)


def ensure(engine, spec, check_mode=False):
    if spec.state == "absent":
        return ensure_absent(engine, spec.name, check_mode)
    return ensure_present(engine, spec.name, {k: getattr(spec, k) for k in FIELDS}, check_mode)


def ensure_present(engine, name, desired, check_mode=False):
    validate_name("name", name)
    validate_description("description", desired.get("description"))
    with engine.transaction() as cur:
        engine.lock(cur, LOCK_DATACENTER, name)
        row = _datacenters.find(cur, name, lock=True)
        if row is None:
            after = dict(DEFAULTS, **{k: v for k, v in desired.items() if v is not None}, name=name)
            resource = {"id": None, "clusters": [], **after}
            if not check_mode:
                row = _datacenters.insert(cur, after)
                resource = _view(row, [], _datacenters.mac_pool(cur, row["id"]))
                _events.record(cur, "DATACENTER_ADDED", "Data center %s was added" % name,
                               object_type="datacenter", object_id=row["id"], object_name=name, datacenter=name)
            return Outcome(True, {}, after, resource, ["create"])
        clusters = _datacenters.cluster_names(cur, row["id"])
        pool = _datacenters.mac_pool(cur, row["id"])
        changes = changed_fields(row, {k: desired.get(k) for k in FIELDS})
        if not changes:
            return Outcome(False, resource=_view(row, clusters, pool))
        before = {k: plain(row[k]) for k in changes}
        if not check_mode:
            row = _datacenters.update(cur, row["id"], changes)
            _events.record(cur, "DATACENTER_UPDATED", "Data center %s was updated: %s"
                           % (name, ", ".join(sorted(changes))), object_type="datacenter",
                           object_id=row["id"], object_name=name, datacenter=name, details=changes)
        resource = _view(row, clusters, pool)
        resource.update(changes)
        return Outcome(True, before, changes, resource, ["update"])


def ensure_absent(engine, name, check_mode=False):
    validate_name("name", name)
    with engine.transaction() as cur:
        engine.lock(cur, LOCK_DATACENTER, name)
        row = _datacenters.find(cur, name, lock=True)
        if row is None:
            return Outcome(False)
        refuse_dependants("remove", "data center", name, _datacenters.dependants(cur, row["id"]))
        before = _view(row, [])
        if not check_mode:
            _datacenters.delete(cur, row["id"])
            _events.record(cur, "DATACENTER_REMOVED", "Data center %s was removed" % name,
                           object_type="datacenter", object_id=row["id"], object_name=name, datacenter=name)
        return Outcome(True, before, {}, None, ["remove"])
