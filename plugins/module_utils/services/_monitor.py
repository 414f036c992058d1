# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The monitor: host health, the engine's view of running VMs kept true, fencing and HA restarts.

One *pass* (``Monitor.run_pass``; the monitor service runs one every ``interval`` seconds, the ``reconcile``
module one on demand) does, under the pass lock (one pass at a time, whoever runs it):

1. **Probe** every host at once: its active domains (``listAllDomains``) on a connection the monitor keeps,
   each answer bounded by ``probe_timeout``. A host that does not answer in time counts as not answering.
2. **Host status**: an Up (or NonOperational) host that did not answer is ``Connecting`` (with libvirt's
   words); still not answering ``grace`` seconds later it is ``NonResponsive``, and the VMs recorded on it are
   ``Unknown``. A host that answers again is Up (or NonOperational) again. Every transition is an event.
3. **VMs** of each host that answered: a VM recorded there that the host does not run died or was destroyed
   behind the engine's back — recorded Down (an HA VM is restarted); a domain of a VM the engine records Down
   or restarting, started behind its back, is recorded running there; a domain the engine knows nothing of is
   reported once.
4. **Fencing**: a NonResponsive host that holds VMs is fenced by its agent (power off, confirmed off). Once it
   is off its HA VMs are ``RestartingHA`` and the others Down with the reason. A host that cannot be fenced
   (no agent, the agent failed, or an SSH soft fence, which proves nothing) is not presumed dead: its HA VMs
   whose disks are on shared storage under virtlockd's leases (``storage_leases``) are tried elsewhere, and
   libvirt's lock manager refuses the start for as long as the host still holds them — until they are
   released (the host died: leases expire) or ``lease_wait`` seconds pass; its other VMs stay Unknown.
5. **HA restarts**: VMs in ``RestartingHA`` whose attempt is due start through the scheduler (the cluster's
   HA reservation respected), the higher ``ha.priority`` first; a failed attempt is retried after 1, 2, 4 ...
   up to 60 s. Each step is an event.

Two monitors may run (an active and a standby): the active one holds the ``monitor_lease`` row, renewed every
pass, and checks it in every transaction that records what it saw (``holds``, FOR SHARE: a takeover waits for
those). A standby takes the lease once it expired (``lease_ttl``). A row rather than a session advisory lock:
an advisory lock lives as long as the server believes the session does, which for a monitor whose machine was
cut off is until TCP gives up; a lease ends at a time both sides can read from the database's clock, and its
epoch tells a deposed monitor that it was deposed.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import types
import uuid

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import (
    ConflictError,
    FenceError,
    HypervisorError,
    ValidationError,
    VirtplaneError,
)
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import validate_range
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db, _events
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _hosts as host_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _monitor as rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _vms as vm_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_DATACENTER
from ansible_collections.virtplane.kvm.plugins.module_utils.fence import _agents
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _migrate, _operation, _realize, _vm
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import Outcome, Spec
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _client
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _vm as virt_vm

HA_BACKOFF = (1, 2, 4, 8, 16, 30, 60)
WATCHED = ("Up", "NonOperational", "Connecting", "NonResponsive")
FENCE_RETRY_SECONDS = 30
RESILIENCE_RETRY_SECONDS = 60


class LostLease(ConflictError):
    """Another monitor took the lease: this one records nothing more."""


def validate_settings(interval=2, grace=4, probe_timeout=5, lease_wait=300, lease_ttl=10):
    validate_range("interval", interval, 1, 600, "seconds")
    validate_range("grace", grace, 0, 600, "seconds")
    validate_range("probe_timeout", probe_timeout, 1, 120, "seconds")
    validate_range("lease_wait", lease_wait, 0, 3600, "seconds")
    validate_range("lease_ttl", lease_ttl, 3, 600, "seconds")
    if lease_ttl <= interval:
        raise ValidationError("lease_ttl", "%d s must be longer than the interval between passes (%d s)"
                              % (lease_ttl, interval))


class Probes:
    """The monitor's own libvirt connections, one per host, kept between passes; each probe bounded in time.

    A probe that does not answer in time is left to its thread (a libvirt call cannot be interrupted) with its
    connection; until it returns, that host is not asked again and counts as silent, so a host that hangs costs
    the others one ``timeout`` once, not at every pass."""

    def __init__(self, allow_test_driver, timeout):
        self.allow_test_driver = allow_test_driver
        self.timeout = timeout
        self._conns = {}
        self._pending = {}  # host id -> the probe still blocked in libvirt
        self._lock = threading.Lock()

    def _probe(self, host):
        with self._lock:
            conn = self._conns.get(host["id"])
        if conn is None or conn[0] != host["libvirt_uri"]:
            conn = (host["libvirt_uri"], _client.open_connection(host["libvirt_uri"], self.timeout,
                                                                 self.allow_test_driver, readonly=True))
            with self._lock:
                self._conns[host["id"]] = conn
        try:
            return {name: {"uuid": uuid_} for name, uuid_ in virt_vm.running_domains(conn[1]).items()}
        except Exception as exc:
            self.forget(host["id"])
            raise HypervisorError("cannot list its domains: %s" % _client.safe_message(str(exc)))
        finally:
            if host["libvirt_uri"].startswith("test:"):
                # a test-driver host is its node file, read at each connect: kept, it would never change
                self.forget(host["id"])

    def _run(self, host, outcome, done):
        try:
            outcome["domains"] = self._probe(host)
        except VirtplaneError as exc:
            outcome["error"] = str(exc)
        except Exception as exc:  # whatever one host does, the others are still watched
            outcome["error"] = _client.safe_message(str(exc))
        finally:
            done.set()

    def probe(self, hosts):
        """{host id: (domains, None) or (None, reason)} for every host, all asked at once, within ``timeout``."""
        started = {}
        for host in hosts:
            waiting = self._pending.get(host["id"])
            if waiting is not None and not waiting[1].is_set():
                continue  # its last probe is still blocked: not asked again
            outcome, done = {}, threading.Event()
            threading.Thread(target=self._run, args=(host, outcome, done), name="virtplane-probe",
                             daemon=True).start()
            started[host["id"]] = (outcome, done)
        deadline = time.monotonic() + self.timeout + 1
        results = {}
        for host in hosts:
            if host["id"] not in started:
                results[host["id"]] = (None, "libvirt did not answer within %d s (its probe is still waiting)"
                                       % self.timeout)
                continue
            outcome, done = started[host["id"]]
            if done.wait(max(0.0, deadline - time.monotonic())):
                self._pending.pop(host["id"], None)
                results[host["id"]] = (outcome.get("domains"), outcome.get("error"))
            else:
                self._pending[host["id"]] = (outcome, done)
                self.forget(host["id"], close=False)  # blocked in libvirt: the next probe opens another
                results[host["id"]] = (None, "libvirt did not answer within %d s" % self.timeout)
        return results

    def forget(self, host_id, close=True):
        with self._lock:
            conn = self._conns.pop(host_id, None)
        if conn is not None and close:
            try:
                conn[1].close()
            except Exception:  # a broken connection closes as it can
                pass

    def close(self):
        for host_id in list(self._conns):
            self.forget(host_id)


class Monitor:
    """Passes over every host. ``holder``: the name this monitor holds the lease under (a service); None for a
    single pass on demand (the ``reconcile`` module), which needs no lease: passes never overlap."""

    def __init__(self, engine, holder=None, interval=2, grace=4, probe_timeout=5, lease_wait=300, lease_ttl=10,
                 log=None):
        validate_settings(interval, grace, probe_timeout, lease_wait, lease_ttl)
        self.engine = engine
        self.holder = holder
        self.epoch = None
        self.interval, self.grace, self.lease_wait, self.lease_ttl = interval, grace, lease_wait, lease_ttl
        self.probe_timeout = probe_timeout
        self.probes = Probes(engine.allow_test_driver, probe_timeout)
        self.fence_tried = {}  # host id -> when its fencing last failed
        self.unproven = set()  # host ids reported as not provably dead, once per outage
        self.twice_reported = set()
        self.resilience_failed = {}  # VM name -> when it last could not move off its NonOperational host
        self.seen, self.answered, self.names = {}, set(), {}
        self.log = log or (lambda line: None)
        self.actions = []

    # -- leadership --------------------------------------------------------------------------------------------

    def lead(self):
        """Take or keep the lease; True while this monitor is the active one."""
        with self.engine.transaction() as cur:
            if self.epoch is not None and rows.renew(cur, self.holder, self.epoch, self.lease_ttl):
                return True
            epoch = rows.acquire(cur, self.holder, self.lease_ttl)
        if epoch is not None:
            if self.epoch is None or epoch != self.epoch:
                with self.engine.transaction() as cur:
                    _events.record(cur, "MONITOR_ACTIVE", "Monitor %s is active (lease epoch %d)"
                                   % (self.holder, epoch), details={"holder": self.holder, "epoch": epoch})
                self.log("active: lease epoch %d" % epoch)
            self.epoch = epoch
            return True
        if self.epoch is not None:
            self.log("lease lost: standing by")
        self.epoch = None
        return False

    @contextlib.contextmanager
    def keeping(self):
        """While a pass runs (an HA restart may take a while), the lease is renewed every third of its time, on a
        connection of its own; a renewal that finds the lease gone stops, and the pass's next write finds out."""
        stop = threading.Event()

        def renew():
            conn = None
            try:
                while not stop.wait(self.lease_ttl / 3.0):
                    try:
                        if conn is None:
                            conn = _db.connect_raw(self.engine.options)
                        with conn.transaction(), conn.cursor() as cur:
                            if not rows.renew(cur, self.holder, self.epoch, self.lease_ttl):
                                return
                    except (_db.DatabaseError, VirtplaneError):
                        if conn is not None:
                            conn.close()
                            conn = None
            finally:
                if conn is not None:
                    conn.close()
        thread = threading.Thread(target=renew, name="virtplane-monitor-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(5)

    def guard(self, cur):
        """In every transaction that records what this monitor decided: it is still the active one."""
        if self.holder is not None and not rows.holds(cur, self.holder, self.epoch):
            raise LostLease("Monitor %s lost its lease: another monitor is active" % self.holder)

    def resign(self):
        if self.holder is not None and self.epoch is not None:
            with self.engine.transaction() as cur:
                rows.release(cur, self.holder)
            self.epoch = None

    # -- one pass ------------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def holding_pass(self, wait_timeout=60):
        """The pass lock: no pass of any monitor (or module) runs meanwhile."""
        deadline = time.monotonic() + wait_timeout
        with self.engine.transaction() as cur:
            got = rows.try_pass(cur)
        while not got:
            if time.monotonic() > deadline:
                raise ConflictError("Another monitor pass did not end within %d s" % wait_timeout)
            time.sleep(0.2)
            with self.engine.transaction() as cur:
                got = rows.try_pass(cur)
        try:
            yield
        finally:
            with self.engine.transaction() as cur:
                rows.end_pass(cur)

    def run_pass(self, wait_timeout=60):
        """One pass; returns what it saw and did: {"hosts": {name: status}, "actions": [...]}."""
        with self.holding_pass(wait_timeout):
            return self.pass_held()

    def pass_held(self):
        """One pass, the pass lock held by the caller."""
        self.actions = []
        try:
            self.engine.hypervisors = None  # this pass's connections for starts: none a dead host left failed
            return self._pass()
        finally:
            if self.engine.hypervisors is not None:
                self.engine.hypervisors.close()
                self.engine.hypervisors = None

    def _pass(self):
        with self.engine.transaction() as cur:
            hosts = rows.hosts(cur)
            probed_at = rows.now(cur)  # what changed in the engine after this is newer than what the hosts say
        watched = WATCHED + ("Maintenance", "PreparingForMaintenance")
        probed = self.probes.probe([h for h in hosts if h["status"] in watched])
        # every running domain of every host that answered, by UUID: a VM is judged against all of them, so one
        # that moved outside the engine is found where it went, never taken for dead and started twice
        self.seen = {}
        for host_id, (domains, reason) in probed.items():
            for name, domain in (domains or {}).items() if reason is None else ():
                self.seen.setdefault(domain["uuid"], []).append((host_id, name))
        self.answered = {host_id for host_id, (_domains, reason) in probed.items() if reason is None}
        self.names = {h["id"]: h["name"] for h in hosts}
        for host in hosts:
            if host["id"] not in probed:
                continue
            domains, reason = probed[host["id"]]
            try:
                if reason is None:
                    self._answered(host, domains, probed_at)
                else:
                    self._silent(host, reason)
            except LostLease:
                raise
            except Exception as exc:  # one host's trouble, whatever it is, never stops the watch over the others
                self._act("host %s: %s" % (host["name"], _client.safe_message(str(exc)) or exc.__class__.__name__))
        self._restart_due()
        self._resilience([h for h in hosts if h["id"] in probed and probed[h["id"]][1] is None])
        with self.engine.transaction() as cur:
            statuses = {h["name"]: h["status"] for h in rows.hosts(cur)}
            restarting = rows.restarting(cur)
        return {"hosts": statuses, "restarting": restarting, "actions": list(self.actions)}

    def _act(self, line):
        self.actions.append(line)
        self.log(line)

    # -- a host that answered ------------------------------------------------------------------------------------

    def _answered(self, host, domains, probed_at):
        self.fence_tried.pop(host["id"], None)
        self.unproven.discard(host["id"])
        with self.engine.transaction() as cur:
            self.guard(cur)
            self.engine.lock(cur, LOCK_DATACENTER, host["datacenter"])
            row = host_rows.by_id(cur, host["id"], lock=True)
            if row is None:
                return
            changes = {"last_seen_at": rows.now(cur)}
            if row["status"] in ("Connecting", "NonResponsive") and row["job_id"] is None:
                status, reason = _realize.status_of("Up", True, "", host_rows.problems(cur, row["id"]))
                changes.update(status=status, status_reason=reason, status_changed_at=changes["last_seen_at"],
                               unreachable_since=None, fenced_at=None)
                _realize.record_status_change(cur, row, row["status"], status, reason or "it answers again")
                self._act("host %s: %s -> %s" % (row["name"], row["status"], status))
            elif row["unreachable_since"] is not None:
                changes["unreachable_since"] = None
            if len(changes) > 1:
                host_rows.update(cur, row["id"], changes)
            else:
                host_rows.seen(cur, row["id"])
            self._reconcile_vms(cur, row, domains, probed_at)

    def _reconcile_vms(self, cur, host, domains, probed_at):
        """What the host said (``domains``, asked from ``probed_at`` on) against what the engine records; a VM whose
        runtime changed since then (a start, a migration that ended) is newer than the answer, and left alone."""
        recorded = {r["name"]: r for r in rows.vms_on(cur, host["id"])}
        for name, vm in recorded.items():
            if vm["job_id"] is not None or vm["status"] not in rows.ON_HOST or vm["runtime_updated_at"] >= probed_at:
                continue  # a run is working on it (its own confirm records what happened), or it just changed
            if name in domains and domains[name]["uuid"] == str(vm["id"]):
                if vm["status"] in ("Unknown", "NotResponding"):
                    vm_rows.set_runtime(cur, vm["id"], status="Up", status_reason="")
                    _events.record(cur, "VM_FOUND", "VM %s runs on host %s" % (name, host["name"]),
                                   object_type="vm", object_id=vm["id"], object_name=name, host=host["name"],
                                   vm=name)
                    self._act("VM %s: %s -> Up on %s" % (name, vm["status"], host["name"]))
                continue
            elsewhere = [h for h, n in self.seen.get(str(vm["id"]), ()) if h != host["id"] and n == name]
            if len(elsewhere) == 1:
                self._moved(cur, vm, host, elsewhere[0])
            elif elsewhere:
                self._twice(cur, vm, [self.names[h] for h in elsewhere])
            else:
                self._died(cur, vm, host)
        ids = {d["uuid"]: n for n, d in domains.items() if n not in recorded}
        known = rows.vms_by_ids(cur, [i for i in ids if _is_uuid(i)])
        unmanaged = sorted(n for u, n in ids.items() if known.get(u) is None or known[u]["name"] != n)
        if unmanaged != (host["unmanaged_domains"] or []):
            rows.set_unmanaged(cur, host["id"], unmanaged)
            for name in sorted(set(unmanaged) - set(host["unmanaged_domains"] or [])):
                _events.record(cur, "DOMAIN_UNMANAGED", "Host %s runs domain %s, which the engine does not "
                               "manage" % (host["name"], name), severity="warning", object_type="host",
                               object_id=host["id"], object_name=host["name"], host=host["name"],
                               details={"domain": name})
                self._act("host %s: domain %s is not the engine's" % (host["name"], name))
        for domain_uuid, name in sorted(ids.items(), key=lambda item: item[1]):
            vm = known.get(domain_uuid)
            if vm is None or vm["name"] != name:
                continue
            if vm["job_id"] is not None or vm["runtime_updated_at"] >= probed_at:
                continue
            where = [h for h, n in self.seen.get(domain_uuid, ()) if n == name]
            if len(where) > 1:
                self._twice(cur, vm, [self.names[h] for h in where])
            elif vm["status"] in ("Down", "RestartingHA"):
                self._found_behind_back(cur, vm, host)
            elif vm["run_host_id"] is not None and vm["run_host_id"] not in self.answered:
                self._moved(cur, vm, {"name": vm["host"]}, host["id"])
            # recorded on a host that answered without it: that host's turn records where it went

    def _moved(self, cur, vm, host, there):
        """The VM runs on host ``there`` (an id), not on ``host`` where the engine had it: recorded there."""
        vm_rows.set_runtime(cur, vm["id"], run_host_id=there, status="Up", status_reason="moved outside the engine")
        _events.record(cur, "VM_FOUND", "VM %s runs on host %s, not on host %s where the engine had it: recorded "
                       "there" % (vm["name"], self.names[there], host["name"]), severity="warning",
                       object_type="vm", object_id=vm["id"], object_name=vm["name"], host=self.names[there],
                       vm=vm["name"])
        self._act("VM %s: found on %s (moved outside the engine)" % (vm["name"], self.names[there]))

    def _twice(self, cur, vm, where):
        """The VM runs on several hosts at once: reported (once), nothing else done."""
        key = (str(vm["id"]), tuple(sorted(where)))
        if key in self.twice_reported:
            return
        self.twice_reported.add(key)
        _events.record(cur, "VM_RUNS_TWICE", "VM %s runs on hosts %s at once, started outside the engine"
                       % (vm["name"], ", ".join(sorted(where))), severity="error", object_type="vm",
                       object_id=vm["id"], object_name=vm["name"], vm=vm["name"])
        self._act("VM %s: runs on %s at once" % (vm["name"], ", ".join(sorted(where))))

    def _died(self, cur, vm, host):
        name = vm["name"]
        if vm["ha_enabled"]:
            _to_restart(cur, vm, host["name"], "it stopped on host %s outside the engine" % host["name"])
            _events.record(cur, "VM_DOWN", "VM %s is no longer on host %s (it died or was destroyed outside the "
                           "engine): HA restart" % (name, host["name"]), severity="warning", object_type="vm",
                           object_id=vm["id"], object_name=name, host=host["name"], vm=name)
            self._act("VM %s: died on %s -> RestartingHA" % (name, host["name"]))
        else:
            _vm.record_down(cur, vm, "it stopped on host %s outside the engine" % host["name"])
            _events.record(cur, "VM_DOWN", "VM %s is Down: it is no longer on host %s (it died or was destroyed "
                           "outside the engine)" % (name, host["name"]), severity="warning", object_type="vm",
                           object_id=vm["id"], object_name=name, host=host["name"], vm=name)
            self._act("VM %s: died on %s -> Down" % (name, host["name"]))

    def _found_behind_back(self, cur, vm, host):
        definition = _vm.current_definition(vm)
        vm_rows.set_runtime(cur, vm["id"], status="Up", status_reason="started outside the engine",
                            run_host_id=host["id"], reserved_vcpus=definition["vcpus"],
                            reserved_memory_mib=definition["memory_mib"], running_config=definition,
                            ha_next_at=None, ha_attempts=0, ha_since=None, ha_from_host=None)
        what = "its HA restart is called off" if vm["status"] == "RestartingHA" else "recorded Up"
        _events.record(cur, "VM_FOUND", "VM %s runs on host %s, where the engine did not start it: %s"
                       % (vm["name"], host["name"], what), severity="warning", object_type="vm",
                       object_id=vm["id"], object_name=vm["name"], host=host["name"], vm=vm["name"])
        self._act("VM %s: %s -> Up on %s (found)" % (vm["name"], vm["status"], host["name"]))

    # -- a host that did not answer -------------------------------------------------------------------------------

    def _powered_off(self, host):
        """Whether the host's power controller says it is off (a host whose power is off needs no grace: it runs
        nothing). Asked with no lock held, once the host is silent; any doubt is a no."""
        if host["fence_agent"] not in _agents.POWER_AGENTS or host["status"] not in ("Up", "NonOperational",
                                                                                     "Connecting"):
            return False
        with self.engine.transaction() as cur:
            secret = rows.secret(cur, host["id"])
        try:
            return _agents.agent(host["fence_agent"], host["name"], dict(host["fence_options"] or {}), secret,
                                 timeout=3).status() == "off"
        except FenceError:
            return False

    def _silent(self, host, reason):
        off = self._powered_off(host)
        with self.engine.transaction() as cur:
            self.guard(cur)
            self.engine.lock(cur, LOCK_DATACENTER, host["datacenter"])
            row = host_rows.by_id(cur, host["id"], lock=True)
            if row is None or row["job_id"] is not None:
                return
            now = rows.now(cur)
            if row["status"] in ("Up", "NonOperational"):
                host_rows.update(cur, row["id"], {"status": "Connecting", "status_reason": reason,
                                                  "status_changed_at": now, "unreachable_since": now})
                _realize.record_status_change(cur, row, row["status"], "Connecting", reason)
                self._act("host %s: %s -> Connecting (%s)" % (row["name"], row["status"], reason))
                if self.grace > 0 and not off:
                    return
                row = host_rows.by_id(cur, host["id"], lock=True)
            if row["status"] == "Connecting":
                since = row["unreachable_since"] or now
                if (now - since).total_seconds() < self.grace and not off:
                    return
                if off:
                    reason = "%s; its power controller reports it off" % reason
                host_rows.update(cur, row["id"], {"status": "NonResponsive", "status_reason": reason,
                                                  "status_changed_at": now})
                _realize.record_status_change(cur, row, "Connecting", "NonResponsive",
                                              "%s (for %d s)" % (reason, (now - since).total_seconds()))
                self._act("host %s: Connecting -> NonResponsive" % row["name"])
                for vm in rows.vms_on(cur, row["id"]):
                    if vm["job_id"] is None and vm["status"] in rows.ON_HOST and vm["status"] != "Unknown":
                        vm_rows.set_runtime(cur, vm["id"], status="Unknown",
                                            status_reason="host %s does not answer" % row["name"])
            elif row["status"] != "NonResponsive":
                return
            elif row["fenced_at"] is None and not off and row["unreachable_since"] is not None \
                    and (now - row["unreachable_since"]).total_seconds() < self.grace:
                return  # made NonResponsive by a host check: its grace is counted all the same
            vms = [v for v in rows.vms_on(cur, row["id"]) if v["job_id"] is None]
            if row["fenced_at"] is not None and vms:
                # VMs a run held when the host was fenced, back on it when the run ended: as the others
                _vms_fenced(cur, row, "fenced at %s" % row["fenced_at"].strftime("%H:%M:%S"))
                rows.due_now(cur, row["name"])
                self._act("host %s: VMs left on it after its fence handled" % row["name"])
                return
        if row["fenced_at"] is None and vms:
            self._fence_or_wait(row, vms)
        elif row["fenced_at"] is None and row["fence_agent"] == "ssh" and row["id"] not in self.fence_tried:
            # no VM to restart, but a libvirtd restarted may bring the host back all the same
            self.fence_tried[row["id"]] = time.monotonic()
            soft_fence(self.engine, row)

    def _fence_or_wait(self, host, vms):
        tried = self.fence_tried.get(host["id"])
        due = tried is None or time.monotonic() - tried > FENCE_RETRY_SECONDS
        if host["fence_agent"] in _agents.POWER_AGENTS and due:
            try:
                fence(self.engine, host, "the monitor", guard=self.guard)
                self._act("host %s: fenced by its %s agent" % (host["name"], host["fence_agent"]))
                return
            except FenceError as exc:
                self.fence_tried[host["id"]] = time.monotonic()
                self._act("host %s: fencing failed: %s" % (host["name"], exc))
        elif host["fence_agent"] == "ssh" and tried is None:
            self.fence_tried[host["id"]] = time.monotonic()
            soft_fence(self.engine, host)
        self._lease_restarts(host, vms)

    def _lease_restarts(self, host, vms):
        """A host not proven dead: its HA VMs whose disks hold leases on shared storage are tried elsewhere (the
        lock manager refuses them while the host holds the leases); the rest wait for the host or a fence."""
        with self.engine.transaction() as cur:
            self.guard(cur)
            self.engine.lock(cur, LOCK_DATACENTER, host["datacenter"])
            leased, waiting = [], []
            # every host of the cluster takes leases, or the one the VM is tried on might not ask
            leases = host["storage_leases"] and rows.cluster_leased(cur, host["cluster_id"])
            for vm in rows.vms_on(cur, host["id"]):
                if vm["job_id"] is not None:
                    continue
                if vm["ha_enabled"] and leases and rows.shared_leased_disks(cur, vm["id"]):
                    leased.append(vm)
                else:
                    waiting.append(vm["name"])
            for vm in leased:
                _to_restart(cur, vm, host["name"], "host %s does not answer and could not be fenced: started "
                            "elsewhere once its storage leases are free" % host["name"])
                self._act("VM %s: -> RestartingHA (waits for the leases of host %s)" % (vm["name"], host["name"]))
            if leased:
                _events.record(cur, "HA_LEASE_WAIT", "Host %s does not answer and is not fenced: VMs %s restart "
                               "elsewhere once their storage leases are released" % (
                                   host["name"], ", ".join(v["name"] for v in leased)), severity="warning",
                               object_type="host", object_id=host["id"], object_name=host["name"],
                               host=host["name"])
            if waiting and host["id"] not in self.unproven:
                self.unproven.add(host["id"])
                why = "it has no fence agent" if not host["fence_agent"] else \
                    "an SSH soft fence proves nothing" if host["fence_agent"] == "ssh" else "its fencing failed"
                _events.record(cur, "HOST_NOT_PROVEN_DEAD", "Host %s does not answer and cannot be proven dead (%s; "
                               "%s): VMs %s stay where the engine last saw them until it answers or is fenced"
                               % (host["name"], why, "no storage leases" if not host["storage_leases"] else
                                  "no disk with a lease on shared storage", ", ".join(waiting)),
                               severity="error", object_type="host", object_id=host["id"],
                               object_name=host["name"], host=host["name"])
                self._act("host %s: not proven dead; %s wait" % (host["name"], ", ".join(waiting)))

    # -- resilience --------------------------------------------------------------------------------------------------

    def _resilience(self, answered):
        """Hosts that answer but are NonOperational: their VMs (all, or the HA ones) migrate elsewhere, as the
        cluster's resilience policy says; a VM no host can take stays, and the next pass tries again."""
        with self.engine.transaction() as cur:
            moves, parallel = [], {}
            for host in answered:
                row = host_rows.by_id(cur, host["id"])
                if row is None or row["status"] != "NonOperational" or host["resilience_policy"] == "none" \
                        or row["job_id"] is not None:
                    continue
                for vm in rows.vms_on(cur, host["id"]):
                    failed = self.resilience_failed.get(vm["name"])
                    if failed is not None and time.monotonic() - failed < RESILIENCE_RETRY_SECONDS:
                        continue  # it could not move a moment ago: not tried (and recorded) at every pass
                    if vm["status"] == "Up" and vm["job_id"] is None and (
                            host["resilience_policy"] == "migrate" or vm["ha_enabled"]):
                        moves.append((vm["name"], None, host["name"]))
                        parallel[host["name"]] = rows.max_parallel(cur, host["cluster_id"])
            if moves:
                self.guard(cur)
        if not moves:
            return
        results = _migrate.migrate_many(self.engine, moves, min(parallel.values()), self.probe_timeout + 25,
                                        wait_timeout=0)
        for name, (outcome, error) in sorted(results.items()):
            if error is not None:
                self.resilience_failed[name] = time.monotonic()
                self._act("VM %s: not moved off its NonOperational host: %s" % (name, str(error).splitlines()[0]))
            elif outcome is not None and outcome.changed:
                went = (outcome.resource or {}).get("host")
                self._act("VM %s: moved off its NonOperational host to %s" % (name, went))

    # -- HA restarts ----------------------------------------------------------------------------------------------

    def _restart_due(self):
        with self.engine.transaction() as cur:
            due = rows.ha_due(cur)
        for entry in due:
            if str(entry["id"]) in self.seen:
                continue  # it runs somewhere after all (found this pass, or twice): nothing to start
            with self.engine.transaction() as cur:
                self.guard(cur)
            spec = types.SimpleNamespace(name=entry["name"], timeout=self.probe_timeout + 25, wait_timeout=0,
                                         cluster=None)
            operation = VmHaRestart(self.engine, False, spec, lease_wait=self.lease_wait)
            try:
                outcome = _operation.run(self.engine, operation)
                if outcome.changed:
                    self._act("VM %s: restarted on %s" % (entry["name"], (outcome.resource or {}).get("host")))
            except LostLease:
                raise
            except VirtplaneError as exc:
                reason = str(exc).splitlines()[0]
                self._act("VM %s: HA restart failed: %s" % (entry["name"], reason))
                self._backoff(entry, reason)

    def _backoff(self, entry, reason):
        """A restart refused before it was tried (no host can take the VM now): the next attempt waits as after
        one that failed, with an event; one that failed on a host was already given its wait by its release."""
        with self.engine.transaction() as cur:
            self.guard(cur)
            state = rows.ha_state(cur, entry["id"])
            if not state or not state["due"]:
                return
            attempts = state["ha_attempts"] + 1
            wait = HA_BACKOFF[min(attempts - 1, len(HA_BACKOFF) - 1)]
            rows.schedule_ha(cur, entry["id"], wait, attempts, "HA restart attempt %d failed: %s" % (attempts, reason))
            _events.record(cur, "VM_HA_RESTART_FAILED", "VM %s: HA restart attempt %d failed: %s; retried in %d s"
                           % (entry["name"], attempts, reason, wait), severity="warning", object_type="vm",
                           object_id=entry["id"], object_name=entry["name"], vm=entry["name"])


def _is_uuid(text):
    try:
        uuid.UUID(text)
        return True
    except ValueError:
        return False


def _to_restart(cur, vm, host_name, reason):
    """The VM leaves its host for an HA restart, due at once; what it held there is freed."""
    vm_rows.set_runtime(cur, vm["id"], status="RestartingHA", status_reason=reason, run_host_id=None,
                        migrating_to_host_id=None, reserved_vcpus=0, reserved_memory_mib=0, console={},
                        guest_addresses=[], running_config=None, ha_attempts=0, ha_from_host=host_name)
    rows.schedule_ha(cur, vm["id"], 0)
    rows.mark_ha_since(cur, vm["id"])


def _vms_fenced(cur, host, how):
    """The fenced host's VMs: HA ones to restart, the others Down with the reason."""
    restart, down = [], []
    for vm in rows.vms_on(cur, host["id"]):
        if vm["job_id"] is not None:
            continue
        if vm["ha_enabled"]:
            _to_restart(cur, vm, host["name"], "host %s was fenced (%s)" % (host["name"], how))
            restart.append(vm["name"])
        else:
            _vm.record_down(cur, vm, "host %s was fenced (%s)" % (host["name"], how))
            _events.record(cur, "VM_DOWN", "VM %s is Down: host %s was fenced (%s)" % (vm["name"], host["name"], how),
                           severity="warning", object_type="vm", object_id=vm["id"], object_name=vm["name"],
                           host=host["name"], vm=vm["name"])
            down.append(vm["name"])
    return restart, down


def fence(engine, host, by, guard=None):
    """Power ``host`` off through its agent and record it: fenced, its HA VMs to restart, the others Down.

    Raises FenceError (nothing recorded but the failure's event) when the agent cannot confirm it off."""
    with engine.transaction() as cur:
        secret = rows.secret(cur, host["id"])
    config = dict(host["fence_options"] or {})
    agent = _agents.agent(host["fence_agent"], host["name"], config, secret)
    started = time.monotonic()
    try:
        agent.off()
    except FenceError as exc:
        with engine.transaction() as cur:
            _events.record(cur, "HOST_FENCE_FAILED", str(exc), severity="error", object_type="host",
                           object_id=host["id"], object_name=host["name"], host=host["name"],
                           details={"agent": host["fence_agent"], "by": by})
        raise
    how = "powered off by its %s agent" % host["fence_agent"]
    with engine.transaction() as cur:
        if guard is not None:
            guard(cur)
        engine.lock(cur, LOCK_DATACENTER, host["datacenter"])
        row = host_rows.by_id(cur, host["id"], lock=True)
        if row is None:  # removed meanwhile: powered off, and nothing of it to record
            return [], []
        now = rows.now(cur)
        host_rows.update(cur, row["id"], {"status": "NonResponsive", "status_reason": "fenced: %s" % how,
                                          "status_changed_at": now, "fenced_at": now,
                                          "unreachable_since": row["unreachable_since"] or now})
        restart, down = _vms_fenced(cur, row, how)
        rows.due_now(cur, row["name"])  # those that waited for its leases go now
        _events.record(cur, "HOST_FENCED", "Host %s was fenced: %s in %.1f s, by %s; HA restart of %s; Down: %s"
                       % (row["name"], how, time.monotonic() - started, by, ", ".join(restart) or "no VM",
                          ", ".join(down) or "no VM"), severity="warning", object_type="host",
                       object_id=row["id"], object_name=row["name"], host=row["name"],
                       details={"agent": host["fence_agent"], "by": by, "restart": restart, "down": down})
    return restart, down


def soft_fence(engine, host):
    """libvirtd restarted over SSH: recovers a host whose libvirtd hung; proves nothing."""
    config = dict(host["fence_options"] or {})
    agent = _agents.agent("ssh", host["name"], config, timeout=5)  # a pass waits for it: kept short
    try:
        agent.soft()
        message, severity = "Host %s: libvirtd restarted over SSH (soft fence)" % host["name"], "warning"
    except FenceError as exc:
        message, severity = "Host %s: soft fence failed: %s" % (host["name"], exc), "error"
    with engine.transaction() as cur:
        _events.record(cur, "HOST_SOFT_FENCED", message, severity=severity, object_type="host",
                       object_id=host["id"], object_name=host["name"], host=host["name"])


class VmHaRestart(_vm.VmStart):
    """The start of an HA VM that lost its host: through the scheduler like any start; a failure puts it back to
    wait for the next attempt (backoff), or gives up after ``lease_wait`` when it waits for storage leases."""

    action = "vm.ha_restart"
    startable = ("RestartingHA",)
    pipelined = False

    def __init__(self, engine, check_mode, spec, lease_wait=300):
        super().__init__(engine, check_mode, spec)
        self.lease_wait = lease_wait

    def reserve(self, cur, plan):
        row = self._row(cur, lock=True)
        self._claim(cur, row)  # a restart a dead run left is recovered first; a live run's is waited for
        if row["status"] != "RestartingHA" or row["job_id"] is not None:
            plan.outcome = Outcome(False)
            return
        super().reserve(cur, plan)

    def release(self, cur, plan, error):
        if getattr(plan, "unclean", None):
            super().release(cur, plan, error)  # it may run on the host it was started on: Unknown there
            return
        row = plan.row
        state = rows.ha_state(cur, row["id"])
        attempts = state["ha_attempts"] + 1
        reason = "HA restart attempt %d failed: %s" % (attempts, _operation.describe(error))
        vm_rows.set_runtime(cur, row["id"], status="RestartingHA", status_reason=reason, run_host_id=None,
                            reserved_vcpus=0, reserved_memory_mib=0, job_id=None)
        leases = "lock" in reason.lower() or "resource busy" in reason.lower()
        if leases and state["waited"] >= self.lease_wait:
            rows.give_up_ha(cur, row["id"], "gave up after %d s: its disks' storage leases are still held (host %s "
                            "may still run it)" % (state["waited"], state["ha_from_host"] or "?"))
            severity, what = "error", "given up"
        else:
            rows.schedule_ha(cur, row["id"], HA_BACKOFF[min(attempts - 1, len(HA_BACKOFF) - 1)], attempts)
            severity, what = "warning", "retried in %d s" % HA_BACKOFF[min(attempts - 1, len(HA_BACKOFF) - 1)]
        _events.record(cur, "VM_HA_RESTART_FAILED", "VM %s: %s; %s" % (row["name"], reason, what), severity=severity,
                       object_type="vm", object_id=row["id"], object_name=row["name"], vm=row["name"],
                       host=plan.host["name"] if getattr(plan, "host", None) else None,
                       job_id=plan.job["id"] if plan.job else None)

    def confirm(self, cur, plan, result):
        row = plan.row
        state = rows.ha_state(cur, row["id"])
        outcome = super().confirm(cur, plan, result)
        vm_rows.set_runtime(cur, row["id"], ha_attempts=0, ha_next_at=None, ha_since=None, ha_from_host=None)
        _events.record(cur, "VM_HA_RESTARTED", "VM %s restarted on host %s, %.1f s after it left host %s"
                       % (row["name"], plan.host["name"], state["waited"], state["ha_from_host"] or "?"),
                       object_type="vm", object_id=row["id"], object_name=row["name"], vm=row["name"],
                       host=plan.host["name"], job_id=plan.job["id"],
                       details={"from": state["ha_from_host"], "seconds": round(state["waited"], 1)})
        return outcome


@_operation.recovery("vm.ha_restart")
def _recover_ha_restart(engine, job):
    """A run died in an HA restart: Up where the host has it; else waiting for the next attempt."""
    def record(cur, row, _found, running):
        if running:
            vm_rows.set_runtime(cur, row["id"], status="Up", job_id=None, ha_next_at=None, ha_since=None,
                                running_config=_vm.current_definition(row))
            return "the VM runs on its new host: recorded Up"
        if running is None:
            vm_rows.set_runtime(cur, row["id"], status="Unknown", job_id=None,
                                status_reason="its HA restart was interrupted and its host does not answer")
            return "its host does not answer: recorded Unknown"
        vm_rows.set_runtime(cur, row["id"], status="RestartingHA", run_host_id=None, reserved_vcpus=0,
                            reserved_memory_mib=0, job_id=None)
        rows.schedule_ha(cur, row["id"], 0)
        return "the VM did not start: its HA restart is due again"
    return _vm.recover_with(engine, job, record)


def holder_name():
    return "%s:%d:%s" % (socket.gethostname(), os.getpid(), uuid.uuid4().hex[:6])


class ReconcileSpec(Spec):
    FIELDS = ("rounds", "grace", "probe_timeout", "lease_wait", "wait_timeout")

    def validate(self):
        self.rounds = 1 if self.rounds is None else self.rounds
        validate_range("rounds", self.rounds, 1, 100)
        self.grace = 4 if self.grace is None else self.grace
        self.probe_timeout = 5 if self.probe_timeout is None else self.probe_timeout
        self.lease_wait = 300 if self.lease_wait is None else self.lease_wait
        self.wait_timeout = 60 if self.wait_timeout is None else self.wait_timeout
        validate_range("wait_timeout", self.wait_timeout, 0, 3600, "seconds")
        validate_range("grace", self.grace, 0, 600, "seconds")
        # the pass of a module holds no lease: interval and lease_ttl are the service's, not asked here
        validate_settings(1, self.grace, self.probe_timeout, self.lease_wait, 10)


def ensure(engine, spec, check_mode=False):
    """The ``reconcile`` module: ``rounds`` monitor passes now, ``grace`` seconds apart (a host that stops
    answering is Connecting after the first, NonResponsive after one ``grace`` later)."""
    if check_mode:
        raise ConflictError("reconcile records what the hosts say as it asks them: it does not run in check mode")
    monitor = Monitor(engine, None, interval=1, grace=spec.grace, probe_timeout=spec.probe_timeout,
                      lease_wait=spec.lease_wait, lease_ttl=10)
    results, actions = None, []
    try:
        for number in range(spec.rounds):
            if number:
                time.sleep(max(spec.grace, 1))
            results = monitor.run_pass(spec.wait_timeout)
            actions += results["actions"]
    finally:
        monitor.probes.close()
    return Outcome(bool(actions), None, None, dict(results, actions=actions), actions)


def serve(engine, interval=2, grace=4, probe_timeout=5, lease_wait=300, lease_ttl=10, log=None, stop=None):
    """The monitor service: a pass every ``interval`` seconds while it holds the lease; a standby otherwise."""
    stop = stop or threading.Event()
    log = log or (lambda line: None)
    monitor = Monitor(engine, holder_name(), interval, grace, probe_timeout, lease_wait, lease_ttl, log)
    with engine.transaction() as cur:
        rows.keep_alive(cur, lease_ttl)
    log("monitor %s: interval %d s, grace %d s, lease %d s" % (monitor.holder, interval, grace, lease_ttl))
    try:
        while not stop.is_set():
            started = time.monotonic()
            try:
                if monitor.lead():
                    with monitor.keeping():
                        monitor.run_pass(wait_timeout=lease_ttl)
            except LostLease as exc:
                log(str(exc))
                monitor.epoch = None
            except _db.DatabaseError:
                raise  # main connects again
            except Exception as exc:  # a pass that fails is logged; the next one comes all the same
                log("pass failed: %s" % (str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__))
            stop.wait(max(0.2, interval - (time.monotonic() - started)))
    finally:
        try:
            monitor.resign()
        finally:
            monitor.probes.close()
    return 0


def main(argv=None, log=None):
    """The monitor service: ``virtplane-monitor [--config FILE] [--interval N] [--grace N] [--probe-timeout N]
    [--lease-wait N] [--lease-ttl N]``. FILE (JSON, default /etc/virtplane/monitor.json when it exists) holds
    ``engine`` (the modules' engine option) and any of the settings. Exits 2 on a setting or a schema it cannot
    work with (the message says which), and keeps trying while the database cannot be reached."""
    import argparse
    import json
    import signal
    import sys

    from ansible_collections.virtplane.kvm.plugins.module_utils._errors import (
        EngineConnectionError,
        SchemaVersionError,
    )

    def say(line):
        sys.stdout.write("%s virtplane-monitor: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), line))
        sys.stdout.flush()
    log = log or say
    parser = argparse.ArgumentParser(prog="virtplane-monitor", description="The virtplane engine's monitor")
    parser.add_argument("--config", default=None)
    for name in ("interval", "grace", "probe-timeout", "lease-wait", "lease-ttl"):
        parser.add_argument("--" + name, type=int)
    args = parser.parse_args(argv)
    path = args.config or ("/etc/virtplane/monitor.json" if os.path.exists("/etc/virtplane/monitor.json") else None)
    config = {}
    if path:
        try:
            with open(path) as handle:
                config = json.load(handle)
        except (OSError, ValueError) as exc:
            log("cannot read %s: %s" % (path, exc))
            return 2
    settings = {"interval": 2, "grace": 4, "probe_timeout": 5, "lease_wait": 300, "lease_ttl": 10}
    for key in settings:
        value = getattr(args, key) if getattr(args, key) is not None else config.get(key)
        if value is not None:
            settings[key] = value
    try:
        validate_settings(**settings)
    except ValidationError as exc:
        log(str(exc))
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        try:
            engine = _db.connect(config.get("engine") or {})
        except SchemaVersionError as exc:
            log("%s; the monitor does not run against a schema it does not know" % exc)
            return 2
        except ValidationError as exc:
            log(str(exc))
            return 2
        except EngineConnectionError as exc:
            log("%s; trying again in %d s" % (exc, settings["interval"]))
            stop.wait(settings["interval"])
            continue
        try:
            return serve(engine, log=log, stop=stop, **settings)
        except _db.DatabaseError as exc:
            log("the engine database failed: %s; connecting again" % _db.describe_error(exc))
        finally:
            try:
                engine.close()
            except _db.DatabaseError:
                pass
    return 0
