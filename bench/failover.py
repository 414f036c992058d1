"""HA failover in the lab: seconds from a host's death to each of its HA VMs answering ping on another host.

    make demo                          # the lab this uses (inventories/lab, its engine and monitor on engine1)
    .venv/bin/python bench/failover.py --json [--runs 3] [--vms 2]

``vms`` HA guests of the lab image (128 MiB, a 16 MiB disk each on the shared storage domain, on the lab-app
network) start on one lab host through the engine. Each run kills that host whole (SIGKILL to PID 1 of its PID
namespace: its QEMUs, libvirtd, sshd, everything), as a power cut would, and times until each guest answers ping
from the other host's network namespace. Meanwhile every disk image is watched: a disk opened by two processes
at once is a double start. The engine's monitor service (on engine1, as the engine role installed it) does the
rest: it sees the host silent, the lab's power controller fences it, the guests restart on the other host.
Then the dead host is booted again (the lab role), the monitor sees it Up, and the next run kills the host the
guests are on now.

The reference, measured in the same run: ``cold_start_s``, the seconds from asking the engine to start a guest
to it answering ping - what a restart costs on its own, beside which the failover's own overhead (detection,
fencing, placement) is the difference.

Prints one JSON object: ``runs``, ``median_s``, ``max_s`` (over every guest of every run), ``double_starts``,
``cold_start_s``, ``per_run`` [{killed, to, seconds: {guest: s}, fenced_by}], and the monitor's settings. The
guests are removed at the end; the demo's own VMs are started again where the demo put them.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
STATE_DIR = "/var/lib/virtplane-lab"
SHARED = os.path.join(STATE_DIR, "shared", "domains", "shared")
PINGER = "192.168.100.252"
INVENTORY = os.path.join(ROOT, "inventories", "lab")

from bench.migration import bridge_of, guest, ns, play, remove  # noqa: E402


def openers(path):
    """Processes (of every lab host: they share this machine's kernel) that hold ``path`` open; seen from here, a lab
    host's file is under its root (``<state dir>/hosts/<host>/root/<path>``)."""
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir("/proc/%s/fd" % pid):
                if os.readlink("/proc/%s/fd/%s" % (pid, fd)).endswith(path):
                    found.add(int(pid))
        except OSError:
            continue
    return found


def lab_pid(host):
    with open(os.path.join(STATE_DIR, "lab.json")) as handle:
        return next(h["pid"] for h in json.load(handle)["hosts"] if h["name"] == host)


def answers(host, address):
    return subprocess.run(["ip", "netns", "exec", ns(host), "ping", "-c", "1", "-W", "1", address],
                          capture_output=True, check=False).returncode == 0


def until_answers(host, address, timeout=180):
    deadline = time.monotonic() + timeout
    while not answers(host, address):
        if time.monotonic() > deadline:
            raise SystemExit("%s does not answer ping from %s within %d s" % (address, host, timeout))
        time.sleep(0.1)


def pinger_on(bridge, host):
    """The pinger's address on ``host``'s bridge of the network, and on no other host's (one address per segment)."""
    for other in ("hv1", "hv2"):
        if other != host:
            subprocess.run(["ip", "-n", ns(other), "addr", "del", PINGER + "/24", "dev", bridge], capture_output=True,
                           check=False)
    subprocess.run(["ip", "-n", ns(host), "addr", "replace", PINGER + "/24", "dev", bridge], check=True)


def where(names):
    vms = play([{"name": "info", "virtplane.kvm.vm_info": {"name": list(names)}}])["info"]["vms"]
    return {vm["name"]: (vm["status"], vm["host"]) for vm in vms}


def boot_lab():
    """The lab role: hosts that died are booted again from their own roots."""
    from tests.support.playbook import run_plays

    run = run_plays([{"hosts": "lab_machine", "gather_facts": False, "roles": ["virtplane.kvm.lab"]}],
                    inventory=INVENTORY)
    if run.rc != 0:
        raise SystemExit("the lab did not boot again: %s" % run.output[-2000:])


def wait_up(host, timeout=180):
    deadline = time.monotonic() + timeout
    while True:
        hosts = play([{"name": "hosts", "virtplane.kvm.host_info": {"name": [host]}}])["hosts"]["hosts"]
        if hosts and hosts[0]["status"] == "Up":
            return
        if time.monotonic() > deadline:
            raise SystemExit("host %s is not Up again within %d s: %s" % (host, timeout, hosts))
        time.sleep(2)


def one_run(names, addresses, images, source, target):
    """Kill ``source``; seconds until each guest answers ping from ``target``; double starts seen meanwhile."""
    seconds, doubles, stop = {}, [], threading.Event()

    def watch():
        while not stop.is_set():
            for name, path in images.items():
                if len(openers(path)) > 1:
                    doubles.append(name)
            time.sleep(0.2)

    def wait(name, address, killed):
        deadline = time.monotonic() + 300
        while not answers(target, address):
            if time.monotonic() > deadline:
                return
        seconds[name] = round(time.monotonic() - killed, 2)

    unseen = [n for n, path in images.items() if len(openers(path)) != 1]
    if unseen:  # the watch below would count nothing: say so rather than report no double start
        raise SystemExit("the disks of %s are not seen open by one process each before the run" % ", ".join(unseen))
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    os.kill(lab_pid(source), 9)
    killed = time.monotonic()
    time.sleep(0.5)  # the guests' last answers from the host that died are no answers from the next
    waiters = [threading.Thread(target=wait, args=(n, addresses[n], killed)) for n in names]
    for thread in waiters:
        thread.start()
    for thread in waiters:
        thread.join()
    stop.set()
    watcher.join()
    return seconds, sorted(set(doubles))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--vms", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    image_dir = os.path.join(STATE_DIR, "shared", "images", "lab-guest")
    names = ["bench-ha%d" % n for n in range(1, args.vms + 1)]
    addresses = {n: "192.168.100.%d" % (81 + i) for i, n in enumerate(names)}
    images = {n: os.path.join(SHARED, "%s-data.qcow2" % n) for n in names}
    specs = [dict(guest(image_dir, n, addresses[n]), host=["hv1"], ha={"enabled": True, "priority": 10 - i},
                  disks=[{"name": n + "-data", "storage_domain": "shared", "size": "16MiB"}])
             for i, n in enumerate(names)]
    bridge = bridge_of("lab-app")
    per_run, double_starts = [], 0
    try:
        pinger_on(bridge, "hv2")
        began = time.monotonic()
        result = play([{"name": "start", "virtplane.kvm.vm": {"vms": specs}}])["start"]
        if result.get("failed"):
            raise SystemExit("the guests did not start: %s" % result.get("msg"))
        cold = []
        for name in names:
            until_answers("hv2", addresses[name])
            cold.append(round(time.monotonic() - began, 2))
        play([{"name": "unpin", "virtplane.kvm.vm": {"vms": [dict(s, host=[]) for s in specs]}}])
        source = "hv1"
        for _run in range(args.runs):
            target = "hv2" if source == "hv1" else "hv1"
            pinger_on(bridge, target)
            seconds, doubles = one_run(names, addresses, images, source, target)
            double_starts += len(doubles)
            now = where(names)
            per_run.append({"killed": source, "to": sorted({h for _s, h in now.values()}), "seconds": seconds,
                            "double_starts": doubles})
            boot_lab()
            wait_up(source)
            source = target
    finally:
        remove(names)
        for host in ("hv1", "hv2"):
            subprocess.run(["ip", "-n", ns(host), "addr", "del", PINGER + "/24", "dev", bridge], capture_output=True,
                           check=False)
        # the demo's VMs where the demo put them (a fenced host's VMs that are not HA are Down)
        play([{"name": "demo", "ignore_errors": True, "virtplane.kvm.vm": {"vms": "{{ virtplane_vms }}"}}])
    every = [s for run in per_run for s in run["seconds"].values()]
    missing = sum(len(names) - len(run["seconds"]) for run in per_run)
    result = {"runs": len(per_run), "vms": len(names), "median_s": statistics.median(every) if every else None,
              "max_s": max(every) if every else None, "never_answered": missing, "double_starts": double_starts,
              "cold_start_s": statistics.median(cold) if cold else None, "per_run": per_run}
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
