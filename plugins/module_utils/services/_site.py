# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A whole data center described: its references checked against itself and the engine before anything changes,
and what it no longer names pruned, in the order that lets each removal happen."""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils._description import (
    IN_DATACENTER,
    KINDS,
    OPTIONS,
    REFERENCES,
)
from ansible_collections.virtplane.kvm.plugins.module_utils._errors import (
    ConflictError,
    ValidationError,
    VirtplaneError,
)
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import shown, validate_name
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _objects
from ansible_collections.virtplane.kvm.plugins.module_utils.services import (
    _affinity,
    _cluster,
    _datacenter,
    _host,
    _maintenance,
    _network,
    _storage,
    _template,
    _vm,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import Outcome

LABEL = {"datacenters": "data center", "clusters": "cluster", "hosts": "host", "storage_domains": "storage domain",
         "logical_networks": "logical network", "affinity_groups": "affinity group", "templates": "template",
         "vms": "VM"}
# where an object's name is unique: its parent's name is part of its key
SCOPE = dict({"affinity_groups": "cluster"}, **{kind: "datacenter" for kind in IN_DATACENTER})
# removal order: what stands on others first
PRUNE_ORDER = ("vms", "affinity_groups", "templates", "logical_networks", "storage_domains", "hosts", "clusters",
               "datacenters")


def engine_objects(cur):
    """{kind: {key: row}} of everything the engine has, key (name) or (scope, name), in one snapshot."""
    return {kind: {_key(kind, row): row for row in rows} for kind, rows in _objects.by_kind(cur).items()}


def _key(kind, item):
    scope = SCOPE.get(kind)
    return (item.get(scope), item["name"]) if scope else item["name"]


def _shown_key(kind, key):
    if isinstance(key, tuple):
        return "%s '%s' (%s %s)" % (LABEL[kind], key[1], "cluster" if SCOPE[kind] == "cluster" else "data center",
                                    key[0])
    return "%s '%s'" % (LABEL[kind], key)


class Description:
    """The description's names and references (what the description_refs filter keeps), checked on creation."""

    def __init__(self, refs):
        if not isinstance(refs, dict) or refs.get("invalid"):
            raise ValidationError("description", "is not a mapping of lists of objects")
        if refs.get("unknown"):
            raise ValidationError("description", "%s is not a kind of object (%s)"
                                  % (shown(refs["unknown"][0]), ", ".join(KINDS)))
        self.kinds = [kind for kind in KINDS if refs.get(kind) is not None]
        self.present = {}   # kind: {key: item} of what is to exist
        self.absent = {}    # kind: {key: item} of what the description removes itself (state absent)
        for kind in self.kinds:
            self._items(kind, refs[kind])

    def _items(self, kind, items):
        if not isinstance(items, list):
            raise ValidationError(kind, "is not a list")
        present, absent, where = {}, {}, {}
        for index, item in enumerate(items):
            field = "%s[%d]" % (kind, index)
            if not isinstance(item, dict) or item.get("invalid"):
                raise ValidationError(field, "is not a mapping")
            validate_name(field + ".name", item.get("name"))
            unknown = [key for key in item.get("keys") or () if kind in OPTIONS and key not in OPTIONS[kind]]
            if unknown:
                raise ValidationError("%s.%s" % (field, unknown[0]), "is not an option of a %s (%s)"
                                      % (LABEL[kind], ", ".join(OPTIONS[kind])))
            scope = SCOPE.get(kind)
            if scope is not None and item.get(scope) is not None:
                validate_name("%s.%s" % (field, scope), item.get(scope))
            key = _key(kind, item)
            if key in where:
                first = present.get(key) or absent.get(key)
                if kind == "vms" and first.get("cluster") != item.get("cluster"):
                    clusters = (shown(first.get("cluster")), where[key], shown(item.get("cluster")), field)
                    raise ValidationError(field + ".cluster", "VM '%s' is described in two clusters: %s (%s) and "
                                          "%s (%s)" % ((key,) + clusters))
                raise ValidationError(field + ".name", "%s is described twice (%s and %s)"
                                      % (_shown_key(kind, key), where[key], field))
            where[key] = field
            (absent if item.get("state") == "absent" else present)[key] = dict(item, field=field)
        self.present[kind], self.absent[kind] = present, absent


def _name(key):
    return key[1] if isinstance(key, tuple) else key


def _known(description, found, kind, prune):
    """Names of `kind` a reference may name: those described present, and those the engine has unless the
    description removes them (state absent, or a prune of a kind it lists)."""
    names = {_name(key) for key in description.present.get(kind, {})}
    if not (prune and kind in description.kinds):
        names.update(_name(key) for key in found[kind] if key not in description.absent.get(kind, {}))
    return names


def check_references(description, found, prune):
    """Refuse the first reference to something neither described nor in the engine (or in the engine, but to be
    pruned), naming the item's field. What only matters to create an object is checked for new ones only."""
    known = {kind: _known(description, found, kind, prune) for kind in KINDS}
    for kind in description.kinds:
        for key, item in description.present[kind].items():
            exists = key in found[kind]
            for field, target, many, creation in REFERENCES.get(kind, ()):
                value = item.get(field)
                if value is None or (creation and exists):
                    continue
                if many and not isinstance(value, list):
                    raise ValidationError("%s.%s" % (item["field"], field), "is not a list")
                for name in value if many else [value]:
                    if isinstance(name, str) and name in known[target]:
                        continue
                    pruned = prune and any(_name(k) == name for k in found[target])
                    raise ValidationError("%s.%s" % (item["field"], field), "%s %s names %s %s, which %s" % (
                        LABEL[kind], shown(item["name"]), LABEL[target], shown(name),
                        "the prune removes: the description does not name it" if pruned
                        else "is neither described nor in the engine"))


def plan(description, found, prune, prune_running):
    """(creations, removals): what the description adds to the engine, and what a prune would remove (refused,
    naming each, when it would remove a VM that is not Down and prune_running is not set)."""
    creations = []
    for kind in description.kinds:
        for key in description.present[kind]:
            if key not in found[kind]:
                creations.append("create %s" % _shown_key(kind, key))
    removals = []
    running = []
    for kind in PRUNE_ORDER:
        if kind not in description.kinds:
            continue
        for key, row in found[kind].items():
            if key in description.present[kind]:
                continue
            explicit = key in description.absent[kind]
            if not prune and not explicit:
                continue
            # a VM the description removes itself is the vm module's (and its force's) to stop
            if kind == "vms" and row["status"] != "Down" and not explicit:
                running.append((key, row))
            removals.append((kind, key, row, explicit))
    blocked = [(key, row) for key, row in running if not prune_running]
    if blocked:
        where = ["'%s' is %s%s" % (key, row["status"], " on %s" % row["host"] if row["host"] else "")
                 for key, row in blocked]
        raise ConflictError("Cannot prune VMs that do not stand still: %s; set prune_running to power them off and "
                            "remove them" % "; ".join(where))
    # what the description removes itself is done by the tasks of its kind; the prune removes the rest
    return creations, [(kind, key, row) for kind, key, row, explicit in removals if not explicit]


def _remove(engine, kind, key, row, prune_running):
    if kind == "vms":
        values = {field: None for field in _vm.VmSpec.FIELDS}
        values.update(name=key, state="absent", force=prune_running, stop_timeout=120, remove_disks=True, timeout=15,
                      wait_timeout=60)
        return _vm.ensure_many(engine, [_vm.VmSpec(**values)])[0]
    if kind == "affinity_groups":
        return _affinity.ensure(engine, _affinity.AffinityGroupSpec(name=key[1], cluster=key[0], state="absent"))
    if kind == "templates":
        return _template.ensure(engine, _template.TemplateSpec(name=key[1], datacenter=key[0], state="absent",
                                                               timeout=15, wait_timeout=60))
    if kind == "logical_networks":
        return _network.ensure(engine, _network.NetworkSpec(name=key[1], datacenter=key[0], state="absent",
                                                            timeout=15, wait_timeout=60))
    if kind == "storage_domains":
        return _storage.ensure(engine, _storage.StorageDomainSpec(name=key[1], datacenter=key[0],
                                                                  state="absent", timeout=15, wait_timeout=60))
    if kind == "hosts":
        return _host.ensure(engine, _host.HostSpec(name=key, state="absent", timeout=15, wait_timeout=60))
    if kind == "clusters":
        return _cluster.ensure(engine, _cluster.ClusterSpec(name=key, datacenter=row["datacenter"], state="absent"))
    return _datacenter.ensure(engine, _datacenter.DatacenterSpec(name=key, state="absent"))


# the spec and the service of each kind's task
_SERVICES = {
    "datacenters": (_datacenter.DatacenterSpec, _datacenter.ensure),
    "clusters": (_cluster.ClusterSpec, _cluster.ensure),
    "hosts": (_host.HostSpec, _maintenance.ensure),
    "storage_domains": (_storage.StorageDomainSpec, _storage.ensure),
    "logical_networks": (_network.NetworkSpec, _network.ensure),
    "templates": (_template.TemplateSpec, _template.ensure),
    "vms": (_vm.VmSpec, None),
    "affinity_groups": (_affinity.AffinityGroupSpec, _affinity.ensure),
}


# what an unchanged item's task still does on a real run: a host's memory, CPUs and load, a storage domain's
# capacity on each host are refreshed (and not reported as changes)
REFRESHED = ("hosts", "storage_domains")


def field_of(kind, index):
    """An item's place as its user wrote it: the hosts compared are virtplane_hosts (the description's hosts list
    the hypervisors first)."""
    return "%s[%d]" % ("virtplane_hosts" if kind == "hosts" else kind, index)


def pending(engine, prepared, check_mode=False):
    """{kind: [index]}: of ``prepared`` ({kind: [(index, params or None)]}, each item's parameters as its module
    would hand them to its service), the items whose task has something to do - its service, in check mode, says
    it would change something - or that cannot be told here: None (not compared), or an item the service cannot
    take now (a reference to what is still to be created: its task reports it). What its spec refuses is refused
    here, naming the item, before anything changes. The VMs are compared in one bulk read, as their task does. On a
    real run, an unchanged host or storage domain is then ensured for real, which refreshes what its task would."""
    result = {}
    for kind, items in prepared.items():
        spec_class, service = _SERVICES[kind]
        found = [index for index, params in items if params is None]
        specs = []
        for index, params in items:
            if params is None:
                continue
            try:
                specs.append((index, spec_class.from_params(params)))
            except ValidationError as exc:
                raise ValidationError("%s.%s" % (field_of(kind, index), exc.field), exc.cause)
        if service is None:
            try:
                outcomes = _vm.ensure_many(engine, [spec for _index, spec in specs], True)
                changed = [index for (index, _spec), outcome in zip(specs, outcomes) if outcome.changed]  # noqa: B905
                found.extend(changed)
            except VirtplaneError:
                found.extend(index for index, _spec in specs)
        else:
            for index, spec in specs:
                try:
                    if service(engine, spec, True).changed:
                        found.append(index)
                    elif kind in REFRESHED and not check_mode and service(engine, spec, False).changed:
                        found.append(index)  # it changed since the check: its task reports what it is now
                except VirtplaneError:
                    found.append(index)
        result[kind] = sorted(found)
    return result


def ensure(engine, refs, prune=False, prune_running=False, apply_prune=False, check_mode=False):
    """Check the description; with ``apply_prune``, remove what it no longer names. Returns an Outcome whose
    resource is {"creations", "removals", "missing"}."""
    description = Description(refs)
    with engine.consistent_read() as cur:
        found = engine_objects(cur)
    check_references(description, found, prune)
    creations, removals = plan(description, found, prune, prune_running)
    missing = {kind: sorted(_name(k) for k in description.present[kind] if k not in found[kind])
               for kind in description.kinds}
    listed = ["remove %s" % _shown_key(kind, key) for kind, key, _row in removals]
    resource = {"creations": creations, "removals": listed, "missing": missing}
    if not apply_prune:
        return Outcome(False, resource=resource, actions=[])
    if not removals:
        return Outcome(False, resource=resource, actions=[])
    before = {kind: sorted(_name(k) for k in found[kind]) for kind in description.kinds}
    gone = {}
    for kind, key, row in removals:
        if not check_mode:
            _remove(engine, kind, key, row, prune_running)
        gone.setdefault(kind, set()).add(_name(key))
    after = {kind: [n for n in names if n not in gone.get(kind, set())] for kind, names in before.items()}
    return Outcome(True, before=before, after=after, resource=resource, actions=listed)
