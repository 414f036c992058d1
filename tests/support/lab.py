"""Guests for lab tests: the lab guest image booted through libvirt, its serial console read back."""

from __future__ import annotations

import os
import time

from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _domain


def guest_xml(name, address, domain_type, image, cmdline="", network=None, bridge="vpguest"):
    """A 128 MiB guest of the lab image; its console goes to /var/log/libvirt/qemu/<name>.serial."""
    interface = {"type": "network", "source": network} if network else {"type": "bridge", "source": bridge}
    spec = _domain.GuestSpec(name, domain_type=domain_type, memory_mib=128, vcpus=1, kernel=image + "/vmlinuz",
                             initrd=image + "/initrd.img",
                             cmdline=("console=ttyS0 panic=-1 vp.ip=%s/24 vp.name=%s %s" % (address, name, cmdline))
                             .strip(), interfaces=[interface],
                             serial_path="/var/log/libvirt/qemu/%s.serial" % name)
    return _domain.guest_xml(spec)


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
