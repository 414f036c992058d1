# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hypervisor hosts: registration, capabilities read from libvirt, reachability and what they realize.

Registering, updating or refreshing a host is one operation (``_operation``): the host's libvirt
is read with no lock held (its facts, its pools and networks), the host is reserved under its
data center's lock — the lock under which storage domains and networks are reserved too, so a host
that joins while one is being applied sees it — the steps its cluster needs are applied on the
host with no lock held, and the outcome (facts, status, what the host has) is confirmed.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import (
    ConflictError,
    HypervisorError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import (
    IPROUTE_WORDS,
    parse_mib,
    shown,
    validate_host_name,
    validate_name,
    validate_pattern,
    validate_range,
    validate_timeout,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _clusters, _events, _jobs, _rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _hosts as host_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_DATACENTER
from ansible_collections.virtplane.kvm.plugins.module_utils.scheduler._scheduler import capacity
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _hosts, _operation, _realize
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import (
    Outcome,
    Spec,
    changed_fields,
    plain,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _client

FACTS = ("hardware_uuid", "hostname", "hypervisor_type", "domain_type", "libvirt_version", "cpu_arch",
         "cpu_model", "cpu_vendor", "cpu_sockets", "cpu_cores", "cpu_threads", "cpu_count", "cpu_mhz",
         "memory_mib", "numa_cells", "cpu_features", "cpu_models")
# What moves with the machine rather than with its configuration (the current clock, memory that is
# hot-added or onlined over time): refreshed on every check, never reported as a change.
MONITORED = ("cpu_mhz", "memory_mib", "numa_cells")
# Shown in results and diffs: the configuration by name, the status, and what libvirt reported.
# What the scheduler may give the host's VMs (``scheduler.capacity``): settings, 0 caps nothing.
CAPACITY = ("reserved_memory_mib", "reserved_cpus", "schedulable_memory_mib", "schedulable_cpus")
# what a new host gets for the capacity settings it leaves unset (the schema's defaults, shown by check mode)
NEW_HOST_CAPACITY = {"reserved_memory_mib": 256, "reserved_cpus": 0, "schedulable_memory_mib": 0, "schedulable_cpus": 0}
VISIBLE = ("cluster", "address", "libvirt_uri", "domain_type_setting", "network_nic") + CAPACITY + \
    ("status", "status_reason") + FACTS
# the settings a spec may change, with the columns they set
SETTINGS = ("cluster", "libvirt_uri", "address", "domain_type", "network_nic", "reserved_memory", "reserved_cpus",
            "schedulable_memory", "schedulable_cpus")
CPUS_MAX = 65536
_NIC = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_STATUS_FIELDS = ("status", "status_reason")
# the states that take a registered host as it is, with no settings
STATES_AS_IT_IS = ("refreshed", "maintenance", "active")
IN_MAINTENANCE = ("Maintenance", "PreparingForMaintenance")


def validate_address(field, value):
    """A management address: a host name or an IP address, matched whole."""
    return None if value is None else validate_host_name(field, value)


class HostSpec(Spec):
    FIELDS = SETTINGS + ("name", "timeout", "state", "wait_timeout", "fence", "storage_leases")

    def validate(self):
        validate_name("name", self.name)
        if self.cluster is not None:
            validate_name("cluster", self.cluster)
        if self.network_nic is not None:
            validate_pattern("network_nic", self.network_nic, _NIC,
                             "a network interface name (1-15 letters, digits, '.', '_' or '-', starting with a "
                             "letter or digit)")
            if self.network_nic.lower() in IPROUTE_WORDS:
                raise ValidationError("network_nic", "%s is a word of iproute2, not an interface name"
                                      % shown(self.network_nic))
        self.address = validate_address("address", self.address)
        self.reserved_memory_mib = None if self.reserved_memory is None else \
            parse_mib("reserved_memory", self.reserved_memory, zero=True)
        self.schedulable_memory_mib = None if self.schedulable_memory is None else \
            parse_mib("schedulable_memory", self.schedulable_memory, zero=True)
        validate_range("reserved_cpus", self.reserved_cpus, 0, CPUS_MAX, "CPUs")
        validate_range("schedulable_cpus", self.schedulable_cpus, 0, CPUS_MAX, "CPUs")
        self.timeout = 15 if self.timeout is None else self.timeout
        validate_timeout("timeout", self.timeout)
        self.wait_timeout = 60 if self.wait_timeout is None else self.wait_timeout
        validate_range("wait_timeout", self.wait_timeout, 0, 3600, "seconds")
        self.state = self.state or "present"
        if self.state in STATES_AS_IT_IS and any(getattr(self, f) is not None for f in SETTINGS):
            raise ValidationError("state", "%s takes a host as it is; change its settings with state present"
                                  % self.state)


def find(cur, name, lock=False):
    return host_rows.find(cur, name, lock)


def view(row):
    result = {k: plain(row.get(k)) for k in VISIBLE}
    result["libvirt_uri"] = _client.redact_uri(result["libvirt_uri"])
    memory, cpus = capacity(row)
    result["capacity"] = {"memory_mib": memory, "cpus": cpus}
    result.update(id=plain(row.get("id")), name=row["name"], datacenter=row.get("datacenter"),
                  last_seen_at=plain(row.get("last_seen_at")), fence=fence_view(row),
                  storage_leases=bool(row.get("storage_leases")), fenced_at=plain(row.get("fenced_at")),
                  unmanaged_domains=list(row.get("unmanaged_domains") or []),
                  status_changed_at=plain(row.get("status_changed_at")))
    return result


def fence_view(row):
    """What a result shows of a host's fencing (never its secret)."""
    if not row.get("fence_agent"):
        return {"agent": "none"}
    options = dict(row.get("fence_options") or {})
    return {"agent": row["fence_agent"], "address": options.get("address"), "port": options.get("port"),
            "username": options.get("username"), "options": options.get("options") or {}}


def ensure(engine, spec, check_mode=False):
    if spec.state == "absent":
        return ensure_absent(engine, spec.name, check_mode, spec.wait_timeout)
    if spec.libvirt_uri is not None:
        _client.validate_uri(spec.libvirt_uri, allow_test_driver=engine.allow_test_driver)
    return _operation.run(engine, HostCheck(engine, check_mode, spec))


class HostCheck(_operation.Operation):
    """Register, update or refresh one host: probe, reserve, realize its cluster's needs, confirm."""

    action = "host.check"

    def __init__(self, engine, check_mode, spec):
        super().__init__(engine, check_mode)
        self.spec = spec
        self.wait_timeout = spec.wait_timeout

    # 1. what the engine has, and what the host should be reached at
    def prepare(self, cur):
        spec = self.spec
        current = host_rows.find(cur, spec.name)
        if current is None and spec.state in STATES_AS_IT_IS:
            raise NotFoundError("host", spec.name, "%s host '%s'" % (
                "activate" if spec.state == "active" else "refresh", spec.name))
        action = ("update host '%s'" if current else "register host '%s'") % spec.name
        if spec.state == "active":
            action = "activate host '%s'" % spec.name
        if current is None:
            for field in ("cluster", "libvirt_uri"):
                if getattr(spec, field) is None:
                    raise ValidationError(field, "is required to %s" % action)
        cluster = _clusters.find(cur, spec.cluster or current["cluster"])
        if cluster is None:
            raise NotFoundError("cluster", spec.cluster, action)
        self.lock = (LOCK_DATACENTER, cluster["datacenter"])
        uri = spec.libvirt_uri or current["libvirt_uri"]
        setting = spec.domain_type or (current["domain_type_setting"] if current else "auto")
        nic = spec.network_nic if spec.network_nic is not None else (current or {}).get("network_nic")
        host = dict(current or {}, name=spec.name, libvirt_uri=uri, cluster_id=cluster["id"],
                    cluster=cluster["name"], datacenter=cluster["datacenter"], network_nic=nic)
        return _operation.Plan(current=current, action_text=action, uri=uri, setting=setting, host=host,
                               cluster=cluster)

    # 2. the host's libvirt, read before any lock: a dead host must not stall other writers. The connection may
    # write (libvirt tells the CPU models a guest can have only to such a one); the run's changes reuse it.
    def observe(self, plan):
        hypervisors = _hosts.hypervisors(self.engine)
        plan.facts, plan.reason, plan.observed, plan.observe_error, plan.cpu_times = None, None, None, None, None
        try:
            conn = hypervisors.connect(plan.host, self.spec.timeout)
            plan.facts = _client.read_host_facts(conn, plan.setting)
            plan.cpu_times = _client.cpu_times(conn)
        except HypervisorError as exc:
            plan.reason = str(exc)
        else:
            try:
                plan.observed = _realize.observe_host(conn)
            except HypervisorError as exc:  # it answers, but its pools or networks cannot be read
                plan.observe_error = str(exc)
        current = plan.current
        if current is None and plan.facts is None:
            raise HypervisorError("Cannot register host '%s': %s" % (self.spec.name, plan.reason))
        if current is not None and plan.uri != current["libvirt_uri"] and plan.facts is None:
            # as for a registration: a URI that does not answer is not taken, the host keeps the one it has
            raise HypervisorError("Cannot %s: %s; it keeps libvirt URI %s"
                                  % (plan.action_text, plan.reason, _client.redact_uri(current["libvirt_uri"])))

    # 3. under the data center's lock: read again, decide, reserve
    def reserve(self, cur, plan):
        spec, facts = self.spec, plan.facts
        cluster = _clusters.find(cur, plan.cluster["name"], lock=True)
        if cluster is None:
            raise NotFoundError("cluster", plan.cluster["name"], plan.action_text)
        row = host_rows.find(cur, spec.name, lock=True)
        if (row is None) != (plan.current is None):
            raise _operation.Retry()  # registered or removed by another run since we looked
        if row is not None:
            _operation.claim(cur, row, "host '%s'" % spec.name)
            # what the spec leaves unset comes from the row as it is now: another run may have changed it
            # since prepare; if it changed what the host was reached at or where it belongs, look again
            if (spec.libvirt_uri or row["libvirt_uri"]) != plan.uri or \
                    (spec.cluster or row["cluster"]) != plan.cluster["name"]:
                raise _operation.Retry()
            plan.current = row
            plan.setting = spec.domain_type or row["domain_type_setting"]
            plan.host["network_nic"] = spec.network_nic if spec.network_nic is not None else row["network_nic"]
        twin = facts and facts["hypervisor_type"] != "TEST" and facts.get("hardware_uuid") and \
            host_rows.same_machine(cur, facts["hardware_uuid"], spec.name)
        if twin:
            raise ConflictError("Cannot %s: libvirt at %s is the same machine as host '%s' (host UUID %s)"
                                % (plan.action_text, _client.redact_uri(plan.uri), twin, facts["hardware_uuid"]))
        if row is not None:
            _refuse_moves_under_vms(cur, row, cluster, spec.network_nic)
        host = dict(plan.host, id=row["id"] if row else None)
        activating = spec.state == "active"
        if activating and row["status"] == "PreparingForMaintenance":
            # a drain whose run is alive holds the host (claim waits for it); one whose run died is recovered
            raise ConflictError("Cannot activate host '%s': it is being drained for maintenance" % spec.name)
        current_status = (row or {}).get("status", "Up")
        plan.previous_status = "Up" if activating and current_status == "Maintenance" else current_status
        converging = facts is not None and plan.observed is not None and plan.previous_status not in IN_MAINTENANCE
        plan.rows = _realize.host_plan(cur, host) if converging else {"domains": [], "networks": []}
        plan.steps, plan.net_problems = (_realize.host_steps(host, plan.rows, plan.observed) if converging
                                         else ([], {}))
        # what the engine will hold, as far as it is known before the steps run (check mode shows this)
        config = {"cluster_id": cluster["id"], "libvirt_uri": plan.uri, "address": spec.address, "domain_type_setting":
                  plan.setting, "network_nic": spec.network_nic}
        config.update({k: getattr(spec, k) for k in CAPACITY})
        if row is None:
            config.update({k: v for k, v in NEW_HOST_CAPACITY.items() if config[k] is None})
        _refuse_empty_capacity(spec, row, config, facts)
        if row is None and config["address"] is None:
            config["address"] = validate_address("libvirt_uri", urlsplit(plan.uri).hostname)
        observed = {k: v for k, v in (facts or {}).items() if k not in MONITORED or row is None}
        problems = ["required network %s is not realized: %s" % (n, p) for n, p in sorted(plan.net_problems.items())
                    if any(net["name"] == n and net["required"] for net in plan.rows["networks"])]
        if facts is not None and plan.observed is None:
            problems.append("cannot read the host's pools and networks: %s" % plan.observe_error)
        status, reason = _realize.status_of(plan.previous_status, facts is not None, plan.reason, problems)
        desired = dict(observed, status=status, status_reason=reason, **config)
        plan.row, plan.config, plan.predicted = row, config, (status, reason)
        plan.before, plan.after = _diff(row, desired, cluster)
        actions = ["register"] if row is None else []
        if row is not None and set(plan.after) - set(_STATUS_FIELDS):
            actions.append("update")
        actions += [_realize.describe(s) for s in plan.steps]
        if "status" in plan.after and row is not None:
            actions.append("status %s -> %s" % (plan.before["status"], plan.after["status"]))
        plan.actions = actions
        if row is not None and not actions:
            plan.outcome = self._unchanged(cur, row, facts, plan.cpu_times)
            return
        if self.check_mode:
            return
        self.start_job(cur, plan, "host", row["id"] if row else None, spec.name, plan.action_text,
                       datacenter=cluster["datacenter"])
        if row is None:
            values = dict(facts, name=spec.name, status="Installing", status_reason="", job_id=plan.job["id"],
                          **{k: v for k, v in config.items() if v is not None})
            plan.row = host_rows.insert(cur, values)
            _jobs.attach_object(cur, plan.job["id"], plan.row["id"])
        else:
            host_rows.set_job(cur, row["id"], plan.job["id"])

    def _unchanged(self, cur, row, facts, cpu_times=None):
        """Nothing to do: what moves with the machine is refreshed, not reported as a change."""
        if facts is not None and not self.check_mode:
            monitored = changed_fields(row, {k: v for k, v in facts.items() if k in MONITORED and k != "cpu_mhz"})
            if monitored:
                row = dict(row, **host_rows.update(cur, row["id"], monitored))
            host_rows.seen(cur, row["id"])
            if cpu_times:
                host_rows.record_load(cur, row["id"], *cpu_times)
        return Outcome(False, resource=view(row))

    # 4. the host's changes, with no database lock held
    def act(self, plan):
        plan.errors, plan.views, plan.conn = {}, {}, None
        if plan.steps and not self.check_mode:
            plan.conn = _hosts.hypervisors(self.engine).connect(plan.host, self.spec.timeout)
            plan.errors, plan.views = _realize.apply_steps(plan.conn, plan.steps, False)
        return plan.errors

    # 5. the outcome, recorded under the lock
    def confirm(self, cur, plan, result):
        errors = result
        spec, facts = self.spec, plan.facts
        if self.check_mode:
            resource = dict(view(plan.row) if plan.row else {}, **plan.after)
            resource.setdefault("name", spec.name)
            return Outcome(True, plan.before, plan.after, resource, plan.actions)
        row = host_rows.by_id(cur, plan.row["id"], lock=True)
        host = dict(plan.host, id=row["id"])
        problems = []
        in_maintenance = plan.previous_status in IN_MAINTENANCE
        plan.gone = _realize.vanished(cur, plan.rows)
        if facts is not None and plan.observed is not None and not in_maintenance:
            problems = _realize.record_host(cur, host, plan.rows, plan.observed, plan.steps, errors,
                                            plan.net_problems, plan.views, plan.gone)
        elif facts is not None and plan.observed is None:
            problems = ["cannot read the host's pools and networks: %s" % plan.observe_error]
        status, reason = _realize.status_of(plan.previous_status, facts is not None, plan.reason, problems)
        values = dict(facts or {})
        values.update({k: v for k, v in plan.config.items() if v is not None})
        values.update(status=status, status_reason=reason, job_id=None)
        if facts is not None:
            values["last_seen_at"] = _rows.now(cur)
            if plan.cpu_times:
                host_rows.record_load(cur, row["id"], *plan.cpu_times)
        if status != row["status"] or plan.current is None:
            values["status_changed_at"] = _rows.now(cur)
        if facts is None:
            values = {k: v for k, v in values.items() if k not in FACTS}
        updated = host_rows.update(cur, row["id"], values)
        cluster = plan.cluster
        shown = dict(updated, cluster=cluster["name"], datacenter=cluster["datacenter"])
        before, after = _diff(plan.current, shown, cluster)
        actions = [a for a in plan.actions if not a.startswith("status ")]
        if plan.current is not None and "status" in after:
            actions.append("status %s -> %s" % (before["status"], after["status"]))
        context = dict(object_type="host", object_id=row["id"], object_name=spec.name,
                       datacenter=cluster["datacenter"], cluster=cluster["name"], host=spec.name, job_id=plan.job["id"])
        if plan.current is None:
            _events.record(cur, "HOST_ADDED", "Host %s was added to cluster %s (%s, %d CPUs, %d MiB)%s"
                           % (spec.name, cluster["name"], facts["domain_type"], facts["cpu_count"],
                              facts["memory_mib"], "" if status == "Up" else ": %s, %s" % (status, reason)),
                           **context)
        else:
            _record_update(cur, shown, before, after, context)
        return Outcome(True, before if plan.current else {}, after, view(shown), actions)

    def release(self, cur, plan, error):
        if plan.current is None:
            host_rows.delete(cur, plan.row["id"])
        else:
            host_rows.set_job(cur, plan.row["id"], None)

    def after_confirm(self, plan):
        """A domain or network this run realized, that a failed apply released meanwhile, goes from the host too."""
        gone = getattr(plan, "gone", (set(), set()))
        if plan.conn is not None and (gone[0] or gone[1]):
            _realize.undo_vanished(plan.conn, plan.steps, plan.errors, gone)


def _diff(row, desired, cluster):
    """(before, after) of the visible fields that differ; a new host has everything in after."""
    shown_new = dict(row or {}, **{k: v for k, v in desired.items() if v is not None})
    shown_new.update(cluster=cluster["name"], datacenter=cluster["datacenter"])
    if row is None:
        after = {k: plain(shown_new.get(k)) for k in VISIBLE}
        after["libvirt_uri"] = _client.redact_uri(after["libvirt_uri"])
        return {}, after
    before = {k: plain(row.get(k)) for k in VISIBLE if k not in MONITORED
              and plain(row.get(k)) != plain(shown_new.get(k))}
    after = {k: plain(shown_new.get(k)) for k in before}
    for side in (before, after):
        if "libvirt_uri" in side:
            side["libvirt_uri"] = _client.redact_uri(side["libvirt_uri"])
    return before, after


def _refuse_empty_capacity(spec, row, config, facts):
    """Settings that would leave the host no memory or no CPU for VMs are a mistake: refused, naming them."""
    host = dict(row or {}, **{k: v for k, v in config.items() if v is not None})
    host.update((k, v) for k, v in (facts or {}).items() if k in ("memory_mib", "cpu_count"))
    memory, cpus = capacity(host)
    if memory == 0 and (spec.reserved_memory is not None or spec.schedulable_memory is not None):
        field = "reserved_memory" if spec.reserved_memory is not None else "schedulable_memory"
        raise ValidationError(field, "%d MiB reserved of the %d MiB host %s schedules leaves no memory for VMs"
                              % (host["reserved_memory_mib"], min(host["memory_mib"], host.get("schedulable_memory_mib")
                                                                  or host["memory_mib"]), spec.name))
    if cpus == 0 and (spec.reserved_cpus is not None or spec.schedulable_cpus is not None):
        field = "reserved_cpus" if spec.reserved_cpus is not None else "schedulable_cpus"
        raise ValidationError(field, "%d CPUs reserved of the %d host %s schedules leave no CPU for VMs"
                              % (host["reserved_cpus"], min(host["cpu_count"], host.get("schedulable_cpus")
                                                            or host["cpu_count"]), spec.name))


def _refuse_moves_under_vms(cur, row, cluster, network_nic):
    """Moving a host, or its networks to another NIC, would pull them from under its VMs."""
    moving = row["cluster_id"] != cluster["id"]
    nic_change = network_nic is not None and network_nic != row["network_nic"]
    if not (moving or nic_change):
        return
    vms = host_rows.vms_on(cur, row["id"])
    if vms and moving:
        raise ConflictError("Cannot move host '%s' to cluster '%s': VMs %s run on it; migrate them or "
                            "stop them first" % (row["name"], cluster["name"], ", ".join(vms)))
    if vms:
        raise ConflictError("Cannot change the network NIC of host '%s' from %s to %s: VMs %s run on it and "
                            "their networks would move under them; migrate them or stop them first"
                            % (row["name"], row["network_nic"] or "(none)", network_nic, ", ".join(vms)))


def _record_update(cur, row, before, after, context):
    name = row["name"]
    if "status" in after:
        _realize.record_status_change(cur, row, before["status"], after["status"], after.get("status_reason"))
    config = sorted(set(after) - set(_STATUS_FIELDS))
    if config:
        _events.record(cur, "HOST_UPDATED", "Host %s was updated: %s" % (name, ", ".join(config)),
                       details={"before": {k: before[k] for k in config}, "after": {k: after[k] for k in config}},
                       **context)


@_operation.recovery("host.check")
def _recover_check(engine, job):
    """A check that died: a new host that never got past it goes; a known one is released for the next check."""
    with engine.transaction() as cur:
        _operation.lock_for(engine, cur, job)
        row = host_rows.by_id(cur, job["object_id"], lock=True) if job["object_id"] else None
        if row is not None and row["status"] == "Installing":
            host_rows.delete(cur, row["id"])
            how = "host %s, registered half-way, was removed again" % row["name"]
        else:
            if row is not None:
                host_rows.set_job(cur, row["id"], None)
            how = "released; the next check of the host realizes what it lacks"
        _jobs.end(cur, job["id"], "aborted", {"recovered_by": _jobs.OWNER})
    return how


def ensure_absent(engine, name, check_mode=False, wait_timeout=60):
    validate_name("name", name)
    operation = HostRemove(engine, check_mode, name)
    operation.wait_timeout = wait_timeout
    return _operation.run(engine, operation)


class HostRemove(_operation.Operation):
    """Remove a host from the engine: nothing on the host changes, so it is all one short transaction,
    but it meets another run's hold on the host as every operation does (waits for a live one, recovers
    a dead one)."""

    action = "host.remove"

    def __init__(self, engine, check_mode, name):
        super().__init__(engine, check_mode)
        self.name = name

    def prepare(self, cur):
        row = host_rows.find(cur, self.name)
        self.lock = (LOCK_DATACENTER, row["datacenter"] if row else "")
        return _operation.Plan(current=row)

    def reserve(self, cur, plan):
        name = self.name
        row = host_rows.find(cur, name, lock=True)
        if row is None:
            plan.outcome = Outcome(False)
            return
        if plan.current is None or row["datacenter"] != plan.current["datacenter"]:
            raise _operation.Retry()
        _operation.claim(cur, row, "host '%s'" % name)
        vms = host_rows.vms_on(cur, row["id"])
        if vms:
            raise ConflictError("Cannot remove host '%s': VMs %s run on it; migrate them or stop them first"
                                % (name, ", ".join(vms)))
        local = host_rows.local_domains(cur, row["id"])
        if local:
            raise ConflictError("Cannot remove host '%s': it holds the 'dir' storage domains %s; remove them first"
                                % (name, ", ".join(local)))
        if not self.check_mode:
            host_rows.delete(cur, row["id"])
            _events.record(cur, "HOST_REMOVED", "Host %s was removed from cluster %s" % (name, row["cluster"]),
                           object_type="host", object_id=row["id"], object_name=name,
                           datacenter=row["datacenter"], cluster=row["cluster"], host=name)
        plan.outcome = Outcome(True, view(row), {}, None, ["remove"])


def host_info(engine, names=None, cluster=None):
    """Hosts with status and capabilities, as the engine knows them (read only)."""
    for host_name in names or []:
        validate_name("name", host_name)
    if cluster is not None:
        validate_name("cluster", cluster)
    with engine.transaction() as cur:
        rows = host_rows.rows(cur, names, cluster)
    missing = sorted(set(names or []) - {r["name"] for r in rows})
    if missing:
        raise NotFoundError("host", ", ".join(missing))
    return [view(r) for r in rows]
