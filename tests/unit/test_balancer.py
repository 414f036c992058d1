"""The balancer: what each policy proposes for a cluster's current state, with its reasons, and what it refuses."""

from ansible_collections.virtplane.kvm.plugins.module_utils.scheduler._balancer import balance
from ansible_collections.virtplane.kvm.plugins.module_utils.scheduler._scheduler import Scheduler


def host(name, **values):
    entry = {"name": name, "status": "Up", "memory_mib": 16384, "memory_overcommit_percent": 100,
             "committed_memory_mib": 0, "cpu_count": 8, "cpu_overcommit_ratio": 4, "committed_vcpus": 0,
             "vms": 0, "networks": [], "storage_domains": [], "cpu_load_percent": 40}
    entry.update(values)
    return entry


def cluster(policy, loads, placed, groups=(), extra=None):
    """Hosts with their CPU load; ``placed``: {VM: (host, memory MiB)}, already committed on them."""
    entries = {name: host(name, cpu_load_percent=load, **(extra or {}).get(name, {})) for name, load in loads.items()}
    running = []
    for vm, (where, memory) in sorted(placed.items()):
        entries[where]["committed_memory_mib"] += memory
        entries[where]["committed_vcpus"] += 1
        entries[where]["vms"] += 1
        running.append({"name": vm, "memory_mib": memory, "vcpus": 1, "networks": [], "storage_domains": [],
                        "hosts": [], "host": where})
    scheduler = Scheduler(list(entries.values()), policy=policy, vms={v: p[0] for v, p in placed.items()},
                          groups=groups)
    return scheduler, running


def test_evenly_distributed_takes_the_smallest_vm_off_a_host_above_high_utilization():
    scheduler, running = cluster("evenly_distributed", {"hv1": 95, "hv2": 30, "hv3": 85},
                                 {"big": ("hv1", 4096), "small": ("hv1", 1024), "other": ("hv3", 1024)})
    migrations, problems = balance(scheduler, running, {"high_utilization": 80})
    # hv1 gives its smallest VM to hv2, the only host below the threshold; hv3 gives its only VM there too
    assert migrations == [
        {"vm": "small", "from": "hv1", "to": "hv2", "reason": "CPU load 95% of host hv1 is above high_utilization 80%"},
        {"vm": "other", "from": "hv3", "to": "hv2", "reason": "CPU load 85% of host hv3 is above high_utilization 80%"}]
    assert problems == []


def test_a_busy_host_whose_vms_fit_nowhere_below_the_threshold_is_a_problem_not_a_move():
    scheduler, running = cluster("evenly_distributed", {"hv1": 95, "hv2": 30},
                                 {"huge": ("hv1", 15000), "filler": ("hv2", 8000)})
    migrations, problems = balance(scheduler, running, {})
    assert migrations == []
    assert problems == [{"host": "hv1", "reason": "CPU load 95% of host hv1 is above high_utilization 80%, but none "
                                                  "of its VMs fits on a host below it"}]


def test_power_saving_empties_the_least_loaded_host_onto_hosts_between_the_thresholds_or_not_at_all():
    scheduler, running = cluster("power_saving", {"hv1": 5, "hv2": 50, "hv3": 10, "idle": 0},
                                 {"a": ("hv1", 2048), "b": ("hv1", 1024), "c": ("hv2", 2048), "d": ("hv3", 1024)})
    migrations, problems = balance(scheduler, running, {"low_utilization": 20, "high_utilization": 80})
    reason = "CPU load 5% of host hv1 is below low_utilization 20%: it is emptied so that it can be switched off"
    assert migrations == [{"vm": "a", "from": "hv1", "to": "hv2", "reason": reason},
                          {"vm": "b", "from": "hv1", "to": "hv2", "reason": reason}]
    assert problems == []
    # when its VMs do not all fit there, none moves
    scheduler, running = cluster("power_saving", {"hv1": 5, "hv2": 50},
                                 {"a": ("hv1", 8192), "b": ("hv1", 8192), "c": ("hv2", 4096)})
    migrations, problems = balance(scheduler, running, {})
    assert migrations == []
    assert problems == [{"host": "hv1", "reason": "CPU load 5% of host hv1 is below low_utilization 20%, but its VMs "
                                                  "do not all fit on the hosts between the thresholds"}]
    assert scheduler.by_name["hv1"].committed_mib == 16384 and scheduler.by_name["hv2"].committed_mib == 4096


def test_vm_evenly_distributed_moves_one_vm_from_the_most_crowded_host_to_the_emptiest():
    placed = {"vm%02d" % i: ("hv1", 512) for i in range(12)}
    placed.update({"x1": ("hv2", 512), "y1": ("hv3", 512), "y2": ("hv3", 512)})
    scheduler, running = cluster("vm_evenly_distributed", {"hv1": 40, "hv2": 40, "hv3": 40}, placed)
    migrations, _problems = balance(scheduler, running, {"high_vm_count": 10, "migration_threshold": 5})
    assert migrations == [{"vm": "vm00", "from": "hv1", "to": "hv2", "reason": "host hv1 runs 12 VMs: above "
                           "high_vm_count 10 and 5 or more above host hv2 (1)"}]
    # not far enough above the emptiest: nothing
    placed = {"a": ("hv1", 512), "b": ("hv1", 512)}
    scheduler, running = cluster("vm_evenly_distributed", {"hv1": 40, "hv2": 40}, placed)
    assert balance(scheduler, running, {"high_vm_count": 1, "migration_threshold": 5}) == ([], [])


def test_every_policy_moves_a_vm_whose_host_breaks_a_hard_affinity_group_made_after_it_started():
    group = {"name": "apart", "vm_rule": "negative", "vm_enforcing": True, "vms": ["db1", "db2"], "hosts": []}
    for policy in ("none", "evenly_distributed", "power_saving", "vm_evenly_distributed"):
        scheduler, running = cluster(policy, {"hv1": 40, "hv2": 40}, {"db1": ("hv1", 1024), "db2": ("hv1", 1024)},
                                     groups=[group])
        migrations, problems = balance(scheduler, running, {})
        assert migrations[:1] == [{"vm": "db1", "from": "hv1", "to": "hv2", "reason": "its host hv1 no longer suits "
                                   "it: affinity group apart: the VM must not run with db2"}], policy
        assert problems == []


def test_a_host_in_maintenance_is_left_and_a_vm_that_can_go_nowhere_is_said():
    scheduler, running = cluster("none", {"hv1": 40, "hv2": 40}, {"a": ("hv1", 1024), "big": ("hv1", 4096)},
                                 extra={"hv1": {"status": "Maintenance"}, "hv2": {"memory_mib": 3072}})
    migrations, problems = balance(scheduler, running, {})
    assert migrations == [{"vm": "a", "from": "hv1", "to": "hv2",
                           "reason": "its host hv1 no longer suits it: host is Maintenance"}]
    assert problems == [{"host": "hv1", "reason": "VM big should leave it (host is Maintenance), but no other host "
                                                  "can run it"}]


def test_only_a_load_that_held_for_duration_minutes_moves_a_vm():
    """``sustained``: each host's lowest and highest load over the policy's duration, from the engine's history.
    A host above the threshold now but not all along, or whose history is too short, keeps its VMs."""
    loads = {"steady": 95, "spike": 95, "new": 95, "cool": 20}
    placed = {"a": ("steady", 1024), "b": ("spike", 1024), "c": ("new", 1024)}
    sustained = {"steady": (85.0, 97.0), "spike": (30.0, 95.0), "cool": (10.0, 25.0)}  # "new": no history yet
    scheduler, running = cluster("evenly_distributed", loads, placed)
    migrations, problems = balance(scheduler, running, {"high_utilization": 80, "duration_minutes": 5}, sustained)
    assert migrations == [{"vm": "a", "from": "steady", "to": "cool", "reason": "CPU load of host steady was above "
                           "high_utilization 80% for the last 5 minutes (85% to 97%)"}]
    assert problems == []
    # power saving empties a host only when it stayed below low_utilization
    scheduler, running = cluster("power_saving", {"calm": 5, "dip": 5, "mid": 50},
                                 {"x": ("calm", 1024), "y": ("dip", 1024), "z": ("mid", 1024)})
    sustained = {"calm": (2.0, 8.0), "dip": (5.0, 60.0), "mid": (40.0, 55.0)}
    migrations, _problems = balance(scheduler, running, {"low_utilization": 20, "high_utilization": 80,
                                                         "duration_minutes": 3}, sustained)
    assert [(m["vm"], m["from"], m["to"]) for m in migrations] == [("x", "calm", "mid")]
    assert migrations[0]["reason"].startswith("CPU load of host calm was below low_utilization 20% for the last 3 "
                                              "minutes (2% to 8%): it is emptied")
