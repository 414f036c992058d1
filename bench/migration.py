"""Live migration in the lab: downtime, lost pings, time and data of each policy, through vm_migrate.

    make demo                          # the lab this uses (inventories/lab, its engine on engine1)
    .venv/bin/python bench/migration.py --json [--rounds 2] [--ping-interval 0.02]

A guest of the lab image (128 MiB, on the lab-app network, unpinned) is started through the engine and
migrated between hv1 and hv2 ``rounds`` times under each policy, one migration at a time, while a pinger in
hv2's network namespace (an address of its own on the network's bridge there) pings it every
``ping-interval`` seconds. Prints one JSON object: ``results``, a list of {guest, policy, completed,
downtime_ms (libvirt's job statistics), lost_pings, ping_interval_ms, total_s, transferred_mib, error} for
each migration. The guest is idle (the lab image runs a heartbeat and nothing else); a guest that dirties
memory fast, and the evacuation of a host, are not measured here yet. The guest and the pinger's address
are removed at the end.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
POLICIES = ("legacy", "minimal_downtime", "suspend_workload", "post_copy")
GUEST = "bench-mig"
ADDRESS = "192.168.100.61"
PINGER = "192.168.100.251"
STATE_DIR = "/var/lib/virtplane-lab"


def play(tasks):
    """Run ``tasks`` on the lab's engine host; the results of the tasks by name."""
    from tests.support.playbook import run_plays

    run = run_plays([{"hosts": "engine", "gather_facts": False, "tasks": tasks}],
                    inventory=os.path.join(ROOT, "inventories", "lab"))
    found = {}
    for task in tasks:
        try:
            found[task["name"]] = run[task["name"]]
        except KeyError:
            raise SystemExit("ansible-playbook failed: %s" % run.output[-2000:])
    return found


def ns(host):
    return "vplab-%s" % host


def start_guest(image_dir):
    spec = {"name": GUEST, "cluster": "Default", "memory": "128MiB", "vcpus": 1,
            "nics": [{"name": "eth0", "network": "lab-app"}],
            "boot": {"kernel": image_dir + "/vmlinuz", "initrd": image_dir + "/initrd.img",
                     "cmdline": "console=ttyS0 panic=-1 vp.ip=%s/24 vp.name=%s" % (ADDRESS, GUEST)},
            "state": "running"}
    result = play([{"name": "start", "virtplane.kvm.vm": spec}])["start"]
    if result.get("failed"):
        raise SystemExit("the guest did not start: %s" % result.get("msg"))
    return result["vm"]["host"]


def bridge_of(network):
    result = play([{"name": "info", "virtplane.kvm.logical_network_info": {"name": [network]}}])["info"]
    return result["logical_networks"][0]["bridge"]


def pings(proc):
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=15)[0]
    found = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ping-interval", type=float, default=0.02)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    image_dir = os.path.join(STATE_DIR, "shared", "images", "lab-guest")
    bridge = bridge_of("lab-app")
    results = []
    try:
        where = start_guest(image_dir)
        subprocess.run(["ip", "-n", ns("hv2"), "addr", "replace", PINGER + "/24", "dev", bridge], check=True)
        deadline = time.monotonic() + 120
        while subprocess.run(["ip", "netns", "exec", ns("hv2"), "ping", "-c", "1", "-W", "1", ADDRESS],
                             capture_output=True, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("the guest does not answer ping")
        for policy in POLICIES:
            for _round in range(args.rounds):
                target = "hv2" if where == "hv1" else "hv1"
                pinger = subprocess.Popen(["ip", "netns", "exec", ns("hv2"), "ping", "-n", "-i",
                                           str(args.ping_interval), "-W", "1", ADDRESS],
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                time.sleep(0.5)
                began = time.monotonic()
                moved = play([{"name": "move", "ignore_errors": True, "virtplane.kvm.vm_migrate": {
                    "name": GUEST, "host": target, "policy": policy}}])["move"]
                total = time.monotonic() - began
                time.sleep(0.5)
                sent, answered = pings(pinger)
                migration = (moved.get("vm") or {}).get("migration") or {}
                completed = not moved.get("failed")
                if completed:
                    where = target
                results.append({"guest": "idle", "policy": policy, "completed": completed,
                                "downtime_ms": migration.get("downtime_ms"), "lost_pings": sent - answered,
                                "ping_interval_ms": round(args.ping_interval * 1000), "total_s": round(total, 2),
                                "migration_ms": migration.get("total_ms"),
                                "transferred_mib": migration.get("transferred_mib"),
                                "error": None if completed else moved.get("msg")})
    finally:
        subprocess.run(["ip", "-n", ns("hv2"), "addr", "del", PINGER + "/24", "dev", bridge], capture_output=True,
                       check=False)
        play([{"name": "remove", "ignore_errors": True, "virtplane.kvm.vm": {
            "name": GUEST, "state": "absent", "force": True}}])
    done = [r for r in results if r["completed"] and r["downtime_ms"] is not None]
    summary = {"results": results, "idle_downtime_ms_max": max((r["downtime_ms"] for r in done), default=None),
               "evacuation_s": None, "dirty": "not measured: the lab guest image has no memory-dirtying workload yet"}
    print(json.dumps(summary, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
