# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of a data center description: its names and references for the site module, and its items as their tasks
take them for the site module to compare (no password, no cloud-init reaches that module's arguments: an item with
one is left to its task); the items the site module found different; the items whose references already exist; and
the hypervisors of an inventory as hosts of the description."""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils._description import (
    DATACENTER_DEFAULTED,
    KINDS,
    REFERENCES,
    refs,
)


def description_refs(description, datacenter=None):
    if not isinstance(description, dict):
        return {"invalid": True}
    result = {}
    for kind in KINDS:
        items = description.get(kind)
        if items is None:
            continue
        result[kind] = [refs(kind, item, datacenter) for item in items] if isinstance(items, list) else "invalid"
    unknown = sorted(set(description) - set(KINDS))
    if unknown:
        result["unknown"] = [str(k) for k in unknown]
    return result


def description_compare(description, hosts=None, datacenter=None):
    """{kind: [item or None]}: each item as the task of its kind passes it to its module (its data center defaulted),
    or None for an item with a secret, a withheld or an unknown option (its task compares it, or refuses it). The
    hosts are ``hosts`` (those the hypervisor role does not register), the kind left out when None. What is not a
    list of mappings is left to the site check to refuse."""
    # the modules' options (Ansible's module_utils, imported when the filter runs)
    from ansible_collections.virtplane.kvm.plugins.module_utils._options import comparable

    if not isinstance(description, dict):
        return {}
    description = dict(description)
    description.pop("hosts", None)
    if hosts is not None:
        description["hosts"] = hosts
    result = {}
    for kind in KINDS:
        items = description.get(kind)
        if not isinstance(items, list):
            continue
        compared = []
        for item in items:
            if not isinstance(item, dict) or not comparable(kind, item):
                compared.append(None)
            elif kind in DATACENTER_DEFAULTED and "datacenter" not in item:  # as the task's default() does
                compared.append(dict(item, datacenter=datacenter))
            else:
                compared.append(item)
        result[kind] = compared
    return result


def description_pending(items, kind, site):
    """The items of `kind` the site module found to differ from the engine (or could not compare): its result's
    pending[kind] (indices into the kind's list). All of them when it did not compare that kind."""
    pending = ((site or {}).get("pending") or {}).get(kind)
    items = items or []
    if pending is None:
        return list(items)
    return [item for index, item in enumerate(items) if index in set(pending)]


def description_ready(items, kind, missing, datacenter=None):
    """The items of `kind` none of whose references is among `missing` ({kind: [names]}, what the engine does not
    have yet): in check mode, what can be checked against the engine now; the rest is listed as to be created."""
    missing = missing or {}
    ready = []
    for item in items or []:
        if not isinstance(item, dict):
            ready.append(item)
            continue
        found = refs(kind, item, datacenter)
        blocked = False
        for field, target, many, _creation in REFERENCES.get(kind, ()):
            value = found.get(field)
            values = value if many and isinstance(value, list) else [value]
            if any(v in (missing.get(target) or []) for v in values if isinstance(v, str)):
                blocked = True
        if not blocked:
            ready.append(item)
    return ready


def hypervisor_hosts(hosts, hostvars):
    """[{name, cluster}] of the inventory hosts `hosts` (the group hypervisors), each in its cluster as the
    hypervisor role registers it: hypervisor_cluster, else virtplane_cluster, else Default."""
    found = []
    for name in hosts or []:
        variables = hostvars[name]
        cluster = variables.get("hypervisor_cluster") or variables.get("virtplane_cluster") or "Default"
        found.append({"name": name, "cluster": cluster})
    return found


class FilterModule:
    def filters(self):
        return {"description_refs": description_refs, "description_ready": description_ready,
                "description_compare": description_compare, "description_pending": description_pending,
                "hypervisor_hosts": hypervisor_hosts}
