# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host maintenance: the host is drained (its VMs migrate to the hosts the scheduler picks) and kept out of
placement until it is activated again.

Reserve (under the data center's and the cluster's locks): every VM on the host is looked at on a snapshot
of its cluster in which the host is excluded — HA VMs first (higher HA priority first), then the larger —
each placement made in the snapshot before the next is looked for, as the drain will make them. A VM that
is not running (only a running one migrates), one that migrates already, or one no other host can take
blocks the maintenance: it is refused, every blocking VM named with why, before anything moves (in check
mode too). Otherwise the host becomes PreparingForMaintenance (no placement chooses it from then on) and a
job holds it. Act (no lock): the VMs migrate, at most the cluster's ``migration_max_parallel`` at once, each
a ``vm.migrate`` of its own whose destination the scheduler chooses when it starts. Confirm: nothing is left
on the host, which is Maintenance. A drain that fails (a VM that did not migrate) puts the host back as it
was; the VMs that moved stay where they are, and the next run drains what is left.
"""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ConflictError, NotFoundError
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _clusters, _events, _jobs, _rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _hosts as host_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _vms as vm_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_CLUSTER, LOCK_DATACENTER
from ansible_collections.virtplane.kvm.plugins.module_utils.scheduler import _placement
from ansible_collections.virtplane.kvm.plugins.module_utils.services import (
    _fencing,
    _host,
    _migrate,
    _operation,
    _realize,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _vm as vms
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import Outcome, merge_outcomes

IN_MAINTENANCE = ("Maintenance", "PreparingForMaintenance")
# how long a migration of a drain may take (each; vm_migrate's default)
MIGRATION_TIMEOUT = 600


def ensure(engine, spec, check_mode=False):
    """The host module's service: maintenance here, fencing in ``services._fencing``, every other state in
    ``services._host``."""
    _fencing.refuse_with_state(spec)
    if spec.state == "fenced":
        return _fencing.fence_now(engine, spec, check_mode)
    if spec.state == "maintenance":
        return _operation.run(engine, HostMaintenance(engine, check_mode, spec))
    fencing = spec.fence is not None or spec.storage_leases is not None
    if fencing:
        _fencing.apply(engine, spec, True)  # refused before the host is registered or changed
    outcome = _host.ensure(engine, spec, check_mode)
    if fencing:
        settings = _fencing.apply(engine, spec, check_mode)
        outcome = merge_outcomes(outcome, settings)
        if outcome.resource:
            outcome.resource.update(settings.after)
    return outcome


def drain_order(rows):
    """HA VMs first (the higher HA priority first), then the larger, then by name."""
    def key(row):
        return (not row["ha_enabled"], -(row["ha_priority"] or 0),
                -(row["reserved_memory_mib"] or row["memory_mib"]), row["name"])
    return sorted(rows, key=key)


def holders(cur, host):
    """The jobs that hold VMs on ``host`` or coming to it: one left by a run that died is recovered first
    (``Expired``), a live one is waited for (``Busy``), as for any object an operation needs."""
    for name in host_rows.vms_on(cur, host["id"]):
        row = vm_rows.find(cur, name)
        job = _jobs.get(cur, row["job_id"]) if row is not None and row["job_id"] else None
        if job is None or job["status"] != "running":
            continue
        if job["expired"]:
            raise _operation.Expired(job)
        raise _operation.Busy("Cannot put host %s into maintenance now: VM %s is held by job %s (%s)"
                              % (host["name"], name, job["id"], job["description"]), job)


def plan_drain(cur, host, cluster_id):
    """([(VM name, the host it would go to)], [(VM name, why it cannot leave)]) for the VMs on ``host``, in the
    order they leave, on a snapshot of the cluster as it is now (a fresh one: the kept one is not touched)."""
    rows = vm_rows.listed(cur, host=host["name"])
    on_host = {r["name"] for r in rows}
    incoming = [n for n in host_rows.vms_on(cur, host["id"]) if n not in on_host]
    blocking = [(name, "it is migrating to this host") for name in incoming]
    context = vm_rows.placement_context(cur, cluster_id)
    scheduler = _placement.Scheduler(vm_rows.placement_hosts(cur, cluster_id), **context)
    moves = []
    for row in drain_order(rows):
        if row["status"] != "Up":
            why = "it is %s%s; only a running VM (Up) migrates" % (
                row["status"], " (%s)" % row["status_reason"] if row["status_reason"] else "")
            blocking.append((row["name"], why))
            continue
        request = vms.running_request(row)
        scheduler.release(request, host["name"])
        decision = scheduler.place(dict(request, exclude={host["name"]: "it goes into maintenance"}))
        if decision.host is None:
            scheduler.commit(request, host["name"])
            why = decision.explain() or "the cluster has no other host"
            blocking.append((row["name"], "no other host can run it: %s" % why))
            continue
        scheduler.commit(request, decision.host["name"])
        moves.append((row["name"], decision.host["name"]))
    return moves, blocking


class HostMaintenance(_operation.Operation):
    """Drain a host and put it in maintenance (see the module's docstring)."""

    action = "host.maintenance"

    def __init__(self, engine, check_mode, spec):
        super().__init__(engine, check_mode)
        self.spec = spec
        self.wait_timeout = spec.wait_timeout

    def prepare(self, cur):
        row = host_rows.find(cur, self.spec.name)
        if row is None:
            raise NotFoundError("host", self.spec.name, "put host '%s' into maintenance" % self.spec.name)
        self.lock = (LOCK_DATACENTER, row["datacenter"])
        return _operation.Plan(current=row)

    def reserve(self, cur, plan):
        name = self.spec.name
        row = host_rows.find(cur, name, lock=True)
        if row is None or row["datacenter"] != plan.current["datacenter"]:
            raise _operation.Retry()
        _operation.claim(cur, row, "host '%s'" % name)
        self.engine.lock(cur, LOCK_CLUSTER, row["cluster"])
        holders(cur, row)
        moves, blocking = plan_drain(cur, row, row["cluster_id"])
        if blocking:
            who = "VM %s" % blocking[0][0] if len(blocking) == 1 else "VMs %s" % ", ".join(n for n, _why in blocking)
            raise ConflictError("Cannot put host %s into maintenance: %s cannot leave it: %s" % (
                name, who, "; ".join("VM %s: %s" % (n, why) for n, why in blocking)))
        if row["status"] == "Maintenance" and not moves:
            plan.outcome = Outcome(False, resource=_host.view(row))
            return
        cluster = _clusters.find(cur, row["cluster"])
        plan.row, plan.moves, plan.parallel = row, moves, max(1, cluster["migration_max_parallel"] or 1)
        plan.actions = ["migrate VM %s (to %s, as things are now)" % move for move in moves] + \
            ["status %s -> Maintenance" % row["status"]]
        if self.check_mode:
            plan.outcome = Outcome(True, {"status": row["status"]}, {"status": "Maintenance"},
                                   dict(_host.view(row), status="Maintenance", status_reason=""), plan.actions)
            return
        self.start_job(cur, plan, "host", row["id"], name, "put host %s into maintenance" % name,
                       datacenter=row["datacenter"])
        _jobs.note(cur, plan.job["id"], {"previous_status": row["status"],
                                         "previous_reason": row["status_reason"] or "",
                                         "vms": [n for n, _where in moves]})
        host_rows.set_job(cur, row["id"], plan.job["id"])
        draining = "draining: %d VMs to migrate" % len(moves) if moves else ""
        host_rows.update(cur, row["id"], {"status": "PreparingForMaintenance", "status_reason": draining,
                                          "status_changed_at": _rows.now(cur)})
        _events.record(cur, "HOST_MAINTENANCE_STARTED", "Host %s is going into maintenance%s" % (
            name, ": VMs %s migrate" % ", ".join(n for n, _where in moves) if moves else ""),
            object_type="host", object_id=row["id"], object_name=name, datacenter=row["datacenter"],
            cluster=row["cluster"], host=name, job_id=plan.job["id"])

    def act(self, plan):
        """The VMs migrate; those that came (or stayed) on the host meanwhile are drained in one more round."""
        plan.moved, plan.failed = {}, {}
        names = [n for n, _where in plan.moves]
        count = {"total": len(names)}

        def done(name, outcome, error):
            if outcome is not None and outcome.changed:
                plan.moved[name] = (outcome.resource or {}).get("host")
            elif outcome is None:
                plan.failed[name] = _operation.describe(error)
            # else it left the host meanwhile, by another run's doing
            with self.engine.transaction() as cur:
                _jobs.set_progress(cur, plan.job["id"], 100 * len(plan.moved) // max(1, count["total"]))
                _jobs.note(cur, plan.job["id"], {"moved": plan.moved, "failed": plan.failed})
        for _round in range(2):
            if not names:
                break
            _migrate.migrate_many(self.engine, [(n, None, plan.row["name"]) for n in names], plan.parallel,
                                  self.spec.timeout, self.spec.wait_timeout, MIGRATION_TIMEOUT, done)
            if plan.failed:
                break
            with self.engine.transaction() as cur:
                moves, blocking = plan_drain(cur, plan.row, plan.row["cluster_id"])
            if blocking:
                plan.failed.update(blocking)
                break
            names = [n for n, _where in moves]
            count["total"] += len(names)
        if plan.failed or names:
            left = dict(plan.failed, **{n: "it came to the host while it was drained" for n in names
                                        if n not in plan.failed})
            raise ConflictError("Cannot put host %s into maintenance: %s; %s" % (
                self.spec.name, "; ".join("VM %s: %s" % item for item in sorted(left.items())),
                "VMs %s migrated meanwhile and stay where they went" % ", ".join(
                    "%s (to %s)" % item for item in sorted(plan.moved.items())) if plan.moved else "no VM moved"))
        return plan.moved

    def confirm(self, cur, plan, result):
        if self.check_mode:
            return plan.outcome
        row = host_rows.by_id(cur, plan.row["id"], lock=True)
        left = host_rows.vms_on(cur, row["id"])
        if left:
            raise ConflictError("Cannot put host %s into maintenance: VMs %s came to it while it was drained; run "
                                "again" % (row["name"], ", ".join(left)))
        updated = host_rows.update(cur, row["id"], {"status": "Maintenance", "status_reason": "", "job_id": None,
                                                    "status_changed_at": _rows.now(cur)})
        moved = sorted(result.items())
        _events.record(cur, "HOST_MAINTENANCE", "Host %s is in maintenance%s" % (
            row["name"], ": VMs %s migrated" % ", ".join("%s (to %s)" % m for m in moved) if moved else ""),
            object_type="host", object_id=row["id"], object_name=row["name"], datacenter=row["datacenter"],
            cluster=row["cluster"], host=row["name"], job_id=plan.job["id"], details={"migrated": dict(moved)})
        actions = ["migrate VM %s to %s" % m for m in
                   sorted(moved, key=lambda m: [n for n, _where in plan.moves].index(m[0])
                          if m[0] in dict(plan.moves) else len(plan.moves))]
        actions.append("status %s -> Maintenance" % plan.row["status"])
        return Outcome(True, {"status": plan.row["status"]}, {"status": "Maintenance"},
                       _host.view(dict(updated, cluster=row["cluster"], datacenter=row["datacenter"])), actions)

    def release(self, cur, plan, error):
        """The host is as it was before the drain; what moved stays moved (the VMs run there, recorded)."""
        row = plan.row
        status, reason = restored(cur, row, row["status"], row["status_reason"])
        host_rows.update(cur, row["id"], {"status": status, "status_reason": reason,
                                          "job_id": None, "status_changed_at": _rows.now(cur)})
        _events.record(cur, "HOST_MAINTENANCE_FAILED", "Host %s did not go into maintenance and is %s again: %s"
                       % (row["name"], status, _operation.describe(error)), severity="error",
                       object_type="host", object_id=row["id"], object_name=row["name"],
                       datacenter=row["datacenter"], cluster=row["cluster"], host=row["name"],
                       job_id=plan.job["id"], details={"migrated": getattr(plan, "moved", {})})


def restored(cur, row, status, reason):
    """The status a host whose drain ended without maintenance goes back to: what it was, but Up and
    NonOperational from what it has recorded now (what changed while it drained counts)."""
    if status in ("Up", "NonOperational"):
        return _realize.status_of("Up", True, "", host_rows.problems(cur, row["id"]))
    return status, reason or ""


@_operation.recovery("host.maintenance")
def _recover_maintenance(engine, job):
    """A drain whose run died: the host is in maintenance if nothing is left on it, else as it was before.
    (The migrations it started are jobs of their own, recovered on their own.)"""
    plan = job.get("plan") or {}
    with engine.transaction() as cur:
        _operation.lock_for(engine, cur, job)
        row = host_rows.by_id(cur, job["object_id"], lock=True) if job["object_id"] else None
        how = "the host is gone"
        if row is not None:
            left = host_rows.vms_on(cur, row["id"])
            if left:
                status, reason = restored(cur, row, plan.get("previous_status") or "Up", plan.get("previous_reason"))
                how = "VMs %s are still on it: it is %s again" % (", ".join(left), status)
            else:
                status, reason = "Maintenance", ""
                how = "nothing is left on it: it is in maintenance"
            host_rows.update(cur, row["id"], {"status": status, "status_reason": reason, "job_id": None,
                                              "status_changed_at": _rows.now(cur)})
        _jobs.end(cur, job["id"], "aborted", {"recovered_by": _jobs.OWNER})
    return how
