# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disks: volumes in a storage domain, each with exactly one engine row.

A disk is created inside the engine transaction that inserts its row: if the volume cannot be
made (or filled by an import), the volume is deleted and the row rolled back; if the row cannot
be committed, the volume is deleted. So storage never holds a disk the engine does not know,
and the engine never lists a disk storage does not have.
"""

from __future__ import annotations

import os
import stat
import struct

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import (
    ConflictError,
    HypervisorError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import (
    SIZE_MAX,
    parse_size,
    shown,
    validate_name,
    validate_path,
    validate_range,
    validate_timeout,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _events
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_DATACENTER, Engine
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _hosts
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _storage as _domains
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import (
    Outcome,
    plain,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _storage

FORMATS = ("qcow2", "raw")
BUSES = ("virtio", "scsi", "sata")
QCOW2_MAGIC = b"QFI\xfb"


def human(size):
    for unit, factor in (("TiB", 1024 ** 4), ("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return "%d %s" % (size // factor, unit)
    return "%d bytes" % size


# what a disk image can never be: the kernel's views and the devices of the engine host
_NOT_IMAGES = ("/proc/", "/sys/", "/dev/", "/run/")


def inspect_image(path):
    """(format, virtual size, file size) of a local image: qcow2 by its header, anything else raw.

    Only a regular file is an image: a device (/dev/zero never ends, /dev/sda is the engine's own
    disk), a FIFO or a kernel file would be read as one otherwise.
    """
    real = os.path.realpath(path)
    try:
        info = os.stat(real)
    except OSError as exc:
        raise ValidationError("source", "cannot read %s on the engine host: %s" % (shown(path), exc.strerror))
    if not stat.S_ISREG(info.st_mode) or any((real + "/").startswith(p) for p in _NOT_IMAGES):
        raise ValidationError("source", "%s is not a regular file on the engine host, so it is no disk image"
                              % shown(path))
    try:
        with open(real, "rb") as handle:
            header = handle.read(32)
    except OSError as exc:
        raise ValidationError("source", "cannot read %s on the engine host: %s" % (shown(path), exc.strerror))
    length = info.st_size
    if header[:4] == QCOW2_MAGIC and len(header) >= 32:
        return "qcow2", struct.unpack(">Q", header[24:32])[0], length
    return "raw", length, length


_SELECT = ("SELECT k.*, s.name AS storage_domain, s.type AS domain_type, s.params AS domain_params,"
           " s.state AS domain_state, s.host_id AS domain_host_id, d.name AS datacenter,"
           " v.name AS vm, vd.bus, vd.target, vd.bootable"
           " FROM disk k JOIN storage_domain s ON s.id = k.storage_domain_id"
           " JOIN datacenter d ON d.id = s.datacenter_id"
           " LEFT JOIN vm_disk vd ON vd.disk_id = k.id LEFT JOIN vm v ON v.id = vd.vm_id")


def find(cur, name, domain):
    """The disk ``name`` of storage domain row ``domain`` (domain names repeat across data centers)."""
    cur.execute(_SELECT + " WHERE k.name = %s AND k.storage_domain_id = %s", (name, domain["id"]))
    return cur.fetchone()


def view(row):
    return {"id": plain(row["id"]), "name": row["name"], "storage_domain": row["storage_domain"],
            "datacenter": row["datacenter"], "format": row["format"], "size_bytes": row["size_bytes"],
            "size": human(row["size_bytes"]), "preallocated": row["preallocated"],
            "volume_name": row["volume_name"], "lun": row["lun"], "status": row["status"], "vm": row["vm"],
            "bus": row["bus"], "target": row["target"], "bootable": row["bootable"]}


def _domain(cur, domain_name, datacenter, action):
    row = _domains.find(cur, domain_name, datacenter)
    if row is None:
        raise NotFoundError("storage domain", domain_name, action)
    return row


def _hosts_with_pool(cur, domain_id):
    cur.execute("SELECT h.* FROM storage_domain_host sh JOIN host h ON h.id = sh.host_id"
                " WHERE sh.storage_domain_id = %s AND sh.active AND h.status IN ('Up', 'NonOperational')"
                " ORDER BY h.name", (domain_id,))
    return cur.fetchall()


class _HostSession:
    """The first host that has the domain's pool active, through the run's connection to it."""

    def __init__(self, engine, cur, domain, timeout):
        self.engine = engine
        self.hosts = _hosts_with_pool(cur, domain["id"])
        if not self.hosts:
            raise HypervisorError("storage domain '%s' is not active on any Up host" % domain["name"])
        reasons = []
        for host in self.hosts:
            try:
                self.conn = _hosts.connect(engine, host, timeout)
            except HypervisorError as exc:
                reasons.append("%s: %s" % (host["name"], exc))
                continue
            self.host = host
            self.pool = _storage.open_pool(self.conn, _storage.pool_name(domain["name"]))
            return
        raise HypervisorError("no host with storage domain '%s' answers: %s" % (domain["name"], "; ".join(reasons)))

    def close(self):
        """Nothing to do: the connection belongs to the run and ends with it."""

    def refresh_others(self, domain_name, timeout):
        """Other hosts see a new volume of a shared pool only after a refresh."""
        others = [h for h in self.hosts if h["id"] != self.host["id"]]
        # a host that does not answer now is refreshed by its next check
        _hosts.on_hosts(self.engine, others, lambda conn, h: _storage.open_pool(conn, _storage.pool_name(domain_name)),
                        timeout)


# SCSI LUN numbers in the flat addressing iSCSI targets use
LUN_RANGE = (0, 16383)


def validate_common(name, domain_name, datacenter, timeout):
    """What every disk operation is given: refused before anything is read or changed."""
    validate_name("name", name)
    validate_name("storage_domain", domain_name)
    if datacenter is not None:
        validate_name("datacenter", datacenter)
    validate_timeout("timeout", timeout)


def ensure_present(engine, name, domain_name, datacenter=None, size=None, fmt=None, source=None, lun=None,
                   timeout=15, check_mode=False, progress=None):
    validate_common(name, domain_name, datacenter, timeout)
    validate_range("lun", lun, *LUN_RANGE)
    size_bytes = parse_size("size", size) if size is not None else None
    if fmt is not None and fmt not in FORMATS:
        raise ValidationError("format", "'%s' is not one of %s" % (fmt, ", ".join(FORMATS)))
    image = None
    if source is not None:
        validate_path("source", source)
        image = inspect_image(source)
    with engine.transaction() as cur:
        domain = _domain(cur, domain_name, datacenter, "create disk '%s'" % name)
        current = find(cur, name, domain)
    if current is not None and lun is not None and current["lun"] != lun:
        raise ConflictError("Disk '%s' is %s; it cannot become LUN %d: remove it and take the LUN as a new disk"
                            % (name, "LUN %d" % current["lun"] if current["lun"] is not None else "a volume", lun))
    if current is not None:
        return _update(engine, current, domain, size_bytes, fmt, timeout, check_mode)
    if domain["state"] != "active":
        raise ConflictError("Cannot create disk '%s': storage domain '%s' is in maintenance" % (name, domain_name))
    if domain["type"] not in _storage.CREATES_VOLUMES:
        if lun is None:
            raise ValidationError("lun", "storage domain '%s' is %s: its LUNs are fixed by the target and libvirt "
                                         "cannot create volumes on it; give the number of an existing LUN to use it "
                                         "as disk '%s'" % (domain_name, domain["type"], name))
        return _adopt_lun(engine, name, domain, lun, timeout, check_mode)
    if lun is not None:
        raise ValidationError("lun", "only an iSCSI storage domain has LUNs; '%s' is %s"
                              % (domain_name, domain["type"]))
    if image is not None:
        detected, virtual, _length = image
        if not 0 < virtual <= SIZE_MAX:
            raise ValidationError("source", "%s says its virtual size is %d bytes, which no disk can have"
                                  % (shown(source), virtual))
        if fmt is not None and fmt != detected:
            raise ValidationError("format", "'%s' is a %s image, not %s: convert it first (qemu-img convert)"
                                  % (source, detected, fmt))
        fmt = detected
        if size_bytes is not None and size_bytes < virtual:
            raise ValidationError("size", "%s is smaller than the image's virtual size %s"
                                  % (human(size_bytes), human(virtual)))
    elif size_bytes is None:
        raise ValidationError("size", "is required to create disk '%s' (or give source to import an image)" % name)
    raw_only = domain["type"] in ("logical", "rbd")  # LVM volumes and RBD images hold raw data only
    if raw_only and fmt == "qcow2":
        raise ValidationError("format", "a %s storage domain holds raw volumes only; use format raw" % domain["type"])
    fmt = fmt or ("raw" if raw_only else "qcow2")
    preallocated = fmt == "raw" and image is None
    volume = "%s.%s" % (name, "qcow2" if fmt == "qcow2" else "img")
    created_size = image[1] if image else size_bytes
    final_size = max(size_bytes or 0, created_size)
    after = {"name": name, "storage_domain": domain_name, "format": fmt, "size_bytes": final_size,
             "size": human(final_size), "preallocated": preallocated}
    actions = ["import %s (%s)" % (source, human(image[2])) if image else "create %s %s" % (fmt, human(final_size))]
    if check_mode:
        return Outcome(True, {}, after, dict(after, id=None, volume_name=volume, status="ok"), actions)
    return _create(engine, name, domain, volume, fmt, preallocated, created_size, final_size, source, image,
                   timeout, progress, after, actions)


def _create(engine, name, domain, volume, fmt, preallocated, created_size, final_size, source, image, timeout,
            progress, after, actions):
    made = None
    session = None
    progress_points = []
    try:
        with engine.transaction() as cur:
            Engine.lock(cur, LOCK_DATACENTER, domain["datacenter"])
            session = _HostSession(engine, cur, domain, timeout)
            if _storage.find_volume(session.pool, volume) is not None:
                raise ConflictError("Cannot create disk '%s': storage domain '%s' already holds a volume %s that the "
                                    "engine has no disk for; it is neither adopted nor overwritten"
                                    % (name, domain["name"], volume))
            cur.execute("INSERT INTO disk (storage_domain_id, name, format, preallocated, size_bytes, volume_name,"
                        " status) VALUES (%s, %s, %s, %s, %s, %s, 'locked') RETURNING id",
                        (domain["id"], name, fmt, preallocated, final_size, volume))
            disk_id = cur.fetchone()["id"]
            made = _storage.create_volume(session.pool, volume, created_size, fmt, preallocated)
            if image is not None:
                def report(sent, total):
                    percent = sent * 100 // total
                    if not progress_points or percent >= progress_points[-1]["percent"] + 10 or sent == total:
                        progress_points.append({"percent": percent, "bytes": sent})
                        if progress:
                            progress(sent, total)
                _storage.upload_volume(session.conn, made, source, image[2], report)
            if final_size > created_size:
                _storage.resize_volume(made, final_size)
            view_now = _storage.volume_view(made)
            cur.execute("UPDATE disk SET status = 'ok', updated_at = now() WHERE id = %s", (disk_id,))
            _events.record(cur, "DISK_CREATED", "Disk %s (%s, %s) was %s in storage domain %s on host %s"
                           % (name, fmt, human(final_size), "imported from %s" % source if image else "created",
                              domain["name"], session.host["name"]), object_type="disk", object_id=disk_id,
                           object_name=name, datacenter=domain["datacenter"],
                           details={"volume": view_now, "progress": progress_points})
            resource = view(find(cur, name, domain))
        made = None  # committed: the volume is the engine's now
        session.refresh_others(domain["name"], timeout)
    finally:
        if made is not None:
            try:
                _storage.delete_volume(made)
            except HypervisorError:
                pass
        if session is not None:
            session.close()
    resource["path"] = view_now["path"]
    resource["allocation_bytes"] = view_now["allocation_bytes"]
    return Outcome(True, {}, after, resource, actions + (["progress %d%%" % p["percent"] for p in progress_points]))


def _adopt_lun(engine, name, domain, lun, timeout, check_mode):
    with engine.transaction() as cur:
        cur.execute("SELECT name FROM disk WHERE storage_domain_id = %s AND lun = %s", (domain["id"], lun))
        other = cur.fetchone()
        if other:
            raise ConflictError("Cannot use LUN %d of storage domain '%s' as disk '%s': it is disk '%s' already"
                                % (lun, domain["name"], name, other["name"]))
        session = _HostSession(engine, cur, domain, timeout)
        try:
            volumes = _storage.list_volumes(session.pool)
        finally:
            session.close()
    found = {vol: info for vol, info in volumes.items() if vol.rsplit(":", 1)[-1] == str(lun)}
    if not found:
        raise ValidationError("lun", "storage domain '%s' has no LUN %d (it offers: %s)"
                              % (domain["name"], lun, ", ".join(sorted(volumes)) or "none"))
    volume, info = sorted(found.items())[0]
    if not info["capacity_bytes"]:
        raise ValidationError("lun", "LUN %d of storage domain '%s' has no capacity: it is the target's controller, "
                                     "not a disk" % (lun, domain["name"]))
    after = {"name": name, "storage_domain": domain["name"], "format": "raw", "size_bytes": info["capacity_bytes"],
             "size": human(info["capacity_bytes"]), "lun": lun}
    if check_mode:
        return Outcome(True, {}, after, dict(after, id=None, volume_name=volume, status="ok"), ["use LUN %d" % lun])
    with engine.transaction() as cur:
        Engine.lock(cur, LOCK_DATACENTER, domain["datacenter"])
        cur.execute("SELECT name FROM disk WHERE storage_domain_id = %s AND lun = %s", (domain["id"], lun))
        other = cur.fetchone()
        if other:  # taken by a run that finished meanwhile
            raise ConflictError("Cannot use LUN %d of storage domain '%s' as disk '%s': it is disk '%s' already"
                                % (lun, domain["name"], name, other["name"]))
        cur.execute("INSERT INTO disk (storage_domain_id, name, format, preallocated, size_bytes, volume_name, lun)"
                    " VALUES (%s, %s, 'raw', true, %s, %s, %s) RETURNING id",
                    (domain["id"], name, info["capacity_bytes"], volume, lun))
        disk_id = cur.fetchone()["id"]
        _events.record(cur, "DISK_CREATED", "LUN %d of storage domain %s is disk %s" % (lun, domain["name"], name),
                       object_type="disk", object_id=disk_id, object_name=name, datacenter=domain["datacenter"])
        resource = view(find(cur, name, domain))
    return Outcome(True, {}, after, resource, ["use LUN %d" % lun])


def _update(engine, current, domain, size_bytes, fmt, timeout, check_mode):
    name = current["name"]
    if fmt is not None and fmt != current["format"]:
        raise ConflictError("Cannot change format of disk '%s' from %s to %s: convert it into a new disk"
                            % (name, current["format"], fmt))
    if size_bytes is None or size_bytes == current["size_bytes"]:
        return Outcome(False, resource=view(current))
    if size_bytes < current["size_bytes"]:
        raise ValidationError("size", "disk '%s' is %s: shrinking it to %s would destroy data; disks only grow"
                              % (name, human(current["size_bytes"]), human(size_bytes)))
    if current["lun"] is not None:
        raise ConflictError("Cannot resize disk '%s': it is LUN %d of an iSCSI target, sized by the target"
                            % (name, current["lun"]))
    before = {"size_bytes": current["size_bytes"], "size": human(current["size_bytes"])}
    after = {"size_bytes": size_bytes, "size": human(size_bytes)}
    actions = ["grow %s -> %s" % (before["size"], after["size"])]
    with engine.transaction() as cur:
        guest = _running_guest(cur, current["id"])
    if guest is not None:
        actions.append("grow in the running guest of VM %s" % guest["vm"])
    if check_mode:
        return Outcome(True, before, after, dict(view(current), **after), actions)
    with engine.transaction() as cur:
        Engine.lock(cur, LOCK_DATACENTER, domain["datacenter"])
        guest = _running_guest(cur, current["id"])  # again under the lock: the VM may have stopped
        session = _HostSession(engine, cur, domain, timeout)
        try:
            vol = _storage.find_volume(session.pool, current["volume_name"])
            if vol is None:
                raise HypervisorError("Cannot resize disk '%s': its volume %s is missing from storage domain '%s' "
                                      "on host %s" % (name, current["volume_name"], domain["name"],
                                                      session.host["name"]))
            cur.execute("UPDATE disk SET size_bytes = %s, updated_at = now() WHERE id = %s",
                        (size_bytes, current["id"]))
            if guest is None:
                _storage.resize_volume(vol, size_bytes)
            else:
                _grow_in_guest(engine, guest, name, size_bytes, timeout)
        finally:
            session.close()
        _events.record(cur, "DISK_RESIZED", "Disk %s grew from %s to %s" % (name, before["size"], after["size"]),
                       object_type="disk", object_id=current["id"], object_name=name,
                       datacenter=domain["datacenter"], details={"before": before, "after": after})
        resource = view(find(cur, name, domain))
    return Outcome(True, before, after, resource, actions)


def _running_guest(cur, disk_id):
    """Where the disk is in use by a running VM: its name, target and host; else None."""
    cur.execute("SELECT v.name AS vm, vd.target, h.name AS host, h.libvirt_uri FROM vm_disk vd"
                " JOIN vm v ON v.id = vd.vm_id JOIN host h ON h.id = v.run_host_id"
                " WHERE vd.disk_id = %s AND v.status IN ('Up', 'Paused')", (disk_id,))
    return cur.fetchone()


def _grow_in_guest(engine, guest, name, size_bytes, timeout):
    """QEMU holds the image of a running guest: it grows it, and the guest sees the new size at once."""
    try:
        conn = _hosts.connect(engine, {"name": guest["host"], "libvirt_uri": guest["libvirt_uri"]}, timeout)
        _storage.grow_live_disk(conn, guest["vm"], guest["target"], size_bytes)
    except HypervisorError as exc:
        raise HypervisorError("Cannot grow disk '%s' of running VM '%s' on host %s: %s"
                              % (name, guest["vm"], guest["host"], exc))


def ensure_absent(engine, name, domain_name, datacenter=None, timeout=15, check_mode=False):
    validate_common(name, domain_name, datacenter, timeout)
    with engine.transaction() as cur:
        domain = _domain(cur, domain_name, datacenter, "remove disk '%s'" % name)
        current = find(cur, name, domain)
    if current is None:
        return Outcome(False)
    if current["vm"]:
        raise ConflictError("Cannot remove disk '%s': it is attached to VM %s; detach it first" % (name, current["vm"]))
    before = view(current)
    actions = ["remove"] if current["lun"] is not None else ["delete volume %s" % current["volume_name"]]
    if check_mode:
        return Outcome(True, before, {}, None, actions)
    with engine.transaction() as cur:
        Engine.lock(cur, LOCK_DATACENTER, domain["datacenter"])
        cur.execute("DELETE FROM disk WHERE id = %s", (current["id"],))
        _events.record(cur, "DISK_REMOVED", "Disk %s was removed from storage domain %s" % (name, domain_name),
                       object_type="disk", object_id=current["id"], object_name=name, datacenter=domain["datacenter"])
        if current["lun"] is None:
            # the row goes only if the volume does: both in this transaction
            session = _HostSession(engine, cur, domain, timeout)
            try:
                vol = _storage.find_volume(session.pool, current["volume_name"])
                if vol is not None:
                    _storage.delete_volume(vol)
            finally:
                session.close()
    return Outcome(True, before, {}, None, actions)


_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd"}


def _next_target(cur, vm_id, bus):
    cur.execute("SELECT target FROM vm_disk WHERE vm_id = %s", (vm_id,))
    used = {r["target"] for r in cur.fetchall()}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        target = _PREFIX[bus] + letter
        if target not in used:
            return target
    raise ConflictError("the VM has no free %s disk slot left" % bus)


def _live(engine, cur, vm_row, disk, target, bus, attach, timeout):
    """Apply an attachment change to the running guest; None when the VM does not run."""
    if vm_row["status"] not in ("Up", "Paused") or vm_row["run_host_id"] is None:
        return None
    cur.execute("SELECT * FROM host WHERE id = %s", (vm_row["run_host_id"],))
    host = cur.fetchone()
    device = _storage.disk_device_xml(_storage.pool_name(disk["storage_domain"]), disk["volume_name"],
                                      disk["format"], target, bus)
    try:
        conn = _hosts.connect(engine, host, timeout)
        _storage.change_live_disk(conn, vm_row["name"], device, attach)
        if not attach:
            _storage.wait_disk_gone(conn, vm_row["name"], target, timeout)
    except HypervisorError as exc:
        raise HypervisorError("Cannot %s disk '%s' %s running VM '%s' on host %s: %s"
                              % ("plug" if attach else "unplug", disk["name"], "into" if attach else "from",
                                 vm_row["name"], host["name"], exc))
    return host["name"]


def _attachable_vm(cur, domain, vm, action):
    """The VM row, if a disk of ``domain`` can go on it: it exists and its cluster uses the domain."""
    cur.execute("SELECT v.*, c.name AS cluster FROM vm v JOIN cluster c ON c.id = v.cluster_id WHERE v.name = %s"
                " FOR UPDATE OF v", (vm,))
    vm_row = cur.fetchone()
    if vm_row is None:
        raise NotFoundError("VM", vm, action)
    cur.execute("SELECT 1 FROM storage_domain_cluster WHERE storage_domain_id = %s AND cluster_id = %s",
                (domain["id"], vm_row["cluster_id"]))
    if cur.fetchone() is None:
        raise ValidationError("vm", "VM '%s' is in cluster %s, which does not use storage domain '%s'"
                              % (vm, vm_row["cluster"], domain["name"]))
    return vm_row


def check_attachable(engine, domain_name, vm, datacenter=None, bus="virtio"):
    """Refuse an attachment before the disk is even created (bad input changes nothing)."""
    validate_name("storage_domain", domain_name)
    validate_name("vm", vm)
    if bus not in BUSES:
        raise ValidationError("bus", "'%s' is not one of %s" % (bus, ", ".join(BUSES)))
    with engine.transaction() as cur:
        domain = _domain(cur, domain_name, datacenter, "attach a disk to VM '%s'" % vm)
        vm_row = _attachable_vm(cur, domain, vm, "attach a disk to VM '%s'" % vm)
        target = _next_target(cur, vm_row["id"], bus)
        running = vm_row["status"] in ("Up", "Paused") and vm_row["run_host_id"] is not None
    return ["attach as %s" % target] + (["plug into the running guest"] if running else [])


def ensure_attached(engine, name, domain_name, vm, datacenter=None, bus="virtio", bootable=False, timeout=15,
                    check_mode=False):
    """Record the disk on ``vm`` and, when the VM runs, plug it into the guest now."""
    validate_common(name, domain_name, datacenter, timeout)
    validate_name("vm", vm)
    if bus not in BUSES:
        raise ValidationError("bus", "'%s' is not one of %s" % (bus, ", ".join(BUSES)))
    action = "attach disk '%s' to VM '%s'" % (name, vm)
    with engine.transaction() as cur:
        domain = _domain(cur, domain_name, datacenter, action)
        Engine.lock(cur, LOCK_DATACENTER, domain["datacenter"])
        current = find(cur, name, domain)
        if current is None:
            raise NotFoundError("disk", name, action)
        vm_row = _attachable_vm(cur, domain, vm, action)
        if current["vm"] == vm:
            if current["bus"] != bus or current["bootable"] != bootable:
                now = current["bus"] + (", bootable" if current["bootable"] else "")
                raise ConflictError("Cannot change bus or bootable of disk '%s' on VM '%s' in place (now %s): "
                                    "detach it and attach it again" % (name, vm, now))
            return Outcome(False, resource=view(current))
        if current["vm"]:
            raise ConflictError("Cannot %s: it is attached to VM %s; detach it first" % (action, current["vm"]))
        target = _next_target(cur, vm_row["id"], bus)
        before, after = {"vm": None}, {"vm": vm, "target": target, "bus": bus}
        running = vm_row["status"] in ("Up", "Paused") and vm_row["run_host_id"] is not None
        actions = ["attach as %s" % target] + (["plug into the running guest"] if running else [])
        if check_mode:
            return Outcome(True, before, after, dict(view(current), **after), actions)
        cur.execute("INSERT INTO vm_disk (vm_id, disk_id, bus, target, bootable) VALUES (%s, %s, %s, %s, %s)",
                    (vm_row["id"], current["id"], bus, target, bootable))
        # the live change last: if the guest refuses, the record rolls back with the error
        host = _live(engine, cur, vm_row, current, target, bus, True, timeout)
        _events.record(cur, "DISK_ATTACHED", "Disk %s was attached to VM %s as %s%s"
                       % (name, vm, target, " (live on host %s)" % host if host else ""), object_type="disk",
                       object_id=current["id"], object_name=name, vm=vm)
        return Outcome(True, before, after, view(find(cur, name, domain)), actions)


def ensure_detached(engine, name, domain_name, datacenter=None, timeout=15, check_mode=False):
    validate_common(name, domain_name, datacenter, timeout)
    with engine.transaction() as cur:
        domain = _domain(cur, domain_name, datacenter, "detach disk '%s'" % name)
        Engine.lock(cur, LOCK_DATACENTER, domain["datacenter"])
        current = find(cur, name, domain)
        if current is None:
            raise NotFoundError("disk", name, "detach disk '%s'" % name)
        if not current["vm"]:
            return Outcome(False, resource=view(current))
        cur.execute("SELECT * FROM vm WHERE name = %s FOR UPDATE", (current["vm"],))
        vm_row = cur.fetchone()
        running = vm_row["status"] in ("Up", "Paused") and vm_row["run_host_id"] is not None
        before, after = {"vm": current["vm"], "target": current["target"]}, {"vm": None, "target": None}
        actions = ["detach from %s" % current["vm"]] + (["unplug from the running guest"] if running else [])
        if check_mode:
            return Outcome(True, before, after, dict(view(current), vm=None, target=None, bus=None), actions)
        cur.execute("DELETE FROM vm_disk WHERE disk_id = %s", (current["id"],))
        # commits only once the guest has let go of the disk: until then it may still write to it
        host = _live(engine, cur, vm_row, current, current["target"], current["bus"], False, timeout)
        _events.record(cur, "DISK_DETACHED", "Disk %s was detached from VM %s%s"
                       % (name, current["vm"], " (live on host %s)" % host if host else ""), object_type="disk",
                       object_id=current["id"], object_name=name, vm=current["vm"])
        return Outcome(True, before, after, view(find(cur, name, domain)), actions)


def disk_info(engine, names=None, domain_name=None):
    for disk_name in names or []:
        validate_name("name", disk_name)
    if domain_name is not None:
        validate_name("storage_domain", domain_name)
    with engine.transaction() as cur:
        cur.execute(_SELECT + " WHERE (%s::text IS NULL OR s.name = %s) ORDER BY s.name, k.name",
                    (domain_name, domain_name))
        rows = [r for r in cur.fetchall() if not names or r["name"] in names]
    missing = sorted(set(names or []) - {r["name"] for r in rows})
    if missing:
        raise NotFoundError("disk", ", ".join(missing))
    return [view(r) for r in rows]
