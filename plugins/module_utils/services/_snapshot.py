# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshots of a VM: internal qcow2 snapshots of all its disks, with the guest's memory when it runs.

What each kind gives:

- a running VM's snapshot holds its memory and devices with its disks, all at one instant (QEMU pauses
  the guest while it writes them): reverting to it brings the guest back to that instant, running;
- a stopped VM's snapshot holds its disks as the guest left them when it powered off.

Every disk of the VM must be a qcow2 image (an internal snapshot lives in the image). The engine takes
no external snapshots: libvirt 9.0 cannot revert to one (that came with 9.9), so what they would offer
could not be taken back. Refused, with that reason: a disk-only snapshot of a running VM (libvirt 9.0
takes internal snapshots of a running VM only with its memory), a VM with a raw disk or an iSCSI LUN,
a revert of a running VM to a snapshot without memory (libvirt would have to power the guest off: stop
it first), a revert after a disk was attached or detached (the images no longer match the snapshot).

Each operation reserves the snapshot and the VM (a job: the VM neither starts nor stops meanwhile)
under the data center's lock, acts on the host with no lock held — the VM's host when it runs, else a
host that has its storage domains, with the VM defined there for the moment — and confirms.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
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
    validate_range,
    validate_timeout,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _disks as disk_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _events, _jobs
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _hosts as host_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _snapshots as snapshot_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _vms as vm_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_CLUSTER, LOCK_DATACENTER
from ansible_collections.virtplane.kvm.plugins.module_utils.scheduler import _placement
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _hosts, _operation, _vm
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import Outcome, Spec, plain
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _domain
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _snapshot as virt_snapshot
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _vm as virt_vm

STATES = _choices.SNAPSHOT_STATES
RUNNING = ("Up", "Paused")
CONSISTENCY = {
    True: "the whole VM at one instant: memory, devices and disks (the guest is paused while they are written)",
    False: "the disks of the stopped VM, as the guest left them when it powered off",
}
NO_EXTERNAL = ("the engine takes internal snapshots only, which live in qcow2 images (libvirt 9.0 cannot revert "
               "to an external snapshot)")


class SnapshotSpec(Spec):
    FIELDS = ("vm", "name", "description", "memory", "state", "timeout", "wait_timeout")

    def validate(self):
        validate_name("vm", self.vm)
        validate_name("name", self.name)
        validate_description("description", self.description)
        if self.memory is not None and not isinstance(self.memory, bool):
            raise ValidationError("memory", "%s is not true or false" % shown(self.memory))
        self.state = self.state or "present"
        if self.state not in STATES:
            raise ValidationError("state", "%s is not one of %s" % (shown(self.state), ", ".join(STATES)))
        self.timeout = 15 if self.timeout is None else self.timeout
        validate_timeout("timeout", self.timeout)
        self.wait_timeout = 60 if self.wait_timeout is None else self.wait_timeout
        validate_range("wait_timeout", self.wait_timeout, 0, 3600, "seconds")


def view(row):
    return {"id": plain(row["id"]), "name": row["name"], "vm": row["vm"], "description": row["description"],
            "kind": row["kind"], "memory": row["with_memory"], "vm_status": row["vm_status"],
            "consistency": CONSISTENCY[row["with_memory"]], "state": row["state"],
            "disks": [{"name": d["name"], "storage_domain": d["storage_domain"], "target": d["target"]}
                      for d in row["disks"]],
            "memory_mib": (row["config"] or {}).get("memory_mib"), "vcpus": (row["config"] or {}).get("vcpus"),
            "host": row["host_name"], "created_at": plain(row["created_at"])}


def ensure(engine, spec, check_mode=False):
    operation = {"present": SnapshotCreate, "absent": SnapshotDelete, "reverted": SnapshotRevert}[spec.state]
    return _operation.run(engine, operation(engine, check_mode, spec))


def snapshot_info(engine, vms=None, names=None):
    with engine.transaction() as cur:
        if vms:
            missing = [name for name in vms if vm_rows.find(cur, name) is None]
            if missing:
                raise NotFoundError("VM", missing[0], "list its snapshots")
        rows = snapshot_rows.listed(cur, list(vms) if vms else None)
    return [view(r) for r in rows if not names or r["name"] in names]


# -- what the operations share ---------------------------------------------------------------------

def _disk_entry(disk):
    return {"disk_id": str(disk["disk_id"]), "name": disk["name"], "storage_domain": disk["storage_domain"],
            "target": disk["target"]}


def _where_stopped(cur, row, disks):
    """The hosts that have every storage domain of these disks active (the first that answers does the work)."""
    hosts = None
    for domain_id in {d["storage_domain_id"] for d in disks}:
        have = {h["id"]: h for h in disk_rows.hosts_with_pool(cur, domain_id)}
        hosts = have if hosts is None else {k: v for k, v in hosts.items() if k in have}
    if not hosts:
        raise ConflictError("Cannot work on the disks of VM '%s': no Up host has storage domain%s %s active"
                            % (row["name"], "s" if len({d["storage_domain"] for d in disks}) > 1 else "",
                               ", ".join(sorted({d["storage_domain"] for d in disks}))))
    return sorted(hosts.values(), key=lambda h: h["name"])


def _stopped_domain_xml(row, host, disks):
    """The stopped VM's domain as it is defined for the moment on ``host``: its definition with these disks
    (those the snapshot is of), no NIC, no console file (nothing of it runs)."""
    spec = _vm.guest_spec(dict(row, disks=disks), host)
    spec.interfaces, spec.serial_path, spec.cdroms, spec.graphics = [], None, [], None
    return _domain.guest_xml(spec)


def _running_host(cur, row):
    """The host row of the host the VM runs on (its domain type names the domain libvirt is given back)."""
    return host_rows.by_id(cur, row["run_host_id"])


class _SnapshotOperation(_operation.Operation):
    irreversible = False

    def __init__(self, engine, check_mode, spec):
        super().__init__(engine, check_mode)
        self.spec = spec
        self.wait_timeout = spec.wait_timeout

    def prepare(self, cur):
        row = vm_rows.find(cur, self.spec.vm)
        if row is None and self.action == "snapshot.delete":
            self.lock = (LOCK_DATACENTER, "")
            return _operation.Plan(vm_id=None)  # a VM that is gone has no snapshots left
        if row is None:
            raise NotFoundError("VM", self.spec.vm, "%s snapshot '%s'" % (self.verb, self.spec.name))
        self.lock = (LOCK_DATACENTER, row["datacenter"])
        return _operation.Plan(vm_id=row["id"])

    def _vm(self, cur, plan):
        row = vm_rows.find(cur, self.spec.vm, lock=True)
        if row is None or row["id"] != plan.vm_id:
            raise _operation.Retry()
        _operation.claim(cur, row, "VM '%s'" % row["name"])
        return row

    def _snapshot(self, cur, row):
        snap = snapshot_rows.find(cur, row["id"], self.spec.name, lock=True)
        if snap is not None:
            _operation.claim(cur, snap, "snapshot '%s' of VM '%s'" % (snap["name"], row["name"]))
        return snap

    def _refuse(self, row, why):
        raise ConflictError("Cannot %s snapshot '%s' of VM '%s': %s" % (self.verb, self.spec.name, row["name"], why))

    def _steady_disks(self, row, disks):
        for disk in disks:
            if disk["status"] != "ok":
                self._refuse(row, "disk %s is %s (another run works on it)" % (disk["name"], disk["status"]))

    def _reserve(self, cur, plan, row, snap, description):
        self.start_job(cur, plan, "snapshot", snap["id"], "%s/%s" % (row["name"], snap["name"]), description,
                       datacenter=row["datacenter"])
        snapshot_rows.update(cur, snap["id"], {"job_id": plan.job["id"]})
        vm_rows.set_runtime(cur, row["id"], job_id=plan.job["id"])  # it neither starts nor stops meanwhile

    def _on_hosts(self, plan, work, what):
        """``work(conn, host)`` on the VM's host when it runs, else on the first host with its storage that
        answers (the VM defined there for the moment); which host did it is ``plan.host``."""
        hosts = [plan.host] if plan.running else plan.hosts
        reasons = []
        for host in hosts:
            try:
                _hosts.connect(self.engine, host, self.spec.timeout)
            except HypervisorError as exc:
                reasons.append("%s: %s" % (host["name"], exc))
                continue
            plan.host = host
            return _hosts.hypervisors(self.engine).call(host, what, lambda c, h=host: work(c, h), self.spec.timeout)
        raise HypervisorError("Cannot %s: no host answers: %s" % (what, "; ".join(reasons)))

    def _stopped(self, conn, host, plan, disks, work):
        with virt_snapshot.defined(conn, plan.row["name"], _stopped_domain_xml(plan.row, host, disks)) as dom:
            return work(dom)

    def _running(self, conn, plan, work):
        dom = virt_vm.find(conn, plan.row["name"])
        if dom is None:
            raise HypervisorError("VM '%s' does not run on host %s" % (plan.row["name"], plan.host["name"]))
        return work(dom)

    def _no_leftover(self, plan):
        """Undefine what a failed stopped-VM step may have left defined on its host (best effort)."""
        if getattr(plan, "host", None) is None:
            return
        try:
            _hosts.hypervisors(self.engine).call(plan.host, "clean up VM '%s'" % plan.row["name"],
                                                 lambda conn: virt_snapshot.leftover(conn, plan.row["name"]),
                                                 self.spec.timeout)
        except HypervisorError:
            pass  # the next start of the VM undefines it (VmStart)

    def _release(self, cur, plan):
        vm_rows.set_runtime(cur, plan.row["id"], job_id=None)

    def _event(self, cur, plan, code, message, severity="normal"):
        _events.record(cur, code, message, severity=severity, object_type="vm", object_id=plan.row["id"],
                       object_name=plan.row["name"], datacenter=plan.row["datacenter"], vm=plan.row["name"],
                       host=plan.host["name"] if plan.host else None, job_id=plan.job["id"] if plan.job else None)


def _vm_disks_now(row):
    return {str(d["disk_id"]) for d in row["disks"]}


class SnapshotCreate(_SnapshotOperation):
    action = "snapshot.create"
    verb = "take"

    def reserve(self, cur, plan):
        spec = self.spec
        row = self._vm(cur, plan)
        snap = self._snapshot(cur, row)
        if snap is not None:
            if snap["state"] != "ok":
                self._refuse(row, "it is %s: a run died while it worked on it; delete it (state absent) and take it "
                             "again" % snap["state"])
            if spec.memory is not None and spec.memory != snap["with_memory"]:
                self._refuse(row, "it exists %s the VM's memory; a snapshot is not changed (delete it and take it "
                             "again)" % ("with" if snap["with_memory"] else "without"))
            if spec.description is not None and spec.description != snap["description"]:
                plan.actions = ["update description"]
                if not self.check_mode:
                    snapshot_rows.update(cur, snap["id"], {"description": spec.description})
                plan.outcome = Outcome(True, {"description": snap["description"]}, {"description": spec.description},
                                       dict(view(snap), description=spec.description), plan.actions)
                return
            plan.outcome = Outcome(False, {}, {}, view(snap), [])
            return
        running = row["status"] in RUNNING
        if row["status"] not in RUNNING + ("Down",):
            self._refuse(row, "it is %s; a snapshot is taken of a running (Up) or stopped (Down) VM"
                         % row["status"])
        memory = running if spec.memory is None else spec.memory
        if running and not memory:
            self._refuse(row, "libvirt 9.0 takes an internal snapshot of a running VM only with its memory (memory: "
                         "false is for a stopped VM); leave memory out, or stop the VM first")
        if memory and not running:
            self._refuse(row, "it is stopped: it has no memory to keep (memory: true is for a running VM)")
        if not row["disks"]:
            self._refuse(row, "it has no disks; a snapshot keeps a VM's disks")
        for disk in row["disks"]:
            if disk["format"] != "qcow2":
                self._refuse(row, "disk %s is %s (a raw image or an iSCSI LUN); %s"
                             % (disk["name"], disk["format"], NO_EXTERNAL))
            if disk["status"] != "ok":
                self._refuse(row, "disk %s is %s" % (disk["name"], disk["status"]))
        plan.row, plan.running, plan.memory = row, running, memory
        plan.disks = [_disk_entry(d) for d in row["disks"]]
        if running:
            plan.host, plan.hosts = _running_host(cur, row), None
            where = "on %s, with its memory" % row["host"]
        else:
            plan.hosts = _where_stopped(cur, row, row["disks"])
            plan.host = plan.hosts[0]
            where = "of its disks on %s" % plan.host["name"]
        plan.actions = ["take snapshot %s %s" % (spec.name, where)]
        config = row["running_config"] if running and row["running_config"] else _vm.current_definition(row)
        values = {"vm_id": row["id"], "name": spec.name, "description": spec.description or "",
                  "with_memory": memory, "vm_status": row["status"] if running else "Down", "disks": plan.disks,
                  "config": config, "host_name": plan.host["name"], "kind": "internal", "state": "locked"}
        if self.check_mode:
            predicted = dict(values, id=None, vm=row["name"], created_at=None, state="ok")
            plan.outcome = Outcome(True, {}, {"name": spec.name}, view(predicted), plan.actions)
            return
        plan.snap = snapshot_rows.insert(cur, values)
        self._reserve(cur, plan, row, plan.snap, "take snapshot %s of VM %s" % (spec.name, row["name"]))
        _jobs.note(cur, plan.job["id"], {"host": plan.host["name"], "running": running})

    def act(self, plan):
        xml = virt_snapshot.creation_xml(self.spec.name, self.spec.description, [d["target"] for d in plan.disks],
                                         plan.memory)
        if plan.running:
            return self._on_hosts(plan, lambda conn, host: self._running(
                conn, plan, lambda dom: virt_snapshot.take(dom, xml)), "take snapshot '%s'" % self.spec.name)
        return self._on_hosts(plan, lambda conn, host: self._stopped(
            conn, host, plan, plan.row["disks"], lambda dom: virt_snapshot.take(dom, xml)),
            "take snapshot '%s'" % self.spec.name)

    def undo(self, plan, error):
        """A snapshot that was made after all (its answer lost) is deleted from the images again."""
        xml = _redefinable(plan.row, plan.host, self.spec.name, plan.disks, plan.memory, plan.running)

        def clean(conn):
            if plan.running:
                dom = virt_vm.find(conn, plan.row["name"])
                if dom is not None and virt_snapshot.exists(dom, self.spec.name):
                    virt_snapshot.delete(dom, self.spec.name, xml)
            else:
                with virt_snapshot.defined(conn, plan.row["name"],
                                           _stopped_domain_xml(plan.row, plan.host, plan.row["disks"])) as dom:
                    virt_snapshot.delete(dom, self.spec.name, xml)
        _hosts.hypervisors(self.engine).call(plan.host, "clean up snapshot '%s'" % self.spec.name, clean,
                                             self.spec.timeout)

    def release(self, cur, plan, error):
        self._release(cur, plan)
        snapshot_rows.delete(cur, plan.snap["id"])

    def confirm(self, cur, plan, result):
        if self.check_mode:
            return plan.outcome
        self._release(cur, plan)
        snap = snapshot_rows.update(cur, plan.snap["id"], {"state": "ok", "xml": result, "job_id": None,
                                                           "host_name": plan.host["name"]})
        self._event(cur, plan, "SNAPSHOT_CREATED", "Snapshot %s of VM %s was taken (%s)"
                    % (self.spec.name, plan.row["name"], "with its memory" if plan.memory else "its disks"))
        return Outcome(True, {}, {"name": self.spec.name}, view(dict(snap, vm=plan.row["name"])), plan.actions)


def _redefinable(row, host, name, disks, memory, running):
    """A description libvirt takes back (``REDEFINE``) for a snapshot whose own was never read: what a
    clean-up of a snapshot whose answer was lost needs to delete it."""
    root = ET.fromstring(virt_snapshot.creation_xml(name, None, [d["target"] for d in disks], memory))
    ET.SubElement(root, "state").text = "running" if running else "shutoff"
    domain = ET.fromstring(_domain.guest_xml(_vm.guest_spec(row, host)) if running
                           else _stopped_domain_xml(row, host, row["disks"]))
    root.append(domain)
    return ET.tostring(root, encoding="unicode")


class SnapshotRevert(_SnapshotOperation):
    """Bring the VM back to the snapshot: a running VM to the instant of a snapshot with memory (QEMU is
    restarted from it), a stopped VM's disks to what they were. What was written since is discarded."""

    action = "snapshot.revert"
    verb = "revert to"
    irreversible = True  # what the disks held since is gone: a failure to record it leaves it to the recovery

    def reserve(self, cur, plan):
        row = self._vm(cur, plan)
        snap = self._snapshot(cur, row)
        if snap is None:
            raise NotFoundError("snapshot", self.spec.name, "revert VM '%s' to it" % row["name"])
        if snap["state"] != "ok":
            self._refuse(row, "it is %s (delete it)" % snap["state"])
        running = row["status"] in RUNNING
        if row["status"] not in RUNNING + ("Down",):
            self._refuse(row, "the VM is %s; a VM is reverted while it runs (Up) or is stopped (Down)"
                         % row["status"])
        if running and not snap["with_memory"]:
            self._refuse(row, "it holds the disks only, and the VM runs: libvirt 9.0 would have to power the guest "
                         "off; stop the VM first")
        then = {d["disk_id"] for d in snap["disks"]}
        now = _vm_disks_now(row)
        if then != now:
            added = sorted(d["name"] for d in row["disks"] if str(d["disk_id"]) not in then)
            gone = sorted(d["name"] for d in snap["disks"] if d["disk_id"] not in now)
            self._refuse(row, "the VM's disks changed since it was taken (%s); attach or detach them back first"
                         % "; ".join(p for p in ("attached since: " + ", ".join(added) if added else "",
                                                 "detached since: " + ", ".join(gone) if gone else "") if p))
        self._steady_disks(row, row["disks"])
        plan.row, plan.snap, plan.running = row, snap, running
        if running:
            plan.host, plan.hosts = _running_host(cur, row), None
            self._reserve_snapshot_size(cur, plan, row, snap)
            plan.actions = ["revert VM %s to snapshot %s on %s (memory and disks; the guest goes back to that "
                            "instant)" % (row["name"], snap["name"], row["host"])]
        else:
            plan.hosts = _where_stopped(cur, row, row["disks"])
            plan.host = plan.hosts[0]
            plan.actions = ["revert the disks of VM %s to snapshot %s on %s%s" % (
                row["name"], snap["name"], plan.host["name"],
                " (the VM is stopped: its memory in the snapshot is not used)" if snap["with_memory"] else "")]
        if self.check_mode:
            plan.outcome = Outcome(True, {}, {}, view(snap), plan.actions)
            return
        self._reserve(cur, plan, row, snap, "revert VM %s to snapshot %s" % (row["name"], snap["name"]))
        if plan.running:
            _jobs.note(cur, plan.job["id"], {"running": True})
            vm_rows.set_runtime(cur, row["id"], reserved_memory_mib=plan.reserved[0], reserved_vcpus=plan.reserved[1])

    def _reserve_snapshot_size(self, cur, plan, row, snap):
        """The guest comes back with the memory and vCPUs it had then: more than it holds now is reserved on its
        host first (under the cluster's lock), or the revert is refused with the host's reason."""
        config = snap["config"] or {}
        memory = max(row["reserved_memory_mib"], config.get("memory_mib") or 0)
        vcpus = max(row["reserved_vcpus"], config.get("vcpus") or 0)
        plan.reserved = (memory, vcpus)
        grow = {"memory_mib": memory - row["reserved_memory_mib"], "vcpus": vcpus - row["reserved_vcpus"]}
        if not grow["memory_mib"] and not grow["vcpus"]:
            return
        self.engine.lock(cur, LOCK_CLUSTER, row["cluster"])
        hosts = vm_rows.placement_hosts(cur, row["cluster_id"])
        entry = next((h for h in hosts if h["id"] == row["run_host_id"]), None)
        reason = _placement.growth_reason(entry["name"], dict(grow, ha=row["ha_enabled"]), hosts,
                                          **vm_rows.placement_context(cur, row["cluster_id"])) if entry else \
            "the host is gone"
        if reason:
            self._refuse(row, "the VM had %d MiB and %d vCPUs then, more than it holds on host %s now, which cannot "
                         "take it (%s)" % (config.get("memory_mib"), config.get("vcpus"), row["host"], reason))

    def act(self, plan):
        snap = plan.snap
        if plan.running:
            def revert_running(dom):
                virt_snapshot.revert(dom, snap["name"], snap["xml"])
                return virt_vm.live_view(dom.connect(), plan.row["name"])
            return self._on_hosts(plan, lambda conn, host: self._running(conn, plan, revert_running),
                                  "revert to snapshot '%s'" % snap["name"])
        xml = virt_snapshot.as_stopped(snap["xml"]) if snap["with_memory"] else snap["xml"]
        return self._on_hosts(plan, lambda conn, host: self._stopped(
            conn, host, plan, plan.row["disks"], lambda dom: virt_snapshot.revert(dom, snap["name"], xml)),
            "revert to snapshot '%s'" % snap["name"])

    def undo(self, plan, error):
        """A running VM whose revert failed may have lost its domain (QEMU is restarted from the snapshot); a
        stopped VM's domain defined for the moment must not stay."""
        plan.gone = False
        if not plan.running:
            self._no_leftover(plan)
            return
        try:
            plan.gone = _hosts.hypervisors(self.engine).call(
                plan.host, "look for VM '%s'" % plan.row["name"],
                lambda conn: virt_vm.find(conn, plan.row["name"]) is None, self.spec.timeout)
        except HypervisorError:
            plan.gone = None

    def release(self, cur, plan, error):
        snapshot_rows.update(cur, plan.snap["id"], {"job_id": None})
        gone = getattr(plan, "gone", False)
        if plan.running and gone:
            _vm.record_down(cur, plan.row, "revert to snapshot %s failed: %s"
                            % (plan.snap["name"], _operation.describe(error)))
        elif plan.running and gone is None:
            # whether QEMU still runs is unknown: its host and reservation stay, as after a start that failed
            vm_rows.set_runtime(cur, plan.row["id"], status=_vm.UNKNOWN, job_id=None,
                                status_reason="revert to snapshot %s failed (%s) and host %s could not be asked "
                                "whether it runs" % (plan.snap["name"], _operation.describe(error), plan.host["name"]))
        else:
            self._release(cur, plan)
        self._event(cur, plan, "SNAPSHOT_REVERT_FAILED", "VM %s may be partly reverted to snapshot %s (libvirt "
                    "reverts disk after disk): %s; revert again, or to another snapshot"
                    % (plan.row["name"], plan.snap["name"], _operation.describe(error)), severity="error")

    def confirm(self, cur, plan, result):
        if self.check_mode:
            return plan.outcome
        snap = snapshot_rows.update(cur, plan.snap["id"], {"job_id": None})
        if plan.running:
            # the domain is the one the snapshot was taken of: what it runs with is what it ran with then
            changes = {"job_id": None, "running_config": plan.snap["config"] or None,
                       "reserved_memory_mib": (plan.snap["config"] or {}).get("memory_mib") or plan.reserved[0],
                       "reserved_vcpus": (plan.snap["config"] or {}).get("vcpus") or plan.reserved[1]}
            if result and result.get("console") and (plan.row["console"] or {}).get("type"):
                console = dict(plan.row["console"])
                console["port"] = result["console"]["port"]
                console["url"] = "%s://%s:%d" % (console["type"], console["host"], console["port"])
                changes["console"] = console
            vm_rows.set_runtime(cur, plan.row["id"], **changes)
        else:
            self._release(cur, plan)
        self._event(cur, plan, "SNAPSHOT_REVERTED", "VM %s was reverted to snapshot %s (%s)"
                    % (plan.row["name"], plan.snap["name"], "memory and disks" if plan.running else "its disks"))
        return Outcome(True, {}, {}, view(dict(snap, vm=plan.row["name"])), plan.actions)


class SnapshotDelete(_SnapshotOperation):
    """Delete the snapshot's data from the disks' images (what the VM has now is not touched), then its row."""

    action = "snapshot.delete"
    verb = "delete"
    irreversible = True

    def reserve(self, cur, plan):
        if plan.vm_id is None and vm_rows.find(cur, self.spec.vm) is None:
            plan.outcome = Outcome(False)
            return
        row = self._vm(cur, plan)
        snap = self._snapshot(cur, row)
        if snap is None:
            plan.outcome = Outcome(False)
            return
        running = row["status"] in RUNNING
        if row["status"] not in RUNNING + ("Down",):
            self._refuse(row, "the VM is %s; a snapshot is deleted while the VM runs (Up) or is stopped (Down)"
                         % row["status"])
        then = {d["disk_id"] for d in snap["disks"]}
        # the images that hold the snapshot: the VM's disks it is of, and those detached since (they keep it)
        plan.disks = [d for d in row["disks"] if str(d["disk_id"]) in then]
        attached = {str(d["disk_id"]) for d in plan.disks}
        held = snapshot_rows.disks(cur, sorted(then - attached))
        elsewhere = ["%s (VM %s)" % (d["name"], d["vm"]) for d in held if d["vm"]]
        if elsewhere:
            self._refuse(row, "disk %s holds it too and is attached to another VM now; detach it first"
                         % ", ".join(elsewhere))
        if running and held:
            self._refuse(row, "disk %s, detached since, holds it too: QEMU deletes it only from the disks the VM "
                         "has; attach it again, or stop the VM" % ", ".join(d["name"] for d in held))
        self._steady_disks(row, plan.disks + held)
        plan.row, plan.snap, plan.running = row, snap, running
        plan.before = view(dict(snap, vm=row["name"]))
        if not plan.disks and not held:
            plan.host, plan.hosts = None, []
            plan.actions = ["forget snapshot %s (none of its disks is attached)" % snap["name"]]
        elif running:
            plan.host, plan.hosts = _running_host(cur, row), None
            plan.actions = ["delete snapshot %s on %s" % (snap["name"], row["host"])]
        else:
            # libvirt deletes it from the images of the domain the snapshot was taken of: their pools must be there
            plan.hosts = _where_stopped(cur, row, plan.disks + held)
            plan.host = plan.hosts[0]
            plan.actions = ["delete snapshot %s on %s" % (snap["name"], plan.host["name"])]
        if self.check_mode:
            plan.outcome = Outcome(True, plan.before, {}, {}, plan.actions)
            return
        self._reserve(cur, plan, row, snap, "delete snapshot %s of VM %s" % (snap["name"], row["name"]))
        snapshot_rows.update(cur, snap["id"], {"state": "locked"})

    def act(self, plan):
        snap = plan.snap
        if plan.host is None:
            return None
        xml = snap["xml"] or _redefinable(
            plan.row, plan.host, snap["name"], snap["disks"], snap["with_memory"], snap["vm_status"] in RUNNING)
        if plan.running:
            return self._on_hosts(plan, lambda conn, host: self._running(
                conn, plan, lambda dom: virt_snapshot.delete(dom, snap["name"], xml)),
                "delete snapshot '%s'" % snap["name"])
        if snap["with_memory"]:
            xml = virt_snapshot.as_stopped(xml)
        return self._on_hosts(plan, lambda conn, host: self._stopped(
            conn, host, plan, plan.disks, lambda dom: virt_snapshot.delete(dom, snap["name"], xml)),
            "delete snapshot '%s'" % snap["name"])

    def undo(self, plan, error):
        if not plan.running:
            self._no_leftover(plan)

    def release(self, cur, plan, error):
        snapshot_rows.update(cur, plan.snap["id"], {"job_id": None, "state": plan.snap["state"]})
        self._release(cur, plan)

    def confirm(self, cur, plan, result):
        snapshot_rows.delete(cur, plan.snap["id"])
        self._release(cur, plan)
        self._event(cur, plan, "SNAPSHOT_DELETED",
                    "Snapshot %s of VM %s was deleted" % (plan.snap["name"], plan.row["name"]))
        return Outcome(True, plan.before, {}, {}, plan.actions)


# -- what a run that died left -------------------------------------------------------------------

def _recovered(engine, job, finish):
    """Release the VM and the snapshot a dead run held; ``finish(cur, vm_row, snap_row)`` says what became of
    the snapshot."""
    with engine.transaction() as cur:
        _operation.lock_for(engine, cur, job)
        snap = snapshot_rows.by_id(cur, job["object_id"])
        how = "the snapshot is gone"
        if snap is not None:
            row = vm_rows.find(cur, snap["vm"])
            if row is not None and row["job_id"] == job["id"]:
                vm_rows.set_runtime(cur, row["id"], job_id=None)
            how = finish(cur, row, snap)
        _jobs.end(cur, job["id"], "aborted", {"recovered_by": _jobs.OWNER})
    return how


def _undefine_leftover(engine, job):
    """A stopped VM's domain that the dead run defined for the moment goes again."""
    with engine.transaction() as cur:
        snap = snapshot_rows.by_id(cur, job["object_id"])
        row = vm_rows.find(cur, snap["vm"]) if snap else None
        hosts = disk_rows.hosts_with_pool(cur, row["disks"][0]["storage_domain_id"]) if row and row["disks"] else []
    if row is not None and row["status"] == "Down":
        _hosts.on_hosts(engine, hosts, lambda conn, host: virt_snapshot.leftover(conn, row["name"]), 15)


def _mark_broken(what):
    """The recovery of a create or a delete: the snapshot may be partly in the images; it is kept, marked broken,
    for a delete (state absent) to remove whatever of it is there."""
    def recover(engine, job):
        _undefine_leftover(engine, job)

        def finish(cur, _row, snap):
            snapshot_rows.update(cur, snap["id"], {"state": "broken", "job_id": None})
            return "snapshot %s may be %s: marked broken (delete it)" % (snap["name"], what)
        return _recovered(engine, job, finish)
    return recover


_operation.recovery("snapshot.create")(_mark_broken("incomplete"))
_operation.recovery("snapshot.delete")(_mark_broken("partly deleted"))


@_operation.recovery("snapshot.revert")
def _recover_revert(engine, job):
    """A run died while reverting: the disks may be partly reverted. A running VM's host is asked whether QEMU,
    restarted from the snapshot, still runs: Down if not, Unknown if the host does not answer."""
    _undefine_leftover(engine, job)
    with engine.transaction() as cur:
        snap = snapshot_rows.by_id(cur, job["object_id"])
        row = vm_rows.find(cur, snap["vm"]) if snap else None
        host = host_rows.by_id(cur, row["run_host_id"]) if row and row["status"] in RUNNING else None
    running = None
    if host is not None:
        try:
            running = _hosts.hypervisors(engine).call(host, "look for VM '%s'" % row["name"],
                                                      lambda conn: virt_vm.find(conn, row["name"]) is not None)
        except HypervisorError:
            running = None

    def finish(cur, vm_row, snap):
        snapshot_rows.update(cur, snap["id"], {"job_id": None})
        how = "the VM may be partly reverted to snapshot %s: released" % snap["name"]
        if host is None or vm_row is None or vm_row["status"] not in RUNNING:
            return how
        if running is False:
            _vm.record_down(cur, vm_row, "its revert to snapshot %s was interrupted and it no longer runs"
                            % snap["name"])
            return how + "; it no longer runs: recorded Down"
        if running is None:
            vm_rows.set_runtime(cur, vm_row["id"], status=_vm.UNKNOWN, job_id=None,
                                status_reason="its revert to snapshot %s was interrupted and host %s does not "
                                "answer" % (snap["name"], host["name"]))
            return how + "; its host does not answer: recorded Unknown"
        return how + "; it runs"
    return _recovered(engine, job, finish)
