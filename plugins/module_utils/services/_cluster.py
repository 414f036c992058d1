# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Clusters: a set of interchangeable hosts with one scheduling, overcommit and migration policy."""

from __future__ import annotations

import re

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import (
    ConflictError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import (
    shown,
    validate_description,
    validate_name,
    validate_pattern,
    validate_range,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _clusters, _datacenters, _events
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_CLUSTER, LOCK_DATACENTER
from ansible_collections.virtplane.kvm.plugins.module_utils.scheduler._policies import normalize_parameters
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import (
    Outcome,
    Spec,
    changed_fields,
    plain,
    refuse_dependants,
)

FIELDS = ("description", "cpu_model", "scheduling_policy", "scheduling_params", "memory_overcommit_percent",
          "cpu_overcommit_ratio", "migration_policy", "migration_bandwidth_mbps", "migration_max_parallel",
          "ha_reservation", "resilience_policy")
DEFAULTS = {"description": "", "cpu_model": None, "scheduling_policy": "evenly_distributed",
            "memory_overcommit_percent": 100, "cpu_overcommit_ratio": 4.0, "migration_policy": "minimal_downtime",
            "migration_bandwidth_mbps": None, "migration_max_parallel": 2, "ha_reservation": False,
            "resilience_policy": "migrate"}
RANGES = {"memory_overcommit_percent": (100, 400), "cpu_overcommit_ratio": (1, 64),
          "migration_bandwidth_mbps": (1, 1000000), "migration_max_parallel": (1, 16)}


# libvirt's CPU model names (Skylake-Client-IBRS, EPYC-Rome, host-model ...)
_CPU_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")


def validate(desired):
    validate_description("description", desired.get("description"))
    if desired.get("cpu_model"):  # "": no model (the hypervisor's default CPU)
        validate_pattern("cpu_model", desired["cpu_model"], _CPU_MODEL, "a libvirt CPU model name")
    ratio = desired.get("cpu_overcommit_ratio")
    if ratio is not None:
        low, high = RANGES["cpu_overcommit_ratio"]
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not low <= ratio <= high:
            raise ValidationError("cpu_overcommit_ratio", "%s is outside %s-%s" % (shown(ratio), low, high))
        # stored as numeric(5,2): compare what will be stored, or every run would "change" it
        desired["cpu_overcommit_ratio"] = round(float(ratio), 2)
    for field, (low, high) in RANGES.items():
        if field != "cpu_overcommit_ratio":
            validate_range(field, desired.get(field), low, high)


def _view(row, datacenter, hosts):
    view = {k: plain(row[k]) for k in FIELDS}
    view.update(id=plain(row["id"]), name=row["name"], datacenter=datacenter, hosts=sorted(hosts))
    return view


class ClusterSpec(Spec):
    FIELDS = ("name", "datacenter", "state") + FIELDS

    def validate(self):
        validate_name("name", self.name)
        if self.datacenter is not None:
            validate_name("datacenter", self.datacenter)
        desired = {k: getattr(self, k) for k in FIELDS}
        validate(desired)
        self.cpu_overcommit_ratio = desired.get("cpu_overcommit_ratio")

    @classmethod
    def from_params(cls, params):
        values = {f: params.get(f) for f in cls.FIELDS}
        values["scheduling_params"] = params.get("scheduling_policy_params")
        return cls(**values)


def ensure(engine, spec, check_mode=False):
    if spec.state == "absent":
        return ensure_absent(engine, spec.name, check_mode)
    return ensure_present(engine, spec.name, spec.datacenter, {k: getattr(spec, k) for k in FIELDS}, check_mode)


def find(cur, name, lock=False):
    return _clusters.find(cur, name, lock)


def require(cur, name, action, lock=False):
    """The cluster row, or an error saying what could not be done without it."""
    row = find(cur, name, lock=lock)
    if row is None:
        raise NotFoundError("cluster", name, action)
    return row


def _resolve_policy(current, desired):
    """Fill scheduling_params: checked against the policy in force after this change."""
    policy = desired.get("scheduling_policy") or (current or {}).get("scheduling_policy") \
        or DEFAULTS["scheduling_policy"]
    params = desired.get("scheduling_params")
    if params is None:
        if current is not None and current["scheduling_policy"] == policy:
            return desired  # policy unchanged and no parameters asked for: keep what is there
        params = {}
    return dict(desired, scheduling_params=normalize_parameters(policy, params))


def ensure_present(engine, name, datacenter, desired, check_mode=False):
    validate_name("name", name)
    if datacenter is not None:
        validate_name("datacenter", datacenter)
    validate(desired)
    with engine.transaction() as cur:
        engine.lock(cur, LOCK_CLUSTER, name)
        row = find(cur, name, lock=True)
        if row is None:
            return _create(cur, name, datacenter, _resolve_policy(None, desired), check_mode)
        if datacenter is not None and datacenter != row["datacenter"]:
            raise ConflictError("Cannot create cluster '%s' in data center '%s': cluster '%s' already exists in "
                                "data center '%s' (cluster names are unique and a cluster cannot move between "
                                "data centers)" % (name, datacenter, name, row["datacenter"]))
        desired = _resolve_policy(row, desired)
        unset = desired.get("cpu_model") == ""
        changes = changed_fields(row, {k: None if unset and k == "cpu_model" else desired.get(k) for k in FIELDS})
        if unset and row["cpu_model"] is not None:
            changes["cpu_model"] = None
        hosts = _clusters.host_names(cur, row["id"])
        if not changes:
            return Outcome(False, resource=_view(row, row["datacenter"], hosts))
        before = {k: plain(row[k]) for k in changes}
        after = plain(changes)
        if not check_mode:
            updated = _clusters.update(cur, row["id"], changes)
            _events.record(cur, "CLUSTER_UPDATED", "Cluster %s was updated: %s" % (name, ", ".join(sorted(changes))),
                           object_type="cluster", object_id=row["id"], object_name=name,
                           datacenter=row["datacenter"], cluster=name, details={"before": before, "after": after})
            row = dict(updated, datacenter=row["datacenter"])
        resource = _view(row, row["datacenter"], hosts)
        resource.update(after)
        return Outcome(True, before, after, resource, ["update"])


def _create(cur, name, datacenter, desired, check_mode):
    if datacenter is None:
        raise ValidationError("datacenter", "is required to create cluster '%s'" % name)
    dc = _datacenters.find(cur, datacenter, lock=True)
    if dc is None:
        raise NotFoundError("data center", datacenter, "create cluster '%s'" % name)
    values = dict(DEFAULTS, **{k: v for k, v in desired.items() if v is not None and v != ""})
    after = plain(dict(values, name=name, datacenter=datacenter))
    resource = dict(after, id=None, hosts=[])
    if not check_mode:
        row = _clusters.insert(cur, dict(values, name=name, datacenter_id=dc["id"]))
        resource = _view(row, datacenter, [])
        _events.record(cur, "CLUSTER_ADDED", "Cluster %s was added to data center %s" % (name, datacenter),
                       object_type="cluster", object_id=row["id"], object_name=name, datacenter=datacenter,
                       cluster=name)
    return Outcome(True, {}, after, resource, ["create"])


def ensure_absent(engine, name, check_mode=False):
    validate_name("name", name)
    with engine.transaction() as cur:
        row = find(cur, name)
        if row is None:
            return Outcome(False)
        # its storage domain and network attachments go with it: under the data center's lock, which every
        # apply of those takes, then the cluster's (the order a VM start takes them in), then the row's own
        engine.lock(cur, LOCK_DATACENTER, row["datacenter"])
        engine.lock(cur, LOCK_CLUSTER, name)
        row = find(cur, name, lock=True)
        if row is None:
            return Outcome(False)
        vms = _clusters.vm_names(cur, row["id"])
        hosts = _clusters.host_names(cur, row["id"])
        refuse_dependants("remove", "cluster", name, [("hosts", hosts), ("VMs", vms)])
        before = _view(row, row["datacenter"], hosts)
        # with no hosts no pool is realized for it: its storage domain attachments simply go
        detached = ["detach storage domain %s" % n for n in _clusters.storage_domain_names(cur, row["id"])]
        if not check_mode:
            _clusters.delete(cur, row["id"])
            _events.record(cur, "CLUSTER_REMOVED", "Cluster %s was removed" % name, object_type="cluster",
                           object_id=row["id"], object_name=name, datacenter=row["datacenter"], cluster=name)
        return Outcome(True, before, {}, None, ["remove"] + detached)
