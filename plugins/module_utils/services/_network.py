# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logical networks: defined once per data center, assigned to clusters, realized on their hosts.

Applying a network is one operation (``_operation``): every affected host is read with no lock
held, the network is checked against the data center's others (subnet overlaps, VLAN and VXLAN
segments, bridges) and reserved under the data center's lock, realized on the hosts with no lock
held, and confirmed: a host that cannot realize a required network is NonOperational with
libvirt's (or the network hook's) reason, and Up again once it has it.
"""

from __future__ import annotations

import hashlib
import re

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import (
    ConflictError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import (
    IPROUTE_WORDS,
    shown,
    validate_description,
    validate_name,
    validate_range,
    validate_timeout,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _datacenters, _events, _jobs
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _hosts as host_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _networks as network_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_DATACENTER
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _hosts, _operation, _realize
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import (
    Outcome,
    Spec,
    plain,
    refuse_dependants,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _network

FIELDS = ("description", "mode", "vlan_id", "vxlan_vni", "mtu", "subnet", "gateway", "bridge")
# An interface name iproute2 takes as a name: it starts with a letter or digit, and is none of its words.
_BRIDGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,14}")

_ADDRESS = re.compile(r"[0-9A-Fa-f.:/]{1,64}")
# what cannot change while VMs use the network: their taps are on the bridge
DISRUPTIVE = ("mode", "vlan_id", "vxlan_vni", "bridge", "mtu")
SERVING_OR_JOINING = ("Up", "NonOperational", "Installing")


def derive_bridge(datacenter, name):
    """A bridge name for the network: readable, at most 15 characters, distinct per data center."""
    clean = re.sub(r"[^a-z0-9]", "", name.lower())[:8]
    digest = hashlib.sha1(("%s/%s" % (datacenter, name)).encode()).hexdigest()[:4]
    return "vp%s-%s" % (clean, digest)


def _netaddr():
    import netaddr  # imported here: its absence is one clear message, raised below
    return netaddr


def _subnet(netaddr, subnet):
    """A network for VMs in CIDR notation, as written: a prefix length, no host bits, and a range a VM
    network can be (not the whole address space, loopback, link-local or multicast)."""
    address, slash, prefix = subnet.partition("/")
    if not slash or not prefix.isdigit() or (prefix != "0" and prefix.startswith("0")):
        raise ValidationError("subnet", "%s is not a network in CIDR notation (address/prefix length, e.g. "
                                        "10.1.0.0/24)" % shown(subnet))
    try:
        network = netaddr.IPNetwork(subnet)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise ValidationError("subnet", "%s is not a network in CIDR notation" % shown(subnet))
    if network.ip != network.network:
        raise ValidationError("subnet", "%s has host bits set; did you mean %s?" % (shown(subnet), network.cidr))
    shortest = 8 if network.version == 4 else 16
    if network.prefixlen < shortest:
        raise ValidationError("subnet", "%s is wider than a VM network can be (a prefix of at least /%d)"
                              % (shown(subnet), shortest))
    if network.is_loopback() or network.is_link_local() or network.is_multicast() or \
            (network.version == 4 and network.network in netaddr.IPNetwork("0.0.0.0/8")):
        raise ValidationError("subnet", "%s is a loopback, link-local, multicast or 'this network' range, which no "
                                        "VM network can use" % shown(subnet))
    return network


def validate(desired, name, datacenter, complete=True):
    """Range, address and name checks on the desired fields (None: unset).

    ``complete``: the fields are the whole network (stored values merged in), so rules between
    fields (a gateway needs a subnet, NAT needs both) apply; on the raw input they would refuse a
    change of one field of an existing network.
    """
    validate_description("description", desired.get("description"))
    for field, value in (("vlan", desired.get("vlan_id")), ("vxlan", desired.get("vxlan_vni")),
                         ("mtu", desired.get("mtu"))):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValidationError(field, "%s is not a whole number" % shown(value))
    vlan, vni, mtu = desired.get("vlan_id"), desired.get("vxlan_vni"), desired.get("mtu")
    if vlan is not None and not 1 <= vlan <= 4094:
        raise ValidationError("vlan", "%s is not a usable VLAN id: use 1-4094 (0 and 4095 are reserved)" % vlan)
    if vni is not None and not 1 <= vni <= 16777215:
        raise ValidationError("vxlan", "%s is not a VXLAN network identifier: use 1-16777215" % vni)
    if vlan is not None and vni is not None:
        raise ValidationError("vlan", "a network is either VLAN-tagged or a VXLAN segment, not both")
    if mtu is not None and not 68 <= mtu <= 9216:
        raise ValidationError("mtu", "%s is outside 68-9216" % mtu)
    mode = desired.get("mode") or "bridge"
    if complete and mode != "bridge" and (vlan or vni):
        raise ValidationError("mode", "a %s network is local to each host: VLAN and VXLAN need mode bridge" % mode)
    bridge = desired.get("bridge")
    if bridge is not None and not (isinstance(bridge, str) and _BRIDGE.fullmatch(bridge)
                                   and bridge.lower() not in IPROUTE_WORDS):
        raise ValidationError("bridge", "%s is not a usable bridge name: 1-15 letters, digits, '_' or '-', starting "
                              "with a letter or digit, and not a word of iproute2 (%s)"
                              % (shown(bridge), ", ".join(IPROUTE_WORDS)))
    subnet, gateway = desired.get("subnet"), desired.get("gateway")
    for field, value in (("subnet", subnet), ("gateway", gateway)):
        # netaddr reads past surrounding whitespace; an address is taken only as written, whole
        if value is not None and (not isinstance(value, str) or not _ADDRESS.fullmatch(value)):
            raise ValidationError(field, "%s is not %s" % (shown(value), "a network in CIDR notation"
                                                           if field == "subnet" else "an IP address"))
    try:
        netaddr = _netaddr()
    except ImportError:
        raise ValidationError("subnet", "the Python library netaddr is required on the engine host")
    if subnet is not None:
        network = _subnet(netaddr, subnet)
        desired["subnet"] = str(network.cidr)
        if gateway is not None:
            try:
                address = netaddr.IPAddress(gateway)
            except (netaddr.AddrFormatError, ValueError, TypeError):
                raise ValidationError("gateway", "%s is not an IP address" % shown(gateway))
            if address not in network or (network.size > 2 and address in (network.network, network.broadcast)):
                raise ValidationError("gateway", "%s is not a host address of subnet %s" % (gateway, network.cidr))
            desired["gateway"] = str(address)
    elif gateway is not None and complete:
        raise ValidationError("gateway", "needs a subnet")
    elif gateway is not None:
        try:
            desired["gateway"] = str(netaddr.IPAddress(gateway))
        except (netaddr.AddrFormatError, ValueError, TypeError):
            raise ValidationError("gateway", "%s is not an IP address" % shown(gateway))
    if complete and mode == "nat" and (subnet is None or gateway is None):
        raise ValidationError("subnet", "a nat network needs a subnet and a gateway (the host's address on it)")


_SEGMENTS = (("vlan_id", "vlan", "VLAN"), ("vxlan_vni", "vxlan", "VXLAN segment"))


class NetworkSpec(Spec):
    FIELDS = ("name", "datacenter", "clusters", "state", "timeout", "wait_timeout") + FIELDS

    def validate(self):
        validate_name("name", self.name)
        self.state = self.state or "present"
        if self.datacenter is not None:
            validate_name("datacenter", self.datacenter)
        elif self.state == "present":
            raise ValidationError("datacenter", "is required to create or update a logical network")
        self.timeout = 15 if self.timeout is None else self.timeout
        validate_timeout("timeout", self.timeout)
        self.wait_timeout = 60 if self.wait_timeout is None else self.wait_timeout
        validate_range("wait_timeout", self.wait_timeout, 0, 3600, "seconds")
        desired = {k: getattr(self, k) for k in FIELDS}
        validate(desired, self.name, self.datacenter, complete=False)
        for k in FIELDS:
            setattr(self, k, desired[k])
        self.clusters = None if self.clusters is None else _normalize_clusters(self.clusters)

    @classmethod
    def from_params(cls, params):
        values = {f: params.get(f) for f in cls.FIELDS}
        values.update(vlan_id=params.get("vlan"), vxlan_vni=params.get("vxlan"))
        return cls(**values)


def find(cur, name, datacenter=None):
    return network_rows.find(cur, name, datacenter)


def _config(row, clusters):
    config = {k: plain(row[k]) for k in FIELDS}
    config["clusters"] = clusters
    return config


def view(cur, row):
    clusters = network_rows.assignments(cur, row["id"])
    hosts = [{k: plain(v) for k, v in r.items()} for r in network_rows.host_views(cur, row["id"])]
    expected = [h["name"] for h in host_rows.of_clusters(cur, [c["name"] for c in clusters], host_rows.SERVING)]
    realized = {h["host"] for h in hosts if h["realized"]}
    missing = sorted(set(expected) - realized)
    if not expected:
        status = "unattached"
    elif not missing:
        status = "realized"
    else:
        status = "partial" if realized else "missing"
    result = _config(row, clusters)
    result.update(id=plain(row["id"]), name=row["name"], datacenter=row["datacenter"],
                  libvirt_name=_network.libvirt_name(row["name"]), status=status, missing_on=missing, hosts=hosts,
                  locked=row.get("job_id") is not None)
    return result


def _normalize_clusters(clusters):
    out = {}
    for entry in clusters or []:
        if isinstance(entry, str):
            entry = {"name": entry}
        validate_name("clusters.name", entry.get("name"))
        out[entry["name"]] = {"name": entry["name"], "required": entry.get("required", True) is not False}
    return [out[k] for k in sorted(out)]


def ensure(engine, spec, check_mode=False):
    if spec.state == "absent":
        return _operation.run(engine, NetworkRemove(engine, check_mode, spec))
    return _operation.run(engine, NetworkApply(engine, check_mode, spec))


class NetworkApply(_operation.Operation):
    """Create or update a logical network and realize it on the hosts of its clusters."""

    action = "logical_network.apply"
    # definitions replaced on hosts are not put back: a failure to confirm leaves the network to its
    # recovery, which releases it with the settings the hosts now have
    irreversible = True

    def __init__(self, engine, check_mode, spec):
        super().__init__(engine, check_mode)
        self.spec = spec
        self.wait_timeout = spec.wait_timeout
        self.lock = (LOCK_DATACENTER, spec.datacenter)

    def _decide(self, cur):
        spec = self.spec
        name, datacenter = spec.name, spec.datacenter
        desired = {k: getattr(spec, k) for k in FIELDS}
        current = network_rows.find(cur, name, datacenter)
        action = ("update" if current else "create") + " logical network '%s'" % name
        dc = _datacenters.find(cur, datacenter)
        if dc is None:
            raise NotFoundError("data center", datacenter, action)
        if current is None:
            defaults = {"description": "", "mode": "bridge", "vlan_id": None, "vxlan_vni": None,
                        "mtu": 1450 if desired.get("vxlan_vni") else 1500, "subnet": None, "gateway": None,
                        "bridge": derive_bridge(datacenter, name)}
            target = {k: desired[k] if desired.get(k) is not None else defaults[k] for k in FIELDS}
        else:
            target = {k: desired[k] if desired.get(k) is not None else plain(current[k]) for k in FIELDS}
            if desired.get("vlan_id") is not None and current["vxlan_vni"]:
                target["vxlan_vni"] = None
            if desired.get("vxlan_vni") is not None and current["vlan_id"]:
                target["vlan_id"] = None
            if desired.get("vxlan_vni") is not None and not current["vxlan_vni"] and desired.get("mtu") is None:
                target["mtu"] = 1450  # VXLAN's 50 bytes of encapsulation on a 1500-byte NIC
        check = dict(target)
        validate(check, name, datacenter)
        target.update(subnet=check["subnet"], gateway=check["gateway"])
        own_id = current["id"] if current else None
        if target["subnet"]:
            clash = network_rows.overlapping(cur, dc["id"], own_id, target["subnet"])
            if clash:
                raise ValidationError("subnet", "%s overlaps subnet %s of logical network '%s' in data center '%s'"
                                      % (target["subnet"], clash[1], clash[0], datacenter))
        for column, field, label in _SEGMENTS:
            if target[column] is not None:
                taken = network_rows.on_segment(cur, dc["id"], own_id, column, target[column])
                if taken:
                    raise ValidationError(field, "%s %s is already logical network '%s' in data center '%s'"
                                          % (label, target[column], taken, datacenter))
        other = network_rows.on_segment(cur, dc["id"], own_id, "bridge", target["bridge"])
        if other:
            raise ValidationError("bridge", "'%s' is already the bridge of logical network '%s'"
                                  % (target["bridge"], other))
        dc_clusters = _datacenters.clusters(cur, dc["id"])
        old_clusters = network_rows.assignments(cur, current["id"]) if current else []
        clusters = old_clusters if spec.clusters is None else spec.clusters
        unknown = sorted({c["name"] for c in clusters} - set(dc_clusters))
        if unknown:
            raise NotFoundError("cluster", "%s' in data center '%s" % (", ".join(unknown), datacenter), action)
        before_cfg = _config(current, old_clusters) if current else {}
        after_cfg = dict(target, clusters=clusters)
        changes = {k: v for k, v in after_cfg.items() if before_cfg.get(k) != v}
        if current is not None:
            disruptive = sorted(set(changes) & set(DISRUPTIVE))
            users = network_rows.vms_with_nics(cur, current["id"]) if disruptive else []
            if users:
                raise ConflictError("Cannot change %s of logical network '%s': VMs %s have NICs on it"
                                    % (", ".join(disruptive), name, ", ".join(users)))
            dropped = sorted({c["name"] for c in old_clusters} - {c["name"] for c in clusters})
            users = network_rows.vms_with_nics(cur, current["id"], dropped) if dropped else []
            if users:
                raise ConflictError("Cannot take logical network '%s' from clusters %s: VMs %s have NICs on it"
                                    % (name, ", ".join(dropped), ", ".join(users)))
        names = sorted({c["name"] for c in clusters} | {c["name"] for c in old_clusters})
        hosts = host_rows.of_clusters(cur, names, SERVING_OR_JOINING)
        return _operation.Plan(current=current, action_text=action, dc=dc, dc_clusters=dc_clusters, target=target,
                               clusters=clusters, before_cfg=before_cfg, after_cfg=after_cfg, changes=changes,
                               hosts=hosts)

    def prepare(self, cur):
        plan = self._decide(cur)
        if plan.current is not None:  # another run's hold is waited for (or recovered) before any host is asked
            _operation.claim(cur, plan.current, "logical network '%s'" % self.spec.name)
        return plan

    def observe(self, plan):
        lv_name = _network.libvirt_name(self.spec.name)
        observed = _hosts.on_hosts(self.engine, plan.hosts, lambda conn, h: _network.network_state(conn, lv_name),
                                   self.spec.timeout, readonly=True)
        plan.observed = observed

    def reserve(self, cur, plan):
        seen = plan
        plan = self._decide(cur)
        if (plan.current is None) != (seen.current is None) or {h["name"] for h in plan.hosts} - set(seen.observed):
            raise _operation.Retry()
        plan.observed = seen.observed
        seen.__dict__.update(plan.__dict__)
        plan = seen
        spec, current = self.spec, plan.current
        if current is not None:
            _operation.claim(cur, current, "logical network '%s'" % spec.name)
        wanted = {c["name"]: c["required"] for c in plan.clusters}
        net = dict(plan.target, name=spec.name, id=current["id"] if current else None)
        plan.steps, plan.problems, plan.unreachable = {}, {}, {}
        for host in plan.hosts:
            state, reason = plan.observed[host["name"]]
            if reason is not None:
                plan.unreachable[host["name"]] = reason  # checked (and marked) by the host's own next check
                continue
            step, problem = _realize.network_step(dict(net, required=wanted.get(host["cluster"])), host, state)
            if step:
                plan.steps[host["name"]] = step
            if problem:
                plan.problems[host["name"]] = problem
        host_actions = ["%s on %s" % ("remove network" if s.description == "remove network" else "realize network",
                                      h) for h, s in sorted(plan.steps.items())]
        plan.before = {k: plan.before_cfg.get(k) for k in plan.changes} if current else {}
        plan.after = dict(plan.changes) if current else dict(plan.after_cfg)
        plan.actions = (([] if current else ["create"]) + (["update"] if current and plan.changes else [])
                        + host_actions)
        if not plan.actions:
            plan.outcome = Outcome(False, resource=view(cur, current))
            return
        if self.check_mode:
            return
        self.start_job(cur, plan, "logical_network", current["id"] if current else None, spec.name,
                       plan.action_text, datacenter=spec.datacenter, saved={"before": plain(plan.before_cfg)})
        if current is None:
            row = network_rows.insert(cur, dict(plan.target, name=spec.name, datacenter_id=plan.dc["id"],
                                                job_id=plan.job["id"]))
            _jobs.attach_object(cur, plan.job["id"], row["id"])
        else:
            fields = {k: plan.target[k] for k in FIELDS if k in plan.changes}
            row = network_rows.update(cur, current["id"], dict(fields, job_id=plan.job["id"]))
        if "clusters" in plan.changes:
            network_rows.set_assignments(cur, row["id"], [(plan.dc_clusters[c["name"]], c["required"])
                                                          for c in plan.clusters])
        plan.row = row

    def act(self, plan):
        if self.check_mode or not plan.steps:
            return {}
        hosts = [h for h in plan.hosts if h["name"] in plan.steps]
        outcomes = _hosts.on_hosts(self.engine, hosts, lambda conn, h: plan.steps[h["name"]].apply(conn),
                                   self.spec.timeout)
        return {h: reason for h, (_result, reason) in outcomes.items() if reason}

    def release(self, cur, plan, error):
        if plan.current is None:
            network_rows.delete(cur, plan.row["id"])
            return
        restore = {k: plan.before_cfg[k] for k in FIELDS if k in plan.changes}
        network_rows.update(cur, plan.current["id"], dict(restore, job_id=None))
        if "clusters" in plan.changes:
            network_rows.set_assignments(cur, plan.current["id"], [
                (plan.dc_clusters[c["name"]], c["required"]) for c in plan.before_cfg["clusters"]
                if c["name"] in plan.dc_clusters])

    def confirm(self, cur, plan, result):
        failures = result
        spec = self.spec
        if self.check_mode:
            predicted = dict(plan.after_cfg, name=spec.name, datacenter=spec.datacenter, hosts=[],
                             status="unattached")
            resource = view(cur, plan.current) if plan.current else predicted
            return Outcome(True, plan.before, plan.after, resource, plan.actions)
        row_id = plan.row["id"]
        wanted = {c["name"]: c["required"] for c in plan.clusters}
        lv_name = _network.libvirt_name(spec.name)
        still_here = host_rows.existing_ids(cur, [h["id"] for h in plan.hosts])
        for host in plan.hosts:
            if host["name"] in plan.unreachable or host["id"] not in still_here:
                continue
            required = wanted.get(host["cluster"])
            step = plan.steps.get(host["name"])
            if required is None:
                if step and host["name"] not in failures:
                    network_rows.forget_on_host(cur, host["id"], row_id)
                continue
            error = plan.problems.get(host["name"]) or failures.get(host["name"], "")
            network_rows.record_on_host(cur, host["id"], row_id, host.get("network_nic"), not error, error, lv_name)
        network_rows.set_job(cur, row_id, None)
        _realize.recompute_status(cur, sorted(still_here))
        verb = "added" if plan.current is None else "updated: %s" % ", ".join(sorted(plan.changes))
        _events.record(cur, "NETWORK_%s" % ("ADDED" if plan.current is None else "UPDATED"),
                       "Logical network %s was %s" % (spec.name, verb), object_type="logical_network",
                       object_id=row_id, object_name=spec.name, datacenter=spec.datacenter, job_id=plan.job["id"],
                       details={"before": plan.before, "after": plan.after, "host_failures": failures})
        return Outcome(True, plan.before, plan.after, view(cur, network_rows.find(cur, spec.name, spec.datacenter)),
                       plan.actions)


_operation.release_realized("logical_network", network_rows.set_job, "network")


class NetworkRemove(_operation.RemoveFromHosts):
    action = "logical_network.remove"
    kind = "logical network"
    host_action = "remove network"

    def find(self, cur):
        return network_rows.find(cur, self.spec.name, self.spec.datacenter)

    def refuse(self, cur, current):
        refuse_dependants("remove", "logical network", self.spec.name,
                          [("VMs with NICs on it", network_rows.vms_with_nics(cur, current["id"]))])

    def config(self, cur, current):
        return _config(current, network_rows.assignments(cur, current["id"]))

    def holders(self, cur, current):
        clusters = [c["name"] for c in network_rows.assignments(cur, current["id"])]
        return host_rows.of_clusters(cur, clusters, SERVING_OR_JOINING), []

    def remove_on_host(self, conn, _host):
        return _network.remove_network(conn, _network.libvirt_name(self.spec.name))

    def set_job(self, cur, network_id, job_id):
        network_rows.set_job(cur, network_id, job_id)

    def delete(self, cur, current):
        network_rows.delete(cur, current["id"])

    def removed(self, cur, plan):
        # a host that was NonOperational for this network alone is Up again
        _realize.recompute_status(cur, [h["id"] for h in plan.holders])
        _events.record(cur, "NETWORK_REMOVED", "Logical network %s was removed" % self.spec.name,
                       object_type="logical_network", object_id=plan.current["id"], object_name=self.spec.name,
                       datacenter=plan.current["datacenter"], job_id=plan.job["id"])


def network_info(engine, names=None, datacenter=None):
    for network_name in names or []:
        validate_name("name", network_name)
    if datacenter is not None:
        validate_name("datacenter", datacenter)
    with engine.transaction() as cur:
        rows = [r for r in network_rows.listed(cur, datacenter) if not names or r["name"] in names]
        missing = sorted(set(names or []) - {r["name"] for r in rows})
        if missing:
            raise NotFoundError("logical network", ", ".join(missing))
        return [view(cur, r) for r in rows]
