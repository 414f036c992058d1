# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disks: volumes in a storage domain, each with exactly one engine row.

Every change is an operation (``_operation``): the disk's row is reserved in a short transaction
(a new disk's row is written ``locked``, owned by a job with a heartbeat), the volume is made,
filled, grown or deleted with no database lock held — an import streams for as long as it takes
without holding up any other change in the data center — and a short transaction confirms.
A failure deletes what this run made and releases the row; a run killed half-way leaves a job
whose heartbeat stops, and whoever meets the disk after its lease rolls the creation back
(volume and row) or finishes the removal. So storage never keeps a disk the engine does not
know, and the engine never lists a disk storage does not have.
"""

from __future__ import annotations

import os
import stat
import struct

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
from ansible_collections.virtplane.kvm.plugins.module_utils._errors import (
    ConflictError,
    HypervisorError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import (
    SECTOR,
    SIZE_MAX,
    SIZE_MIN,
    parse_size,
    shown,
    validate_data_path,
    validate_name,
    validate_range,
    validate_timeout,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _disks as disk_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _events, _jobs
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _hosts as host_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _snapshots as snapshot_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _storage_domains as domain_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_DATACENTER
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _hosts, _operation
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import (
    Outcome,
    Spec,
    merge_outcomes,
    plain,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _storage

FORMATS = _choices.DISK_FORMATS
BUSES = _choices.DISK_BUSES
QCOW2_MAGIC = b"QFI\xfb"
QCOW2_HEADER_V3 = 104
QCOW2_CORRUPT = 1 << 1
QCOW2_EXTERNAL_DATA_FILE = 1 << 2
# dirty, corrupt, external data file, compression type, extended L2 entries
QCOW2_KNOWN_INCOMPATIBLE = 0b11111


def human(size):
    for unit, factor in (("TiB", 1024 ** 4), ("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return "%d %s" % (size // factor, unit)
    return "%d bytes" % size


# what a disk image can never be: the kernel's views and the devices of the engine host
_NOT_IMAGES = ("/proc/", "/sys/", "/dev/", "/run/")


def inspect_image(path):
    """(format, virtual size, file size, open file) of a local image: qcow2 by its header, anything else raw.

    Only a regular file is an image: a device (/dev/zero never ends, /dev/sda is the engine's own
    disk), a FIFO or a kernel file would be read as one otherwise. The file is opened once, here, and
    what is checked is what is streamed: swapping the path afterwards changes nothing.
    """
    real = os.path.realpath(path)
    if any((real + "/").startswith(p) for p in _NOT_IMAGES):
        raise ValidationError("source", "%s is not a regular file on the engine host, so it is no disk image"
                              % shown(path))
    try:
        descriptor = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise ValidationError("source", "cannot read %s on the engine host: %s" % (shown(path), exc.strerror))
    handle = os.fdopen(descriptor, "rb")
    try:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValidationError("source", "%s is not a regular file on the engine host, so it is no disk image"
                                  % shown(path))
        header = handle.read(QCOW2_HEADER_V3)
        handle.seek(0)
        fmt, virtual = _image_format(path, header, info.st_size)
    except (ValidationError, OSError) as exc:
        handle.close()
        if isinstance(exc, OSError):
            raise ValidationError("source", "cannot read %s on the engine host: %s" % (shown(path), exc.strerror))
        raise
    return fmt, virtual, info.st_size, handle


def _image_format(path, header, length):
    if header[:4] != QCOW2_MAGIC:
        if length < SIZE_MIN or length % SECTOR:
            raise ValidationError("source", "%s is a raw image of %d bytes; a disk is at least 1 MiB, in whole "
                                            "512-byte sectors (pad it: truncate -s)" % (shown(path), length))
        return "raw", length
    if len(header) < 32:
        raise ValidationError("source", "%s starts like a qcow2 image but its header is cut short" % shown(path))
    version, backing_offset = struct.unpack(">IQ", header[4:16])
    # a qcow2 image may name other files: a backing file, or (version 3) an external data file. Imported,
    # it would make the host's QEMU open that path; only a self-contained image is taken.
    if backing_offset:
        raise ValidationError("source", "%s is a qcow2 image with a backing file: import a self-contained image "
                                        "(qemu-img convert -O qcow2)" % shown(path))
    if version >= 3:
        if len(header) < QCOW2_HEADER_V3:
            raise ValidationError("source", "%s has a qcow2 version 3 header that is cut short" % shown(path))
        incompatible = struct.unpack(">Q", header[72:80])[0]
        if incompatible & QCOW2_EXTERNAL_DATA_FILE:
            raise ValidationError("source", "%s is a qcow2 image whose data lives in an external file: import a "
                                            "self-contained image (qemu-img convert -O qcow2)" % shown(path))
        if incompatible & QCOW2_CORRUPT:
            raise ValidationError("source", "%s is marked corrupt by QEMU: repair it first (qemu-img check -r all)"
                                  % shown(path))
        if incompatible & ~QCOW2_KNOWN_INCOMPATIBLE:
            raise ValidationError("source", "%s uses qcow2 features this engine does not know" % shown(path))
    return "qcow2", struct.unpack(">Q", header[24:32])[0]


def clone_source(disk, thin):
    """What ``clone_of`` of a DiskSpec takes to make a clone of ``disk`` (a row of a VM's or a template's disks):
    thin (a qcow2 volume on it as its backing file) or a full copy."""
    return {"thin": thin, "disk_id": disk["disk_id"], "name": disk["name"], "storage_domain": disk["storage_domain"],
            "storage_domain_id": disk["storage_domain_id"], "volume": disk["volume"], "format": disk["format"],
            "size_bytes": disk["size_bytes"]}


def find(cur, name, domain):
    """The disk ``name`` of storage domain row ``domain`` (domain names repeat across data centers)."""
    return disk_rows.find(cur, name, domain["id"])


def view(row):
    return {"id": plain(row["id"]), "name": row["name"], "storage_domain": row["storage_domain"],
            "datacenter": row["datacenter"], "format": row["format"], "size_bytes": row["size_bytes"],
            "size": human(row["size_bytes"]), "preallocated": row["preallocated"],
            "volume_name": row["volume_name"], "lun": row["lun"], "status": row["status"], "vm": row["vm"],
            "bus": row["bus"], "target": row["target"], "bootable": row["bootable"], "template": row.get("template")}


# SCSI LUN numbers in the flat addressing iSCSI targets use
LUN_RANGE = (0, 16383)


class DiskSpec(Spec):
    FIELDS = ("name", "storage_domain", "datacenter", "size", "format", "source", "lun", "vm", "bus", "bootable",
              "state", "timeout", "wait_timeout", "clone_of", "template_id")

    def validate(self):
        validate_common(self.name, self.storage_domain, self.datacenter, 15 if self.timeout is None else self.timeout)
        self.timeout = 15 if self.timeout is None else self.timeout
        self.wait_timeout = 60 if self.wait_timeout is None else self.wait_timeout
        validate_range("wait_timeout", self.wait_timeout, 0, 3600, "seconds")
        self.state = self.state or "present"
        self.bus = self.bus or "virtio"
        self.bootable = bool(self.bootable)
        validate_range("lun", self.lun, *LUN_RANGE)
        self.size_bytes = parse_size("size", self.size) if self.size is not None else None
        if self.format is not None and self.format not in FORMATS:
            raise ValidationError("format", "%s is not one of %s" % (shown(self.format), ", ".join(FORMATS)))
        if self.bus not in BUSES:
            raise ValidationError("bus", "%s is not one of %s" % (shown(self.bus), ", ".join(BUSES)))
        if self.vm is not None:
            validate_name("vm", self.vm)
        self.image = None
        if self.source is not None:
            validate_data_path("source", self.source)
            self.image = inspect_image(self.source)
            if not 0 < self.image[1] <= SIZE_MAX:
                raise ValidationError("source", "%s says its virtual size is %d bytes, which no disk can have"
                                      % (shown(self.source), self.image[1]))


def validate_common(name, domain_name, datacenter, timeout):
    """What every disk operation is given: refused before anything is read or changed."""
    validate_name("name", name)
    validate_name("storage_domain", domain_name)
    if datacenter is not None:
        validate_name("datacenter", datacenter)
    validate_timeout("timeout", timeout)


def _domain(cur, domain_name, datacenter, action):
    row = domain_rows.find(cur, domain_name, datacenter)
    if row is None:
        raise NotFoundError("storage domain", domain_name, action)
    return row


def _created_format(spec, domain, fmt=None):
    """The format a new disk gets: as asked, as the image is, or what its domain takes."""
    fmt = fmt or spec.format or (spec.image[0] if spec.image else None)
    return fmt or ("raw" if domain["type"] in ("logical", "rbd") else "qcow2")


def _running(vm_row):
    return vm_row["status"] in ("Up", "Paused") and vm_row["run_host_id"] is not None


def ensure(engine, spec, check_mode=False):
    if spec.state == "absent":
        return _operation.run(engine, DiskRemove(engine, check_mode, spec))
    if spec.state == "detached":
        return _operation.run(engine, DiskDetach(engine, check_mode, spec))
    if spec.vm is not None:  # refused before the disk is created, not after
        planned, target = check_attachable(engine, spec.storage_domain, spec.vm, spec.datacenter, spec.bus)
    outcome = _operation.run(engine, DiskPresent(engine, check_mode, spec))
    if spec.vm is None:
        return outcome
    if check_mode and outcome.resource.get("id") is None:  # a disk that does not exist yet
        after = {"vm": spec.vm, "target": target, "bus": spec.bus}
        return merge_outcomes(outcome, Outcome(True, {"vm": None}, after, dict(outcome.resource, **after), planned))
    return merge_outcomes(outcome, _operation.run(engine, DiskAttach(engine, check_mode, spec)))


class _DiskOperation(_operation.Operation):
    """What the disk operations share: the spec, the domain, the data center's lock, one host with the pool."""

    def __init__(self, engine, check_mode, spec):
        super().__init__(engine, check_mode)
        self.spec = spec
        self.wait_timeout = spec.wait_timeout

    def _domain_and_disk(self, cur, action):
        domain = _domain(cur, self.spec.storage_domain, self.spec.datacenter, action)
        self.lock = (LOCK_DATACENTER, domain["datacenter"])
        return domain, disk_rows.find(cur, self.spec.name, domain["id"])

    def _pool_host(self, cur, domain):
        """The serving hosts that have the domain's pool active, the first that answers does the work."""
        hosts = disk_rows.hosts_with_pool(cur, domain["id"])
        if not hosts:
            raise HypervisorError("storage domain '%s' is not active on any Up host" % domain["name"])
        return hosts

    def _open_pool(self, hosts, domain_name, refresh=True, readonly=False):
        """(host, conn, pool) on the first host that answers; a read-only look rescans nothing."""
        reasons = []
        for host in hosts:
            try:
                conn = _hosts.connect(self.engine, host, self.spec.timeout, readonly)
                return host, conn, _storage.open_pool(conn, _storage.pool_name(domain_name), refresh and not readonly)
            except HypervisorError as exc:
                reasons.append("%s: %s" % (host["name"], exc))
        raise HypervisorError("no host with storage domain '%s' answers: %s" % (domain_name, "; ".join(reasons)))

    def _refresh_others(self, plan):
        """Other hosts see a new volume of a shared pool only after a refresh (one that does not answer: later)."""
        others = [h for h in plan.hosts if h["id"] != plan.host["id"]]
        pool = _storage.pool_name(plan.domain["name"])
        _hosts.on_hosts(self.engine, others, lambda conn, h: _storage.open_pool(conn, pool), self.spec.timeout)


class DiskPresent(_DiskOperation):
    """Create (or import, or take a LUN), or grow, one disk."""

    action = "disk.create"

    def prepare(self, cur):
        domain, current = self._domain_and_disk(cur, "create disk '%s'" % self.spec.name)
        return _operation.Plan(domain=domain, current=current)

    def observe(self, plan):
        """Read only: the LUNs of an iSCSI domain, or whether a volume of the new disk's name is there already
        (a volume the engine has no disk for is refused in check mode as in a real run)."""
        spec, domain, current = self.spec, plan.domain, plan.current
        if current is not None or domain["state"] != "active":
            return
        with self.engine.transaction() as cur:
            hosts = disk_rows.hosts_with_pool(cur, domain["id"])
        if not hosts:
            return  # refused in reserve, with the reason
        if domain["type"] not in _storage.CREATES_VOLUMES:
            if spec.lun is not None:
                _host, _conn, pool = self._open_pool(hosts, domain["name"], readonly=True)
                plan.luns = _storage.list_volumes(pool, refresh=False)
            return
        if spec.lun is None:
            volume = "%s.%s" % (spec.name, "img" if _created_format(spec, domain) == "raw" else "qcow2")
            _host, _conn, pool = self._open_pool(hosts, domain["name"], readonly=True)
            if _storage.find_volume(pool, volume) is not None:
                raise ConflictError(_orphan_message(spec.name, domain["name"], volume))

    def reserve(self, cur, plan):
        spec = self.spec
        domain, current = self._domain_and_disk(cur, "create disk '%s'" % spec.name)
        if (current is None) != (plan.current is None):
            raise _operation.Retry()
        plan.domain, plan.current = domain, current
        if current is not None:
            _operation.claim(cur, current, "disk '%s'" % spec.name)
            if spec.lun is not None and current["lun"] != spec.lun:
                raise ConflictError("Disk '%s' is %s; it cannot become LUN %d: remove it and take the LUN as a new "
                                    "disk" % (spec.name, "LUN %d" % current["lun"] if current["lun"] is not None
                                              else "a volume", spec.lun))
            return self._reserve_growth(cur, plan)
        if domain["state"] != "active":
            raise ConflictError("Cannot create disk '%s': storage domain '%s' is in maintenance"
                                % (spec.name, domain["name"]))
        if domain["type"] not in _storage.CREATES_VOLUMES:
            return self._reserve_lun(cur, plan)
        if spec.lun is not None:
            raise ValidationError("lun", "only an iSCSI storage domain has LUNs; '%s' is %s"
                                  % (domain["name"], domain["type"]))
        return self._reserve_creation(cur, plan)

    # -- a new volume ------------------------------------------------------------------------

    def _reserve_creation(self, cur, plan):
        spec, domain = self.spec, plan.domain
        fmt, size_bytes, image = spec.format, spec.size_bytes, spec.image
        clone = spec.clone_of
        if clone is not None:
            # a copy of another disk (a template's, or one copied into a template): thin on its volume as the
            # backing file, or a full copy; the same size
            fmt = "qcow2" if clone["thin"] else (fmt or clone["format"])
            size_bytes = max(size_bytes or 0, clone["size_bytes"])
            if clone["thin"] and str(clone["storage_domain_id"]) != str(domain["id"]):
                raise ValidationError("storage_domain", "a thin clone lives in the storage domain of the disk it "
                                                        "stands on (%s)" % clone["storage_domain"])
        if image is not None:
            detected, virtual, _length, _handle = image
            if fmt is not None and fmt != detected:
                raise ValidationError("format", "%s is a %s image, not %s: convert it first (qemu-img convert)"
                                      % (shown(spec.source), detected, fmt))
            fmt = detected
            if size_bytes is not None and size_bytes < virtual:
                raise ValidationError("size", "%s is smaller than the image's virtual size %s"
                                      % (human(size_bytes), human(virtual)))
        elif size_bytes is None:
            raise ValidationError("size", "is required to create disk '%s' (or give source to import an image)"
                                  % spec.name)
        raw_only = domain["type"] in ("logical", "rbd")  # LVM volumes and RBD images hold raw data only
        if raw_only and fmt == "qcow2":
            raise ValidationError("format", "a %s storage domain holds raw volumes only; use format raw"
                                  % domain["type"])
        fmt = _created_format(spec, domain, fmt)
        plan.kind = "create"
        plan.fmt, plan.preallocated = fmt, fmt == "raw" and image is None
        plan.volume = "%s.%s" % (spec.name, "qcow2" if fmt == "qcow2" else "img")
        plan.created_size = image[1] if image else size_bytes
        plan.final_size = max(size_bytes or 0, plan.created_size)
        plan.hosts = self._pool_host(cur, domain)
        if clone is not None:
            # the host that copies needs both pools
            sources = {h["id"] for h in disk_rows.hosts_with_pool(cur, clone["storage_domain_id"])}
            plan.hosts = [h for h in plan.hosts if h["id"] in sources]
            if not plan.hosts:
                raise HypervisorError("no Up host has both storage domain '%s' and '%s' active"
                                      % (domain["name"], clone["storage_domain"]))
        plan.after = {"name": spec.name, "storage_domain": domain["name"], "format": fmt,
                      "size_bytes": plan.final_size, "size": human(plan.final_size), "preallocated": plan.preallocated}
        plan.before = {}
        plan.actions = ["import %s (%s)" % (spec.source, human(image[2])) if image
                        else "%s clone of disk %s" % ("thin" if clone["thin"] else "full", clone["name"]) if clone
                        else "create %s %s" % (fmt, human(plan.final_size))]
        if self.check_mode:
            return
        what = "import disk '%s' from %s" % (spec.name, spec.source) if image else "create disk '%s'" % spec.name
        self.start_job(cur, plan, "disk", None, spec.name, what, datacenter=domain["datacenter"],
                       saved={"volume": plan.volume, "storage_domain_id": str(domain["id"])})
        values = {"storage_domain_id": domain["id"], "name": spec.name, "format": fmt,
                  "preallocated": plan.preallocated, "size_bytes": plan.final_size, "volume_name": plan.volume,
                  "status": "locked", "job_id": plan.job["id"], "template_id": spec.template_id}
        if clone is not None and clone["thin"]:
            values["backing_disk_id"] = clone["disk_id"]  # the disk it stands on cannot go while it is there
        plan.row = disk_rows.insert(cur, values)
        _jobs.attach_object(cur, plan.job["id"], plan.row["id"])
        if image:
            _events.record(cur, "DISK_IMPORT_STARTED", "Disk %s is being imported from %s (%s) into storage domain %s"
                           % (spec.name, spec.source, human(image[2]), domain["name"]), object_type="disk",
                           object_id=plan.row["id"], object_name=spec.name, datacenter=domain["datacenter"],
                           job_id=plan.job["id"])

    def _create(self, plan):
        spec = self.spec
        plan.host, conn, pool = self._open_pool(plan.hosts, plan.domain["name"])
        if _storage.find_volume(pool, plan.volume) is not None:
            raise ConflictError(_orphan_message(spec.name, plan.domain["name"], plan.volume))
        # from here a volume of that name is this run's: a recovery may delete it
        with self.engine.transaction() as cur:
            _jobs.note(cur, plan.job["id"], {"volume_claimed": True})
        clone = spec.clone_of
        if clone is not None:
            source = _storage.open_pool(conn, _storage.pool_name(clone["storage_domain"]))
            plan.made = _storage.clone_volume(pool, plan.volume, source.storageVolLookupByName(clone["volume"]),
                                              clone["thin"], plan.created_size, plan.fmt)
        else:
            plan.made = _storage.create_volume(pool, plan.volume, plan.created_size, plan.fmt, plan.preallocated)
        plan.progress = []
        if spec.image is not None:
            _storage.upload_volume(conn, plan.made, spec.image[3], spec.image[2], self._reporter(plan))
        if plan.final_size > plan.created_size:
            _storage.resize_volume(plan.made, plan.final_size)
        return _storage.volume_view(plan.made)

    def _reporter(self, plan):
        """Progress every 10 %: in the job (others see it while the import runs) and in the result."""
        def report(sent, total):
            percent = sent * 100 // total
            if plan.progress and percent < plan.progress[-1]["percent"] + 10 and sent != total:
                return
            plan.progress.append({"percent": percent, "bytes": sent})
            with self.engine.transaction() as cur:
                _jobs.set_progress(cur, plan.job["id"], percent)
        return report

    # -- a LUN of an iSCSI domain -----------------------------------------------------------

    def _reserve_lun(self, cur, plan):
        spec, domain = self.spec, plan.domain
        if spec.lun is None:
            raise ValidationError("lun", "storage domain '%s' is %s: its LUNs are fixed by the target and libvirt "
                                         "cannot create volumes on it; give the number of an existing LUN to use it "
                                         "as disk '%s'" % (domain["name"], domain["type"], spec.name))
        other = disk_rows.with_lun(cur, domain["id"], spec.lun)
        if other:
            raise ConflictError("Cannot use LUN %d of storage domain '%s' as disk '%s': it is disk '%s' already"
                                % (spec.lun, domain["name"], spec.name, other))
        luns = getattr(plan, "luns", None) or {}
        found = {vol: info for vol, info in luns.items() if vol.rsplit(":", 1)[-1] == str(spec.lun)}
        if not found:
            raise ValidationError("lun", "storage domain '%s' has no LUN %d (it offers: %s)"
                                  % (domain["name"], spec.lun, ", ".join(sorted(luns)) or "none"))
        volume, info = sorted(found.items())[0]
        if not info["capacity_bytes"]:
            raise ValidationError("lun", "LUN %d of storage domain '%s' has no capacity: it is the target's "
                                         "controller, not a disk" % (spec.lun, domain["name"]))
        plan.kind = "lun"
        plan.before = {}
        plan.after = {"name": spec.name, "storage_domain": domain["name"], "format": "raw",
                      "size_bytes": info["capacity_bytes"], "size": human(info["capacity_bytes"]), "lun": spec.lun}
        plan.actions = ["use LUN %d" % spec.lun]
        if self.check_mode:
            plan.resource = dict(plan.after, id=None, volume_name=volume, status="ok")
            return
        # nothing to do on a host: the LUN is there; the row is the whole change
        row = disk_rows.insert(cur, {"storage_domain_id": domain["id"], "name": spec.name, "format": "raw",
                                     "preallocated": True, "size_bytes": info["capacity_bytes"],
                                     "volume_name": volume, "lun": spec.lun})
        _events.record(cur, "DISK_CREATED", "LUN %d of storage domain %s is disk %s" % (spec.lun, domain["name"],
                                                                                        spec.name),
                       object_type="disk", object_id=row["id"], object_name=spec.name, datacenter=domain["datacenter"])
        plan.outcome = Outcome(True, {}, plan.after, view(disk_rows.by_id(cur, row["id"])), plan.actions)

    # -- growth ------------------------------------------------------------------------------

    def _reserve_growth(self, cur, plan):
        spec, current = self.spec, plan.current
        name = spec.name
        if spec.format is not None and spec.format != current["format"]:
            raise ConflictError("Cannot change format of disk '%s' from %s to %s: convert it into a new disk"
                                % (name, current["format"], spec.format))
        size_bytes = spec.size_bytes
        if size_bytes is None or size_bytes == current["size_bytes"]:
            plan.outcome = Outcome(False, resource=view(current))
            return
        if size_bytes < current["size_bytes"]:
            raise ValidationError("size", "disk '%s' is %s: shrinking it to %s would destroy data; disks only grow"
                                  % (name, human(current["size_bytes"]), human(size_bytes)))
        if current["lun"] is not None:
            raise ConflictError("Cannot resize disk '%s': it is LUN %d of an iSCSI target, sized by the target"
                                % (name, current["lun"]))
        held = snapshot_rows.holding_disk(cur, current["id"])
        if held:
            raise ConflictError("Cannot grow disk '%s': snapshots %s hold its data, and a revert would shrink it "
                                "back; delete them first" % (name, ", ".join(held)))
        plan.kind = "grow"
        self.irreversible = True  # a volume does not shrink back: its recovery takes the size it has
        plan.size_bytes = size_bytes
        plan.before = {"size_bytes": current["size_bytes"], "size": human(current["size_bytes"])}
        plan.after = {"size_bytes": size_bytes, "size": human(size_bytes)}
        plan.guest = disk_rows.running_guest(cur, current["id"])
        if plan.guest is not None and plan.guest["status"] not in ("Up", "Paused"):
            # its image is open on a host, and no running guest there can be asked to take the new size
            raise ConflictError("Cannot grow disk '%s': VM %s is %s; grow it when the VM is Up or Down"
                                % (name, plan.guest["vm"], plan.guest["status"]))
        plan.actions = ["grow %s -> %s" % (plan.before["size"], plan.after["size"])]
        if plan.guest is not None:
            plan.actions.append("grow in the running guest of VM %s" % plan.guest["vm"])
        plan.hosts = self._pool_host(cur, plan.domain) if plan.guest is None else []
        if self.check_mode:
            return
        self.start_job(cur, plan, "disk", current["id"], name, "grow disk '%s' to %s" % (name, plan.after["size"]),
                       datacenter=plan.domain["datacenter"], saved={"size_bytes": size_bytes})
        disk_rows.update(cur, current["id"], {"status": "locked", "job_id": plan.job["id"]})

    def _grow(self, plan):
        name, guest = self.spec.name, plan.guest
        if guest is not None:
            # QEMU holds the image of a running guest: it grows it, and the guest sees the new size at once
            host = {"name": guest["host"], "libvirt_uri": guest["libvirt_uri"]}
            _hosts.hypervisors(self.engine).call(host, "grow disk '%s' of running VM '%s'" % (name, guest["vm"]),
                                                 lambda conn: _storage.grow_live_disk(conn, guest["vm"],
                                                                                      guest["target"],
                                                                                      plan.size_bytes),
                                                 self.spec.timeout)
            return None
        plan.host, _conn, pool = self._open_pool(plan.hosts, plan.domain["name"])
        vol = _storage.find_volume(pool, plan.current["volume_name"])
        if vol is None:
            raise HypervisorError("Cannot resize disk '%s': its volume %s is missing from storage domain '%s' on "
                                  "host %s" % (name, plan.current["volume_name"], plan.domain["name"],
                                               plan.host["name"]))
        _storage.resize_volume(vol, plan.size_bytes)
        return None

    # -- the steps ---------------------------------------------------------------------------

    def act(self, plan):
        if self.check_mode:
            return None
        if plan.kind == "create":
            return self._create(plan)
        return self._grow(plan)

    def undo(self, plan, error):
        made = getattr(plan, "made", None)
        plan.left_behind = False
        if made is not None:
            try:
                _storage.delete_volume(made)
            except HypervisorError:
                plan.left_behind = True

    def release(self, cur, plan, error):
        if plan.kind != "create":
            disk_rows.update(cur, plan.current["id"], {"status": "ok", "job_id": None})
        elif getattr(plan, "left_behind", False):
            # a volume that could not be deleted keeps its row, marked illegal: removing the disk deletes both
            disk_rows.update(cur, plan.row["id"], {"status": "illegal", "job_id": None})
            _events.record(cur, "DISK_CREATE_FAILED", "Disk %s could not be created (%s) and its volume could not be "
                           "deleted: the disk is illegal until it is removed"
                           % (self.spec.name, _operation.describe(error)),
                           severity="error", object_type="disk", object_id=plan.row["id"], object_name=self.spec.name,
                           datacenter=plan.domain["datacenter"], job_id=plan.job["id"])
        else:
            disk_rows.delete(cur, plan.row["id"])

    def confirm(self, cur, plan, result):
        volume_view = result
        spec, domain = self.spec, plan.domain
        if self.check_mode:
            if plan.kind == "create":
                resource = dict(plan.after, id=None, volume_name=plan.volume, status="ok")
            elif plan.kind == "lun":
                resource = plan.resource
            else:
                resource = dict(view(plan.current), **plan.after)
            return Outcome(True, plan.before, plan.after, resource, plan.actions)
        if plan.kind == "create":
            disk_rows.update(cur, plan.row["id"], {"status": "ok", "job_id": None})
            _events.record(cur, "DISK_CREATED", "Disk %s (%s, %s) was %s in storage domain %s on host %s"
                           % (spec.name, plan.fmt, human(plan.final_size), "imported from %s" % spec.source
                              if spec.image else "created", domain["name"], plan.host["name"]), object_type="disk",
                           object_id=plan.row["id"], object_name=spec.name, datacenter=domain["datacenter"],
                           details={"volume": volume_view, "progress": plan.progress}, job_id=plan.job["id"])
            resource = view(disk_rows.by_id(cur, plan.row["id"]))
            resource["path"] = volume_view["path"]
            resource["allocation_bytes"] = volume_view["allocation_bytes"]
            return Outcome(True, {}, plan.after, resource,
                           plan.actions + ["progress %d%%" % p["percent"] for p in plan.progress])
        disk_rows.update(cur, plan.current["id"], {"size_bytes": plan.size_bytes, "status": "ok", "job_id": None})
        _events.record(cur, "DISK_RESIZED", "Disk %s grew from %s to %s" % (spec.name, plan.before["size"],
                                                                            plan.after["size"]),
                       object_type="disk", object_id=plan.current["id"], object_name=spec.name,
                       datacenter=domain["datacenter"], details={"before": plan.before, "after": plan.after},
                       job_id=plan.job["id"])
        return Outcome(True, plan.before, plan.after, view(disk_rows.by_id(cur, plan.current["id"])), plan.actions)

    def after_confirm(self, plan):
        if plan.kind == "create" and not self.check_mode:
            self._refresh_others(plan)


def _orphan_message(name, domain, volume):
    return ("Cannot create disk '%s': storage domain '%s' already holds a volume %s that the engine has no disk for; "
            "it is neither adopted nor overwritten" % (name, domain, volume))


@_operation.recovery("disk.create")
def _recover_create(engine, job):
    """A creation or import that died: its volume (made or half filled) and its row go together.

    A growth that died is finished instead: the engine takes the size the volume has.
    """
    with engine.transaction() as cur:
        row = disk_rows.by_id(cur, job["object_id"]) if job["object_id"] else None
        hosts = disk_rows.hosts_with_pool(cur, row["storage_domain_id"]) if row else []
    if row is None:
        with engine.transaction() as cur:
            _jobs.end(cur, job["id"], "aborted", {"recovered_by": _jobs.OWNER})
        return "nothing was left"
    if row["storage_domain"] is None:
        raise HypervisorError("Cannot recover disk '%s': its storage domain is gone" % row["name"])
    growing = "size_bytes" in (job["plan"] or {})
    if not growing and not (job["plan"] or {}).get("volume_claimed"):
        # it died before it made a volume: a volume of that name, if any, is not its to delete
        with engine.transaction() as cur:
            _operation.lock_for(engine, cur, job)
            disk_rows.delete(cur, row["id"])
            _jobs.end(cur, job["id"], "aborted", {"recovered_by": _jobs.OWNER})
        return "the creation of disk %s was rolled back: it had made no volume yet" % row["name"]
    pool_name = _storage.pool_name(row["storage_domain"])
    if not hosts:
        raise HypervisorError("Cannot recover disk '%s' after a run that died: no host has storage domain '%s' active"
                              % (row["name"], row["storage_domain"]))
    outcomes = _hosts.on_hosts(engine, hosts[:1], lambda conn, h: _rollback_volume(conn, pool_name, row, growing))
    result, reason = outcomes[hosts[0]["name"]]
    if reason is not None:
        raise HypervisorError("Cannot recover disk '%s' after a run that died: %s" % (row["name"], reason))
    with engine.transaction() as cur:
        _operation.lock_for(engine, cur, job)
        if growing:
            disk_rows.update(cur, row["id"], {"size_bytes": result or row["size_bytes"], "status": "ok",
                                              "job_id": None})
            how = "disk %s is %s, as its volume is" % (row["name"], human(result or row["size_bytes"]))
        else:
            disk_rows.delete(cur, row["id"])
            how = "the creation of disk %s was rolled back: %s" % (row["name"], result)
        _jobs.end(cur, job["id"], "aborted", {"recovered_by": _jobs.OWNER})
    return how


def _rollback_volume(conn, pool_name, row, growing):
    pool = _storage.open_pool(conn, pool_name)
    vol = _storage.find_volume(pool, row["volume_name"])
    if growing:
        return _storage.volume_view(vol)["capacity_bytes"] if vol is not None else None
    if vol is None:
        return "its volume was never made"
    _storage.delete_volume(vol)
    return "volume %s deleted" % row["volume_name"]


class DiskRemove(_DiskOperation):
    action = "disk.remove"
    irreversible = True  # a deleted volume is gone: its recovery finishes the removal

    def prepare(self, cur):
        domain, current = self._domain_and_disk(cur, "remove disk '%s'" % self.spec.name)
        return _operation.Plan(domain=domain, current=current)

    def reserve(self, cur, plan):
        spec = self.spec
        domain, current = self._domain_and_disk(cur, "remove disk '%s'" % spec.name)
        if current is None:
            plan.outcome = Outcome(False)
            return
        if plan.current is None or plan.current["id"] != current["id"]:
            raise _operation.Retry()
        _operation.claim(cur, current, "disk '%s'" % spec.name)
        if current["vm"]:
            raise ConflictError("Cannot remove disk '%s': it is attached to VM %s; detach it first"
                                % (spec.name, current["vm"]))
        if current["template"] and spec.template_id is None:
            raise ConflictError("Cannot remove disk '%s': it is a disk of template %s; remove the template"
                                % (spec.name, current["template"]))
        clones = disk_rows.clones_of(cur, current["id"])
        if clones:
            raise ConflictError("Cannot remove disk '%s': disks %s stand on it (thin clones); remove them first"
                                % (spec.name, ", ".join(clones)))
        held = snapshot_rows.holding_disk(cur, current["id"])
        if held:
            raise ConflictError("Cannot remove disk '%s': snapshots %s hold its data; delete them first"
                                % (spec.name, ", ".join(held)))
        plan.domain, plan.current = domain, current
        plan.before = view(current)
        plan.actions = ["remove"] if current["lun"] is not None else ["delete volume %s" % current["volume_name"]]
        plan.hosts = self._pool_host(cur, domain) if current["lun"] is None else []
        if not self.check_mode:
            self.start_job(cur, plan, "disk", current["id"], spec.name, "remove disk '%s'" % spec.name,
                           datacenter=domain["datacenter"])
            disk_rows.update(cur, current["id"], {"status": "locked", "job_id": plan.job["id"]})

    def act(self, plan):
        if self.check_mode or plan.current["lun"] is not None:
            return None
        _host, _conn, pool = self._open_pool(plan.hosts, plan.domain["name"])
        vol = _storage.find_volume(pool, plan.current["volume_name"])
        if vol is not None:
            _storage.delete_volume(vol)
        return None

    def release(self, cur, plan, error):
        disk_rows.update(cur, plan.current["id"], {"status": "ok", "job_id": None})

    def confirm(self, cur, plan, _result):
        if not self.check_mode:
            disk_rows.delete(cur, plan.current["id"])
            _events.record(cur, "DISK_REMOVED", "Disk %s was removed from storage domain %s"
                           % (self.spec.name, plan.domain["name"]), object_type="disk", object_id=plan.current["id"],
                           object_name=self.spec.name, datacenter=plan.domain["datacenter"], job_id=plan.job["id"])
        return Outcome(True, plan.before, {}, None, plan.actions)


@_operation.recovery("disk.remove")
def _recover_remove(engine, job):
    """A removal that died is finished: the volume (if it is still there) and the row go."""
    with engine.transaction() as cur:
        row = disk_rows.by_id(cur, job["object_id"]) if job["object_id"] else None
        hosts = disk_rows.hosts_with_pool(cur, row["storage_domain_id"]) if row else []
    if row is not None and row["lun"] is None:
        pool_name = _storage.pool_name(row["storage_domain"])
        outcomes = _hosts.on_hosts(engine, hosts[:1], lambda conn, h: _rollback_volume(conn, pool_name, row, False))
        reasons = [reason for _result, reason in outcomes.values() if reason] or ([] if outcomes else ["no host"])
        if reasons:
            raise HypervisorError("Cannot finish removing disk '%s': %s" % (row["name"], "; ".join(reasons)))
    with engine.transaction() as cur:
        if row is not None:
            disk_rows.delete(cur, row["id"])
        _jobs.end(cur, job["id"], "aborted", {"recovered_by": _jobs.OWNER})
    return "the removal of disk %s was finished" % (row["name"] if row else job["object_name"])


_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd"}


def _next_target(cur, vm_id, bus):
    used = disk_rows.targets_of_vm(cur, vm_id)
    for letter in "abcdefghijklmnopqrstuvwxyz":
        target = _PREFIX[bus] + letter
        if target not in used:
            return target
    raise ConflictError("the VM has no free %s disk slot left" % bus)


def _attachable_vm(cur, domain, vm, action):
    """The VM row, if a disk of ``domain`` can go on it: it exists and its cluster uses the domain."""
    vm_row = disk_rows.vm_for_disks(cur, vm, lock=True)
    if vm_row is None:
        raise NotFoundError("VM", vm, action)
    if not disk_rows.domain_serves_cluster(cur, domain["id"], vm_row["cluster_id"]):
        raise ValidationError("vm", "VM '%s' is in cluster %s, which does not use storage domain '%s'"
                              % (vm, vm_row["cluster"], domain["name"]))
    return _steady(cur, vm_row, action)


# what a VM may be while a disk is attached or detached: Down (recorded only) or running (plugged live)
_STEADY = ("Down", "Up", "Paused")


def _steady(cur, vm_row, action):
    """Refuse to change a VM's disks while another run works on the VM, or while it is between states: a
    start builds its domain from the disks it read, a suspended VM resumes with the disks it had."""
    _operation.claim(cur, vm_row, "VM '%s'" % vm_row["name"])
    if vm_row["status"] not in _STEADY:
        raise ConflictError("Cannot %s: VM '%s' is %s; %s" % (
            action, vm_row["name"], vm_row["status"],
            "resume or stop it first" if vm_row["status"] == "Suspended" else "wait for it to be Up or Down"))
    return vm_row


def check_attachable(engine, domain_name, vm, datacenter=None, bus="virtio"):
    """Refuse an attachment before the disk is even created (bad input changes nothing)."""
    validate_name("storage_domain", domain_name)
    validate_name("vm", vm)
    if bus not in BUSES:
        raise ValidationError("bus", "%s is not one of %s" % (shown(bus), ", ".join(BUSES)))
    with engine.transaction() as cur:
        domain = _domain(cur, domain_name, datacenter, "attach a disk to VM '%s'" % vm)
        vm_row = _attachable_vm(cur, domain, vm, "attach a disk to VM '%s'" % vm)
        target = _next_target(cur, vm_row["id"], bus)
    return ["attach as %s" % target] + (["plug into the running guest"] if _running(vm_row) else []), target


class _Plug(_DiskOperation):
    """Attach or detach: the record, and the guest when the VM runs (live only: the engine owns the definition)."""

    attach = True

    def prepare(self, cur):
        domain, current = self._domain_and_disk(cur, self._action_text())
        return _operation.Plan(domain=domain, current=current)

    def _action_text(self):
        if self.attach:
            return "attach disk '%s' to VM '%s'" % (self.spec.name, self.spec.vm)
        return "detach disk '%s'" % self.spec.name

    def act(self, plan):
        if self.check_mode or plan.vm_row is None or not _running(plan.vm_row):
            return None
        with self.engine.transaction() as cur:
            host = host_rows.by_id(cur, plan.vm_row["run_host_id"])
        disk = plan.current
        device = _storage.disk_device_xml(_storage.pool_name(disk["storage_domain"]), disk["volume_name"],
                                          disk["format"], plan.target, plan.bus)
        verb = "plug disk '%s' into" % disk["name"] if self.attach else "unplug disk '%s' from" % disk["name"]

        def change(conn):
            _storage.change_live_disk(conn, plan.vm_row["name"], device, self.attach)
            if not self.attach:  # the disk is free only once the guest has let go of it
                _storage.wait_disk_gone(conn, plan.vm_row["name"], plan.target, self.spec.timeout)
        _hosts.hypervisors(self.engine).call(host, "%s running VM '%s'" % (verb, plan.vm_row["name"]), change,
                                             self.spec.timeout)
        plan.changed_on = host["name"]
        return host["name"]

    def undo(self, plan, error):
        """The guest is put back as the engine recorded it: what was plugged is unplugged, and the other way."""
        if getattr(plan, "changed_on", None) is None:
            return
        self.attach = not self.attach
        try:
            self.act(plan)
        finally:
            self.attach = not self.attach

    def release(self, cur, plan, error):
        disk_rows.update(cur, plan.current["id"], {"job_id": None})

    def _reserve_job(self, cur, plan):
        self.start_job(cur, plan, "disk", plan.current["id"], self.spec.name, self._action_text(),
                       datacenter=plan.domain["datacenter"])
        disk_rows.update(cur, plan.current["id"], {"job_id": plan.job["id"]})


class DiskAttach(_Plug):
    action = "disk.attach"

    def reserve(self, cur, plan):
        spec = self.spec
        domain, current = self._domain_and_disk(cur, self._action_text())
        if current is None:
            raise NotFoundError("disk", spec.name, self._action_text())
        _operation.claim(cur, current, "disk '%s'" % spec.name)
        vm_row = _attachable_vm(cur, domain, spec.vm, self._action_text())
        plan.domain, plan.current, plan.vm_row = domain, current, vm_row
        if current["vm"] == spec.vm:
            if current["bus"] != spec.bus or current["bootable"] != spec.bootable:
                now = current["bus"] + (", bootable" if current["bootable"] else "")
                raise ConflictError("Cannot change bus or bootable of disk '%s' on VM '%s' in place (now %s): "
                                    "detach it and attach it again" % (spec.name, spec.vm, now))
            plan.outcome = Outcome(False, resource=view(current))
            return
        if current["vm"]:
            raise ConflictError("Cannot %s: it is attached to VM %s; detach it first"
                                % (self._action_text(), current["vm"]))
        if current["template"]:
            raise ConflictError("Cannot %s: it is a disk of template %s (a VM made from the template gets a "
                                "clone of it)" % (self._action_text(), current["template"]))
        if current["status"] != "ok":
            raise ConflictError("Cannot %s: the disk is %s" % (self._action_text(), current["status"]))
        plan.target, plan.bus = _next_target(cur, vm_row["id"], spec.bus), spec.bus
        plan.before, plan.after = {"vm": None}, {"vm": spec.vm, "target": plan.target, "bus": spec.bus}
        plan.actions = ["attach as %s" % plan.target] + (["plug into the running guest"] if _running(vm_row) else [])
        if not self.check_mode:
            self._reserve_job(cur, plan)

    def confirm(self, cur, plan, result):
        host = result
        spec = self.spec
        if self.check_mode:
            return Outcome(True, plan.before, plan.after, dict(view(plan.current), **plan.after), plan.actions)
        disk_rows.attach(cur, plan.vm_row["id"], plan.current["id"], spec.bus, plan.target, spec.bootable)
        disk_rows.update(cur, plan.current["id"], {"job_id": None})
        _events.record(cur, "DISK_ATTACHED", "Disk %s was attached to VM %s as %s%s"
                       % (spec.name, spec.vm, plan.target, " (live on host %s)" % host if host else ""),
                       object_type="disk", object_id=plan.current["id"], object_name=spec.name, vm=spec.vm,
                       job_id=plan.job["id"])
        return Outcome(True, plan.before, plan.after, view(disk_rows.by_id(cur, plan.current["id"])), plan.actions)


class DiskDetach(_Plug):
    action = "disk.detach"
    attach = False

    def reserve(self, cur, plan):
        spec = self.spec
        domain, current = self._domain_and_disk(cur, self._action_text())
        if current is None:
            raise NotFoundError("disk", spec.name, self._action_text())
        _operation.claim(cur, current, "disk '%s'" % spec.name)
        plan.domain, plan.current = domain, current
        if not current["vm"]:
            plan.outcome = Outcome(False, resource=view(current))
            return
        vm_row = _steady(cur, disk_rows.vm_for_disks(cur, current["vm"], lock=True),
                         "detach disk '%s'" % spec.name)
        plan.vm_row, plan.target, plan.bus = vm_row, current["target"], current["bus"]
        plan.before = {"vm": current["vm"], "target": current["target"]}
        plan.after = {"vm": None, "target": None}
        plan.actions = ["detach from %s" % current["vm"]] + (["unplug from the running guest"]
                                                             if _running(vm_row) else [])
        if not self.check_mode:
            self._reserve_job(cur, plan)

    def confirm(self, cur, plan, result):
        host = result
        spec, current = self.spec, plan.current
        if self.check_mode:
            return Outcome(True, plan.before, plan.after, dict(view(current), vm=None, target=None, bus=None),
                           plan.actions)
        disk_rows.detach(cur, current["id"])
        disk_rows.update(cur, current["id"], {"job_id": None})
        _events.record(cur, "DISK_DETACHED", "Disk %s was detached from VM %s%s"
                       % (spec.name, current["vm"], " (live on host %s)" % host if host else ""), object_type="disk",
                       object_id=current["id"], object_name=spec.name, vm=current["vm"], job_id=plan.job["id"])
        return Outcome(True, plan.before, plan.after, view(disk_rows.by_id(cur, current["id"])), plan.actions)


for _plug in ("disk.attach", "disk.detach"):
    # a plug that died changed nothing in the engine: the disk is released as recorded
    _operation.release_only(_plug, lambda cur, disk_id: disk_rows.update(cur, disk_id, {"job_id": None}),
                            "released as the engine recorded it; a running guest may differ until its VM is checked")


def disk_info(engine, names=None, domain_name=None):
    for disk_name in names or []:
        validate_name("name", disk_name)
    if domain_name is not None:
        validate_name("storage_domain", domain_name)
    with engine.transaction() as cur:
        rows = [r for r in disk_rows.listed(cur, domain_name) if not names or r["name"] in names]
    missing = sorted(set(names or []) - {r["name"] for r in rows})
    if missing:
        raise NotFoundError("disk", ", ".join(missing))
    return [view(r) for r in rows]
