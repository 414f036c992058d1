"""How long a lab guest takes from start to READY through a lab host's libvirt, against plain QEMU.

The reference is the same guest image, memory, CPU and NIC model started by QEMU directly on this
machine in the same run: the difference is what libvirt (and the host's configuration) adds to a
start. A slow start with a fast reference points at the host, not at the machine.

    make demo                          # the lab this reads (lab.json)
    .venv/bin/python bench/guest_start.py [--runs 3] [--host hv1]

Prints one JSON object. Neither guest has a route anywhere: the NIC is QEMU's restricted user
network on both sides, and the guest only configures an address on it.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

READY = "VIRTPLANE-GUEST-READY"
# the collection as make links it, for its one guest XML builder
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build", "collections"))


def wait_ready(path, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path, errors="replace") as handle:
                if READY in handle.read():
                    return True
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    return False


def cmdline(name):
    return "console=ttyS0 panic=-1 vp.ip=192.0.2.10/24 vp.name=%s" % name


def qemu_direct(image, timeout):
    with tempfile.TemporaryDirectory() as scratch:
        serial = os.path.join(scratch, "serial")
        argv = ["qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-cpu", "qemu64", "-m", "128",
                "-smp", "1", "-display", "none", "-nodefaults", "-no-user-config",
                "-kernel", os.path.join(image, "vmlinuz"), "-initrd", os.path.join(image, "initrd.img"),
                "-append", cmdline("bench-direct"), "-serial", "file:%s" % serial,
                "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0"]
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            ready = wait_ready(serial, timeout)
            elapsed = time.monotonic() - start
        finally:
            proc.kill()
            proc.wait()
        if not ready:
            raise SystemExit("plain QEMU: the guest was not READY within %d s" % timeout)
        return elapsed


def domain_xml(name, image, serial):
    from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _domain

    # the same guest as the direct start: 128 MiB, one vCPU, pc machine, virtio NIC on user networking
    return _domain.guest_xml(_domain.GuestSpec(
        name, domain_type="qemu", memory_mib=128, vcpus=1, machine="pc", kernel=os.path.join(image, "vmlinuz"),
        initrd=os.path.join(image, "initrd.img"), cmdline=cmdline(name), interfaces=[{"type": "user"}],
        serial_path=serial, acpi=False))


def through_libvirt(conn, host_root, image, timeout):
    import libvirt

    name = "bench-guest-start"
    inside = "/var/log/libvirt/qemu/%s.serial" % name  # the host's view; on this machine, in its root's upper layer
    outside = os.path.join(host_root, inside.lstrip("/"))
    try:
        conn.lookupByName(name).destroy()  # what an interrupted run left behind
    except libvirt.libvirtError:
        pass
    start = time.monotonic()
    dom = conn.createXML(domain_xml(name, image, inside), 0)
    try:
        ready = wait_ready(outside, timeout)
        elapsed = time.monotonic() - start
    finally:
        dom.destroy()
    if not ready:
        raise SystemExit("libvirt: the guest was not READY within %d s" % timeout)
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="/var/lib/virtplane-lab/lab.json", help="the lab's state file")
    parser.add_argument("--host", default="hv1", help="lab host whose libvirt starts the guest")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=180, help="seconds a start may take")
    args = parser.parse_args()
    try:
        with open(args.lab) as handle:
            lab = json.load(handle)
    except OSError as exc:
        raise SystemExit("no lab at %s (make demo builds it): %s" % (args.lab, exc.strerror))
    host = next((h for h in lab["hosts"] if h["name"] == args.host), None)
    if host is None:
        raise SystemExit("the lab has no host %s" % args.host)
    image = os.path.join(lab["shared_dir"], "images", "lab-guest")

    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _error: None, None)  # errors arrive as exceptions
    conn = libvirt.open("qemu+tcp://%s/system" % host["address"])
    direct, managed = [], []
    try:
        for _run in range(args.runs):  # interleaved: both see the same machine load
            direct.append(round(qemu_direct(image, args.timeout), 2))
            managed.append(round(through_libvirt(conn, host["upper"], image, args.timeout), 2))
    finally:
        conn.close()
    json.dump({"benchmark": "guest_start", "host": args.host, "runs": args.runs,
               "qemu_direct_s": direct, "libvirt_s": managed,
               "median_qemu_direct_s": statistics.median(direct), "median_libvirt_s": statistics.median(managed),
               "libvirt_overhead_s": round(statistics.median(managed) - statistics.median(direct), 2)},
              sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
