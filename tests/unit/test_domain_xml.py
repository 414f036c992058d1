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


def test_libvirt_takes_it():
    conn = libvirt.open("test:///default")
    try:
        dom = conn.createXML(_domain.guest_xml(_domain.GuestSpec("probe", domain_type="test", memory_mib=64)), 0)
        assert dom.isActive() and dom.maxMemory() == 64 * 1024
        dom.destroy()
    finally:
        conn.close()


@pytest.mark.parametrize("kwargs", [{"domain_type": "xen"}, {"interfaces": [{"type": "direct", "source": "eth0"}]}])
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
