# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live migration of a running VM to another host of its cluster.

Reserve (under the data center's and the cluster's locks): the VM is Up, the destination is the one
named or the scheduler's choice and passes every filter for it, neither host has its cluster's
``migration_max_parallel`` migrations going already (a migration beyond waits, up to ``wait_timeout``);
the VM's reservation is then held on both hosts (``migrating_to_host_id``), its status is
MigratingFrom and a ``migration`` row records the attempt. Act (no lock): the destination gets the
VM's seed and console directory, and the source's libvirtd migrates the guest peer to peer, steered
by the policy (``virt._migration``), its progress written to the job. Confirm: the VM's host is the
destination and its reservation leaves the source, in one transaction. A migration that fails
leaves the guest on the source: the reservation on the destination goes and an event says why.
"""

from __future__ import annotations

import threading
import time

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
from ansible_collections.virtplane.kvm.plugins.module_utils._errors import (
    ConflictError,
    HypervisorError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import (
    shown,
    validate_name,
    validate_range,
    validate_timeout,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _clusters, _events, _jobs
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _hosts as host_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _migrations as migration_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _vms as vm_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_CLUSTER
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _hosts, _operation, _placing
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _vm as vms
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import Outcome, Spec, plain
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _migration, _seed
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _vm as virt_vm

POLICIES = _choices.MIGRATION_POLICIES
BANDWIDTH_MAX = 100000  # MiB/s
# how often a running migration writes its progress to its job and looks whether it was cancelled
PROGRESS_SECONDS = 1.0


class MigrateSpec(Spec):
    FIELDS = ("name", "host", "policy", "bandwidth", "auto_converge", "cancel", "migration_timeout", "timeout",
              "wait_timeout")

    def validate(self):
        validate_name("name", self.name)
        if self.host is not None:
            validate_name("host", self.host)
        if self.policy is not None and self.policy not in POLICIES:
            raise ValidationError("policy", "%s is not one of %s" % (shown(self.policy), ", ".join(POLICIES)))
        if self.bandwidth is not None:
            validate_range("bandwidth", self.bandwidth, 1, BANDWIDTH_MAX, "MiB/s")
        for field in ("auto_converge", "cancel"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, bool):
                raise ValidationError(field, "%s is not true or false" % shown(value))
        self.auto_converge = bool(self.auto_converge)
        self.cancel = bool(self.cancel)
        if self.cancel and (self.host is not None or self.policy is not None or self.bandwidth is not None):
            raise ValidationError("cancel", "cancels the VM's running migration: host, policy and bandwidth do not go "
                                            "with it")
        validate_timeouts(self)


def validate_timeouts(spec):
    """A spec's migration_timeout, timeout and wait_timeout, with their defaults: every spec that migrates."""
    spec.migration_timeout = 600 if spec.migration_timeout is None else spec.migration_timeout
    validate_range("migration_timeout", spec.migration_timeout, 1, 86400, "seconds")
    spec.timeout = 15 if spec.timeout is None else spec.timeout
    validate_timeout("timeout", spec.timeout)
    spec.wait_timeout = 60 if spec.wait_timeout is None else spec.wait_timeout
    validate_range("wait_timeout", spec.wait_timeout, 0, 3600, "seconds")


def ensure(engine, spec, check_mode=False):
    if spec.cancel:
        return cancel(engine, spec, check_mode)
    return _operation.run(engine, VmMigrate(engine, check_mode, spec))


def _bandwidth(spec, row):
    """MiB/s: the one asked, else the cluster's (Mbit/s), else none."""
    if spec.bandwidth is not None:
        return spec.bandwidth
    mbps = row.get("migration_bandwidth_mbps")
    return max(1, int(mbps * 1000000 / 8 / (1024 * 1024))) if mbps else None


class VmMigrate(vms._VmOperation):
    action = "vm.migrate"

    def __init__(self, engine, check_mode, spec):
        super().__init__(engine, check_mode, spec)

    def prepare(self, cur):
        row = self._row(cur)
        self.lock = (vms.LOCK_DATACENTER, row["datacenter"])
        return _operation.Plan(row=row)

    def observe(self, plan):
        if plan.row is not None and plan.row["status"] == "Up":
            _placing.warm(self.engine, plan.row["cluster_id"])

    def reserve(self, cur, plan):
        row = self._row(cur, lock=True)
        self._claim(cur, row)
        name = row["name"]
        expected = getattr(self.spec, "source", None)
        if expected is not None and (row["host"] != expected or row["status"] not in vms.ON_HOST):
            # a drain or a balancing pass planned to move it off a host it has left meanwhile: nothing to do
            plan.outcome = Outcome(False, resource=vms.view(row))
            return
        if row["status"] != "Up":
            raise ConflictError("Cannot migrate VM '%s': it is %s; only a running VM (Up) migrates"
                                % (name, row["status"]))
        cluster = _clusters.find(cur, row["cluster"])
        source = host_rows.find(cur, row["host"])
        if self.spec.host is not None and self.spec.host == source["name"]:
            raise ConflictError("Cannot migrate VM '%s' to host %s: it runs there already" % (name, source["name"]))
        if self.spec.host is not None:
            named = host_rows.find(cur, self.spec.host)
            if named is None:
                raise NotFoundError("host", self.spec.host, "migrate VM '%s' there" % name)
            if named["cluster_id"] != row["cluster_id"]:
                raise ConflictError("Cannot migrate VM '%s' to host %s: the host is in cluster %s and the VM in "
                                    "cluster %s (a VM migrates within its cluster)"
                                    % (name, named["name"], named["cluster"], row["cluster"]))
        self.engine.lock(cur, LOCK_CLUSTER, row["cluster"])
        scheduler = _placing.scheduler_for(self.engine, cur, row["cluster_id"])
        request = dict(vms.running_request(row), exclude={source["name"]: "the VM runs there"})
        if self.spec.host is not None:
            why = scheduler.reason(request, self.spec.host)
            if why:
                raise ConflictError("Cannot migrate VM '%s' to host %s: %s" % (name, self.spec.host, why))
            destination = host_rows.find(cur, self.spec.host)
        else:
            decision = scheduler.place(request)
            if decision.host is None:
                raise ConflictError("Cannot migrate VM '%s': no other host of cluster %s can run it: %s"
                                    % (name, row["cluster"], decision.explain() or "the cluster has no other host"))
            destination = host_rows.find(cur, decision.host["name"])
        policy = self.spec.policy or cluster["migration_policy"]
        limit = cluster["migration_max_parallel"]
        for host in (source, destination):
            going = migration_rows.running_on(cur, host["id"])
            for holder in going:
                job = _jobs.get(cur, holder["job_id"])
                if job is not None and job["expired"]:
                    raise _operation.Expired(job)  # a run that died holds the slot: recovered first
            if len(going) >= limit:
                job = _jobs.get(cur, going[0]["job_id"])
                vms_going = ", ".join(g["vm_name"] for g in going)
                message = ("Cannot migrate VM '%s' now: host %s has %d migrations going (the cluster allows %d), VMs "
                           "%s; waited %d s" % (name, host["name"], len(going), limit, vms_going,
                                                self.spec.wait_timeout))
                raise _operation.Busy(message, job)
        bandwidth = _bandwidth(self.spec, cluster)
        plan.row, plan.source, plan.destination = row, source, destination
        plan.policy, plan.bandwidth = policy, bandwidth
        plan.seed = vms._seed_documents(row)
        plan.actions = ["migrate from %s to %s (%s%s%s)" % (
            source["name"], destination["name"], policy, ", %d MiB/s" % bandwidth if bandwidth else "",
            ", auto-converge" if self.spec.auto_converge else "")]
        if self.check_mode:
            plan.outcome = Outcome(True, {"host": source["name"]}, {"host": destination["name"]},
                                   dict(vms.view(row), host=destination["name"]), plan.actions)
            return
        self._job(cur, plan, row, "migrate VM %s from host %s to host %s" % (name, source["name"], destination["name"]))
        plan.migration_id = migration_rows.insert(cur, row, source, destination, policy, bandwidth, plan.job["id"])
        _jobs.note(cur, plan.job["id"], {"source": source["name"], "destination": destination["name"],
                                         "migration": str(plan.migration_id), "policy": policy})
        vm_rows.set_runtime(cur, row["id"], status="MigratingFrom", migrating_to_host_id=destination["id"])
        _events.record(cur, "VM_MIGRATION_STARTED", "VM %s is migrating from host %s to host %s (%s)"
                       % (name, source["name"], destination["name"], policy), object_type="vm",
                       object_id=row["id"], object_name=name, host=source["name"], vm=name, job_id=plan.job["id"],
                       details={"destination": destination["name"], "policy": policy})

    def act(self, plan):
        if self.check_mode:
            return None
        registry = _hosts.hypervisors(self.engine)
        row, source, destination = plan.row, plan.source, plan.destination

        def prepare(conn):
            # what the guest's devices name besides its disks: the console log's directory, the seed ISO
            if (row["spec"] or {}).get("serial_console", True) or plan.seed:
                virt_vm.local_pool(conn)
            if plan.seed:
                virt_vm.write_seed(conn, row["name"], _seed.nocloud_seed(plan.seed))
        registry.call(destination, "prepare VM '%s' for its migration" % row["name"], prepare, self.spec.timeout)
        plan.prepared = True
        progress = _Progress(self.engine, plan.job)
        # every disk is on a storage domain the destination has active (the scheduler's filter): the engine knows
        # the storage is shared where libvirt cannot tell (a shared directory is a local one to it)
        try:
            stats = registry.call(source, "migrate VM '%s' to host %s" % (row["name"], destination["name"]),
                                  lambda conn: _migration.migrate(conn, row["name"], destination["libvirt_uri"],
                                                                  plan.policy, plan.bandwidth, self.spec.auto_converge,
                                                                  self.spec.migration_timeout, progress.see,
                                                                  progress.cancelled, storage_shared=True),
                                  self.spec.timeout)
        except HypervisorError as exc:
            raise HypervisorError(explained(plan.policy, str(exc), destination["name"]))
        try:
            stats.update(registry.call(destination, "read the migration's statistics",
                                       lambda conn: _migration.completed(conn, row["name"]), self.spec.timeout))
        except HypervisorError:
            pass
        try:
            registry.call(source, "remove the seed the VM left",
                          lambda conn: virt_vm.remove_local(conn, [virt_vm.seed_volume(row["name"])]),
                          self.spec.timeout)
        except HypervisorError:
            pass
        return stats

    def undo(self, plan, error):
        """Where the guest is after a failure, from what both hosts say (``release`` records it). Recorded by
        ``release``."""
        states = _states(self.engine, plan.row["name"], (plan.source, plan.destination), self.spec.timeout)
        plan.found_on, plan.found_state = _where(states, plan.source, plan.destination,
                                                 getattr(error, "postcopy", False))
        if plan.found_on is not plan.destination and getattr(plan, "prepared", False) and plan.seed \
                and states.get(plan.destination["name"]) is None:
            try:
                _hosts.hypervisors(self.engine).call(
                    plan.destination, "remove the seed written for the migration",
                    lambda conn: virt_vm.remove_local(conn, [virt_vm.seed_volume(plan.row["name"])]),
                    self.spec.timeout)
            except HypervisorError:
                pass

    def release(self, cur, plan, error):
        row, name = plan.row, plan.row["name"]
        why = _operation.describe(error)
        found, state = getattr(plan, "found_on", None), getattr(plan, "found_state", None)
        if found is plan.destination:
            self._arrived(cur, plan, {}, "the migration ended with an error (%s) but the VM runs on host %s"
                          % (why, found["name"]))
            return
        if found is plan.source:
            vm_rows.set_runtime(cur, row["id"], status="Up" if state == "running" else "Paused",
                                status_reason="" if state == "running" else "paused after its migration failed",
                                migrating_to_host_id=None, job_id=None)
            _keep_uptime(cur, row)
            where = "it keeps running on host %s" % plan.source["name"] if state == "running" else \
                "it is paused on host %s" % plan.source["name"]
        else:
            # nobody can tell where the guest is: it is Unknown, and its room stays held on both hosts
            vm_rows.set_runtime(cur, row["id"], status=vms.UNKNOWN, job_id=None,
                                status_reason="its migration failed (%s) and %s" % (why, state))
            where = "%s: recorded Unknown, its room held on both hosts" % state
        migration_rows.ended(cur, plan.migration_id, "failed", why)
        _events.record(cur, "VM_MIGRATION_FAILED", "VM %s did not migrate from host %s to host %s: %s; %s"
                       % (name, plan.source["name"], plan.destination["name"], why, where), severity="error",
                       object_type="vm", object_id=row["id"], object_name=name, host=plan.source["name"], vm=name,
                       job_id=plan.job["id"], details={"destination": plan.destination["name"]})

    def confirm(self, cur, plan, result):
        if self.check_mode:
            return plan.outcome
        self._arrived(cur, plan, result or {}, "")
        fresh = dict(vm_rows.find(cur, plan.row["name"]), now=vms._now(cur))
        view = vms.view(fresh)
        view["migration"] = migration_view(migration_rows.get(cur, plan.migration_id))
        return Outcome(True, {"host": plan.source["name"]}, {"host": plan.destination["name"]}, view, plan.actions)

    def _arrived(self, cur, plan, stats, note):
        """The VM is on the destination: its host and reservation move there in this transaction."""
        row, destination = plan.row, plan.destination
        console = dict(row.get("console") or {})
        if console.get("serial_log"):
            console["serial_log"] = "%s:%s" % (destination["name"], virt_vm.console_path(row["name"]))
        if console.get("host") in (plan.source["address"], plan.source["name"]):
            console.pop("host", None)
            console.pop("url", None)
        vm_rows.set_runtime(cur, row["id"], status="Up", status_reason="", run_host_id=destination["id"],
                            migrating_to_host_id=None, job_id=None, console=console)
        _keep_uptime(cur, row)
        migration_rows.done(cur, plan.migration_id, note,
                            stats.get("total_ms") or (int(stats["total_s"] * 1000) if stats.get("total_s") else None),
                            stats.get("downtime_ms"), stats.get("transferred_mib"), bool(stats.get("postcopy")))
        _events.record(cur, "VM_MIGRATED", "VM %s migrated from host %s to host %s%s%s"
                       % (row["name"], plan.source["name"], destination["name"],
                          " (downtime %d ms)" % stats["downtime_ms"] if stats.get("downtime_ms") is not None else "",
                          ": " + note if note else ""),
                       object_type="vm", object_id=row["id"], object_name=row["name"], host=destination["name"],
                       vm=row["name"], job_id=plan.job["id"],
                       details={"source": plan.source["name"], "downtime_ms": stats.get("downtime_ms"),
                                "postcopy": bool(stats.get("postcopy"))})


def migrate_many(engine, moves, parallel, timeout=15, wait_timeout=60, migration_timeout=600, done=None):
    """Several VMs migrated, at most ``parallel`` at once, each by a ``VmMigrate`` of its own on a database
    connection of its own (this run's libvirt connections shared): ``moves`` is [(VM name, host or None for
    the scheduler's choice, the host it is to leave)], started in that order; a VM that has left that host
    meanwhile is not moved (its Outcome is unchanged). One that fails does not stop the others. ``done(name,
    outcome, error)`` is called (under a lock, never after this returns or raises) as each ends. Returns
    {name: (Outcome or None, error or None)}.

    When the run is stopped (KeyboardInterrupt) while they go, no further migration starts, ``done`` is not
    called again, and the interruption is raised at once: the migrations under way are their jobs' to end or,
    when the process ends with them, their recoveries'."""
    results, pending = {}, list(moves)
    lock = threading.Lock()
    stopped = []
    _hosts.hypervisors(engine)  # one registry, made before the threads share it

    def work():
        sibling = None
        try:
            while True:
                with lock:
                    if not pending or stopped:
                        return
                    name, host, source = pending.pop(0)
                outcome, error = None, None
                try:
                    if sibling is None:
                        sibling = _hosts.sibling(engine)
                    spec = MigrateSpec(name=name, host=host, timeout=timeout, wait_timeout=wait_timeout,
                                       migration_timeout=migration_timeout)
                    spec.source = source
                    outcome = _operation.run(sibling, VmMigrate(sibling, False, spec))
                except Exception as exc:  # pylint: disable=broad-except
                    error = exc
                with lock:
                    if stopped:
                        return
                    results[name] = (outcome, error)
                    if done is not None:
                        done(name, outcome, error)
        finally:
            if sibling is not None:
                sibling.close()

    workers = [threading.Thread(target=work, name="virtplane-migrate-%d" % n, daemon=True)
               for n in range(max(1, min(parallel, len(moves))))]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join()
    except BaseException:
        with lock:  # a ``done`` under way ends first: the caller's connection is its own again
            stopped.append(True)
            pending.clear()
        raise
    return results


def _states(engine, name, hosts, timeout):
    """{host name: what it has of the guest (``_migration.state_here``), or "unknown" when it does not answer}."""
    states = {}
    for host in hosts:
        try:
            states[host["name"]] = _hosts.hypervisors(engine).call(
                host, "look for VM '%s'" % name, lambda conn: _migration.state_here(conn, name), timeout)
        except HypervisorError:
            states[host["name"]] = "unknown"
    return states


def _where(states, source, destination, postcopy):
    """(the host the guest is on, its state there), or (None, why nobody can tell). A guest running is where it
    runs; before a post-copy switch, a guest the source still has is there (pre-copy never leaves it); after one,
    its state is on the destination, so a source that still has it paused does not count."""
    for host in (destination, source):
        if states[host["name"]] in ("running", "postcopy") and (host is destination or not postcopy):
            return host, "running"
    if not postcopy and states[source["name"]] not in (None, "unknown"):
        return source, states[source["name"]]
    said = ", ".join("host %s: %s" % (name, state or "no such domain") for name, state in sorted(states.items()))
    return None, "%sneither host runs it (%s)" % ("after its post-copy switch " if postcopy else "", said)


def explained(policy, message, destination):
    """libvirt's words on a failed migration, with what QEMU's own mean for the user."""
    if policy == "post_copy" and "ostcopy is not supported" in message:
        return ("%s (host %s cannot take a post-copy migration: its QEMU cannot use userfaultfd, which needs "
                "vm.unprivileged_userfaultfd=1 there; another policy, or auto_converge, can move the VM)"
                % (message, destination))
    return message


def _keep_uptime(cur, row):
    """Up again after MigratingFrom: the guest never stopped, so it has been Up since it was before."""
    migration_rows.keep_status_since(cur, row["id"], row["status_changed_at"])


class _Progress:
    """The migration's readings written to its job (at most every PROGRESS_SECONDS, in short transactions on the
    run's engine connection, which nothing else uses while ``act`` runs) and the job's cancel request read back."""

    def __init__(self, engine, job):
        self.engine, self.job = engine, job
        self.written = 0.0
        self.cancel = False

    def see(self, reading):
        now = time.monotonic()
        if now - self.written < PROGRESS_SECONDS:
            return
        self.written = now
        total = reading.get("data_total_mib") or 0
        done = reading.get("data_processed_mib") or 0
        percent = min(99, int(100 * done / total)) if total else 0
        with self.engine.transaction() as cur:
            _jobs.note(cur, self.job["id"], {"progress": reading})
            _jobs.set_progress(cur, self.job["id"], percent)
            self.cancel = migration_rows.cancel_asked(cur, self.job["id"])

    def cancelled(self):
        return self.cancel


def cancel(engine, spec, check_mode=False):
    """Ask the run that migrates the VM to abort (it does at its next reading; the guest stays on the source)."""
    with engine.transaction() as cur:
        row = vm_rows.find(cur, spec.name)
        if row is None:
            raise NotFoundError("VM", spec.name, "cancel its migration")
        job = _jobs.get(cur, row["job_id"])
        if job is None or job["status"] != "running" or job["action"] != "vm.migrate":
            return Outcome(False, {}, {}, vms.view(row), [])
        actions = ["cancel the migration of job %s" % job["id"]]
        if not check_mode:
            migration_rows.ask_cancel(cur, job["id"])
        return Outcome(True, {}, {}, vms.view(row), actions)


def migration_view(row):
    if row is None:
        return None
    return {"id": plain(row["id"]), "vm": row["vm_name"], "source": row["source_host"],
            "destination": row["destination_host"], "policy": row["policy"], "status": row["status"],
            "reason": row["reason"], "started_at": plain(row["started_at"]), "ended_at": plain(row["ended_at"]),
            "total_ms": row["total_ms"], "downtime_ms": row["downtime_ms"],
            "transferred_mib": float(row["transferred_mib"]) if row["transferred_mib"] is not None else None,
            "postcopy": row["postcopy"], "bandwidth_mibps": row["bandwidth_mibps"]}


@_operation.recovery("vm.migrate")
def _recover_migrate(engine, job):
    """A run died while migrating: a migration its source still runs is aborted first (unless it switched to
    post-copy), then the VM is recorded where the hosts say it is (``_where``), and the migration as done or
    failed."""
    plan = job.get("plan") or {}
    with engine.transaction() as cur:
        source = host_rows.find(cur, plan["source"]) if plan.get("source") else None
        destination = host_rows.find(cur, plan["destination"]) if plan.get("destination") else None
        found = vm_rows.run_host_of(cur, job["object_id"])
    where, state = None, "its hosts are not known"
    if found is not None and source is not None and destination is not None:
        try:
            _hosts.hypervisors(engine).call(source, "abort the migration of VM '%s'" % found["name"],
                                            lambda conn: _migration.abort_outgoing(conn, found["name"]))
        except HypervisorError:
            pass
        states = _states(engine, found["name"], (source, destination), 15)
        postcopy = "postcopy" in states.values() or bool((plan.get("progress") or {}).get("postcopy"))
        where, state = _where(states, source, destination, postcopy)
    with engine.transaction() as cur:
        _operation.lock_for(engine, cur, job)
        how = "the VM is gone"
        row = vm_rows.find(cur, found["name"]) if found else None
        outcome = "failed"
        if row is not None:
            if where is None:
                vm_rows.set_runtime(cur, row["id"], status=vms.UNKNOWN, job_id=None,
                                    status_reason="its migration was interrupted and %s" % state)
                how = "%s: recorded Unknown, its room held on both hosts" % state
            else:
                running = state == "running"
                vm_rows.set_runtime(cur, row["id"], status="Up" if running else "Paused",
                                    status_reason="" if running else "paused after its migration was interrupted",
                                    run_host_id=where["id"], migrating_to_host_id=None, job_id=None)
                _keep_uptime(cur, row)
                outcome = "done" if where is destination else "failed"
                how = "the VM %s on host %s: recorded there" % ("runs" if running else "is paused", where["name"])
        if plan.get("migration"):
            migration_rows.ended(cur, plan["migration"], outcome, "interrupted: " + how)
        _jobs.end(cur, job["id"], "aborted", {"recovered_by": _jobs.OWNER})
    return how
