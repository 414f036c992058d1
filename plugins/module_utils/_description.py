# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kinds of a data center description and what each kind's items refer to: shared by the site module and the
description filters on the controller."""

from __future__ import annotations

KINDS = ("datacenters", "clusters", "hosts", "storage_domains", "logical_networks", "affinity_groups", "templates",
         "vms")
# kind: ((field of the item's references, kind it names, a list of names?, checked only to create it), ...)
REFERENCES = {
    "clusters": (("datacenter", "datacenters", False, False),),
    "hosts": (("cluster", "clusters", False, False),),
    "storage_domains": (("datacenter", "datacenters", False, False), ("clusters", "clusters", True, False),
                        ("host", "hosts", False, False)),
    "logical_networks": (("datacenter", "datacenters", False, False), ("clusters", "clusters", True, False)),
    "affinity_groups": (("cluster", "clusters", False, False), ("vms", "vms", True, False),
                        ("hosts", "hosts", True, False)),
    # a template is made from its VM once; a VM from its template once (both ignored afterwards)
    "templates": (("datacenter", "datacenters", False, False), ("vm", "vms", False, True),
                  ("storage_domain", "storage_domains", False, True)),
    "vms": (("cluster", "clusters", False, False), ("nics", "logical_networks", True, False),
            ("disks", "storage_domains", True, False), ("template", "templates", False, True),
            ("host", "hosts", True, False)),
}
# the field of a list item that names the referenced object (nics: [{network: app}])
LIST_KEYS = {("vms", "nics"): "network", ("vms", "disks"): "storage_domain"}
# kinds whose names are unique within a data center only
IN_DATACENTER = ("storage_domains", "logical_networks", "templates")
# the options of an item that never reach the site module (secrets, and cloud-init user data, which may hold them):
# an item that sets one is left to the task of its kind to compare
WITHHELD = {"vms": ("console.password", "cloud_init.user_data"), "storage_domains": ("rbd.secret_uuid",)}
# kinds whose task defaults the item's data center to the description's
DATACENTER_DEFAULTED = ("clusters",) + IN_DATACENTER
# the options of the module of each kind (the vm module checks its items itself, strictly)
OPTIONS = {
    "datacenters": ("name", "description", "storage_type", "state"),
    "clusters": ("name", "datacenter", "description", "cpu_model", "scheduling_policy", "scheduling_policy_params",
                 "memory_overcommit_percent", "cpu_overcommit_ratio", "migration_policy", "migration_bandwidth_mbps",
                 "migration_max_parallel", "ha_reservation", "resilience_policy", "state"),
    "hosts": ("name", "cluster", "libvirt_uri", "address", "domain_type", "network_nic", "reserved_memory",
              "reserved_cpus", "schedulable_memory", "schedulable_cpus", "state"),
    "storage_domains": ("name", "datacenter", "type", "dir", "posixfs", "nfs", "logical", "iscsi", "rbd", "host",
                        "clusters", "description", "state"),
    "logical_networks": ("name", "datacenter", "description", "mode", "vlan", "vxlan", "mtu", "subnet", "gateway",
                         "bridge", "clusters", "state"),
    "affinity_groups": ("name", "cluster", "vm_rule", "vm_enforcing", "host_rule", "host_enforcing", "priority",
                        "vms", "hosts", "state"),
    "templates": ("name", "datacenter", "vm", "storage_domain", "description", "state"),
}


def names(value, key="name"):
    """A list of names given as strings or as mappings with a name (clusters: [prod] or [{name: prod}]); one name
    alone stands for a list of one."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        return value if value is None else "invalid"
    return [item.get(key) if isinstance(item, dict) else item for item in value]


def refs(kind, item, datacenter=None):
    """Of one item of the description: its name, its state, its references and the names of its options (never
    their values), with the data center defaulted where the playbook defaults it."""
    if not isinstance(item, dict):
        return {"invalid": True}
    found = {"name": item.get("name"), "state": item.get("state", "present"), "keys": sorted(map(str, item))}
    for field, _target, many, _creation in REFERENCES.get(kind, ()):
        if many:
            found[field] = names(item.get(field), LIST_KEYS.get((kind, field), "name"))
        else:
            found[field] = item.get(field)
    if "datacenter" in found and found["datacenter"] is None:
        found["datacenter"] = datacenter
    return found


def withheld(kind, item):
    """Whether ``item`` sets an option of WITHHELD[kind] (dotted: console.password)."""
    for path in WITHHELD.get(kind, ()):
        value = item
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            return True
    return False
