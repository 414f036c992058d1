# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Storage domains: defined once per data center, realized as a libvirt pool on every host that uses it.

Applying a domain is one operation (``_operation``): every host is asked first, with no lock held
(its pool as it is, and where it differs a transient probe pool that leaves nothing, so a host that
cannot have the domain stops the change before anything is written, with its name and libvirt's
reason); then the domain is reserved under the data center's lock, the pools are changed with no
lock held, and the outcome confirmed. A host that joins later or comes back gets the domain from
its own check (``_realize``).
"""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
from ansible_collections.virtplane.kvm.plugins.module_utils._errors import (
    ConflictError,
    HypervisorError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import (
    shown,
    validate_data_path,
    validate_description,
    validate_host_name,
    validate_name,
    validate_path,
    validate_pattern,
    validate_range,
    validate_text,
    validate_timeout,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _datacenters, _events, _jobs
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _hosts as host_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _storage_domains as domain_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_DATACENTER
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _hosts, _operation, _realize
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import (
    Outcome,
    Spec,
    plain,
    refuse_dependants,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _storage

TYPES = _choices.STORAGE_TYPES
PARAMS = {
    "dir": ("path",),
    "posixfs": ("path",),
    "nfs": ("server", "export", "path"),
    "logical": ("volume_group", "devices"),
    "iscsi": ("portal", "target", "initiator_prefix"),
    "rbd": ("monitors", "pool", "user", "secret_uuid"),
}
DEFAULT_INITIATOR_PREFIX = "iqn.2026-11.dev.virtplane"
_IQN = re.compile(r"iqn\.[0-9]{4}-(0[1-9]|1[0-2])\.[a-z0-9][a-z0-9.-]*[a-z0-9](:[A-Za-z0-9_.:-]+)?")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_VG = re.compile(r"[A-Za-z0-9+_][A-Za-z0-9+_.-]{0,126}")
# Ceph pool and user names: nothing that means something in QEMU's or Ceph's option strings (, = : @ /)
_CEPH_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def host_and_port(field, value, what="host[:port]"):
    """``host``, ``host:port`` or ``[v6-address]:port``: (host, port or None), both checked."""
    if not isinstance(value, str):
        raise ValidationError(field, "%s is not %s" % (shown(value), what))
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::([0-9]{1,5}))?|([^:\[\]]+)(?::([0-9]{1,5}))?", value)
    if not match:
        raise ValidationError(field, "%s is not %s" % (shown(value), what))
    host = match.group(1) or match.group(3)
    port = match.group(2) or match.group(4)
    if match.group(1):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValidationError(field, "%s is not %s" % (shown(value), what))
    else:
        validate_host_name(field, host, what)
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValidationError(field, "%s has port %s, outside 1-65535" % (shown(value), port))
    return host, port


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
        out["path"] = validate_data_path("%s.path" % kind, need("path"))
    elif kind == "nfs":
        server = validate_host_name("nfs.server", need("server"), "a host name or an IP address of an NFS server")
        out.update(server=server, export=validate_path("nfs.export", need("export")),
                   path=validate_data_path("nfs.path", given.get("path") or "%s/%s" % (_storage.NFS_MOUNT_ROOT, name)))
    elif kind == "logical":
        group = need("volume_group")
        if not isinstance(group, str) or not _VG.fullmatch(group) or group in (".", ".."):
            raise ValidationError("logical.volume_group", "%s is not a valid LVM volume group name" % shown(group))
        devices = [validate_path("logical.devices", d) for d in given.get("devices") or []]
        for device in devices:
            if not device.startswith("/dev/"):
                raise ValidationError("logical.devices", "%s is not a block device (a path under /dev)"
                                      % shown(device))
        out.update(volume_group=group, devices=devices)
    elif kind == "iscsi":
        portal = validate_text("iscsi.portal", need("portal"), "portal")
        host_and_port("iscsi.portal", portal)
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
            host_and_port("rbd.monitors", validate_text("rbd.monitors", monitor, "monitor address"))
        out.update(monitors=list(monitors),
                   pool=validate_pattern("rbd.pool", need("pool"), _CEPH_NAME, "a Ceph pool name"))
        if given.get("user") or given.get("secret_uuid"):
            out["user"] = validate_pattern("rbd.user", need("user"), _CEPH_NAME, "a Ceph user name")
            secret = need("secret_uuid")
            if not isinstance(secret, str) or not _UUID.fullmatch(secret.lower()):
                raise ValidationError("rbd.secret_uuid", "is not the UUID of a libvirt secret")
            out["secret_uuid"] = secret.lower()
    return out


SERVING_OR_JOINING = ("Up", "NonOperational", "Installing")


class StorageDomainSpec(Spec):
    FIELDS = ("name", "datacenter", "type", "params", "clusters", "host", "description", "state", "timeout",
              "wait_timeout")

    def validate(self):
        validate_name("name", self.name)
        self.state = self.state or "present"
        if self.datacenter is not None:
            validate_name("datacenter", self.datacenter)
        elif self.state != "absent":
            raise ValidationError("datacenter", "is required to %s a storage domain" % (
                "put in maintenance" if self.state == "maintenance" else "create or update"))
        for cluster in self.clusters or []:
            validate_name("clusters", cluster)
        if self.host is not None:
            validate_name("host", self.host)
        validate_description("description", self.description)
        self.timeout = 15 if self.timeout is None else self.timeout
        validate_timeout("timeout", self.timeout)
        self.wait_timeout = 60 if self.wait_timeout is None else self.wait_timeout
        validate_range("wait_timeout", self.wait_timeout, 0, 3600, "seconds")
        if self.state != "absent":
            self.params = normalize_params(self.type, self.name, self.params)

    @classmethod
    def from_params(cls, params):
        kind = params.get("type")
        return cls(params=params.get(kind) if kind else None,
                   **{f: params.get(f) for f in cls.FIELDS if f != "params"})


def find(cur, name, datacenter=None):
    return domain_rows.find(cur, name, datacenter)


def _targets(cur, clusters, host_name=None):
    """Hosts that have (or are about to have) the domain: serving or joining hosts of its clusters."""
    return host_rows.of_clusters(cur, clusters, SERVING_OR_JOINING, host_name)


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
    clusters = domain_rows.cluster_names(cur, row["id"])
    hosts = [{k: plain(v) for k, v in r.items()} for r in domain_rows.host_views(cur, row["id"])]
    expected = [h["name"] for h in host_rows.of_clusters(cur, clusters, host_rows.SERVING, row.get("host"))]
    status, missing = domain_status(row["state"], hosts, expected)
    return {"id": plain(row["id"]), "name": row["name"], "datacenter": row["datacenter"], "type": row["type"],
            "description": row["description"], "state": row["state"], "params": plain(row["params"]),
            "host": row.get("host"), "clusters": clusters, "status": status, "missing_on": missing,
            "hosts": hosts, "disks": domain_rows.disk_names(cur, row["id"]), "locked": row.get("job_id") is not None}


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


def ensure(engine, spec, check_mode=False):
    if spec.state == "absent":
        return _operation.run(engine, DomainRemove(engine, check_mode, spec))
    return _operation.run(engine, DomainApply(engine, check_mode, spec))


class DomainApply(_operation.Operation):
    """Create or update a storage domain, or put it in maintenance, on every host of its clusters."""

    action = "storage_domain.apply"
    # as for networks: pools redefined on hosts are not put back once the outcome is to be recorded
    irreversible = True

    def __init__(self, engine, check_mode, spec):
        super().__init__(engine, check_mode)
        self.spec = spec
        self.wait_timeout = spec.wait_timeout
        self.lock = (LOCK_DATACENTER, spec.datacenter)

    def _decide(self, cur):
        """Everything the engine says about the request: read in prepare, read again under the lock."""
        spec = self.spec
        current = domain_rows.find(cur, spec.name, spec.datacenter)
        action = ("update" if current else "create") + " storage domain '%s'" % spec.name
        dc = _datacenters.find(cur, spec.datacenter)
        if dc is None:
            raise NotFoundError("data center", spec.datacenter, action)
        host = spec.host
        if current is not None:
            _refuse_immutable(current, spec.type, spec.params, host)
        clusters = spec.clusters
        if spec.type == "dir":
            host = host or (current or {}).get("host")
            if host is None:
                raise ValidationError("host", "is required for a 'dir' storage domain: the directory is local to "
                                              "one host")
            host_row = host_rows.find(cur, host)
            if host_row is None or host_row["datacenter_id"] != dc["id"]:
                raise NotFoundError("host", "%s' in data center '%s" % (host, spec.datacenter), action)
            if clusters and clusters != [host_row["cluster"]]:
                raise ValidationError("clusters", "a 'dir' domain is used by its host's cluster (%s) only"
                                      % host_row["cluster"])
            clusters = [host_row["cluster"]]
        elif host is not None:
            raise ValidationError("host", "only a 'dir' storage domain belongs to one host; a %s domain is "
                                          "used by every host of its clusters" % spec.type)
        dc_clusters = _datacenters.clusters(cur, dc["id"])
        old_clusters = domain_rows.cluster_names(cur, current["id"]) if current else []
        if clusters is None:
            clusters = old_clusters if current else sorted(dc_clusters)
        unknown = sorted(set(clusters) - set(dc_clusters))
        if unknown:
            raise NotFoundError("cluster", "%s' in data center '%s" % (", ".join(unknown), spec.datacenter), action)
        clusters = sorted(set(clusters))
        desired = {"type": spec.type, "params": spec.params, "host": host if spec.type == "dir" else None,
                   "clusters": clusters, "state": "maintenance" if spec.state == "maintenance" else "active",
                   "description": spec.description if spec.description is not None
                   else (current or {}).get("description", "")}
        targets = _targets(cur, clusters, host if spec.type == "dir" else None)
        leaving = _targets(cur, sorted(set(old_clusters) - set(clusters)))
        return _operation.Plan(current=current, action_text=action, dc=dc, dc_clusters=dc_clusters,
                               old_clusters=old_clusters, desired=desired, targets=targets, leaving=leaving)

    def prepare(self, cur):
        plan = self._decide(cur)
        if plan.current is not None:  # another run's hold is waited for (or recovered) before any host is asked
            _operation.claim(cur, plan.current, "storage domain '%s'" % self.spec.name)
        return plan

    def observe(self, plan):
        """Each target's pool (one read-only look); where it differs, whether the host can realize it at all."""
        name, desired = self.spec.name, plan.desired
        pool = _storage.pool_name(name)
        plan.specs = {h["name"]: _realize.domain_spec(dict(desired, name=name), h) for h in plan.targets}
        observed = _hosts.on_hosts(self.engine, plan.targets, lambda conn, h: _storage.pool_state(conn, pool),
                                   self.spec.timeout, readonly=True)
        failed = _hosts.failures(observed)
        if failed:
            raise HypervisorError("Cannot %s: hosts %s did not answer: %s"
                                  % (plan.action_text, ", ".join(sorted(failed)), _hosts.describe_failures(failed)))
        plan.observed = {h: result for h, (result, _reason) in observed.items()}
        # a transient copy of the pool, started and stopped, tells whether a host can have it (path, client,
        # volume group) before anything is written; a mount, an iSCSI login or a VG activation is a change that
        # check mode skips (it probes directories only)
        if desired["state"] == "active" and not (self.check_mode and desired["type"] not in ("dir", "posixfs")):
            to_probe = [h for h in plan.targets if plan.observed[h["name"]][0] != plan.specs[h["name"]]]
            probes = _hosts.on_hosts(self.engine, to_probe, lambda conn, h: _storage.probe_pool(
                conn, "vp-probe-%s" % name, plan.specs[h["name"]]), self.spec.timeout)
            problems = {n: (r or e) for n, (r, e) in probes.items() if r or e}
            if problems:
                raise HypervisorError("Cannot %s: hosts %s cannot realize this %s domain: %s"
                                      % (plan.action_text, ", ".join(sorted(problems)), desired["type"],
                                         _hosts.describe_failures(problems)))

    def reserve(self, cur, plan):
        seen = plan
        plan = self._decide(cur)
        if (plan.current is None) != (seen.current is None) or \
                {h["name"] for h in plan.targets} - set(seen.observed):
            raise _operation.Retry()
        seen.__dict__.update({k: v for k, v in plan.__dict__.items() if k not in ("observed", "specs")})
        plan = seen
        spec, current, desired = self.spec, plan.current, plan.desired
        if current is not None:
            _operation.claim(cur, current, "storage domain '%s'" % spec.name)
        if desired["state"] == "maintenance" and (current is None or current["state"] != "maintenance"):
            vms = domain_rows.vms_using(cur, current["id"]) if current else []
            if vms:
                raise ConflictError("Cannot put storage domain '%s' into maintenance: running VMs %s use its disks"
                                    % (spec.name, ", ".join(vms)))
        if plan.leaving and current is not None:
            vms = domain_rows.vms_using(cur, current["id"], [h["id"] for h in plan.leaving])
            if vms:
                raise ConflictError("Cannot detach storage domain '%s' from hosts %s: running VMs %s use its disks"
                                    % (spec.name, ", ".join(h["name"] for h in plan.leaving), ", ".join(vms)))
        domain = dict(desired, name=spec.name)
        plan.steps = {}
        for host in plan.targets:
            step = _realize.domain_step(domain, host, plan.observed[host["name"]])
            if step:
                plan.steps[host["name"]] = step
        before_cfg = _config(current, plan.old_clusters) if current else {}
        config_changes = {k: v for k, v in desired.items() if before_cfg.get(k) != v}
        plan.before = {k: before_cfg.get(k) for k in config_changes} if current else {}
        plan.after = dict(config_changes) if current else dict(desired)
        actions = ([] if current else ["create"]) + (["update"] if current and config_changes else [])
        actions += ["%s on %s" % (plan.steps[h].description, h) for h in sorted(plan.steps)]
        actions += ["remove pool on %s" % h["name"] for h in plan.leaving]
        plan.actions = actions
        if not actions:
            if not self.check_mode:  # what each host has now, without rescanning a pool
                for host in plan.targets:
                    domain_rows.record_view(cur, current["id"], host["id"], _storage.pool_name(spec.name),
                                            plan.observed[host["name"]][1], "")
            plan.outcome = _operation_outcome(cur, False, current)
            return
        if self.check_mode:
            return
        saved = {"before": plain(before_cfg), "created": current is None}
        self.start_job(cur, plan, "storage_domain", current["id"] if current else None, spec.name,
                       plan.action_text, datacenter=spec.datacenter, saved=saved)
        values = {"type": desired["type"], "params": desired["params"], "state": desired["state"],
                  "description": desired["description"], "job_id": plan.job["id"]}
        if current is None:
            host_id = next((h["id"] for h in plan.targets if h["name"] == desired["host"]), None)
            if desired["host"] and host_id is None:
                host_id = host_rows.find(cur, desired["host"])["id"]
            row = domain_rows.insert(cur, dict(values, name=spec.name, datacenter_id=plan.dc["id"], host_id=host_id))
            _jobs.attach_object(cur, plan.job["id"], row["id"])
        else:
            row = domain_rows.update(cur, current["id"], values)
        domain_rows.set_clusters(cur, row["id"], [plan.dc_clusters[c] for c in desired["clusters"]])
        plan.row = row

    def act(self, plan):
        if self.check_mode:
            return {}
        hosts = [h for h in plan.targets if h["name"] in plan.steps]
        pool = _storage.pool_name(self.spec.name)

        def apply(conn, host):
            plan.steps[host["name"]].apply(conn)
            return _storage.pool_state(conn, pool)[1]
        outcomes = _hosts.on_hosts(self.engine, hosts, apply, self.spec.timeout)
        plan.done = outcomes
        failed = _hosts.failures(outcomes)
        if failed:
            raise HypervisorError("Cannot %s: %s" % (plan.action_text, _hosts.describe_failures(failed)))
        plan.removed = _hosts.on_hosts(self.engine, plan.leaving, _pool_remover(self.spec.name), self.spec.timeout)
        return {h: view for h, (view, _e) in outcomes.items()}

    def undo(self, plan, error):
        """No host keeps a pool the engine does not know: what this run defined goes, what it stopped restarts."""
        done = {h: reason is None for h, (_v, reason) in (getattr(plan, "done", None) or {}).items()}
        created = [h for h in plan.targets if done.get(h["name"]) and
                   plan.steps[h["name"]].description == "define pool"]
        _hosts.on_hosts(self.engine, created, _pool_remover(self.spec.name), self.spec.timeout)
        stopped = [h for h in plan.targets if done.get(h["name"]) and
                   plan.steps[h["name"]].description == "stop pool"]
        pool = _storage.pool_name(self.spec.name)
        _hosts.on_hosts(self.engine, stopped, lambda conn, h: _storage.realize_pool(conn, pool, plan.specs[h["name"]]),
                        self.spec.timeout)

    def release(self, cur, plan, error):
        if plan.current is None:
            domain_rows.delete(cur, plan.row["id"])
            return
        before = plan.current
        domain_rows.update(cur, before["id"], {"state": before["state"], "description": before["description"],
                                               "job_id": None})
        domain_rows.set_clusters(cur, before["id"], [plan.dc_clusters[c] for c in plan.old_clusters
                                                     if c in plan.dc_clusters])

    def confirm(self, cur, plan, result):
        views = result
        spec = self.spec
        if self.check_mode:
            predicted = dict(plan.desired, name=spec.name, datacenter=spec.datacenter, hosts=[], disks=[],
                             status="unattached")
            resource = view(cur, plan.current) if plan.current else predicted
            return _common_outcome(True, plan, resource)
        row_id = plan.row["id"]
        pool = _storage.pool_name(spec.name)
        still_here = host_rows.existing_ids(cur, [h["id"] for h in plan.targets + plan.leaving])
        for host in plan.targets:
            if host["id"] not in still_here:
                continue  # its registration failed meanwhile
            seen = views.get(host["name"]) if host["name"] in plan.steps else plan.observed[host["name"]][1]
            domain_rows.record_view(cur, row_id, host["id"], pool, seen, "")
        if plan.leaving:
            domain_rows.forget_hosts(cur, row_id, [h["id"] for h in plan.leaving])
        domain_rows.set_job(cur, row_id, None)
        # a host kept out for lack of this domain comes back once it has it (and the other way round)
        _realize.recompute_status(cur, sorted(still_here))
        verb = "created" if plan.current is None else "updated"
        _events.record(cur, "STORAGE_DOMAIN_%s" % verb.upper(), "Storage domain %s (%s) was %s: %s"
                       % (spec.name, plan.desired["type"], verb, ", ".join(plan.actions)),
                       object_type="storage_domain", object_id=row_id, object_name=spec.name,
                       datacenter=spec.datacenter, job_id=plan.job["id"],
                       details={"before": plan.before, "after": plan.after,
                                "unreachable_on_detach": _hosts.failures(getattr(plan, "removed", {}))})
        return _common_outcome(True, plan, view(cur, domain_rows.by_id(cur, row_id)))


def _common_outcome(changed, plan, resource):
    return Outcome(changed, plan.before, plan.after, resource, plan.actions)


def _operation_outcome(cur, changed, row):
    return Outcome(changed, resource=view(cur, domain_rows.by_id(cur, row["id"])))


def _pool_remover(name):
    return lambda conn, _host: _storage.remove_pool(conn, _storage.pool_name(name))


_operation.release_realized("storage_domain", domain_rows.set_job, "domain")


class DomainRemove(_operation.RemoveFromHosts):
    action = "storage_domain.remove"
    kind = "storage domain"
    host_action = "remove pool"

    def find(self, cur):
        return domain_rows.find(cur, self.spec.name, self.spec.datacenter)

    def refuse(self, cur, current):
        # under the lock: no disk can be created in the domain while its pools are taken away
        refuse_dependants("remove", "storage domain", self.spec.name,
                          [("disks", domain_rows.disk_names(cur, current["id"]))])

    def config(self, cur, current):
        return _config(current, domain_rows.cluster_names(cur, current["id"]))

    def holders(self, cur, current):
        holders = domain_rows.holders(cur, current["id"])
        return ([h for h in holders if h["status"] != "NonResponsive"],
                sorted(h["name"] for h in holders if h["status"] == "NonResponsive"))

    def remove_on_host(self, conn, _host):
        return _storage.remove_pool(conn, _storage.pool_name(self.spec.name))

    def set_job(self, cur, domain_id, job_id):
        domain_rows.set_job(cur, domain_id, job_id)

    def delete(self, cur, current):
        self.host_ids = [h["id"] for h in domain_rows.holders(cur, current["id"])]
        domain_rows.delete(cur, current["id"])

    def removed(self, cur, plan):
        current = plan.current
        _realize.recompute_status(cur, self.host_ids)
        _events.record(cur, "STORAGE_DOMAIN_REMOVED", "Storage domain %s was removed" % self.spec.name,
                       severity="warning" if plan.skipped else "normal", object_type="storage_domain",
                       object_id=current["id"], object_name=self.spec.name, datacenter=current["datacenter"],
                       details={"pool_left_on_unreachable_hosts": plan.skipped}, job_id=plan.job["id"])


def domain_info(engine, names=None, datacenter=None, refresh=False, timeout=15):
    """Domains with each host's view as recorded; ``refresh`` asks the hosts now (read only, nothing recorded)."""
    for domain_name in names or []:
        validate_name("name", domain_name)
    if datacenter is not None:
        validate_name("datacenter", datacenter)
    validate_timeout("timeout", timeout)
    with engine.transaction() as cur:
        rows = [r for r in domain_rows.listed(cur, datacenter) if not names or r["name"] in names]
        missing = sorted(set(names or []) - {r["name"] for r in rows})
        if missing:
            raise NotFoundError("storage domain", ", ".join(missing))
        views = [view(cur, r) for r in rows]
        expected = {r["id"]: host_rows.of_clusters(cur, domain_rows.cluster_names(cur, r["id"]), host_rows.SERVING,
                                                   r.get("host")) for r in rows}
    if refresh:
        for row, domain_view in zip(rows, views):  # noqa: B905 - same length
            _live_view(engine, row, domain_view, expected[row["id"]], timeout)
    return views


def _live_view(engine, row, domain_view, hosts, timeout):
    pool = _storage.pool_name(row["name"])
    # a read-only connection may not rescan a pool: what libvirt knows of it now (active, capacity) is asked
    live = _hosts.on_hosts(engine, hosts, lambda conn, _h: _storage.pool_state(conn, pool)[1], timeout,
                           readonly=True)
    domain_view["hosts"] = [dict({k: v for k, v in (result or {}).items() if k != "autostart"}, host=name,
                                 pool_name=pool, active=bool(result and result["active"]), error=reason or "")
                            for name, (result, reason) in sorted(live.items())]
    domain_view["status"], domain_view["missing_on"] = domain_status(row["state"], domain_view["hosts"], sorted(live))
