"""Live migration in the lab: downtime, lost pings, time and data of each policy, and a host's evacuation.

    make demo                          # the lab this uses (inventories/lab, its engine on engine1)
    .venv/bin/python bench/migration.py --json [--rounds 2] [--ping-interval 0.02] [--dirty-mib 32]
                                               [--dirty-bandwidth 8] [--dirty-timeout 60] [--evacuate 2]

``idle``: a guest of the lab image (128 MiB, on the lab-app network, unpinned) is started through the engine
and migrated between hv1 and hv2 ``rounds`` times under each policy, one migration at a time, while a pinger
in hv2's network namespace (an address of its own on the network's bridge there) pings it every
``ping-interval`` seconds. ``dirty``: the same guest with 256 MiB that copies ``dirty-mib`` MiB of random
bytes over and over as fast as its vCPU goes (the lab image's vp.dirty=), migrated once under each policy (and
legacy with auto-converge) over a link capped at ``dirty-bandwidth`` MiB/s, each given ``dirty-timeout``
seconds. Evacuation: ``evacuate`` more guests start on hv1, which is then drained (host state maintenance)
with the demo's own VM there, unpinned for the while; ``evacuation_s`` is the drain's job from start to end.

Prints one JSON object: ``results``, a list of {guest, policy, auto_converge, completed, downtime_ms
(libvirt's job statistics), lost_pings, ping_interval_ms, total_s, migration_ms, transferred_mib, postcopy,
error} for each migration, ``evacuation_s`` and ``evacuated_vms``. Everything it started is removed at the
end, and the demo's VMs are back on their hosts, pinned as before.
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


def guest(image_dir, name, address, memory="128MiB", extra=""):
    return {"name": name, "cluster": "Default", "memory": memory, "vcpus": 1,
            "nics": [{"name": "eth0", "network": "lab-app"}],
            "boot": {"kernel": image_dir + "/vmlinuz", "initrd": image_dir + "/initrd.img",
                     "cmdline": ("console=ttyS0 panic=-1 vp.ip=%s/24 vp.name=%s %s" % (address, name, extra)).strip()},
            "state": "running"}


def start_guest(spec):
    result = play([{"name": "start", "virtplane.kvm.vm": spec}])["start"]
    if result.get("failed"):
        raise SystemExit("the guest did not start: %s" % result.get("msg"))
    return result["vm"]["host"]


def wait_for_ping(address):
    deadline = time.monotonic() + 120
    while subprocess.run(["ip", "netns", "exec", ns("hv2"), "ping", "-c", "1", "-W", "1", address],
                         capture_output=True, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit("the guest %s does not answer ping" % address)


def measure(kind, policy, target, ping_interval, auto_converge=False, bandwidth=None, timeout=None):
    """One migration of the bench guest to ``target`` while it is pinged: its result."""
    pinger = subprocess.Popen(["ip", "netns", "exec", ns("hv2"), "ping", "-n", "-i", str(ping_interval), "-W", "1",
                               ADDRESS], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.5)
    options = {"name": GUEST, "host": target, "policy": policy, "auto_converge": auto_converge}
    if bandwidth:
        options["bandwidth"] = bandwidth
    if timeout:
        options["migration_timeout"] = timeout
    began = time.monotonic()
    moved = play([{"name": "move", "ignore_errors": True, "virtplane.kvm.vm_migrate": options}])["move"]
    total = time.monotonic() - began
    time.sleep(0.5)
    sent, answered = pings(pinger)
    migration = (moved.get("vm") or {}).get("migration") or {}
    completed = not moved.get("failed")
    return {"guest": kind, "policy": policy, "auto_converge": auto_converge, "completed": completed,
            "downtime_ms": migration.get("downtime_ms"), "lost_pings": sent - answered,
            "ping_interval_ms": round(ping_interval * 1000), "total_s": round(total, 2),
            "migration_ms": migration.get("total_ms"), "transferred_mib": migration.get("transferred_mib"),
            "postcopy": migration.get("postcopy"), "error": None if completed else moved.get("msg")}


def remove(names):
    play([{"name": "remove", "ignore_errors": True, "virtplane.kvm.vm": {
        "vms": [{"name": n, "state": "absent", "force": True} for n in names]}}])


def evacuate(image_dir, count):
    """``count`` guests and the demo's VMs of hv1 drained from hv1: (seconds of the drain's job, VMs drained)."""
    names = ["bench-evac%d" % n for n in range(1, count + 1)]
    specs = [dict(guest(image_dir, n, "192.168.100.%d" % (70 + i)), host=["hv1"]) for i, n in enumerate(names)]
    demo = "{{ virtplane_vms | map('combine', {'host': []}) | list }}"
    try:
        drain = {"name": "hv1", "state": "maintenance"}
        run = play([{"name": "start", "virtplane.kvm.vm": {"vms": specs}},
                    {"name": "unpin", "virtplane.kvm.vm": {"vms": [dict(s, host=[]) for s in specs]}},
                    {"name": "demo", "virtplane.kvm.vm": {"vms": demo}},
                    {"name": "drain", "ignore_errors": True, "virtplane.kvm.host": drain},
                    {"name": "jobs", "virtplane.kvm.job_info": {"object_type": "host", "object_name": "hv1"}}])
        if run["drain"].get("failed"):
            raise SystemExit("hv1 was not drained: %s" % run["drain"]["msg"])
        job = max((j for j in run["jobs"]["jobs"] if j["action"] == "host.maintenance"),
                  key=lambda j: j["started_at"])
        seconds = _time(job["ended_at"]) - _time(job["started_at"])
        drained = len([a for a in run["drain"]["actions"] if a.startswith("migrate ")])
        return round(seconds, 2), drained
    finally:
        play([{"name": "active", "ignore_errors": True, "virtplane.kvm.host": {"name": "hv1", "state": "active"}}])
        remove(names)
        # the demo's VMs back where the demo put them, pinned there again
        names_of_demo = "{{ virtplane_vms | map(attribute='name') | list }}"
        back = play([{"name": "info", "virtplane.kvm.vm_info": {"name": names_of_demo}}])["info"]["vms"]
        pinned = "{{ virtplane_vms | items2dict(key_name='name', value_name='host') }}"
        pins = play([{"name": "pins", "ansible.builtin.debug": {"msg": pinned}}])["pins"]["msg"]
        moves = [{"name": "back %s" % vm["name"], "ignore_errors": True, "virtplane.kvm.vm_migrate": {
            "name": vm["name"], "host": pins[vm["name"]][0]}} for vm in back
            if pins.get(vm["name"]) and vm["host"] not in pins[vm["name"]]]
        play(moves + [{"name": "pin", "virtplane.kvm.vm": {"vms": "{{ virtplane_vms }}"}}])


def _time(text):
    import datetime

    return datetime.datetime.fromisoformat(text).timestamp()


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
    parser.add_argument("--dirty-mib", type=int, default=32)
    parser.add_argument("--dirty-bandwidth", type=int, default=8)
    parser.add_argument("--dirty-timeout", type=int, default=60)
    parser.add_argument("--evacuate", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    image_dir = os.path.join(STATE_DIR, "shared", "images", "lab-guest")
    bridge = bridge_of("lab-app")
    results = []
    try:
        subprocess.run(["ip", "-n", ns("hv2"), "addr", "replace", PINGER + "/24", "dev", bridge], check=True)
        where = start_guest(guest(image_dir, GUEST, ADDRESS))
        wait_for_ping(ADDRESS)
        for policy in POLICIES:
            for _round in range(args.rounds):
                result = measure("idle", policy, "hv2" if where == "hv1" else "hv1", args.ping_interval)
                results.append(result)
                if result["completed"]:
                    where = "hv2" if where == "hv1" else "hv1"
        remove([GUEST])
        where = start_guest(guest(image_dir, GUEST, ADDRESS, "256MiB", "vp.dirty=%d" % args.dirty_mib))
        wait_for_ping(ADDRESS)
        time.sleep(5)  # its random bytes made, it copies them
        for policy, auto_converge in (("legacy", False), ("legacy", True), ("post_copy", False),
                                      ("minimal_downtime", False)):
            result = measure("dirty", policy, "hv2" if where == "hv1" else "hv1", args.ping_interval, auto_converge,
                             args.dirty_bandwidth, args.dirty_timeout)
            results.append(result)
            if result["completed"]:
                where = "hv2" if where == "hv1" else "hv1"
        remove([GUEST])
        evacuation_s, evacuated = evacuate(image_dir, args.evacuate) if args.evacuate else (None, 0)
    finally:
        subprocess.run(["ip", "-n", ns("hv2"), "addr", "del", PINGER + "/24", "dev", bridge], capture_output=True,
                       check=False)
        remove([GUEST])
    done = [r for r in results if r["completed"] and r["downtime_ms"] is not None]
    idle = [r for r in done if r["guest"] == "idle"]
    summary = {"results": results, "idle_downtime_ms_max": max((r["downtime_ms"] for r in idle), default=None),
               "dirty_bandwidth_mibps": args.dirty_bandwidth, "dirty_mib": args.dirty_mib,
               "evacuation_s": evacuation_s, "evacuated_vms": evacuated}
    print(json.dumps(summary, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
