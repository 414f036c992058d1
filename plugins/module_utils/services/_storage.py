# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Storage domains: defined once per data center, realized as a libvirt pool on every host that uses it.

The order is always: validate, ask every host (a transient probe pool, which leaves nothing),
then change the engine and the hosts together. A host that cannot realize the domain stops the
change before anything is written, with its name and libvirt's reason; a host that joins later
or comes back gets the domain from the host service (``realize_on_host``).
"""

from __future__ import annotations

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
    validate_path,
    validate_text,
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
)
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _storage

TYPES = ("dir", "posixfs", "nfs", "logical", "iscsi", "rbd")
PARAMS = {
    "dir": ("path",),
    "posixfs": ("path",),
    "nfs": ("server", "export", "path"),
    "logical": ("volume_group", "devices"),
    "iscsi": ("portal", "target", "initiator_prefix"),
    "rbd": ("monitors", "pool", "user", "secret_uuid"),
}
DEFAULT_INITIATOR_PREFIX = "iqn.2026-11.dev.virtplane"
_IQN = re.compile(r"iqn\.[0-9]{4}-[0-9]{2}\.[a-z0-9][a-z0-9.-]*[a-z0-9](:[A-Za-z0-9_.:-]+)?")
_HOST_PORT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_VG = re.compile(r"[A-Za-z0-9+_.-]{1,127}")


def normalize_params(kind, name, params):
    """Checked, complete parameters for a domain of type ``kind`` (field names as the module's)."""
    if kind not in TYPES:
        raise ValidationError("type", "%s is not a storage domain type (one of: %s)" % (shown(kind), ", ".join(TYPES)))
    given = {k: v for k, v in (params or {}).items() if v not in (None, [], "")}
    unknown = sorted(set(given) - set(PARAMS[kind]))
    if unknown:
        raise ValidationError("%s.%s" % (kind, shown(unknown[0])[1:-1]), "is not an option of a %s domain" % kind)
    out = {}

    def need(key):
        if key not in given:
            raise ValidationError("%s.%s" % (kind, key), "is required for a %s storage domain" % kind)
        return given[key]

    if kind in ("dir", "posixfs"):
        out["path"] = validate_path("%s.path" % kind, need("path"))
    elif kind == "nfs":
        server = validate_text("nfs.server", need("server"), "server name")
        if not _HOST_PORT.fullmatch(server) or ":" in server:
            raise ValidationError("nfs.server", "%s is not a host name or IPv4 address" % shown(server))
        out.update(server=server, export=validate_path("nfs.export", need("export")),
                   path=validate_path("nfs.path", given.get("path") or "%s/%s" % (_storage.NFS_MOUNT_ROOT, name)))
    elif kind == "logical":
        group = need("volume_group")
        if not _VG.fullmatch(group) or group.startswith("-"):
            raise ValidationError("logical.volume_group", "%s is not a valid LVM volume group name" % shown(group))
        out.update(volume_group=group,
                   devices=[validate_path("logical.devices", d) for d in given.get("devices") or []])
    elif kind == "iscsi":
        portal = validate_text("iscsi.portal", need("portal"), "portal")
        if not _HOST_PORT.fullmatch(portal):
            raise ValidationError("iscsi.portal", "%s is not host[:port]" % shown(portal))
        target = validate_text("iscsi.target", need("target"), "target IQN")
        if not _IQN.fullmatch(target):
            raise ValidationError("iscsi.target", "%s is not an iSCSI qualified name (iqn.YYYY-MM.domain:name)"
                                  % shown(target))
        prefix = validate_text("iscsi.initiator_prefix", given.get("initiator_prefix") or DEFAULT_INITIATOR_PREFIX,
                               "initiator IQN prefix")
        if not _IQN.fullmatch(prefix):
            raise ValidationError("iscsi.initiator_prefix", "%s is not an iSCSI qualified name" % shown(prefix))
        out.update(portal=portal, target=target, initiator_prefix=prefix)
    elif kind == "rbd":
        monitors = need("monitors")
        for monitor in monitors:
            validate_text("rbd.monitors", monitor, "monitor address")
            if not _HOST_PORT.fullmatch(monitor):
                raise ValidationError("rbd.monitors", "%s is not host[:port]" % shown(monitor))
        out.update(monitors=list(monitors), pool=validate_text("rbd.pool", need("pool"), "Ceph pool name"))
        if given.get("user") or given.get("secret_uuid"):
            out["user"] = validate_text("rbd.user", need("user"), "Ceph user name")
            secret = need("secret_uuid")
            if not _UUID.fullmatch(secret):
                raise ValidationError("rbd.secret_uuid", "is not the UUID of a libvirt secret")
            out["secret_uuid"] = secret
    return out


_SELECT = ("SELECT s.*, d.name AS datacenter, h.name AS host FROM storage_domain s"
           " JOIN datacenter d ON d.id = s.datacenter_id LEFT JOIN host h ON h.id = s.host_id")


def find(cur, name, datacenter=None):
    return find_in_datacenter(cur, _SELECT, "s", "storage domain", name, datacenter)


def _clusters_of(cur, domain_id):
    cur.execute("SELECT c.name FROM storage_domain_cluster sc JOIN cluster c ON c.id = sc.cluster_id"
                " WHERE sc.storage_domain_id = %s ORDER BY c.name", (domain_id,))
    return [r["name"] for r in cur.fetchall()]


def _disks_of(cur, domain_id):
    cur.execute("SELECT name FROM disk WHERE storage_domain_id = %s ORDER BY name", (domain_id,))
    return [r["name"] for r in cur.fetchall()]


def _target_hosts(cur, cluster_names, host_name=None):
    """Up hosts of the clusters (for a 'dir' domain: its one host, when Up)."""
    cur.execute("SELECT h.*, c.name AS cluster FROM host h JOIN cluster c ON c.id = h.cluster_id"
                " WHERE c.name = ANY(%s) AND h.status IN ('Up', 'NonOperational')"
                " AND (%s::text IS NULL OR h.name = %s) ORDER BY h.name",
                (list(cluster_names), host_name, host_name))
    return cur.fetchall()


def _host_views(cur, domain_id):
    cur.execute("SELECT h.name AS host, sh.pool_name, sh.active, sh.capacity_bytes, sh.allocation_bytes,"
                " sh.available_bytes, sh.error, sh.updated_at FROM storage_domain_host sh"
                " JOIN host h ON h.id = sh.host_id WHERE sh.storage_domain_id = %s ORDER BY h.name", (domain_id,))
    return [{k: plain(v) for k, v in r.items()} for r in cur.fetchall()]


def domain_status(state, host_views, expected_hosts):
    """One word for the domain: active on every host that should have it, or which are missing."""
    if state == "maintenance":
        return "maintenance", []
    active = {v["host"] for v in host_views if v["active"]}
    missing = sorted(set(expected_hosts) - active)
    if not expected_hosts:
        return "unattached", []
    if not missing:
        return "active", []
    return ("inactive" if not active else "partial"), missing


def view(cur, row):
    clusters = _clusters_of(cur, row["id"])
    hosts = _host_views(cur, row["id"])
    expected = [h["name"] for h in _target_hosts(cur, clusters, row.get("host"))]
    status, missing = domain_status(row["state"], hosts, expected)
    return {"id": plain(row["id"]), "name": row["name"], "datacenter": row["datacenter"], "type": row["type"],
            "description": row["description"], "state": row["state"], "params": plain(row["params"]),
            "host": row.get("host"), "clusters": clusters, "status": status, "missing_on": missing,
            "hosts": hosts, "disks": _disks_of(cur, row["id"])}


def _config(row, clusters):
    return {"type": row["type"], "params": plain(row["params"]), "host": row.get("host"), "clusters": clusters,
            "state": row["state"], "description": row["description"]}


def _refuse_immutable(current, kind, params, host):
    name = current["name"]
    reason = ("a libvirt storage pool's source and target cannot change in place, and the disks in it live at "
              "the old location: create a new domain and move the disks")
    if current["type"] != kind:
        raise ConflictError("Cannot change type of storage domain '%s' from %s to %s: %s"
                            % (name, current["type"], kind, reason))
    old = plain(current["params"])
    for key in sorted(set(old) | set(params)):
        if old.get(key) != params.get(key):
            raise ConflictError("Cannot change %s.%s of storage domain '%s' from %s to %s: %s"
                                % (kind, key, name, old.get(key), params.get(key), reason))
    if host is not None and current.get("host") and host != current["host"]:
        raise ConflictError("Cannot move 'dir' storage domain '%s' from host %s to %s: it is local to its host; %s"
                            % (name, current["host"], host, reason))


def _observe(conn, host, name, spec):
    pool = _storage.pool_name(name)
    current, pool_view = _storage.pool_state(conn, pool)
    return {"pool": pool, "spec": current, "view": pool_view, "matches": current == spec}


def _probe(conn, host, name, spec):
    return _storage.probe_pool(conn, "vp-probe-%s" % name, spec)


def ensure_present(engine, name, datacenter, kind, params, clusters=None, host=None, description=None,
                   state="present", timeout=15, check_mode=False):
    validate_name("name", name)
    validate_name("datacenter", datacenter)
    for cluster in clusters or []:
        validate_name("clusters", cluster)
    if host is not None:
        validate_name("host", host)
    validate_description("description", description)
    validate_timeout("timeout", timeout)
    params = normalize_params(kind, name, params)
    if kind == "dir" and host is None:
        with engine.transaction() as cur:
            current = find(cur, name, datacenter)
        if current is None:
            raise ValidationError("host", "is required for a 'dir' storage domain: the directory is local to one host")
    wanted_state = "maintenance" if state == "maintenance" else "active"
    with engine.transaction() as cur:
        current = find(cur, name, datacenter)
        action = ("update" if current else "create") + " storage domain '%s'" % name
        cur.execute("SELECT * FROM datacenter WHERE name = %s", (datacenter,))
        dc = cur.fetchone()
        if dc is None:
            raise NotFoundError("data center", datacenter, action)
        if current is not None:
            _refuse_immutable(current, kind, params, host)
        host_row = None
        if kind == "dir":
            host = host or current["host"]
            cur.execute("SELECT h.*, c.name AS cluster, c.datacenter_id FROM host h JOIN cluster c"
                        " ON c.id = h.cluster_id WHERE h.name = %s", (host,))
            host_row = cur.fetchone()
            if host_row is None or host_row["datacenter_id"] != dc["id"]:
                raise NotFoundError("host", "%s' in data center '%s" % (host, datacenter), action)
            if clusters and clusters != [host_row["cluster"]]:
                raise ValidationError("clusters", "a 'dir' domain is used by its host's cluster (%s) only"
                                      % host_row["cluster"])
            clusters = [host_row["cluster"]]
        elif host is not None:
            raise ValidationError("host", "only a 'dir' storage domain belongs to one host; a %s domain is "
                                          "used by every host of its clusters" % kind)
        cur.execute("SELECT id, name FROM cluster WHERE datacenter_id = %s ORDER BY name", (dc["id"],))
        dc_clusters = {r["name"]: r["id"] for r in cur.fetchall()}
        if clusters is None:
            clusters = _clusters_of(cur, current["id"]) if current else sorted(dc_clusters)
        unknown = sorted(set(clusters) - set(dc_clusters))
        if unknown:
            raise NotFoundError("cluster", "%s' in data center '%s" % (", ".join(unknown), datacenter), action)
        clusters = sorted(set(clusters))
        old_clusters = _clusters_of(cur, current["id"]) if current else []
        targets = _target_hosts(cur, clusters, host if kind == "dir" else None)
        leaving = list(_target_hosts(cur, sorted(set(old_clusters) - set(clusters))))
        desired_description = description if description is not None else (current or {}).get("description", "")

    specs = {h["name"]: _storage.pool_spec(kind, params, h["name"]) for h in targets}
    # 1. what each host has now, and whether it can realize the domain at all (leaves nothing behind)
    observed = _hosts.on_hosts(engine, targets, lambda conn, h: _observe(conn, h, name, specs[h["name"]]), timeout)
    failed = _hosts.failures(observed)
    if failed:
        raise HypervisorError("Cannot %s: hosts %s did not answer: %s"
                              % (action, ", ".join(sorted(failed)), _hosts.describe_failures(failed)))
    if wanted_state == "maintenance" and (current is None or current["state"] != "maintenance"):
        _refuse_in_use(engine, current or {"id": None, "name": name}, "put storage domain '%s' into maintenance" % name)
    # the probe starts a transient pool: harmless for a directory or an iSCSI login, but a mount or a
    # volume group activation is a change to the host, which check mode must not make
    if wanted_state == "active" and not (check_mode and kind in ("nfs", "logical", "rbd")):
        to_probe = [h for h in targets if not observed[h["name"]][0]["matches"]]
        probes = _hosts.on_hosts(engine, to_probe, lambda conn, h: _probe(conn, h, name, specs[h["name"]]), timeout)
        problems = {n: (r or e) for n, (r, e) in probes.items() if r or e}
        if problems:
            raise HypervisorError("Cannot %s: hosts %s cannot realize this %s domain: %s"
                                  % (action, ", ".join(sorted(problems)), kind, _hosts.describe_failures(problems)))
    if leaving and current is not None:
        _refuse_detach_in_use(engine, current, leaving)

    desired = {"type": kind, "params": params, "host": host if kind == "dir" else None, "clusters": clusters,
               "state": wanted_state, "description": desired_description}
    before_cfg = _config(current, old_clusters) if current else {}
    host_actions = _planned_host_actions(targets, observed, wanted_state)
    config_changes = {k: v for k, v in desired.items() if before_cfg.get(k) != v}
    changed = bool(config_changes) or any(host_actions.values()) or bool(leaving)
    before = {k: before_cfg.get(k) for k in config_changes} if current else {}
    after = dict(config_changes) if current else dict(desired)
    actions = ([] if current else ["create"]) + (["update"] if current and config_changes else [])
    actions += ["%s on %s" % (", ".join(a), h) for h, a in sorted(host_actions.items()) if a]
    actions += ["remove pool on %s" % h["name"] for h in leaving]
    if not changed:
        with engine.transaction() as cur:
            _record_hosts(cur, current["id"], targets, observed, check_mode)
            return Outcome(False, resource=view(cur, find(cur, name, datacenter)))
    if check_mode:
        with engine.transaction() as cur:
            predicted = dict(desired, name=name, datacenter=datacenter, hosts=[], disks=[], status="unattached")
            resource = view(cur, current) if current else predicted
        return Outcome(True, before, after, resource, actions)
    outcome = _apply(engine, name, datacenter, dc, current, desired, dc_clusters, targets, specs, leaving, before,
                     after, actions, timeout)
    # a host kept out for lack of this domain comes back once it has it
    _hosts.check_hosts(engine, [h["name"] for h in targets + leaving if h["status"] == "NonOperational"], timeout)
    return outcome


def _planned_host_actions(targets, observed, wanted_state):
    planned = {}
    for h in targets:
        seen = observed[h["name"]][0]
        active = bool(seen["view"] and seen["view"]["active"])
        if wanted_state == "maintenance":
            planned[h["name"]] = ["stop pool"] if active else []
        elif not seen["matches"]:
            planned[h["name"]] = ["define pool" if seen["spec"] is None else "redefine pool"]
        elif not active or not seen["view"]["autostart"]:
            planned[h["name"]] = ["start pool"]
        else:
            planned[h["name"]] = []
    return planned


def _refuse_in_use(engine, current, action):
    with engine.transaction() as cur:
        cur.execute("SELECT DISTINCT v.name FROM vm v JOIN vm_disk vd ON vd.vm_id = v.id JOIN disk k ON"
                    " k.id = vd.disk_id WHERE k.storage_domain_id = %s AND v.status NOT IN ('Down', 'Suspended')"
                    " ORDER BY v.name", (current["id"],))
        vms = [r["name"] for r in cur.fetchall()]
    if vms:
        raise ConflictError("Cannot %s: running VMs %s use its disks" % (action, ", ".join(vms)))


def _refuse_detach_in_use(engine, current, leaving):
    with engine.transaction() as cur:
        cur.execute("SELECT DISTINCT v.name FROM vm v JOIN vm_disk vd ON vd.vm_id = v.id JOIN disk k ON"
                    " k.id = vd.disk_id WHERE k.storage_domain_id = %s AND v.run_host_id = ANY(%s)",
                    (current["id"], [h["id"] for h in leaving]))
        vms = [r["name"] for r in cur.fetchall()]
    if vms:
        raise ConflictError("Cannot detach storage domain '%s' from hosts %s: running VMs %s use its disks"
                            % (current["name"], ", ".join(h["name"] for h in leaving), ", ".join(vms)))


def _record_hosts(cur, domain_id, targets, outcomes, check_mode, errors=None):
    """Store each host's view of the domain's pool (active, capacity, free, error)."""
    if check_mode:
        return
    for h in targets:
        result, reason = outcomes.get(h["name"], (None, None))
        pool_view = (result or {}).get("view") or {}
        error = (errors or {}).get(h["name"]) or reason or ""
        cur.execute(
            "INSERT INTO storage_domain_host (storage_domain_id, host_id, pool_name, active, capacity_bytes,"
            " allocation_bytes, available_bytes, error, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())"
            " ON CONFLICT (storage_domain_id, host_id) DO UPDATE SET pool_name = EXCLUDED.pool_name,"
            " active = EXCLUDED.active, capacity_bytes = EXCLUDED.capacity_bytes,"
            " allocation_bytes = EXCLUDED.allocation_bytes, available_bytes = EXCLUDED.available_bytes,"
            " error = EXCLUDED.error, updated_at = now()",
            (domain_id, h["id"], (result or {}).get("pool") or "", bool(pool_view.get("active")),
             pool_view.get("capacity_bytes"), pool_view.get("allocation_bytes"), pool_view.get("available_bytes"),
             error))


def _pool_remover(name):
    return lambda conn, _host: _storage.remove_pool(conn, _storage.pool_name(name))


def _realize(conn, host, name, spec, wanted_state):
    pool = _storage.pool_name(name)
    if wanted_state == "maintenance":
        actions = _storage.deactivate_pool(conn, pool)
    else:
        actions = _storage.realize_pool(conn, pool, spec)
    _spec, pool_view = _storage.pool_state(conn, pool)
    return {"pool": pool, "view": pool_view, "actions": actions}


def _apply(engine, name, datacenter, dc, current, desired, dc_clusters, targets, specs, leaving, before, after,
           actions, timeout):
    with engine.transaction() as cur:
        Engine.lock(cur, LOCK_DATACENTER, datacenter)
        row_values = {"type": desired["type"], "params": desired["params"], "state": desired["state"],
                      "description": desired["description"]}
        if current is None:
            host_id = targets[0]["id"] if desired["host"] and targets else None
            if desired["host"] and host_id is None:
                cur.execute("SELECT id FROM host WHERE name = %s", (desired["host"],))
                host_id = cur.fetchone()["id"]
            row = insert_row(cur, "storage_domain", dict(row_values, name=name, datacenter_id=dc["id"],
                                                         host_id=host_id))
        else:
            cur.execute("UPDATE storage_domain SET state = %s, description = %s, updated_at = now() WHERE id = %s"
                        " RETURNING *", (desired["state"], desired["description"], current["id"]))
            row = cur.fetchone()
        cur.execute("DELETE FROM storage_domain_cluster WHERE storage_domain_id = %s", (row["id"],))
        for cluster in desired["clusters"]:
            cur.execute("INSERT INTO storage_domain_cluster (storage_domain_id, cluster_id) VALUES (%s, %s)",
                        (row["id"], dc_clusters[cluster]))
        # the hosts change inside the transaction: if one fails, the pools this run defined are
        # removed again and the engine rolls back, so no host keeps a pool the engine does not know

        def realize(conn, host):
            return _realize(conn, host, name, specs[host["name"]], desired["state"])

        outcomes = _hosts.on_hosts(engine, targets, realize, timeout)
        failed = _hosts.failures(outcomes)
        if failed:
            done = {h["name"]: (outcomes[h["name"]][0] or {}).get("actions") or [] for h in targets}
            created = [h for h in targets if "define" in done[h["name"]]]
            _hosts.on_hosts(engine, created, _pool_remover(name), timeout)
            stopped = [h for h in targets if "stop" in done[h["name"]]]  # maintenance half-done: back to active
            _hosts.on_hosts(engine, stopped,
                            lambda conn, h: _storage.realize_pool(conn, _storage.pool_name(name), specs[h["name"]]),
                            timeout)
            verb = "create" if current is None else "update"
            raise HypervisorError("Cannot %s storage domain '%s': %s" % (verb, name, _hosts.describe_failures(failed)))
        removed = _hosts.on_hosts(engine, leaving, _pool_remover(name),
                                  timeout)
        if leaving:
            cur.execute("DELETE FROM storage_domain_host WHERE storage_domain_id = %s AND host_id = ANY(%s)",
                        (row["id"], [h["id"] for h in leaving]))
        _record_hosts(cur, row["id"], targets, outcomes, False)
        verb = "created" if current is None else "updated"
        _events.record(cur, "STORAGE_DOMAIN_%s" % verb.upper(), "Storage domain %s (%s) was %s: %s"
                       % (name, desired["type"], verb, ", ".join(actions)), object_type="storage_domain",
                       object_id=row["id"], object_name=name, datacenter=datacenter,
                       details={"before": before, "after": after,
                                "unreachable_on_detach": _hosts.failures(removed)})
        resource = view(cur, find(cur, name, datacenter))
    return Outcome(True, before, after, resource, actions)


def ensure_absent(engine, name, datacenter=None, timeout=15, check_mode=False):
    validate_name("name", name)
    if datacenter is not None:
        validate_name("datacenter", datacenter)
    validate_timeout("timeout", timeout)
    with engine.transaction() as cur:
        current = find(cur, name, datacenter)
        if current is None:
            return Outcome(False)
        Engine.lock(cur, LOCK_DATACENTER, current["datacenter"])
        # under the lock: no disk can be created in the domain while its pools are taken away
        refuse_dependants("remove", "storage domain", name, [("disks", _disks_of(cur, current["id"]))])
        cur.execute("SELECT h.* FROM host h JOIN storage_domain_host sh ON sh.host_id = h.id"
                    " WHERE sh.storage_domain_id = %s ORDER BY h.name", (current["id"],))
        holders = cur.fetchall()
        before = _config(current, _clusters_of(cur, current["id"]))
        reachable = [h for h in holders if h["status"] != "NonResponsive"]
        actions = ["remove"] + ["remove pool on %s" % h["name"] for h in reachable]
        if check_mode:
            return Outcome(True, before, {}, None, actions)
        outcomes = _hosts.on_hosts(engine, reachable, _pool_remover(name),
                                   timeout)
        failed = _hosts.failures(outcomes)
        if failed:
            raise HypervisorError("Cannot remove storage domain '%s': the pool could not be removed from hosts %s: "
                                  "%s" % (name, ", ".join(sorted(failed)), _hosts.describe_failures(failed)))
        cur.execute("DELETE FROM storage_domain WHERE id = %s", (current["id"],))
        skipped = sorted(h["name"] for h in holders if h not in reachable)
        _events.record(cur, "STORAGE_DOMAIN_REMOVED", "Storage domain %s was removed" % name,
                       severity="warning" if skipped else "normal", object_type="storage_domain",
                       object_id=current["id"], object_name=name, datacenter=current["datacenter"],
                       details={"pool_left_on_unreachable_hosts": skipped})
    return Outcome(True, before, {}, None, actions)


def domain_info(engine, names=None, datacenter=None, refresh=False, timeout=15, check_mode=False):
    """Domains with each host's view; with ``refresh``, ask the hosts now and record what they say."""
    for domain_name in names or []:
        validate_name("name", domain_name)
    if datacenter is not None:
        validate_name("datacenter", datacenter)
    validate_timeout("timeout", timeout)
    with engine.transaction() as cur:
        cur.execute(_SELECT + " WHERE (%s::text IS NULL OR d.name = %s) ORDER BY d.name, s.name",
                    (datacenter, datacenter))
        rows = [r for r in cur.fetchall() if not names or r["name"] in names]
        missing = sorted(set(names or []) - {r["name"] for r in rows})
        if missing:
            raise NotFoundError("storage domain", ", ".join(missing))
        if not refresh:
            return False, [view(cur, r) for r in rows]
        plans = [(r, _target_hosts(cur, _clusters_of(cur, r["id"]), r.get("host"))) for r in rows]
    result = []
    for row, targets in plans:
        observed = _hosts.on_hosts(
            engine, targets, lambda conn, h, row=row: _observe(conn, h, row["name"], _storage.pool_spec(
                row["type"], plain(row["params"]), h["name"])), timeout)
        with engine.transaction() as cur:
            _record_hosts(cur, row["id"], targets, observed, check_mode)
            result.append(view(cur, row))
    return not check_mode and bool(rows), result


def realize_on_host(cur, conn, host, check_mode=False):
    """Bring every domain the host's cluster uses to the host; returns (actions, problems).

    Called by the host service when a host registers or is checked: a host that joins a
    cluster later gets its domains here, and one that cannot realize them is reported.
    """
    cur.execute(_SELECT + " JOIN storage_domain_cluster sc ON sc.storage_domain_id = s.id"
                " WHERE sc.cluster_id = %s AND (s.host_id IS NULL OR s.host_id = %s) ORDER BY s.name",
                (host["cluster_id"], host["id"]))
    actions, problems = [], []
    for row in cur.fetchall():
        spec = _storage.pool_spec(row["type"], plain(row["params"]), host["name"])
        pool = _storage.pool_name(row["name"])
        try:
            current, pool_view = _storage.pool_state(conn, pool)
            wanted_active = row["state"] == "active"
            done = []
            if wanted_active and (current != spec or not pool_view["active"] or not pool_view["autostart"]):
                done = ["realize storage domain %s" % row["name"]]
                if not check_mode:
                    _storage.realize_pool(conn, pool, spec)
            elif not wanted_active and pool_view and pool_view["active"]:
                done = ["stop storage domain %s (maintenance)" % row["name"]]
                if not check_mode:
                    _storage.deactivate_pool(conn, pool)
            actions += done
            _spec, pool_view = _storage.pool_state(conn, pool)
            outcome, error = {"pool": pool, "view": pool_view}, ""
        except HypervisorError as exc:
            outcome, error = {"pool": pool, "view": None}, str(exc)
            if row["state"] == "active":
                problems.append("storage domain %s: %s" % (row["name"], error))
        _record_hosts(cur, row["id"], [host], {host["name"]: (outcome, None)}, check_mode, {host["name"]: error})
    return actions, problems
