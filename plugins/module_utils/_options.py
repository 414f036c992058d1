# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options of the modules a data center description feeds, one place for both: each module takes its
options from here, and the site module checks a description's items against the very same ones."""

from __future__ import annotations

import copy

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
from ansible_collections.virtplane.kvm.plugins.module_utils._description import withheld
from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils._module import TIMEOUT_OPTIONS, WAIT_OPTIONS, strict_types

DATACENTER = dict(
    name=dict(type="str", required=True),
    description=dict(type="str"),
    storage_type=dict(type="str", choices=list(_choices.DATACENTER_STORAGE_TYPES)),
    state=dict(type="str", choices=list(_choices.PRESENT_ABSENT), default="present"),
)

CLUSTER = dict(
    name=dict(type="str", required=True),
    datacenter=dict(type="str"),
    description=dict(type="str"),
    cpu_model=dict(type="str"),
    scheduling_policy=dict(type="str", choices=list(_choices.SCHEDULING_POLICIES)),
    scheduling_policy_params=dict(type="dict"),
    memory_overcommit_percent=dict(type="int"),
    cpu_overcommit_ratio=dict(type="float"),
    migration_policy=dict(type="str", choices=list(_choices.MIGRATION_POLICIES)),
    migration_bandwidth_mbps=dict(type="int"),
    migration_max_parallel=dict(type="int"),
    ha_reservation=dict(type="bool"),
    resilience_policy=dict(type="str", choices=list(_choices.RESILIENCE_POLICIES)),
    state=dict(type="str", choices=list(_choices.PRESENT_ABSENT), default="present"),
)

# a host's settings, which the host module takes for one host and for each of its hosts list
HOST_SETTINGS = dict(
    cluster=dict(type="str"),
    libvirt_uri=dict(type="str"),
    address=dict(type="str"),
    domain_type=dict(type="str", choices=list(_choices.HOST_DOMAIN_TYPES)),
    network_nic=dict(type="str"),
    reserved_memory=dict(type="str"),
    reserved_cpus=dict(type="int"),
    schedulable_memory=dict(type="str"),
    schedulable_cpus=dict(type="int"),
)
HOST_BULK_STATES = ("present", "refreshed", "absent")
HOST_ITEM = dict(HOST_SETTINGS, name=dict(type="str", required=True),
                 state=dict(type="str", choices=list(HOST_BULK_STATES), default="present"))

STORAGE_TYPES = list(_choices.STORAGE_TYPES)
_PATH_ONLY = dict(type="dict", options=dict(path=dict(type="str", required=True)))
STORAGE_DOMAIN = dict(
    name=dict(type="str", required=True),
    datacenter=dict(type="str"),
    type=dict(type="str", choices=STORAGE_TYPES),
    clusters=dict(type="list", elements="str"),
    host=dict(type="str"),
    description=dict(type="str"),
    dir=_PATH_ONLY,
    posixfs=_PATH_ONLY,
    nfs=dict(type="dict", options=dict(server=dict(type="str", required=True),
                                       export=dict(type="str", required=True), path=dict(type="str"))),
    logical=dict(type="dict", options=dict(volume_group=dict(type="str", required=True),
                                           devices=dict(type="list", elements="str"))),
    iscsi=dict(type="dict", options=dict(portal=dict(type="str", required=True),
                                         target=dict(type="str", required=True),
                                         initiator_prefix=dict(type="str"))),
    rbd=dict(type="dict", options=dict(monitors=dict(type="list", elements="str", required=True),
                                       pool=dict(type="str", required=True), user=dict(type="str"),
                                       secret_uuid=dict(type="str", no_log=True))),
    state=dict(type="str", choices=list(_choices.STORAGE_STATES), default="present"),
)
STORAGE_DOMAIN_RULES = dict(
    mutually_exclusive=[STORAGE_TYPES],
    required_if=[("state", "present", ("type", "datacenter")), ("state", "maintenance", ("type", "datacenter"))]
    + [("type", t, (t,)) for t in STORAGE_TYPES])

LOGICAL_NETWORK = dict(
    name=dict(type="str", required=True),
    datacenter=dict(type="str"),
    description=dict(type="str"),
    mode=dict(type="str", choices=list(_choices.NETWORK_MODES)),
    vlan=dict(type="int"),
    vxlan=dict(type="int"),
    mtu=dict(type="int"),
    subnet=dict(type="str"),
    gateway=dict(type="str"),
    bridge=dict(type="str"),
    clusters=dict(type="list", elements="dict", options=dict(name=dict(type="str", required=True),
                                                             required=dict(type="bool", default=True))),
    state=dict(type="str", choices=list(_choices.PRESENT_ABSENT), default="present"),
)
LOGICAL_NETWORK_RULES = dict(mutually_exclusive=[("vlan", "vxlan")],
                             required_if=[("state", "present", ("datacenter",))])

TEMPLATE = dict(
    name=dict(type="str", required=True),
    vm=dict(type="str"),
    storage_domain=dict(type="str"),
    datacenter=dict(type="str"),
    description=dict(type="str"),
    state=dict(type="str", choices=list(_choices.PRESENT_ABSENT), default="present"),
)

VM = dict(
    name=dict(type="str"),
    cluster=dict(type="str"),
    description=dict(type="str"),
    tags=dict(type="list", elements="str"),
    vcpus=dict(type="int"),
    cpu=dict(type="dict", options=dict(sockets=dict(type="int"), cores=dict(type="int"), threads=dict(type="int"),
                                       max_vcpus=dict(type="int"))),
    memory=dict(type="str"),
    memory_max=dict(type="str"),
    disks=dict(type="list", elements="dict", options=dict(
        name=dict(type="str", required=True),
        storage_domain=dict(type="str", required=True),
        size=dict(type="str"),
        format=dict(type="str", choices=list(_choices.DISK_FORMATS)),
        bus=dict(type="str", choices=list(_choices.DISK_BUSES), default="virtio"),
        bootable=dict(type="bool", default=False))),
    nics=dict(type="list", elements="dict", options=dict(
        name=dict(type="str"),
        network=dict(type="str", required=True),
        model=dict(type="str", choices=list(_choices.VM_NIC_MODELS), default="virtio"),
        mac=dict(type="str"))),
    boot=dict(type="dict", options=dict(
        devices=dict(type="list", elements="str", choices=list(_choices.VM_BOOT_DEVICES)),
        kernel=dict(type="str"),
        initrd=dict(type="str"),
        cmdline=dict(type="str"))),
    cloud_init=dict(type="dict", options=dict(user_data=dict(type="raw"), meta_data=dict(type="raw"),
                                              network_config=dict(type="raw"))),
    console=dict(type="dict", options=dict(
        type=dict(type="str", choices=list(_choices.VM_CONSOLE_TYPES), default="vnc"),
        listen=dict(type="str", default="127.0.0.1"),
        password=dict(type="str", no_log=True))),
    serial_console=dict(type="bool"),
    ha=dict(type="dict", options=dict(enabled=dict(type="bool", default=True),
                                      priority=dict(type="int", default=0))),
    host=dict(type="list", elements="str"),
    state=dict(type="str", choices=list(_choices.VM_STATES), default="present"),
    force=dict(type="bool", default=False),
    stop_timeout=dict(type="int", default=120),
    remove_disks=dict(type="bool", default=True),
    template=dict(type="str"),
    clone=dict(type="str", choices=list(_choices.VM_CLONE_MODES), default="thin"),
)

AFFINITY_GROUP = dict(
    name=dict(type="str", required=True),
    cluster=dict(type="str", required=True),
    vm_rule=dict(type="str", choices=list(_choices.AFFINITY_RULES)),
    vm_enforcing=dict(type="bool"),
    host_rule=dict(type="str", choices=list(_choices.AFFINITY_RULES)),
    host_enforcing=dict(type="bool"),
    priority=dict(type="int"),
    vms=dict(type="list", elements="str"),
    hosts=dict(type="list", elements="str"),
    state=dict(type="str", choices=list(_choices.PRESENT_ABSENT), default="present"),
)

# what a description's item of each kind is checked against: the options of its module's task in
# playbooks/datacenter.yml (an item of hosts or vms: one element of the module's hosts or vms list)
ITEMS = {
    "datacenters": (DATACENTER, {}),
    "clusters": (CLUSTER, {}),
    "hosts": (HOST_ITEM, {}),
    "storage_domains": (STORAGE_DOMAIN, STORAGE_DOMAIN_RULES),
    "logical_networks": (LOGICAL_NETWORK, LOGICAL_NETWORK_RULES),
    "templates": (TEMPLATE, {}),
    "vms": (VM, {}),
    "affinity_groups": (AFFINITY_GROUP, {}),
}
# the module-wide options an item's module applies to it, at their defaults
MODULE_DEFAULTS = {"timeout": TIMEOUT_OPTIONS["timeout"]["default"], "wait": True,
                   "wait_timeout": WAIT_OPTIONS["wait_timeout"]["default"]}


def storage_type_mismatch(params):
    """(field, message) when a storage domain carries the parameters of a type it is not, else None."""
    given = [t for t in STORAGE_TYPES if params.get(t) is not None and t != params.get("type")]
    if given and params.get("state") != "absent":
        return given[0], "Invalid value for '%s': a %s domain takes its parameters in '%s'" % (
            given[0], params.get("type"), params.get("type"))
    return None


def secret_options(spec, value, prefix=""):
    """The options (dotted) of ``spec`` that are secrets (no_log) and set in ``value``."""
    found = []
    if not isinstance(value, dict):
        return found
    for name, option in spec.items():
        given = value.get(name)
        if given is None:
            continue
        if option.get("no_log"):
            found.append(prefix + name)
        elif option.get("options"):
            for element in given if isinstance(given, list) else [given]:
                found.extend(secret_options(option["options"], element, prefix + name + "."))
    return found


def unknown_options(spec, value, prefix=""):
    """The keys (dotted) of ``value`` that ``spec`` does not have, at any depth."""
    found = []
    if not isinstance(value, dict):
        return found
    for name, given in value.items():
        option = spec.get(name)
        if option is None:
            found.append(prefix + str(name))
        elif option.get("options") and given is not None:
            for element in given if isinstance(given, list) else [given]:
                found.extend(unknown_options(option["options"], element, prefix + name + "."))
    return found


def comparable(kind, item):
    """Whether the site module may be given ``item``: none of its options is a secret (no_log) or a withheld one
    (cloud-init), and none is unknown to its module - a misspelt secret (console.passwd) is kept from the site
    module's arguments too; the kind's task refuses it."""
    spec, _rules = ITEMS[kind]
    return not (secret_options(spec, item) or unknown_options(spec, item) or withheld(kind, item))


def item_params(kind, item):
    """The parameters the module of ``kind`` would hand its service for ``item`` (its spec's types and defaults,
    and the module-wide options at theirs), or ValidationError when the module would refuse the item."""
    spec, rules = ITEMS[kind]
    if not isinstance(item, dict):
        raise ValidationError(kind, "is not a mapping")
    params = copy.deepcopy(item)
    refusal = strict_types(spec, params)
    if refusal:
        raise ValidationError(*refusal)
    result = ArgumentSpecValidator(spec, **rules).validate(params)
    if result.error_messages:
        raise ValidationError(kind, result.error_messages[0])
    params = result.validated_parameters
    if kind == "storage_domains" and storage_type_mismatch(params):
        raise ValidationError(*storage_type_mismatch(params))
    return dict(MODULE_DEFAULTS, **params)
