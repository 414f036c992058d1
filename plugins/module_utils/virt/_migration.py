# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live migration of a running domain, peer to peer, driven by a policy.

The source's libvirtd connects to the destination's itself (``VIR_MIGRATE_PEER2PEER``): the engine
only starts the migration and watches it. ``migrate`` runs ``migrateToURI3`` in a thread and, while
it runs, reads the job's statistics every ``POLL_SECONDS`` and steers it as the policy says:

- ``legacy``: QEMU's defaults (300 ms of allowed downtime), nothing steered;
- ``minimal_downtime``: the allowed downtime starts at 100 ms and steps up each time an iteration
  of pre-copy did not shrink what remains, up to 500 ms; a migration still not done after the last
  step for ``STALL_STEPS`` more iterations is aborted (the guest keeps running on the source);
- ``suspend_workload``: a final downtime of up to 5 s is allowed from the start, so that a busy
  guest converges (it pauses that long at the end);
- ``post_copy``: pre-copy first; when an iteration no longer shrinks what remains, the guest
  switches to the destination and its memory follows on demand (post-copy). Needs userfaultfd for
  the QEMU user on the destination.

Steering starts with the second pass over memory (``memory_iteration`` 2: what the first one left dirty):
the first pass sends everything once, which says nothing of convergence. (A post-copy migration steered
from the set-up's reading once switched during the first pass, and ran on in pre-copy for minutes while the
run's own libvirt calls waited: the switch is never asked that early now.)

``auto_converge`` lets QEMU throttle the guest's vCPUs while pre-copy does not converge;
``bandwidth`` caps the transfer in MiB/s. ``progress(stats)`` is called with each reading.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import HypervisorError
from ansible_collections.virtplane.kvm.plugins.module_utils.virt._client import _message, libvirt

POLICIES = ("minimal_downtime", "post_copy", "suspend_workload", "legacy")
POLL_SECONDS = 0.25
# the pre-copy iteration whose first reading sets what remains to compare the later ones with
FIRST_STEERED_ITERATION = 2
# minimal_downtime's steps of allowed downtime, in ms, and how many iterations a step is given
DOWNTIME_STEPS = (100, 150, 200, 300, 400, 500)
STALL_STEPS = 3
SUSPEND_DOWNTIME_MS = 5000
# how long libvirt is given to end the migration call once the job was aborted
ABORT_WAIT_SECONDS = 60
MIB = 1024 * 1024


class MigrationFailed(HypervisorError):
    """The migration did not complete (``stats``: the last reading). Before a post-copy switch the guest runs where
    it was; after one (``postcopy``) its state is on the destination; ``stuck``: libvirt did not end the call."""

    def __init__(self, message, stats=None, aborted=False, postcopy=False, stuck=False):
        super().__init__(message)
        self.stats = stats or {}
        self.aborted = aborted
        self.postcopy = postcopy
        self.stuck = stuck


def flags_for(policy, auto_converge=False, storage_shared=False):
    """``storage_shared``: the caller knows that the destination sees every disk of the guest where the source does
    (libvirt, which can only tell a few network file systems apart, would otherwise refuse a shared directory as
    "unsafe")."""
    flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
    if storage_shared:
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    if policy == "post_copy":
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
    if auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    return flags


def _reading(dom):
    """The running job's statistics in the units the engine reports (None when no job runs)."""
    try:
        stats = dom.jobStats(0)
    except libvirt.libvirtError:
        return None
    if not stats or stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
        return None
    return _units(stats)


def _units(stats):
    return {
        "elapsed_ms": stats.get("time_elapsed"),
        "data_total_mib": round(stats.get("data_total", 0) / MIB, 1),
        "data_processed_mib": round(stats.get("data_processed", 0) / MIB, 1),
        "data_remaining_mib": round(stats.get("data_remaining", 0) / MIB, 1),
        "memory_iteration": stats.get("memory_iteration"),
        "dirty_rate_pages_per_s": stats.get("memory_dirty_rate"),
        "downtime_ms": stats.get("downtime"),
        "postcopy_requests": stats.get("memory_postcopy_requests"),
        "auto_converge_throttle": stats.get("auto_converge_throttle"),
    }


class _Steering:
    """What the policy does with each reading."""

    def __init__(self, dom, policy, events):
        self.dom, self.policy, self.events = dom, policy, events
        self.step = 0
        self.best_remaining = None
        self.iteration = None
        self.stalled = 0
        self.postcopy = False
        self.abort_reason = None
        self.aborted = None  # why the engine aborted the job, once it did

    def start(self):
        if self.policy == "minimal_downtime":
            self._downtime(DOWNTIME_STEPS[0])
        elif self.policy == "suspend_workload":
            self._downtime(SUSPEND_DOWNTIME_MS)

    def _downtime(self, ms):
        try:
            self.dom.migrateSetMaxDowntime(ms, 0)
        except libvirt.libvirtError as exc:  # the job may have ended meanwhile
            self.events.append("allowed downtime %d ms not set: %s" % (ms, _message(exc)))
            return
        self.events.append("allowed downtime %d ms" % ms)

    def decide(self, reading):
        """What one reading calls for, decided without libvirt: None, ("downtime", ms), ("postcopy", why) or
        ("abort", why). A new pre-copy iteration that did not shrink what remains by a tenth stalls."""
        iteration = reading.get("memory_iteration")
        # iteration 0 is the set-up and 1 the first pass over all of memory: nothing to steer by yet
        if iteration is None or iteration < FIRST_STEERED_ITERATION or iteration == self.iteration or self.postcopy:
            return None
        self.iteration = iteration
        remaining = reading.get("data_remaining_mib") or 0
        if self.best_remaining is None or remaining < self.best_remaining * 0.9:
            self.best_remaining = remaining
            return None
        self.stalled += 1
        if self.policy == "post_copy":
            return ("postcopy", "switched to post-copy at iteration %d (%.1f MiB remaining)" % (iteration, remaining))
        if self.policy == "minimal_downtime":
            if self.step + 1 < len(DOWNTIME_STEPS):
                self.step += 1
                return ("downtime", DOWNTIME_STEPS[self.step])
            if self.stalled >= len(DOWNTIME_STEPS) - 1 + STALL_STEPS:
                return ("abort", "pre-copy did not converge with %d ms of allowed downtime (%.1f MiB remaining at "
                                 "iteration %d)" % (DOWNTIME_STEPS[-1], remaining, iteration))
        return None

    def see(self, reading):
        """One reading: what ``decide`` says, done."""
        action = self.decide(reading)
        if action is None:
            return
        kind, value = action
        if kind == "downtime":
            self._downtime(value)
        elif kind == "abort":
            self.abort_reason = value
        else:
            try:
                self.dom.migrateStartPostCopy(0)
            except libvirt.libvirtError as exc:
                self.abort_reason = "could not switch to post-copy: %s" % _message(exc)
                return
            self.postcopy = True
            self.events.append(value)


def destination_xml(xml):
    """The domain as the destination starts it: the same, but for its serial console log, which the destination
    appends to (a guest that comes back to a host it ran on keeps the lines it wrote there)."""
    root = ET.fromstring(xml)
    for kind in ("serial", "console"):
        for device in root.findall("devices/" + kind):
            source = device.find("source")
            if device.get("type") == "file" and source is not None:
                source.set("append", "on")
    return ET.tostring(root, encoding="unicode")


def migrate(source, name, destination_uri, policy="minimal_downtime", bandwidth_mibps=None, auto_converge=False,
            timeout=600, progress=None, cancelled=None, storage_shared=False):
    """Migrate the running domain ``name`` from the ``source`` connection to the libvirtd at ``destination_uri``
    (as the source's libvirtd reaches it). Returns {"total_s", "downtime_ms", "transferred_mib", "postcopy",
    "events"}; raises MigrationFailed when it did not complete (the guest still runs on the source)."""
    if policy not in POLICIES:
        raise HypervisorError("unknown migration policy %r" % policy)
    try:
        dom = source.lookupByName(name)
    except libvirt.libvirtError as exc:
        raise HypervisorError(_message(exc))
    params = {}
    try:
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = destination_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE))
    except libvirt.libvirtError as exc:
        raise HypervisorError(_message(exc))
    if bandwidth_mibps:
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(bandwidth_mibps)
        if policy == "post_copy":
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY] = int(bandwidth_mibps)
    events = []
    outcome = {}

    def run():
        try:
            dom.migrateToURI3(destination_uri, params, flags_for(policy, auto_converge, storage_shared))
        except libvirt.libvirtError as exc:
            outcome["error"] = _message(exc)
        except Exception as exc:  # noqa: BLE001 - handed to the caller below
            outcome["error"] = str(exc)

    steering = _Steering(dom, policy, events)
    started = time.monotonic()
    worker = threading.Thread(target=run, name="migration", daemon=True)
    worker.start()
    last = None
    try:
        last = _watch(dom, worker, steering, started, timeout, progress, cancelled)
    except BaseException:
        # the run fails or is stopped while libvirt migrates: the migration is aborted first (libvirtd would carry
        # it on by itself, and the guest could end up where the engine does not record it)
        if worker.is_alive() and not steering.postcopy:
            _abort(dom, worker, events)
        raise
    total = time.monotonic() - started
    if "error" in outcome:
        if steering.aborted is not None:
            raise MigrationFailed("migration aborted: %s" % steering.aborted, last, aborted=True,
                                  postcopy=steering.postcopy)
        raise MigrationFailed(outcome["error"], last, postcopy=steering.postcopy)
    # completed (an abort that came too late to stop it included)
    return {"total_s": round(total, 3), "postcopy": steering.postcopy, "events": events,
            "transferred_mib": (last or {}).get("data_processed_mib")}


def _abort(dom, worker, events, wait=ABORT_WAIT_SECONDS):
    try:
        dom.abortJob()
    except libvirt.libvirtError as exc:
        events.append("abort failed: %s" % _message(exc))
    worker.join(wait)


def _watch(dom, worker, steering, started, timeout, progress, cancelled):
    """Read and steer the job until the migration call returns; abort it when the policy gives up, the time is up
    or it is cancelled. Whatever libvirt answers, this ends: after the abort, libvirt has ABORT_WAIT_SECONDS to end
    the call, and a post-copy migration (which cannot be aborted) timeout more."""
    last = None
    set_up = False
    hard_deadline = started + timeout + ABORT_WAIT_SECONDS
    while worker.is_alive():
        worker.join(POLL_SECONDS)
        if not worker.is_alive():
            break
        now = time.monotonic()
        if now > hard_deadline + (timeout if steering.postcopy else 0):
            raise MigrationFailed("libvirt did not end the migration within %d s of its time limit"
                                  % ABORT_WAIT_SECONDS, last, postcopy=steering.postcopy, stuck=True)
        reading = _reading(dom)
        if reading is not None:
            if not set_up:
                steering.start()
                set_up = True
            last = reading
            steering.see(reading)
            if progress is not None:
                progress(dict(reading, postcopy=steering.postcopy))
        if steering.aborted is not None or steering.postcopy:
            continue
        why = steering.abort_reason
        if why is None and now - started > timeout:
            why = "not done within %d s" % timeout
        if why is None and cancelled is not None and cancelled():
            why = "cancelled"
        if why is not None:
            steering.aborted = why
            _abort(dom, worker, steering.events)
    return last


def state_here(conn, name):
    """What the host has of the guest: "running", "paused" (an incoming migration not finished, or one that failed
    after its post-copy switch, or a guest paused), "postcopy" (running, or paused, in the post-copy phase), another
    state's name, or None (no such domain)."""
    try:
        dom = conn.lookupByName(name)
        state, reason = dom.state()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise HypervisorError(_message(exc))
    if (state, reason) in ((libvirt.VIR_DOMAIN_RUNNING, getattr(libvirt, "VIR_DOMAIN_RUNNING_POSTCOPY", -1)),
                           (libvirt.VIR_DOMAIN_PAUSED, getattr(libvirt, "VIR_DOMAIN_PAUSED_POSTCOPY", -1)),
                           (libvirt.VIR_DOMAIN_PAUSED, getattr(libvirt, "VIR_DOMAIN_PAUSED_POSTCOPY_FAILED", -1))):
        return "postcopy"
    return {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused"}.get(state, "state %d" % state)


def abort_outgoing(conn, name, wait=ABORT_WAIT_SECONDS):
    """Abort the guest's migration job on this (source) host, if one runs and has not switched to post-copy, and
    wait for it to end: what a run that died left going. True when one was aborted."""
    try:
        dom = conn.lookupByName(name)
        if state_here(conn, name) == "postcopy":
            return False
        stats = dom.jobStats(0)
        if not stats or stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            return False
        dom.abortJob()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise HypervisorError(_message(exc))
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and _reading(dom) is not None:
        time.sleep(POLL_SECONDS)
    return True


def completed(conn, name):
    """What libvirt recorded of the migration that just completed, asked on the host the guest now runs on
    (the source forgets a transient domain that left): {downtime_ms, transferred_mib, total_ms}, or {} when
    that host keeps no record of it."""
    try:
        stats = conn.lookupByName(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        return {}
    if not stats:
        return {}
    found = {"downtime_ms": stats.get("downtime"), "total_ms": stats.get("time_elapsed")}
    if stats.get("data_processed") is not None:
        found["transferred_mib"] = round(stats["data_processed"] / MIB, 1)
    return {k: v for k, v in found.items() if v is not None}
