# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Long work on the hosts, written once: reserve under a short lock, act with none, confirm.

Every operation that touches a host is an ``Operation``; ``run`` drives it:

1. ``prepare(cur)`` reads what the operation needs to look at the hosts (a plain transaction);
2. ``observe(plan)`` reads the hosts (libvirt, no database lock);
3. ``reserve(cur, plan)`` runs under the object's advisory lock: it reads again, validates,
   decides from what the hosts said, and — when there is something to do and this is not check
   mode — reserves the object: a job row with this run as owner and a heartbeat, the object's row
   pointing at it (``locked``). Nothing to do ends here;
4. ``act(plan)`` does the libvirt work with no database lock held, while a heartbeat keeps the job
   alive; in check mode it only lists what it would do (the same list the real run reports);
5. ``confirm(cur, plan, result)`` records the outcome and releases the object, in a short
   transaction under the lock again. If ``act`` fails, ``undo`` takes back what it did on the hosts
   and ``release`` puts the engine back, so the engine and the hosts agree.

A run killed between 3 and 5 leaves the job running with a heartbeat that stops. Whoever meets the
object after the job's lease has run out (``claim``) takes the job over and calls the recovery
registered for its action, which finishes or rolls back the work, with an event, before going on.
A job whose owner is alive is never taken over: a run that meets it waits for it (up to its
timeout) and then looks again, so two runs racing for one object make one change.
"""

from __future__ import annotations

import contextlib
import threading
import time

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import (
    ConflictError,
    HypervisorError,
    VirtplaneError,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db, _events, _jobs
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _hosts
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import Outcome

# action -> recover(engine, job): finishes or rolls back what a dead run left
RECOVERY = {}


def recovery(action):
    """Register the recovery of jobs of ``action`` (a decorator)."""
    def register(function):
        RECOVERY[action] = function
        return function
    return register


class Busy(ConflictError):
    """The object is reserved by a run that is alive."""

    def __init__(self, message, job):
        super().__init__(message)
        self.job = job


class Expired(VirtplaneError):
    """The object is reserved by a run that died: its job is to be taken over."""

    def __init__(self, job):
        super().__init__("job %s expired" % job["id"])
        self.job = job


class Retry(VirtplaneError):
    """What ``prepare`` read changed before ``reserve`` got the lock (another run was quicker): look again."""

    def __init__(self):
        super().__init__("the object changed while it was being looked at")


class Plan:
    """What an operation carries from step to step."""

    def __init__(self, **values):
        self.job = None
        self.outcome = None  # set by reserve when there is nothing (more) to do
        self.actions = []
        self.__dict__.update(values)


class Operation:
    """One piece of long work on one object; subclasses fill in the steps."""

    #: (advisory lock namespace, key) held in reserve and confirm
    lock = None
    #: job action, e.g. "disk.create"; names the recovery too
    action = None
    #: how long to wait for another run's reservation of the same object, in seconds
    wait_timeout = 15
    #: whether ``act`` may do what ``undo`` cannot take back: then a failure to confirm leaves the
    #: reservation to its recovery, which finishes the work as the hosts have it
    irreversible = False
    #: whether ``reserve`` runs in pipeline mode: its statements are sent without waiting for those whose
    #: results it does not read, and the last ones with the commit (``reserve`` must read no ``rowcount``
    #: and catch no database error): fewer round trips while the lock is held
    pipelined = False

    def __init__(self, engine, check_mode):
        self.engine = engine
        self.check_mode = check_mode

    def prepare(self, cur):
        return Plan()

    def observe(self, plan):
        """Read the hosts (no database lock held)."""

    def reserve(self, cur, plan):
        raise NotImplementedError

    def act(self, plan):
        return None

    def confirm(self, cur, plan, result):
        raise NotImplementedError

    def after_confirm(self, plan):
        """What may follow once the outcome is committed (refreshing other hosts' views; never a change)."""

    def undo(self, plan, error):
        """Take back on the hosts what ``act`` did before it failed (best effort)."""

    def release(self, cur, plan, error):
        """Put the engine back as it was before ``reserve`` (the job is marked failed by ``run``)."""

    # -- helpers for subclasses ------------------------------------------------------------

    def start_job(self, cur, plan, object_type, object_id, object_name, description, datacenter=None, saved=None):
        """The reservation (in ``reserve``, never in check mode)."""
        plan.job = _jobs.start(cur, self.action, object_type, object_id, object_name, description,
                               self.engine.lease_seconds, _events.actor(), datacenter, saved)
        return plan.job


def release_only(action, release, how):
    """Register a recovery that releases the object (``release(cur, object_id)``) and says ``how``:
    for work whose object already holds what was asked, so that the next run realizes it."""
    @recovery(action)
    def recover_by_release(engine, job):
        with engine.transaction() as cur:
            lock_for(engine, cur, job)
            if job["object_id"] is not None:
                release(cur, job["object_id"])
            _jobs.end(cur, job["id"], "aborted", {"recovered_by": _jobs.OWNER})
        return how
    return recover_by_release


def release_realized(kind, set_job, what):
    """The recoveries of ``<kind>.apply`` and ``<kind>.remove`` for an object realized on hosts (a storage
    domain, a network): its row holds what was asked, so it is released, and the next run realizes it."""
    release_only(kind + ".apply", lambda cur, object_id: set_job(cur, object_id, None),
                 "released; the %s's settings stand and are realized by the next apply or host check" % what)
    release_only(kind + ".remove", lambda cur, object_id: set_job(cur, object_id, None),
                 "released; removing the %s again finishes it" % what)


def lock_for(engine, cur, job):
    """A recovery writes under the lock the job's operation took: its data center's."""
    if job.get("datacenter_name"):
        engine.lock(cur, _db.LOCK_DATACENTER, job["datacenter_name"])


class RemoveFromHosts(Operation):
    """Remove a data-center object realized on hosts (a storage domain's pools, a network): reserve it,
    take it from every host that has it with no lock held, then delete its row.

    A subclass names its ``kind`` and fills in ``find``, ``refuse``, ``holders``, ``remove_on_host``,
    ``set_job``, ``delete`` and ``removed`` (the event, given the cursor, the row and the plan).
    """

    kind = None  # "storage domain", "logical network"

    def __init__(self, engine, check_mode, spec):
        super().__init__(engine, check_mode)
        self.spec = spec
        self.wait_timeout = spec.wait_timeout

    def prepare(self, cur):
        current = self.find(cur)
        self.lock = (_db.LOCK_DATACENTER, current["datacenter"] if current else self.spec.datacenter or "")
        return Plan(current=current)

    def reserve(self, cur, plan):
        current = self.find(cur)
        if current is None:
            plan.outcome = Outcome(False)
            return
        if plan.current is None or plan.current["id"] != current["id"]:
            raise Retry()
        what = "%s '%s'" % (self.kind, self.spec.name)
        claim(cur, current, what)
        self.refuse(cur, current)
        plan.current = current
        plan.before = self.config(cur, current)
        plan.holders, plan.skipped = self.holders(cur, current)
        plan.actions = ["remove"] + ["%s on %s" % (self.host_action, h["name"]) for h in plan.holders]
        if not self.check_mode:
            self.start_job(cur, plan, self.action.split(".")[0], current["id"], self.spec.name, "remove " + what,
                           datacenter=current["datacenter"])
            self.set_job(cur, current["id"], plan.job["id"])

    def act(self, plan):
        if self.check_mode:
            return None
        outcomes = _hosts.on_hosts(self.engine, plan.holders, self.remove_on_host, self.spec.timeout)
        failed = _hosts.failures(outcomes)
        if failed:
            raise HypervisorError("Cannot remove %s '%s': hosts %s: %s"
                                  % (self.kind, self.spec.name, ", ".join(sorted(failed)),
                                     _hosts.describe_failures(failed)))
        return None

    def release(self, cur, plan, error):
        self.set_job(cur, plan.current["id"], None)

    def confirm(self, cur, plan, _result):
        if not self.check_mode:
            self.delete(cur, plan.current)
            self.removed(cur, plan)
        return Outcome(True, plan.before, {}, None, plan.actions)


def claim(cur, row, what):
    """Refuse to touch ``row`` while another run holds it; report a dead run's hold for recovery.

    ``row`` has ``job_id``; ``what`` names the object in messages ("disk 'd1'").
    """
    job = _jobs.get(cur, row.get("job_id"))
    if job is None or job["status"] != "running" or job["owner"] == _jobs.OWNER:
        return None
    if job["expired"]:
        raise Expired(job)
    raise Busy("%s is locked by job %s (%s, since %s, run %s); wait for it to end"
               % (what[0].upper() + what[1:], job["id"], job["description"] or job["action"],
                  job["started_at"].strftime("%Y-%m-%d %H:%M:%S %Z").strip(), job["owner"]), job)


def run(engine, operation):
    """reserve → act → confirm; returns the Outcome of ``confirm`` (or of ``reserve``, when nothing is to do)."""
    deadline = time.monotonic() + max(operation.wait_timeout, 0)
    recovered = set()
    retries = 0
    while True:
        try:
            plan = _reserve(engine, operation)
            break
        except Retry:
            retries += 1
            if retries > 5:
                raise ConflictError("Cannot %s: the object kept changing under concurrent runs; run again"
                                    % operation.action)
        except Expired as stale:
            job = stale.job
            if operation.check_mode:
                # recovering is a change; check mode can only say that the real run will do it first
                raise ConflictError("Cannot predict %s: job %s (%s of %s %s) was left by run %s, which stopped "
                                    "answering %d s ago; a real run recovers it first"
                                    % (operation.action, job["id"], job["action"], job["object_type"],
                                       job["object_name"], job["owner"], job["silent_seconds"]))
            if job["id"] in recovered:
                raise ConflictError("Cannot %s: job %s of a run that died could not be recovered"
                                    % (operation.action, job["id"]))
            recovered.add(job["id"])
            recover(engine, job)
        except Busy:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.5)
    if plan.outcome is not None:
        return plan.outcome
    if operation.check_mode:
        result = operation.act(plan)
        with engine.transaction() as cur:
            return operation.confirm(cur, plan, result)
    # the heartbeat lasts until the job has ended, whichever way: confirm may wait for the lock
    with Heartbeat(engine, plan.job):
        try:
            result = operation.act(plan)
        except BaseException as exc:  # a failure, or the run being stopped: never leave a half-done object
            _give_up(engine, operation, plan, exc)
            raise
        try:
            with engine.transaction() as cur:
                engine.lock(cur, *operation.lock)
                still_ours(cur, plan.job)
                outcome = operation.confirm(cur, plan, result)
                _jobs.end(cur, plan.job["id"], "finished", {"actions": outcome.actions})
        except LostReservation:
            raise
        except BaseException as exc:
            if operation.irreversible:
                # what was done on the hosts cannot be taken back (a volume deleted, a definition replaced):
                # the reservation stays, and its recovery finishes the work as the hosts now have it
                raise
            # the outcome could not be recorded: what was done on the hosts is taken back, the object released
            _give_up(engine, operation, plan, exc)
            raise
    operation.after_confirm(plan)
    return outcome


class LostReservation(ConflictError):
    """The run's job was taken over while it worked (it was silent longer than its lease)."""


def still_ours(cur, job):
    """Under the lock, before anything is recorded: the job is still this run's, or nothing is recorded."""
    current = _jobs.get(cur, job["id"], lock=True)
    if current is None or current["status"] != "running" or current["owner"] != _jobs.OWNER:
        raise LostReservation("Job %s of this run was taken over by run %s while it worked (its heartbeat was "
                              "silent longer than its lease); what it did is that run's to finish or roll back"
                              % (job["id"], current["owner"] if current else "(none)"))


def _reserve(engine, operation):
    with engine.transaction() as cur:
        plan = operation.prepare(cur)
    operation.observe(plan)
    with engine.conn.pipeline() if operation.pipelined else contextlib.nullcontext():
        with engine.transaction() as cur:
            engine.lock(cur, *operation.lock)
            operation.reserve(cur, plan)
    return plan


def _give_up(engine, operation, plan, exc):
    """Take back what ``act`` did on the hosts and release the object; the original error stays the one raised."""
    try:
        operation.undo(plan, exc)
    except Exception:  # the reservation is released below; the first failure is the one to report
        pass
    with engine.transaction() as cur:
        engine.lock(cur, *operation.lock)
        try:
            still_ours(cur, plan.job)
        except LostReservation:
            return  # another run has it now
        operation.release(cur, plan, exc)
        _jobs.end(cur, plan.job["id"], "failed", {"error": describe(exc)})


def describe(exc):
    """An error as it may be stored (a job's result, an event): one line, never a row's contents."""
    if isinstance(exc, _db.DatabaseError):
        return _db.describe_error(exc)
    return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__


def recover(engine, job):
    """Take over a dead run's job and finish or roll back its work, with an event."""
    with engine.transaction() as cur:
        if not _jobs.take_over(cur, job["id"], job["owner"]):
            return  # someone else got there first, or it came back to life
    handler = RECOVERY.get(job["action"])
    with Heartbeat(engine, job):
        if handler is None:
            how = "released (nothing to finish)"
            with engine.transaction() as cur:
                _jobs.end(cur, job["id"], "aborted", {"recovered_by": _jobs.OWNER})
        else:
            how = handler(engine, job)
    with engine.transaction() as cur:
        _events.record(cur, "JOB_RECOVERED", "Job %s (%s of %s %s) was left by run %s, which stopped answering %d s "
                       "ago: %s" % (job["id"], job["action"], job["object_type"], job["object_name"], job["owner"],
                                    job["silent_seconds"], how), severity="warning",
                       object_type=job["object_type"], object_id=job["object_id"], object_name=job["object_name"],
                       datacenter=job["datacenter_name"], details={"job": str(job["id"]), "action": job["action"]},
                       job_id=job["id"])


class Heartbeat:
    """Keeps a job alive while its run works, on a connection of its own (the run's may be busy)."""

    def __init__(self, engine, job):
        self.engine = engine
        self.job = job
        self.lost = False
        self._stop = threading.Event()
        self._thread = None
        self.interval = max(1.0, engine.lease_seconds / 3.0)

    def __enter__(self):
        if self.job is not None:
            self._thread = threading.Thread(target=self._beat, name="virtplane-heartbeat", daemon=True)
            self._thread.start()
        return self

    def _beat(self):
        """Beat every third of the lease; a failed beat is retried (a new connection) until the lease is gone."""
        conn = None
        last = time.monotonic()
        try:
            while not self._stop.wait(self.interval):
                try:
                    if conn is None:
                        conn = _db.connect_raw(self.engine.options)
                    with conn.transaction(), conn.cursor() as cur:
                        if not _jobs.beat(cur, self.job["id"]):
                            self.lost = True  # taken over: the run finds out when it confirms
                            return
                    last = time.monotonic()
                except (_db.DatabaseError, VirtplaneError):
                    if conn is not None:
                        conn.close()
                        conn = None
                    if time.monotonic() - last > self.engine.lease_seconds:
                        self.lost = True
                        return
        finally:
            if conn is not None:
                conn.close()

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        return False
