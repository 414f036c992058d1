"""Guests for lab tests: the lab guest image booted through libvirt, its serial console read back."""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET


def guest_xml(name, address, domain_type, image, cmdline="", network=None, bridge="vpguest"):
    """A 128 MiB guest of the lab image; its console goes to /var/log/libvirt/qemu/<name>.serial."""
    domain = ET.Element("domain", type=domain_type)
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", unit="MiB").text = "128"
    ET.SubElement(domain, "vcpu").text = "1"
    os_ = ET.SubElement(domain, "os")
    ET.SubElement(os_, "type", arch="x86_64").text = "hvm"
    ET.SubElement(os_, "kernel").text = image + "/vmlinuz"
    ET.SubElement(os_, "initrd").text = image + "/initrd.img"
    ET.SubElement(os_, "cmdline").text = ("console=ttyS0 panic=-1 vp.ip=%s/24 vp.name=%s %s"
                                          % (address, name, cmdline)).strip()
    # ACPI: without it the PCI bus of an i440fx machine takes no hot-plugged disks
    ET.SubElement(ET.SubElement(domain, "features"), "acpi")
    devices = ET.SubElement(domain, "devices")
    if network:
        nic = ET.SubElement(devices, "interface", type="network")
        ET.SubElement(nic, "source", network=network)
    else:
        nic = ET.SubElement(devices, "interface", type="bridge")
        ET.SubElement(nic, "source", bridge=bridge)
    ET.SubElement(nic, "model", type="virtio")
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path="/var/log/libvirt/qemu/%s.serial" % name)
    ET.SubElement(serial, "target", port="0")
    return ET.tostring(domain, encoding="unicode")


def read_console(path):
    if not os.path.exists(path):
        return ""
    with open(path, errors="replace") as handle:
        return handle.read().replace("\r", "")


def wait_for_console(path, text, timeout=90):
    """The console once ``text`` appears in it (or whatever it holds when ``timeout`` runs out)."""
    deadline = time.time() + timeout
    console = read_console(path)
    while time.time() < deadline and text not in console:
        time.sleep(0.5)
        console = read_console(path)
    return console
