# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Affinity groups: which VMs of a cluster share a host or stay apart, and which hosts they run on.

A group has a VM rule (positive: together; negative: apart) and a host rule (positive: on these
hosts; negative: never on them), each hard (``enforcing``: the scheduler refuses a host that breaks
it) or soft (a preference it weighs). Groups are written under the cluster's lock, which placements
take too, so a start sees a group whole or not at all. Groups whose hard rules contradict each other
(two VMs that must and must not share a host; a VM that must and must not run on a host) are refused.
"""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ConflictError, NotFoundError, ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import shown, validate_name, validate_range
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _affinity as group_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _clusters, _events
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_CLUSTER, LOCK_DATACENTER
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import Outcome, Spec, plain

RULES = _choices.AFFINITY_RULES
FIELDS = ("vm_rule", "vm_enforcing", "host_rule", "host_enforcing", "priority", "vms", "hosts")


class AffinityGroupSpec(Spec):
    FIELDS = ("name", "cluster", "state") + FIELDS

    def validate(self):
        validate_name("name", self.name)
        validate_name("cluster", self.cluster)
        for field in ("vm_rule", "host_rule"):
            value = getattr(self, field)
            if value is not None and value not in RULES:
                raise ValidationError(field, "%s is not one of %s" % (shown(value), ", ".join(RULES)))
        for field in ("vm_enforcing", "host_enforcing"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, bool):
                raise ValidationError(field, "%s is not true or false" % shown(value))
        if self.priority is not None:
            validate_range("priority", self.priority, 1, 100)
        for field in ("vms", "hosts"):
            values = getattr(self, field)
            if values is None:
                continue
            for index, value in enumerate(values):
                validate_name("%s[%d]" % (field, index), value)
            if len(set(values)) != len(values):
                raise ValidationError(field, "names %s more than once" % ", ".join(
                    sorted({v for v in values if values.count(v) > 1})))
            setattr(self, field, sorted(values))
        self.state = self.state or "present"


def _rule(value):
    return None if value in (None, "none") else value


def view(row):
    return {"id": plain(row["id"]), "name": row["name"], "cluster": row["cluster"],
            "vm_rule": row["vm_rule"] or "none", "vm_enforcing": row["vm_enforcing"],
            "host_rule": row["host_rule"] or "none", "host_enforcing": row["host_enforcing"],
            "priority": row["priority"], "vms": sorted(row["vms"]), "hosts": sorted(row["hosts"])}


def _members(cur, cluster, table, names, field):
    found = group_rows.members(cur, cluster["id"], table, names)
    for index, name in enumerate(names):
        if name not in found:
            raise ValidationError("%s[%d]" % (field, index), "%s '%s' does not exist" % (
                "VM" if table == "vm" else "host", name))
        if not found[name]["here"]:
            raise ValidationError("%s[%d]" % (field, index), "%s '%s' is in cluster %s, not %s" % (
                "VM" if table == "vm" else "host", name, found[name]["cluster"], cluster["name"]))
    return [found[n]["id"] for n in names]


def contradiction(group, others):
    """Why the hard rules of ``group`` (a view) and of the cluster's other groups cannot all hold, or None."""
    for other in others:
        if other["name"] == group["name"]:
            continue
        shared = sorted(set(group["vms"]) & set(other["vms"]))
        if group["vm_enforcing"] and other["vm_enforcing"] and len(shared) >= 2 and \
                {group["vm_rule"], other["vm_rule"]} == {"positive", "negative"}:
            return ("affinity group %s keeps VMs %s together and group %s keeps them apart (both hard)"
                    % ((group["name"], ", ".join(shared), other["name"]) if group["vm_rule"] == "positive"
                       else (other["name"], ", ".join(shared), group["name"])))
        if group["host_enforcing"] and other["host_enforcing"] and shared and \
                {group["host_rule"], other["host_rule"]} == {"positive", "negative"}:
            positive, negative = (group, other) if group["host_rule"] == "positive" else (other, group)
            if set(positive["hosts"]) <= set(negative["hosts"]):  # no host left that both allow
                return ("VM %s must run on hosts %s (group %s) and must not run on any of them (group %s), both "
                        "hard" % (shared[0], ", ".join(sorted(positive["hosts"])), positive["name"],
                                  negative["name"]))
    return None


def ensure(engine, spec, check_mode=False):
    with engine.transaction() as cur:
        cluster = _clusters.find(cur, spec.cluster)
        if cluster is None:
            raise NotFoundError("cluster", spec.cluster, "%s affinity group '%s'" % (
                "remove" if spec.state == "absent" else "define", spec.name))
        engine.lock(cur, LOCK_DATACENTER, cluster["datacenter"])
        engine.lock(cur, LOCK_CLUSTER, cluster["name"])
        row = group_rows.find(cur, cluster["id"], spec.name)
        if spec.state == "absent":
            if row is None:
                return Outcome(False)
            if not check_mode:
                group_rows.delete(cur, row["id"])
                _events.record(cur, "AFFINITY_GROUP_REMOVED", "Affinity group %s of cluster %s was removed"
                               % (spec.name, cluster["name"]), object_type="cluster", object_id=cluster["id"],
                               object_name=cluster["name"], datacenter=cluster["datacenter"])
            return Outcome(True, view(row), {}, None, ["remove"])
        current = view(row) if row else {"name": spec.name, "cluster": cluster["name"], "vm_rule": "none",
                                         "vm_enforcing": False, "host_rule": "none", "host_enforcing": False,
                                         "priority": 1, "vms": [], "hosts": [], "id": None}
        desired = dict(current)
        for field in FIELDS:
            if getattr(spec, field) is not None:
                desired[field] = getattr(spec, field)
        vm_ids = _members(cur, cluster, "vm", desired["vms"], "vms")
        host_ids = _members(cur, cluster, "host", desired["hosts"], "hosts")
        if _rule(desired["host_rule"]) and not desired["hosts"]:
            raise ValidationError("hosts", "is empty: host_rule %s needs the hosts it is about" % desired["host_rule"])
        why = contradiction(desired, [view(r) for r in group_rows.of_cluster(cur, cluster["id"])])
        if why:
            raise ConflictError("Cannot %s affinity group '%s': %s" % ("change" if row else "create", spec.name, why))
        changes = {k: desired[k] for k in FIELDS if desired[k] != current[k]}
        if row is not None and not changes:
            return Outcome(False, resource=current)
        values = {"vm_rule": _rule(desired["vm_rule"]), "vm_enforcing": desired["vm_enforcing"],
                  "host_rule": _rule(desired["host_rule"]), "host_enforcing": desired["host_enforcing"],
                  "priority": desired["priority"]}
        if not check_mode:
            if row is None:
                row = group_rows.insert(cur, dict(values, cluster_id=cluster["id"], name=spec.name))
            else:
                group_rows.update(cur, row["id"], values)
            group_rows.set_members(cur, row["id"], vm_ids, host_ids)
            verb = "changed" if current["id"] else "added"
            _events.record(cur, "AFFINITY_GROUP_" + verb.upper(),
                           "Affinity group %s of cluster %s was %s" % (spec.name, cluster["name"], verb),
                           object_type="cluster", object_id=cluster["id"], object_name=cluster["name"],
                           datacenter=cluster["datacenter"], details={"group": spec.name, "changed": sorted(changes)})
            desired = view(group_rows.find(cur, cluster["id"], spec.name))
        before = {k: current[k] for k in changes} if current["id"] else {}
        return Outcome(True, before, changes if current["id"] else {k: desired[k] for k in FIELDS}, desired,
                       ["update " + ", ".join(sorted(changes))] if current["id"] else ["create"])


def affinity_group_info(engine, cluster=None, names=None):
    with engine.transaction() as cur:
        rows = group_rows.listed(cur, cluster)
    return [view(r) for r in rows if not names or r["name"] in names]
