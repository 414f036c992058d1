# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kinds of a data center description and what each kind's items refer to: shared by the site module and the
description filters on the controller."""

from __future__ import annotations

KINDS = ("datacenters", "clusters", "hosts", "storage_domains", "logical_networks", "affinity_groups", "templates",
         "vms")
# kind: ((field of the item's references, kind it names, a list of names?), ...)
REFERENCES = {
    "clusters": (("datacenter", "datacenters", False),),
    "hosts": (("cluster", "clusters", False),),
    "storage_domains": (("datacenter", "datacenters", False), ("clusters", "clusters", True)),
    "logical_networks": (("datacenter", "datacenters", False), ("clusters", "clusters", True)),
    "affinity_groups": (("cluster", "clusters", False), ("vms", "vms", True), ("hosts", "hosts", True)),
    "templates": (("datacenter", "datacenters", False), ("vm", "vms", False),
                  ("storage_domain", "storage_domains", False)),
    "vms": (("cluster", "clusters", False), ("networks", "logical_networks", True),
            ("storage_domains", "storage_domains", True), ("template", "templates", False)),
}


def names(value, key="name"):
    """A list of names given as strings or as mappings with a name (clusters: [prod] or [{name: prod}])."""
    if not isinstance(value, list):
        return value if value is None else "invalid"
    return [item.get(key) if isinstance(item, dict) else item for item in value]


def refs(kind, item):
    """Of one item of the description: its name, its state and its references, nothing else."""
    if not isinstance(item, dict):
        return {"invalid": True}
    found = {"name": item.get("name"), "state": item.get("state", "present")}
    for field, _target, many in REFERENCES.get(kind, ()):
        if kind == "vms" and field == "networks":
            found[field] = names(item.get("nics"), "network")
        elif kind == "vms" and field == "storage_domains":
            found[field] = names(item.get("disks"), "storage_domain")
        else:
            found[field] = names(item.get(field)) if many else item.get(field)
    return found
