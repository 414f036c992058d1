"""The one guest XML builder: what it writes is what libvirt reads back."""

import xml.etree.ElementTree as ET

import libvirt
import pytest

from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _domain


def test_kernel_boot_nics_disks_and_console():
    spec = _domain.GuestSpec("web01", domain_type="qemu", memory_mib=256, vcpus=2, machine="pc",
                             kernel="/img/vmlinuz", initrd="/img/initrd.img", cmdline="console=ttyS0 vp.ip=10.0.0.5/24",
                             interfaces=[{"type": "network", "source": "vp-app", "mac": "56:6f:00:00:00:01"},
                                         {"type": "bridge", "source": "br0", "model": "e1000"}],
                             disks=[{"pool": "vp-shared", "volume": "web01.qcow2", "target": "vda"}],
                             serial_path="/var/log/libvirt/qemu/web01.serial")
    root = ET.fromstring(_domain.guest_xml(spec))
    assert root.get("type") == "qemu" and root.findtext("name") == "web01"
    assert root.find("memory").attrib == {"unit": "MiB"} and root.findtext("memory") == "256"
    assert root.find("os/type").get("machine") == "pc" and root.findtext("os/cmdline").endswith("10.0.0.5/24")
    nics = root.findall("devices/interface")
    assert [(n.get("type"), n.find("model").get("type")) for n in nics] == [("network", "virtio"), ("bridge", "e1000")]
    assert nics[0].find("mac").get("address") == "56:6f:00:00:00:01"
    assert root.find("devices/disk/source").attrib == {"pool": "vp-shared", "volume": "web01.qcow2"}
    assert root.find("devices/serial/source").get("path") == "/var/log/libvirt/qemu/web01.serial"
    # the serial port is the log; the console to type into is a virtio-serial port on a socket libvirt names
    assert [s.get("type") for s in root.findall("devices/serial")] == ["file"]
    [channel] = root.findall("devices/channel")
    assert channel.get("type") == "unix" and channel.find("source").attrib == {"mode": "bind"}
    assert channel.find("target").attrib == {"type": "virtio", "name": "org.virtplane.console"}


def test_libvirt_takes_it():
    conn = libvirt.open("test:///default")
    try:
        dom = conn.createXML(_domain.guest_xml(_domain.GuestSpec("probe", domain_type="test", memory_mib=64,
                                                                 cdroms=[{"path": "/seeds/probe.iso"}])), 0)
        assert dom.isActive() and dom.maxMemory() == 64 * 1024
        cdrom = ET.fromstring(dom.XMLDesc()).find("devices/disk[@device='cdrom']")
        assert cdrom.find("source").get("file") == "/seeds/probe.iso" and cdrom.find("readonly") is not None
        dom.destroy()
    finally:
        conn.close()


@pytest.mark.parametrize("cpu_model, topology, expected", [
    # a named model: exactly it, or the guest does not start (no silent fallback to another model)
    ("Skylake-Client", None, {"mode": "custom", "match": "exact", "check": "partial", "model": "Skylake-Client",
                              "fallback": "forbid"}),
    ("host-model", (1, 2, 1), {"mode": "host-model", "model": None, "sockets": "1", "cores": "2"}),
    ("host-passthrough", None, {"mode": "host-passthrough", "model": None}),
    (None, (2, 1, 1), {"mode": None, "model": None, "sockets": "2", "cores": "1"}),
])
def test_the_cluster_cpu_model_and_the_topology_share_one_cpu_element(cpu_model, topology, expected):
    spec = _domain.GuestSpec("cpu01", vcpus=2, cpu_model=cpu_model, topology=topology)
    cpus = ET.fromstring(_domain.guest_xml(spec)).findall("cpu")
    assert len(cpus) == 1
    cpu = cpus[0]
    found = {"mode": cpu.get("mode"), "model": cpu.findtext("model")}
    if cpu_model not in (None, "host-model", "host-passthrough"):
        found.update(match=cpu.get("match"), check=cpu.get("check"), fallback=cpu.find("model").get("fallback"))
    if topology:
        found.update(sockets=cpu.find("topology").get("sockets"), cores=cpu.find("topology").get("cores"))
    assert found == expected


def test_no_cpu_element_without_a_model_or_topology():
    assert ET.fromstring(_domain.guest_xml(_domain.GuestSpec("cpu02"))).find("cpu") is None


@pytest.mark.parametrize(("machine", "bus", "target"),
                         [("pc", "ide", "hdc"), ("pc-q35-7.2", "sata", "sdc"), (None, "ide", "hdc")])
def test_a_cdrom_on_the_machine_s_own_controller(machine, bus, target):
    cdroms = [{"path": "/seeds/seeded.iso"}, {"pool": "vp-iso", "volume": "tools.iso", "bus": "scsi"}]
    spec = _domain.GuestSpec("seeded", machine=machine, cdroms=cdroms)
    cdroms = ET.fromstring(_domain.guest_xml(spec)).findall("devices/disk[@device='cdrom']")
    assert [c.get("type") for c in cdroms] == ["file", "volume"]
    assert cdroms[0].find("source").attrib == {"file": "/seeds/seeded.iso"}
    assert cdroms[0].find("target").attrib == {"dev": target, "bus": bus}
    assert cdroms[1].find("source").attrib == {"pool": "vp-iso", "volume": "tools.iso"}
    assert cdroms[1].find("target").attrib == {"dev": "sdd", "bus": "scsi"}
    assert all(c.find("readonly") is not None and c.find("driver").get("type") == "raw" for c in cdroms)


@pytest.mark.parametrize("kwargs", [{"domain_type": "xen"}, {"interfaces": [{"type": "direct", "source": "eth0"}]},
                                    {"cdroms": [{"pool": "vp-iso"}]}])
def test_what_it_does_not_build_is_refused(kwargs):
    with pytest.raises(ValueError):
        _domain.GuestSpec("x", **kwargs)


def test_every_domain_of_a_host_in_one_call():
    conn = libvirt.open("test:///default")
    try:
        dom = conn.createXML(_domain.guest_xml(_domain.GuestSpec("bulk", domain_type="test", memory_mib=64)), 0)
        found = _domain.domains_of_host(conn)
        assert found["bulk"]["state"] == "running" and found["bulk"]["persistent"] is False
        assert found["test"]["state"] == "running" and found["test"]["persistent"] is True  # the driver's own
        dom.destroy()
        assert "bulk" not in _domain.domains_of_host(conn)
    finally:
        conn.close()
