"""Guests for lab tests: the lab guest image booted through libvirt, its serial console read back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _domain


def guest_xml(name, address, domain_type, image, cmdline="", network=None, bridge="vpguest", seed=None):
    """A 128 MiB guest of the lab image; its console goes to /var/log/libvirt/qemu/<name>.serial; ``seed``:
    the path of a NoCloud seed ISO on the host, attached as its CD-ROM."""
    interface = {"type": "network", "source": network} if network else {"type": "bridge", "source": bridge}
    spec = _domain.GuestSpec(name, domain_type=domain_type, memory_mib=128, vcpus=1, kernel=image + "/vmlinuz",
                             initrd=image + "/initrd.img",
                             cmdline=("console=ttyS0 panic=-1 vp.ip=%s/24 vp.name=%s %s" % (address, name, cmdline))
                             .strip(), interfaces=[interface],
                             serial_path="/var/log/libvirt/qemu/%s.serial" % name,
                             cdroms=[{"path": seed}] if seed else ())
    return _domain.guest_xml(spec)


def read_console(path):
    if not os.path.exists(path):
        return ""
    with open(path, errors="replace") as handle:
        return handle.read().replace("\r", "")


# a kernel message on the console, "[    3.141592] text": the guest kernel prints them whenever it likes,
# so one may land in the middle of a line the guest's /init was writing ("heartbeat 1[ 3.14] sr 0:0:0:0: ...\n2")
KERNEL_MESSAGE = re.compile(r"\[\s*\d+\.\d+\][^\n]*\n")


def heartbeats(console):
    """The heartbeat counts the guest printed on ``console`` (as read_console returns it), in order, with the
    kernel's messages taken out first so that one printed in the middle of a heartbeat line does not cut it; a
    line still being written (no newline yet) is not counted."""
    return [int(n) for n in re.findall(r"^heartbeat (\d+)\n", KERNEL_MESSAGE.sub("", console), re.MULTILINE)]


def wait_for_console(path, text, timeout=90):
    """The console once ``text`` appears in it (or whatever it holds when ``timeout`` runs out)."""
    deadline = time.time() + timeout
    console = read_console(path)
    while time.time() < deadline and text not in console:
        time.sleep(0.5)
        console = read_console(path)
    return console


SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]


def in_host(key, address, command, timeout=60, check=True):
    """``command`` (a shell line) run in a lab host over SSH, as root with the lab key."""
    proc = subprocess.run(["ssh", "-i", key, *SSH_OPTIONS, "root@" + address, command], capture_output=True,
                          text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("%s on %s: rc %d\n%s%s" % (command, address, proc.returncode, proc.stdout, proc.stderr))
    return proc


def host_file(state_dir, host, path):
    """Where a file that lab host ``host`` wrote at ``path`` is on this machine (its root's upper layer).

    For reading only: a host's files are changed from inside it (in_host), never under its mounted root.
    """
    return os.path.join(state_dir, "hosts", host, "upper", path.lstrip("/"))


def lab_state(state_dir):
    with open(os.path.join(state_dir, "lab.json")) as handle:
        return json.load(handle)
