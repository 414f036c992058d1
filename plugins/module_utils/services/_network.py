# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logical networks: defined once per data center, assigned to clusters, realized on their hosts.

The engine records the network and its cluster assignments, then checks every affected host
(the host service's refresh): that realizes the network through the host's libvirt and makes a
host that cannot realize a required network NonOperational with libvirt's (or the network
hook's) reason. Fixing the cause and running again brings the host back Up.
"""

from __future__ import annotations

import hashlib
import re

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import (
    ConflictError,
    HypervisorError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import (
    shown,
    validate_description,
    validate_name,
    validate_timeout,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _events
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_DATACENTER, Engine
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _hosts
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import (
    Outcome,
    find_in_datacenter,
    insert_row,
    plain,
    refuse_dependants,
    update_row,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _network

MODES = ("bridge", "nat", "isolated")
FIELDS = ("description", "mode", "vlan_id", "vxlan_vni", "mtu", "subnet", "gateway", "bridge")
_BRIDGE = re.compile(r"[A-Za-z0-9_-]{1,15}")
_ADDRESS = re.compile(r"[0-9A-Fa-f.:/]{1,64}")
# what cannot change while VMs use the network: their taps are on the bridge
DISRUPTIVE = ("mode", "vlan_id", "vxlan_vni", "bridge", "mtu")


def derive_bridge(datacenter, name):
    """A bridge name for the network: readable, at most 15 characters, distinct per data center."""
    clean = re.sub(r"[^a-z0-9]", "", name.lower())[:8]
    digest = hashlib.sha1(("%s/%s" % (datacenter, name)).encode()).hexdigest()[:4]
    return "vp%s-%s" % (clean, digest)


def _netaddr():
    import netaddr  # imported here: its absence is one clear message, raised below
    return netaddr


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
    if bridge is not None and not (isinstance(bridge, str) and _BRIDGE.fullmatch(bridge)):
        raise ValidationError("bridge", "%s is not a usable bridge name: 1-15 letters, digits, '_' or '-'"
                              % shown(bridge))
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
        try:
            network = netaddr.IPNetwork(subnet)
        except (netaddr.AddrFormatError, ValueError, TypeError):
            raise ValidationError("subnet", "%s is not a network in CIDR notation" % shown(subnet))
        if network.ip != network.network:
            raise ValidationError("subnet", "%s has host bits set; did you mean %s?" % (shown(subnet), network.cidr))
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


def _overlap(cur, datacenter_id, network_id, subnet):
    netaddr = _netaddr()
    cur.execute("SELECT name, subnet FROM logical_network WHERE datacenter_id = %s AND subnet IS NOT NULL"
                " AND id IS DISTINCT FROM %s", (datacenter_id, network_id))
    mine = netaddr.IPNetwork(subnet)
    for row in cur.fetchall():
        other = netaddr.IPNetwork(str(row["subnet"]))
        if mine.first <= other.last and other.first <= mine.last:
            return row["name"], str(other.cidr)
    return None


# one segment, one network: two networks on the same VLAN or VNI would share (and fight over) a device
_SAME_SEGMENT = {
    column: "SELECT name FROM logical_network WHERE datacenter_id = %%s AND %s = %%s AND id IS DISTINCT FROM %%s"
            % column for column in ("vlan_id", "vxlan_vni")}

_SELECT = ("SELECT n.*, d.name AS datacenter FROM logical_network n JOIN datacenter d ON d.id = n.datacenter_id")


def find(cur, name, datacenter=None):
    return find_in_datacenter(cur, _SELECT, "n", "logical network", name, datacenter)


def _assignments(cur, network_id):
    cur.execute("SELECT c.name, cn.required FROM cluster_network cn JOIN cluster c ON c.id = cn.cluster_id"
                " WHERE cn.network_id = %s ORDER BY c.name", (network_id,))
    return [{"name": r["name"], "required": r["required"]} for r in cur.fetchall()]


def _hosts_of(cur, cluster_names):
    cur.execute("SELECT h.*, c.name AS cluster FROM host h JOIN cluster c ON c.id = h.cluster_id"
                " WHERE c.name = ANY(%s) ORDER BY h.name", (list(cluster_names),))
    return cur.fetchall()


def _host_views(cur, network_id):
    cur.execute("SELECT h.name AS host, h.status AS host_status, hn.nic, hn.realized, hn.error, hn.updated_at"
                " FROM host_network hn JOIN host h ON h.id = hn.host_id WHERE hn.network_id = %s ORDER BY h.name",
                (network_id,))
    return [{k: plain(v) for k, v in r.items()} for r in cur.fetchall()]


def _config(row, clusters):
    config = {k: plain(row[k]) for k in FIELDS}
    config["clusters"] = clusters
    return config


def view(cur, row):
    clusters = _assignments(cur, row["id"])
    hosts = _host_views(cur, row["id"])
    expected = [h["name"] for h in _hosts_of(cur, [c["name"] for c in clusters])
                if h["status"] in ("Up", "NonOperational")]
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
                  libvirt_name=_network.libvirt_name(row["name"]), status=status, missing_on=missing, hosts=hosts)
    return result


def _normalize_clusters(clusters):
    out = {}
    for entry in clusters or []:
        if isinstance(entry, str):
            entry = {"name": entry}
        validate_name("clusters.name", entry.get("name"))
        out[entry["name"]] = {"name": entry["name"], "required": entry.get("required", True) is not False}
    return [out[k] for k in sorted(out)]


def ensure_present(engine, name, datacenter, desired, clusters=None, timeout=15, check_mode=False):
    """``desired``: FIELDS (None = keep, or the default on creation); ``clusters``: list or None (keep)."""
    validate_name("name", name)
    validate_name("datacenter", datacenter)
    validate_timeout("timeout", timeout)
    desired = dict(desired)
    validate(desired, name, datacenter, complete=False)
    clusters = None if clusters is None else _normalize_clusters(clusters)
    with engine.transaction() as cur:
        current = find(cur, name, datacenter)
        action = ("update" if current else "create") + " logical network '%s'" % name
        cur.execute("SELECT * FROM datacenter WHERE name = %s", (datacenter,))
        dc = cur.fetchone()
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
        if target["subnet"]:
            clash = _overlap(cur, dc["id"], current["id"] if current else None, target["subnet"])
            if clash:
                raise ValidationError("subnet", "%s overlaps subnet %s of logical network '%s' in data center '%s'"
                                      % (target["subnet"], clash[1], clash[0], datacenter))
        for column, field, label in (("vlan_id", "vlan", "VLAN"), ("vxlan_vni", "vxlan", "VXLAN segment")):
            if target[column] is not None:
                cur.execute(_SAME_SEGMENT[column], (dc["id"], target[column], current["id"] if current else None))
                taken = cur.fetchone()
                if taken:
                    raise ValidationError(field, "%s %s is already logical network '%s' in data center '%s'"
                                          % (label, target[column], taken["name"], datacenter))
        cur.execute("SELECT name FROM logical_network WHERE datacenter_id = %s AND bridge = %s"
                    " AND id IS DISTINCT FROM %s", (dc["id"], target["bridge"], current["id"] if current else None))
        other = cur.fetchone()
        if other:
            raise ValidationError("bridge", "'%s' is already the bridge of logical network '%s'"
                                  % (target["bridge"], other["name"]))
        cur.execute("SELECT id, name FROM cluster WHERE datacenter_id = %s", (dc["id"],))
        dc_clusters = {r["name"]: r["id"] for r in cur.fetchall()}
        old_clusters = _assignments(cur, current["id"]) if current else []
        if clusters is None:
            clusters = old_clusters
        unknown = sorted({c["name"] for c in clusters} - set(dc_clusters))
        if unknown:
            raise NotFoundError("cluster", "%s' in data center '%s" % (", ".join(unknown), datacenter), action)
        before_cfg = _config(current, old_clusters) if current else {}
        after_cfg = dict(target, clusters=clusters)
        changes = {k: v for k, v in after_cfg.items() if before_cfg.get(k) != v}
        if current is not None:
            disruptive = sorted(set(changes) & set(DISRUPTIVE))
            if disruptive:
                cur.execute("SELECT DISTINCT v.name FROM vm_nic n JOIN vm v ON v.id = n.vm_id WHERE n.network_id = %s"
                            " ORDER BY v.name", (current["id"],))
                users = [r["name"] for r in cur.fetchall()]
                if users:
                    raise ConflictError("Cannot change %s of logical network '%s': VMs %s have NICs on it"
                                        % (", ".join(disruptive), name, ", ".join(users)))
        if current is not None:
            dropped = sorted({c["name"] for c in old_clusters} - {c["name"] for c in clusters})
            cur.execute("SELECT DISTINCT v.name FROM vm_nic n JOIN vm v ON v.id = n.vm_id JOIN cluster c"
                        " ON c.id = v.cluster_id WHERE n.network_id = %s AND c.name = ANY(%s) ORDER BY v.name",
                        (current["id"], dropped))
            users = [r["name"] for r in cur.fetchall()]
            if users:
                raise ConflictError("Cannot take logical network '%s' from clusters %s: VMs %s have NICs on it"
                                    % (name, ", ".join(dropped), ", ".join(users)))
        affected = _hosts_of(cur, sorted({c["name"] for c in clusters} | {c["name"] for c in old_clusters}))
    affected = [h for h in affected if h["status"] in ("Up", "NonOperational")]
    host_plan = _plan_hosts(engine, affected, name, target, clusters, timeout)
    # a host that does not answer now is checked (and marked) by the host refresh below, not an action
    host_actions = ["%s on %s" % (a, h) for h, a in sorted(host_plan.items()) if a and not a.startswith("check (")]
    before = {k: before_cfg.get(k) for k in changes} if current else {}
    after = dict(changes) if current else dict(after_cfg)
    actions = ([] if current else ["create"]) + (["update"] if current and changes else []) + host_actions
    if not changes and not host_actions:
        with engine.transaction() as cur:
            return Outcome(False, resource=view(cur, current))
    if check_mode:
        with engine.transaction() as cur:
            predicted = dict(after_cfg, name=name, datacenter=datacenter, hosts=[], status="unattached")
            resource = view(cur, current) if current else predicted
        return Outcome(True, before, after, resource, actions)
    with engine.transaction() as cur:
        Engine.lock(cur, LOCK_DATACENTER, datacenter)
        if current is None:
            row = insert_row(cur, "logical_network", dict(target, name=name, datacenter_id=dc["id"]))
        else:
            fields = {k: target[k] for k in FIELDS if k in changes}
            row = update_row(cur, "logical_network", current["id"], fields) if fields else current
        if "clusters" in changes:
            cur.execute("DELETE FROM cluster_network WHERE network_id = %s", (row["id"],))
            for entry in clusters:
                cur.execute("INSERT INTO cluster_network (cluster_id, network_id, required) VALUES (%s, %s, %s)",
                            (dc_clusters[entry["name"]], row["id"], entry["required"]))
        _events.record(cur, "NETWORK_%s" % ("ADDED" if current is None else "UPDATED"),
                       "Logical network %s was %s" % (name, "added" if current is None else "updated: %s"
                                                      % ", ".join(sorted(changes))),
                       object_type="logical_network", object_id=row["id"], object_name=name, datacenter=datacenter,
                       details={"before": before, "after": after})
    _hosts.check_hosts(engine, [h["name"] for h in affected], timeout)
    with engine.transaction() as cur:
        return Outcome(True, before, after, view(cur, find(cur, name, datacenter)), actions)


def _plan_hosts(engine, hosts, name, target, clusters, timeout):
    """What each affected host needs (define/redefine/start/remove): read only, for check mode and actions."""
    wanted = {c["name"] for c in clusters}
    net = dict(target, name=name)

    def observe(conn, host):
        spec, active = _network.network_state(conn, _network.libvirt_name(name))
        if host["cluster"] not in wanted:
            return "remove network" if spec is not None else ""
        if spec is None:
            return "define network"
        if spec != _network.network_spec(net, host.get("network_nic")):
            return "redefine network"
        return "" if active else "start network"

    outcomes = _hosts.on_hosts(engine, hosts, observe, timeout)
    return {h: (result if reason is None else "check (%s)" % reason) for h, (result, reason) in outcomes.items()}


def ensure_absent(engine, name, datacenter=None, timeout=15, check_mode=False):
    validate_name("name", name)
    if datacenter is not None:
        validate_name("datacenter", datacenter)
    validate_timeout("timeout", timeout)
    with engine.transaction() as cur:
        current = find(cur, name, datacenter)
        if current is None:
            return Outcome(False)
        cur.execute("SELECT DISTINCT v.name FROM vm_nic n JOIN vm v ON v.id = n.vm_id WHERE n.network_id = %s",
                    (current["id"],))
        users = [r["name"] for r in cur.fetchall()]
        refuse_dependants("remove", "logical network", name, [("VMs with NICs on it", users)])
        before = _config(current, _assignments(cur, current["id"]))
        holders = [h for h in _hosts_of(cur, [c["name"] for c in before["clusters"]])
                   if h["status"] in ("Up", "NonOperational")]
    if check_mode:
        return Outcome(True, before, {}, None, ["remove"] + ["remove network on %s" % h["name"] for h in holders])
    lv_name = _network.libvirt_name(name)
    outcomes = _hosts.on_hosts(engine, holders, lambda conn, _host: _network.remove_network(conn, lv_name), timeout)
    failed = _hosts.failures(outcomes)
    if failed:
        raise HypervisorError("Cannot remove logical network '%s': hosts %s: %s"
                              % (name, ", ".join(sorted(failed)), _hosts.describe_failures(failed)))
    with engine.transaction() as cur:
        Engine.lock(cur, LOCK_DATACENTER, current["datacenter"])
        cur.execute("DELETE FROM cluster_network WHERE network_id = %s", (current["id"],))
        cur.execute("DELETE FROM logical_network WHERE id = %s", (current["id"],))
        _events.record(cur, "NETWORK_REMOVED", "Logical network %s was removed" % name,
                       object_type="logical_network", object_id=current["id"], object_name=name,
                       datacenter=current["datacenter"])
    # a host that was NonOperational for this network alone is Up again
    _hosts.check_hosts(engine, [h["name"] for h in holders], timeout)
    return Outcome(True, before, {}, None, ["remove"] + ["remove network on %s" % h for h in sorted(outcomes)])


def network_info(engine, names=None, datacenter=None):
    for network_name in names or []:
        validate_name("name", network_name)
    if datacenter is not None:
        validate_name("datacenter", datacenter)
    with engine.transaction() as cur:
        cur.execute(_SELECT + " WHERE (%s::text IS NULL OR d.name = %s) ORDER BY d.name, n.name",
                    (datacenter, datacenter))
        rows = [r for r in cur.fetchall() if not names or r["name"] in names]
        missing = sorted(set(names or []) - {r["name"] for r in rows})
        if missing:
            raise NotFoundError("logical network", ", ".join(missing))
        return [view(cur, r) for r in rows]


def realize_on_host(cur, conn, host, check_mode=False):
    """The networks of the host's cluster on the host, the others withdrawn: (actions, problems)."""
    cur.execute("SELECT n.*, cn.required FROM logical_network n JOIN cluster c ON c.datacenter_id = n.datacenter_id"
                " LEFT JOIN cluster_network cn ON cn.network_id = n.id AND cn.cluster_id = c.id"
                " WHERE c.id = %s ORDER BY n.name", (host["cluster_id"],))
    actions, problems = [], []
    for net in cur.fetchall():
        lv_name = _network.libvirt_name(net["name"])
        assigned = net["required"] is not None
        nic = host.get("network_nic")
        try:
            if not assigned:
                spec, _active = _network.network_state(conn, lv_name)
                if spec is not None:
                    actions.append("remove network %s" % net["name"])
                    if not check_mode:
                        _network.remove_network(conn, lv_name)
                        cur.execute("DELETE FROM host_network WHERE host_id = %s AND network_id = %s",
                                    (host["id"], net["id"]))
                continue
            if net["mode"] == "bridge" and not nic:
                raise HypervisorError("the host has no network NIC (set network_nic on the host) to carry it")
            spec = _network.network_spec(net, nic)
            current, active = _network.network_state(conn, lv_name)
            if current != spec or not active:
                actions.append("realize network %s" % net["name"])
                if not check_mode:
                    _network.realize_network(conn, lv_name, spec)
            realized, error = True, ""
        except HypervisorError as exc:
            realized, error = False, str(exc)
            if net["required"]:
                problems.append("required network %s is not realized: %s" % (net["name"], error))
        if not check_mode:
            cur.execute("INSERT INTO host_network (host_id, network_id, nic, realized, error, libvirt_name, updated_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s, now()) ON CONFLICT (host_id, network_id) DO UPDATE SET"
                        " nic = EXCLUDED.nic, realized = EXCLUDED.realized, error = EXCLUDED.error,"
                        " libvirt_name = EXCLUDED.libvirt_name, updated_at = now()",
                        (host["id"], net["id"], nic, realized, error, lv_name))
    return actions, problems
