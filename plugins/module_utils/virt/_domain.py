# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Guest domain XML from a typed spec, through ElementTree: never string formatting.

The one builder of guest definitions: the VM service builds on it, and the lab tests and the
benchmarks use it for their guests, so what they measure is what the engine starts.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ansible_collections.virtplane.kvm.plugins.module_utils._choices import CPU_MODES
from ansible_collections.virtplane.kvm.plugins.module_utils.virt._client import libvirt, translated

DOMAIN_TYPES = ("kvm", "qemu", "test")
INTERFACE_TYPES = ("network", "bridge", "user")
GRAPHICS_TYPES = ("vnc", "spice")
# the virtio-serial port of a VM's interactive console (virtplane.kvm.console; the lab image runs a shell on it)
CONSOLE_CHANNEL = "org.virtplane.console"


class GuestSpec:
    """What a guest is: identity, CPU and memory, how it boots, its NICs, its disks, its CD-ROMs (``path``
    of an image on the host, or ``pool`` and ``volume``; ``bus`` and ``target`` default to the machine's
    own controller) and its serial console."""

    def __init__(self, name, domain_type="qemu", memory_mib=128, vcpus=1, machine=None, kernel=None, initrd=None,
                 cmdline=None, interfaces=(), disks=(), serial_path=None, acpi=True, uuid=None, cdroms=(),
                 max_memory_mib=None, max_vcpus=None, topology=None, graphics=None, boot_devices=(),
                 description=None, cpu_model=None):
        if domain_type not in DOMAIN_TYPES:
            raise ValueError("domain type %r is not one of %s" % (domain_type, ", ".join(DOMAIN_TYPES)))
        for interface in interfaces:
            if interface.get("type") not in INTERFACE_TYPES:
                raise ValueError("interface type %r is not one of %s"
                                 % (interface.get("type"), ", ".join(INTERFACE_TYPES)))
        self.name = name
        self.domain_type = domain_type
        # a named model (the guest gets exactly it, or does not start), a CPU mode, or None: the hypervisor's default
        self.cpu_model = cpu_model
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
        # the balloon: the guest has memory_mib of max_memory_mib (the most it may be given while it runs)
        self.max_memory_mib = int(max_memory_mib or memory_mib)
        # vCPU hot-plug: vcpus online of max_vcpus; topology (sockets, cores, threads) covers max_vcpus
        self.max_vcpus = int(max_vcpus or vcpus)
        if self.max_memory_mib < self.memory_mib or self.max_vcpus < self.vcpus:
            raise ValueError("memory and vCPUs must be within their maximum")
        self.topology = tuple(topology) if topology else None
        if self.topology and self.topology[0] * self.topology[1] * self.topology[2] != self.max_vcpus:
            raise ValueError("sockets x cores x threads must be the maximum number of vCPUs")
        self.graphics = dict(graphics) if graphics else None
        if self.graphics and self.graphics.get("type") not in GRAPHICS_TYPES:
            raise ValueError("graphics type %r is not one of %s"
                             % (self.graphics.get("type"), ", ".join(GRAPHICS_TYPES)))
        self.boot_devices = list(boot_devices)
        self.description = description


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
    if spec.description:
        _sub(domain, "description", spec.description)
    _sub(domain, "memory", spec.max_memory_mib, unit="MiB")
    _sub(domain, "currentMemory", spec.memory_mib, unit="MiB")
    _sub(domain, "vcpu", spec.max_vcpus, current=spec.vcpus if spec.vcpus != spec.max_vcpus else None)
    os_ = _sub(domain, "os")
    _sub(os_, "type", "hvm", arch="x86_64", machine=spec.machine)
    if not spec.kernel:
        for device in spec.boot_devices:
            _sub(os_, "boot", dev=device)
    if spec.kernel:
        _sub(os_, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_, "initrd", spec.initrd)
        if spec.cmdline:
            _sub(os_, "cmdline", spec.cmdline)
    if spec.acpi:
        # without ACPI, the PCI bus of an i440fx machine takes no hot-plugged disks
        _sub(_sub(domain, "features"), "acpi")
    if spec.topology or spec.cpu_model:
        cpu = _sub(domain, "cpu")
        if spec.cpu_model in CPU_MODES:
            cpu.set("mode", spec.cpu_model)
        elif spec.cpu_model:
            cpu.attrib.update(mode="custom", match="exact", check="partial")
            _sub(cpu, "model", spec.cpu_model, fallback="forbid")
        if spec.topology:
            _sub(cpu, "topology", sockets=spec.topology[0], cores=spec.topology[1], threads=spec.topology[2])
    # a guest that powers off or crashes ends its transient domain: the engine records it Down
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")
    devices = _sub(domain, "devices")
    for disk in spec.disks:
        element = _sub(devices, "disk", type="volume", device="disk")
        _sub(element, "driver", name="qemu", type=disk.get("format", "qcow2"))
        _sub(element, "source", pool=disk["pool"], volume=disk["volume"])
        _sub(element, "target", dev=disk["target"], bus=disk.get("bus", "virtio"))
        if disk.get("boot_order"):
            _sub(element, "boot", order=disk["boot_order"])
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
        devices.append(interface_element(interface))
    if spec.serial_path:
        serial = _sub(devices, "serial", type="file")
        _sub(serial, "source", path=spec.serial_path)
        _sub(serial, "target", port=0)
        # the interactive console: a virtio-serial port on a unix socket libvirt names, which virDomainOpenChannel
        # reaches (a pty needs /dev/ptmx in QEMU's namespace); the serial port stays the log
        channel = _sub(devices, "channel", type="unix")
        _sub(channel, "source", mode="bind")
        _sub(channel, "target", type="virtio", name=CONSOLE_CHANNEL)
    if spec.graphics:
        graphics = spec.graphics
        element = _sub(devices, "graphics", type=graphics["type"], autoport="yes",
                       passwd=graphics.get("password") or None)
        _sub(element, "listen", type="address", address=graphics.get("listen") or "127.0.0.1")
    return ET.tostring(domain, encoding="unicode")


def interface_element(interface):
    """One guest NIC (``type``, ``source``, ``mac``, ``model``), for the definition and for hot-plug alike."""
    nic = ET.Element("interface", type=interface["type"])
    if interface["type"] == "network":
        _sub(nic, "source", network=interface["source"])
    elif interface["type"] == "bridge":
        _sub(nic, "source", bridge=interface["source"])
    if interface.get("mac"):
        _sub(nic, "mac", address=interface["mac"])
    _sub(nic, "model", type=interface.get("model", "virtio"))
    return nic


def interface_xml(interface):
    return ET.tostring(interface_element(interface), encoding="unicode")


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
