# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of a data center description: its names and references for the site module (nothing else of it - no
password, no cloud-init - reaches that module's arguments), the items whose references already exist, and the
hypervisors of an inventory as hosts of the description."""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils._description import KINDS, REFERENCES, refs


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
                "hypervisor_hosts": hypervisor_hosts}
