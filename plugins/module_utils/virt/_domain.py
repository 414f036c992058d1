# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Guest domain XML from a typed spec, through ElementTree: never string formatting.

The one builder of guest definitions: the VM service builds on it, and the lab tests and the
benchmarks use it for their guests, so what they measure is what the engine starts.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ansible_collections.virtplane.kvm.plugins.module_utils.virt._client import libvirt, translated

DOMAIN_TYPES = ("kvm", "qemu", "test")
INTERFACE_TYPES = ("network", "bridge", "user")


class GuestSpec:
    """What a guest is: identity, CPU and memory, how it boots, its NICs, its disks, its CD-ROMs (``path``
    of an image on the host, or ``pool`` and ``volume``; ``bus`` and ``target`` default to the machine's
    own controller) and its serial console."""

    def __init__(self, name, domain_type="qemu", memory_mib=128, vcpus=1, machine=None, kernel=None, initrd=None,
                 cmdline=None, interfaces=(), disks=(), serial_path=None, acpi=True, uuid=None, cdroms=()):
        if domain_type not in DOMAIN_TYPES:
            raise ValueError("domain type %r is not one of %s" % (domain_type, ", ".join(DOMAIN_TYPES)))
        for interface in interfaces:
            if interface.get("type") not in INTERFACE_TYPES:
                raise ValueError("interface type %r is not one of %s"
                                 % (interface.get("type"), ", ".join(INTERFACE_TYPES)))
        self.name = name
        self.domain_type = domain_type
        self.memory_mib = int(memory_mib)
        self.vcpus = int(vcpus)
        self.machine = machine
        self.kernel, self.initrd, self.cmdline = kernel, initrd, cmdline
        self.interfaces = [dict(i) for i in interfaces]
        self.disks = [dict(d) for d in disks]
        self.cdroms = [dict(c) for c in cdroms]
        for cdrom in self.cdroms:
            if not cdrom.get("path") and not (cdrom.get("pool") and cdrom.get("volume")):
                raise ValueError("a CD-ROM needs the path of its image, or its pool and volume")
        self.serial_path = serial_path
        self.acpi = acpi
        self.uuid = uuid


def _sub(parent, tag, text=None, **attrs):
    node = ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        node.text = str(text)
    return node


def guest_xml(spec):
    """The domain XML of ``spec``, for a transient domain (``createXML``)."""
    domain = ET.Element("domain", type=spec.domain_type)
    _sub(domain, "name", spec.name)
    if spec.uuid:
        _sub(domain, "uuid", spec.uuid)
    _sub(domain, "memory", spec.memory_mib, unit="MiB")
    _sub(domain, "vcpu", spec.vcpus)
    os_ = _sub(domain, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine=spec.machine)
    if spec.kernel:
        _sub(os_, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_, "initrd", spec.initrd)
        if spec.cmdline:
            _sub(os_, "cmdline", spec.cmdline)
    if spec.acpi:
        # without ACPI, the PCI bus of an i440fx machine takes no hot-plugged disks
        _sub(_sub(domain, "features"), "acpi")
    devices = _sub(domain, "devices")
    for disk in spec.disks:
        element = _sub(devices, "disk", type="volume", device="disk")
        _sub(element, "driver", name="qemu", type=disk.get("format", "qcow2"))
        _sub(element, "source", pool=disk["pool"], volume=disk["volume"])
        _sub(element, "target", dev=disk["target"], bus=disk.get("bus", "virtio"))
    # q35 has a SATA controller, i440fx (libvirt's default machine) an IDE one
    sata = "q35" in (spec.machine or "")
    for number, cdrom in enumerate(spec.cdroms):
        bus = cdrom.get("bus") or ("sata" if sata else "ide")
        element = _sub(devices, "disk", type="file" if cdrom.get("path") else "volume", device="cdrom")
        _sub(element, "driver", name="qemu", type="raw")
        if cdrom.get("path"):
            _sub(element, "source", file=cdrom["path"])
        else:
            _sub(element, "source", pool=cdrom["pool"], volume=cdrom["volume"])
        default_target = ("sd%s" if bus in ("sata", "scsi") else "hd%s") % "cdefgh"[number]
        _sub(element, "target", dev=cdrom.get("target") or default_target, bus=bus)
        _sub(element, "readonly")
    for interface in spec.interfaces:
        nic = _sub(devices, "interface", type=interface["type"])
        if interface["type"] == "network":
            _sub(nic, "source", network=interface["source"])
        elif interface["type"] == "bridge":
            _sub(nic, "source", bridge=interface["source"])
        if interface.get("mac"):
            _sub(nic, "mac", address=interface["mac"])
        _sub(nic, "model", type=interface.get("model", "virtio"))
    if spec.serial_path:
        serial = _sub(devices, "serial", type="file")
        _sub(serial, "source", path=spec.serial_path)
        _sub(serial, "target", port=0)
    return ET.tostring(domain, encoding="unicode")


_STATES = {0: "nostate", 1: "running", 2: "blocked", 3: "paused", 4: "shutdown", 5: "shutoff", 6: "crashed",
           7: "pmsuspended"}


def domains_of_host(conn):
    """{name: {uuid, state, persistent, vcpus, memory_kib, balloon_kib, cpu_time_ns}} of every domain of a
    host, from one ``getAllDomainStats`` call: what a re-apply of many VMs reads instead of a call per VM."""
    @translated()
    def read():
        stats = libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | \
            libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_VCPU
        found = {}
        for dom, values in conn.getAllDomainStats(stats, 0):
            found[dom.name()] = {
                "uuid": dom.UUIDString(), "state": _STATES.get(values.get("state.state"), "unknown"),
                "persistent": bool(dom.isPersistent()), "vcpus": values.get("vcpu.current"),
                "balloon_kib": values.get("balloon.current"), "memory_kib": values.get("balloon.maximum"),
                "cpu_time_ns": values.get("cpu.time")}
        return found
    return read()
