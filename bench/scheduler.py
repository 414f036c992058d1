"""How fast the scheduler places VMs, against an exhaustive reference on the same snapshot, in the same run.

    .venv/bin/python bench/scheduler.py --hosts 10000 --json [--placements 2000] [--reference 100] [--seed 1]

A cluster of ``hosts`` hosts (three sizes, 2 % in maintenance, a few without a network, a storage domain or
a CPU feature), already running 20 VMs each (the commitments of those VMs, some of them HA, some in
affinity groups: hard and soft, VM-to-VM and VM-to-host, positive and negative), the
``evenly_distributed`` policy with the HA reservation on. Then ``placements`` VMs of mixed sizes and
needs are placed one after the other, each committed before the next (as the engine does under the
cluster's lock). Prints one JSON object:

- ``placements_per_s``, ``p99_ms``: the scheduler (``Scheduler.place`` + ``commit``), one core;
- ``reference_placements_per_s``: ``Scheduler.exhaustive`` — every host filtered and weighed one at a time,
  as oVirt does — on the same snapshots, for the first ``reference`` placements (it is slow);
- ``violations``: hard constraints broken by the placements (capacity, hard affinity, pinning): must be 0;
- ``max_score_gap_pct``: the worst distance of a chosen host's score from the exhaustive best, and
  ``mismatches``: placements where the reference found a host and the scheduler did not, or the other way.

    .venv/bin/python bench/scheduler.py --engine --json [--hosts 1000] [--placements 2000] [--workers 8]
                                        [--starts 400]

Placements through the engine instead: a PostgreSQL server of the bench's own, ``hosts`` hosts registered on
``test:///default`` (each keeps its 256 MiB), then ``workers`` processes at once, each with its own engine
connection:

- ``engine_placements_per_s``: ``placements`` VMs placed as the start path places them — one transaction
  each, as the start path's: the VM read as its start prepares, then in pipeline mode the data center's lock,
  and in one round trip the VM's row locked, the cluster's lock and what changed in the cluster's snapshot
  (kept by the connection, ``services._placing``), then the decision, the reservation written, committed —
  the start path's reserve step without its job row and the domain;
- ``engine_starts_per_s``: ``starts`` more VMs started through ``vm`` ``state: running`` (the whole path:
  the definition checked, the placement reserved with its job, the domain made on the test driver,
  confirmed Up), so the gap between the two is seen;
- ``overcommitted_hosts``: hosts whose reservations exceed what they give VMs, afterwards: must be 0.
"""

import argparse
import json
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "build", "collections"))

from ansible_collections.virtplane.kvm.plugins.module_utils.scheduler._scheduler import Scheduler  # noqa: E402

VMS_PER_HOST = 20
SIZES = [(1024, 1), (2048, 1), (2048, 2), (4096, 2), (8192, 4)]


def cluster(count, rnd):
    """Hosts, where the running VMs are, and affinity groups: a snapshot as the engine reads one."""
    hosts, locations, groups = [], {}, []
    for i in range(count):
        memory, cpus = rnd.choice([(262144, 64), (393216, 96), (524288, 128)])
        host = {"name": "hv%06d" % i, "status": "Up" if rnd.random() > 0.02 else "Maintenance",
                "memory_mib": memory, "reserved_memory_mib": 4096, "memory_overcommit_percent": 100,
                "cpu_count": cpus, "cpu_overcommit_ratio": 4, "cpu_load_percent": rnd.randint(0, 90),
                "networks": ["app", "db"] if rnd.random() > 0.03 else ["app"],
                "storage_domains": ["shared", "san"] if rnd.random() > 0.03 else ["shared"],
                "cpu_features": ["avx2", "aes"] if rnd.random() > 0.05 else ["aes"],
                "committed_memory_mib": 0, "committed_vcpus": 0, "vms": 0, "ha_memory_mib": 0, "ha_vms": 0}
        if host["status"] == "Up":
            for j in range(VMS_PER_HOST):
                memory, vcpus = rnd.choice(SIZES)
                host["committed_memory_mib"] += memory
                host["committed_vcpus"] += vcpus
                host["vms"] += 1
                if j % 5 == 0:
                    host["ha_memory_mib"] += memory
                    host["ha_vms"] += 1
                locations["run-%d-%d" % (i, j)] = host["name"]
        hosts.append(host)
    running = sorted(locations)
    for g in range(max(4, count // 50)):
        kind = g % 4
        members = rnd.sample(running, 3) + ["new-%d" % v for v in range(g * 7, g * 7 + 2)]
        group = {"name": "g%d" % g, "vms": members, "vm_rule": None, "vm_enforcing": False,
                 "host_rule": None, "host_enforcing": False, "hosts": []}
        if kind == 0:
            group.update(vm_rule="negative", vm_enforcing=True)
        elif kind == 1:
            group.update(vm_rule="positive", vm_enforcing=False)
        elif kind == 2:
            group.update(host_rule="negative", host_enforcing=True,
                         hosts=[h["name"] for h in rnd.sample(hosts, min(3, len(hosts)))])
        else:
            group.update(vm_rule="negative", vm_enforcing=False)
        groups.append(group)
    return hosts, locations, groups


def requests(count, hosts, rnd):
    out = []
    for v in range(count):
        memory, vcpus = rnd.choice(SIZES)
        request = {"name": "new-%d" % v, "memory_mib": memory, "vcpus": vcpus, "ha": v % 4 == 0,
                   "networks": ["app", "db"] if v % 3 else ["app"],
                   "storage_domains": ["shared", "san"] if v % 2 else ["shared"],
                   "cpu_features": ["avx2"] if v % 2 else []}
        if v % 50 == 0:
            request["hosts"] = [h["name"] for h in rnd.sample(hosts, min(5, len(hosts)))]
        out.append(request)
    return out


def violations(scheduler, placed):
    """Hard constraints the placements broke: capacity, pinning, hard affinity."""
    broken = 0
    for host in scheduler.hosts:
        if host.limit_mib is not None and host.committed_mib > host.limit_mib + 1e-6:
            broken += 1
        if host.cpu_limit is not None and host.committed_vcpus > host.cpu_limit + 1e-6:
            broken += 1
    for request, host_name in placed:
        if request.get("hosts") and host_name not in request["hosts"]:
            broken += 1
        for group in scheduler._of_vm.get(request["name"], ()):  # noqa: SLF001 - the bench reads the snapshot
            others = {scheduler.locations[v] for v in group["vms"] if v != request["name"] and v in
                      scheduler.locations}
            if group.get("vm_enforcing") and group.get("vm_rule") == "negative" and host_name in others:
                broken += 1
            if group.get("host_enforcing") and group.get("host_rule") == "negative" and host_name in group["hosts"]:
                broken += 1
    return broken


def _worker(engine_options, names, mode, barrier, queue):
    from ansible_collections.virtplane.kvm.plugins.module_utils._errors import VirtplaneError
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _vms as vm_rows
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _placing, _vm

    engine = _db.connect(engine_options)
    done = refused = 0
    try:
        barrier.wait(120)
        for name in names:
            try:
                if mode == "start":
                    _vm.ensure(engine, _vm.VmSpec(name=name, state="running", wait_timeout=300))
                else:
                    # the start path's reservation transaction (services._operation._reserve, VmStart.reserve)
                    with engine.transaction() as cur:
                        prepared = vm_rows.find(cur, name)
                    _placing.warm(engine, prepared["cluster_id"])
                    with engine.conn.pipeline(), engine.transaction() as cur:
                        engine.lock(cur, _db.LOCK_DATACENTER, "bench")
                        start = _vm.VmStart(engine, False, _vm.VmSpec(name=name, state="running"))
                        row, scheduler = start.row_and_scheduler(cur, prepared)
                        definition = _vm.current_definition(row)
                        host = start._place(cur, dict(definition, name=name), row["cluster_id"], row["cluster"],
                                            scheduler)
                        _vm.reserve_on(cur, row, host, definition)
                done += 1
            except VirtplaneError:
                refused += 1
    finally:
        engine.close()
        queue.put((done, refused))


def _at_once(options, names, mode, workers):
    """``names`` shared among ``workers`` processes started together: (done, refused, seconds)."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(workers + 1), context.Queue()
    procs = [context.Process(target=_worker, args=(options, names[w::workers], mode, barrier, queue))
             for w in range(workers)]
    for proc in procs:
        proc.start()
    barrier.wait(120)
    start = time.perf_counter()
    counts = [queue.get(timeout=3600) for _proc in procs]
    elapsed = time.perf_counter() - start
    for proc in procs:
        proc.join(30)
    return sum(c[0] for c in counts), sum(c[1] for c in counts), elapsed


def engine_bench(hosts, placements, workers, starts):
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db, _provision
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _cluster, _datacenter, _host, _vm
    from tests.support.postgres import PostgresServer, remove_leftovers

    remove_leftovers()
    server = PostgresServer().start()
    try:
        _provision.ensure_database(server.superuser_login(), "bench_scheduler", "virtplane", "bench-sched-password",
                                   settings={"allow_test_driver": True})
        options = {"host": server.socket_dir, "port": server.port, "database": "bench_scheduler",
                   "user": "virtplane", "password": "bench-sched-password"}
        engine = _db.connect(options)
        try:
            setup = time.perf_counter()
            _datacenter.ensure(engine, _datacenter.DatacenterSpec(name="bench"))
            _cluster.ensure(engine, _cluster.ClusterSpec(name="bench", datacenter="bench"))
            for i in range(hosts):
                _host.ensure(engine, _host.HostSpec(name="hv%05d" % i, cluster="bench", libvirt_uri="test:///default"))
            names = ["vm%05d" % v for v in range(placements + starts)]
            _vm.ensure_many(engine, [_vm.VmSpec(name=n, cluster="bench", memory="256MiB", vcpus=1,
                                                boot={"kernel": "/var/lib/virtplane/images/vmlinuz"})
                                     for n in names])
            setup_s = time.perf_counter() - setup
        finally:
            engine.close()
        placed, refused, placing_s = _at_once(options, names[:placements], "place", workers)
        started, start_refused, starting_s = _at_once(options, names[placements:], "start", workers) \
            if starts else (0, 0, 1.0)
        engine = _db.connect(options)
        try:
            with engine.transaction() as cur:
                cur.execute("SELECT count(*) AS n FROM host h JOIN cluster c ON c.id = h.cluster_id WHERE"
                            " (SELECT COALESCE(sum(r.reserved_memory_mib), 0) FROM vm_runtime r"
                            "  WHERE r.run_host_id = h.id) > (h.memory_mib - h.reserved_memory_mib)"
                            "  * c.memory_overcommit_percent / 100.0"
                            " OR (SELECT COALESCE(sum(r.reserved_vcpus), 0) FROM vm_runtime r"
                            "  WHERE r.run_host_id = h.id) > h.cpu_count * c.cpu_overcommit_ratio")
                overcommitted = cur.fetchone()["n"]
                cur.execute("SELECT count(DISTINCT run_host_id) AS n FROM vm_runtime WHERE run_host_id IS NOT NULL")
                used = cur.fetchone()["n"]
        finally:
            engine.close()
        return {"hosts": hosts, "placements": placements, "workers": workers, "setup_s": round(setup_s, 1),
                "placed": placed, "refused": refused, "placing_s": round(placing_s, 2),
                "engine_placements_per_s": round(placed / placing_s, 1),
                "starts": starts, "started": started, "start_refused": start_refused,
                "engine_starts_per_s": round(started / starting_s, 1) if starts else None,
                "hosts_used": used, "overcommitted_hosts": overcommitted}
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10000)
    parser.add_argument("--placements", type=int, default=2000)
    parser.add_argument("--reference", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--policy", default="evenly_distributed")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--engine", action="store_true", help="placements through the engine (see above)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--starts", type=int, default=400, help="with --engine: full starts measured after")
    args = parser.parse_args()
    if args.engine:
        result = engine_bench(args.hosts if args.hosts != 10000 else 1000, args.placements, args.workers, args.starts)
        print(json.dumps(result, sort_keys=True) if args.json else json.dumps(result, indent=2, sort_keys=True))
        return
    rnd = random.Random(args.seed)
    hosts, locations, groups = cluster(args.hosts, rnd)
    wanted = requests(args.placements, hosts, rnd)
    built = time.perf_counter()
    scheduler = Scheduler(hosts, policy=args.policy, vms=locations, groups=groups, ha_reservation=True)
    build_s = time.perf_counter() - built

    times, placed, reference_s, gaps, mismatches, unplaced = [], [], 0.0, [0.0], 0, 0
    for index, request in enumerate(wanted):
        if index < args.reference:
            start = time.perf_counter()
            best = scheduler.exhaustive(request)
            reference_s += time.perf_counter() - start
        start = time.perf_counter()
        decision = scheduler.place(request)
        if decision.host is not None:
            scheduler.commit(request, decision.host["name"])
        times.append(time.perf_counter() - start)
        if index < args.reference:
            if (best.host is None) != (decision.host is None):
                mismatches += 1
            elif best.host is not None and best.score:
                gaps.append(max(0.0, (best.score - decision.score) / abs(best.score) * 100.0))
        if decision.host is None:
            unplaced += 1
        else:
            placed.append((request, decision.host["name"]))
    ordered = sorted(times)
    result = {
        "hosts": args.hosts, "vms_per_host": VMS_PER_HOST, "policy": args.policy, "placements": len(wanted),
        "unplaced": unplaced, "build_s": round(build_s, 3),
        "placements_per_s": round(len(times) / sum(times), 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
        "reference_placements_per_s": round(min(args.reference, len(wanted)) / reference_s, 1) if reference_s else None,
        "violations": violations(scheduler, placed),
        "max_score_gap_pct": round(max(gaps), 4), "mismatches": mismatches,
    }
    if result["reference_placements_per_s"]:
        result["speedup"] = round(result["placements_per_s"] / result["reference_placements_per_s"], 1)
    print(json.dumps(result, sort_keys=True) if args.json else json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
