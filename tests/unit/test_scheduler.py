"""The scheduler: each filter's reason, each policy's preference, affinity and the HA reservation, and the
index answering exactly as the exhaustive reference on random snapshots."""

import random

import pytest

from ansible_collections.virtplane.kvm.plugins.module_utils.scheduler._scheduler import Scheduler


def host(name, **values):
    entry = {"name": name, "status": "Up", "memory_mib": 16384, "memory_overcommit_percent": 100,
             "committed_memory_mib": 0, "cpu_count": 8, "cpu_overcommit_ratio": 1, "committed_vcpus": 0,
             "vms": 0, "networks": ["app"], "storage_domains": ["shared"], "cpu_load_percent": 10}
    entry.update(values)
    return entry


def vm(name="new", **values):
    request = {"name": name, "memory_mib": 1024, "vcpus": 1, "networks": ["app"], "storage_domains": ["shared"]}
    request.update(values)
    return request


@pytest.mark.parametrize("values, request_values, reason", [
    ({"status": "Maintenance"}, {}, "host is Maintenance"),
    ({"status": "NonOperational", "status_reason": "network app missing"}, {},
     "host is NonOperational (network app missing)"),
    ({"networks": []}, {}, "logical network app not realized"),
    ({"storage_domains": []}, {}, "storage domain shared not active"),
    ({"cpu_features": ["aes"]}, {"cpu_features": ["avx2"]}, "CPU lacks avx2"),
    ({"committed_memory_mib": 15360}, {"memory_mib": 2048}, "memory 15 of 16 GiB committed, 2 GiB more does not fit"),
    ({"reserved_memory_mib": 8192, "committed_memory_mib": 7168}, {"memory_mib": 2048},
     "memory 7 of 8 GiB committed, 2 GiB more does not fit"),
    ({}, {"vcpus": 16}, "16 vCPUs are more than the 8 CPUs it schedules"),
    ({"committed_vcpus": 8}, {}, "8 of 8 vCPUs committed, 1 more do not fit"),
    # a host that shares its machine: capped below what libvirt reports, then its own reserve taken off
    ({"schedulable_memory_mib": 4096, "reserved_memory_mib": 1024, "committed_memory_mib": 2048},
     {"memory_mib": 2048}, "memory 2 of 3 GiB committed, 2 GiB more does not fit"),
    ({"schedulable_cpus": 2, "reserved_cpus": 1}, {"vcpus": 2}, "2 vCPUs are more than the 1 CPUs it schedules"),
    ({"schedulable_cpus": 4, "committed_vcpus": 4}, {}, "4 of 4 vCPUs committed, 1 more do not fit"),
    ({"reserved_cpus": 8}, {}, "1 vCPUs are more than the 0 CPUs it schedules"),
    ({"schedulable_memory_mib": 32768}, {"memory_mib": 20480},
     "memory 0 of 16 GiB committed, 20 GiB more does not fit"),
    ({}, {"hosts": ["hv9"]}, "the VM is pinned to hv9"),
])
def test_each_filter_says_why_a_host_is_rejected(values, request_values, reason):
    scheduler = Scheduler([host("hv1", **values)])
    decision = scheduler.place(vm(**request_values))
    assert decision.host is None
    assert decision.explain() == "hv1: " + reason
    assert scheduler.exhaustive(vm(**request_values)).rejected == {"hv1": reason}


@pytest.mark.parametrize("cpu_model, models, reason", [
    ("Skylake-Client", ["qemu64", "Skylake-Client"], None),
    ("Skylake-Client", ["qemu64"], "its CPU cannot give guests the cluster's CPU model Skylake-Client"),
    ("Skylake-Client", None, "cannot tell whether it runs the cluster's CPU model Skylake-Client: its libvirt lists "
     "no CPU models"),
    # CPU modes and no model at all: every host runs them
    ("host-model", None, None),
    ("host-passthrough", ["qemu64"], None),
    (None, None, None),
])
def test_the_clusters_cpu_model_is_one_the_host_can_give(cpu_model, models, reason):
    scheduler = Scheduler([host("hv1", cpu_models=models)], cpu_model=cpu_model)
    decision = scheduler.place(vm())
    assert (decision.host is None) == (reason is not None)
    assert scheduler.exhaustive(vm()).rejected == ({"hv1": reason} if reason else {})
    assert scheduler.reason(vm(), "hv1") == reason


def test_a_chosen_host_leaves_the_others_with_their_reason():
    decision = Scheduler([host("hv1", status="Maintenance"), host("hv2"), host("hv3")]).place(vm())
    assert decision.host["name"] == "hv2"
    assert decision.rejected == {"hv1": "host is Maintenance", "hv3": "a better host was chosen"}


@pytest.mark.parametrize("policy, expected", [
    ("evenly_distributed", "idle"),       # the lowest CPU load
    ("power_saving", "busy"),             # fill the busiest host that fits; keep empty hosts empty
    ("vm_evenly_distributed", "empty"),   # the fewest VMs
    ("none", "empty"),                    # the largest share of its memory free
])
def test_each_policy_prefers_its_host(policy, expected):
    hosts = [host("busy", committed_memory_mib=12288, vms=6, cpu_load_percent=70),
             host("idle", committed_memory_mib=2048, vms=4, cpu_load_percent=5),
             host("few", committed_memory_mib=4096, vms=1, cpu_load_percent=50),
             host("empty", committed_memory_mib=0, vms=0, cpu_load_percent=60, memory_mib=8192)]
    assert Scheduler(hosts, policy=policy).place(vm()).host["name"] == expected


def test_hard_affinity_keeps_vms_together_or_apart_and_soft_affinity_only_prefers():
    hosts = [host("hv1"), host("hv2"), host("hv3", cpu_load_percent=0)]
    where = {"db1": "hv1", "web1": "hv2"}
    groups = [{"name": "db", "vms": ["db1", "new"], "vm_rule": "positive", "vm_enforcing": True},
              {"name": "spread", "vms": ["web1", "new"], "vm_rule": "negative", "vm_enforcing": True}]
    scheduler = Scheduler(hosts, policy="evenly_distributed", vms=where, groups=groups)
    decision = scheduler.place(vm())
    assert decision.host["name"] == "hv1"
    assert decision.rejected["hv2"] == "affinity group db: the VM must run with db1 (on hv1)"
    apart = Scheduler(hosts, vms=where, groups=groups[1:])
    assert apart.reason(vm(), "hv2") == "affinity group spread: the VM must not run with web1"
    # soft: preferred over a better-scored host, never a refusal
    soft = [{"name": "near", "vms": ["db1", "new"], "vm_rule": "positive", "vm_enforcing": False}]
    assert Scheduler(hosts, policy="evenly_distributed", vms=where, groups=soft).place(vm()).host["name"] == "hv1"
    full = [host("hv1", committed_memory_mib=16384), host("hv3")]
    assert Scheduler(full, vms=where, groups=soft).place(vm()).host["name"] == "hv3"
    # VM-to-host, hard
    pinned = [{"name": "rack", "vms": ["new"], "host_rule": "negative", "host_enforcing": True, "hosts": ["hv3"]}]
    decision = Scheduler(hosts, policy="evenly_distributed", groups=pinned).place(vm())
    assert decision.host["name"] != "hv3"
    assert decision.rejected["hv3"] == "affinity group rack: the VM must not run on hv3"


@pytest.mark.parametrize("together, apart, expected", [
    (1, 5, "hv3"),  # keeping away from db1 matters more: neither hv1 nor hv2
    (5, 1, "hv1"),  # being with web1 matters more, though db1 runs there too
    (3, 3, "hv3"),  # equal: on hv1 they cancel out, and the least loaded of the rest wins
])
def test_of_two_soft_groups_that_disagree_the_one_of_higher_priority_wins(together, apart, expected):
    groups = [{"name": "together", "vms": ["new", "web1"], "vm_rule": "positive", "vm_enforcing": False,
               "priority": together},
              {"name": "apart", "vms": ["new", "db1", "db2"], "vm_rule": "negative", "vm_enforcing": False,
               "priority": apart}]
    hosts = [host("hv1", cpu_load_percent=50), host("hv2", cpu_load_percent=40), host("hv3", cpu_load_percent=45)]
    scheduler = Scheduler(hosts, policy="evenly_distributed", vms={"web1": "hv1", "db1": "hv1", "db2": "hv2"},
                          groups=groups)
    assert scheduler.place(vm()).host["name"] == expected
    assert scheduler.exhaustive(vm()).host["name"] == expected


def test_the_ha_reservation_keeps_room_for_the_ha_vms_of_any_one_host():
    # hv1 runs 10 GiB of HA VMs: the others must keep 10 GiB free between them
    hosts = [host("hv1", committed_memory_mib=10240, ha_memory_mib=10240, ha_vms=2),
             host("hv2", committed_memory_mib=8192), host("hv3", committed_memory_mib=8192, cpu_load_percent=0)]
    scheduler = Scheduler(hosts, policy="evenly_distributed", ha_reservation=True)
    assert scheduler.place(vm(memory_mib=4096)).host["name"] == "hv3"
    scheduler.commit(vm(memory_mib=4096), "hv3")
    # 18 GiB free: 4 GiB more on hv2 or hv3 would leave 14, of which hv1's HA VMs could use only 8
    decision = scheduler.place(vm(memory_mib=4096))
    assert decision.host["name"] == "hv1"  # its own HA VMs restart elsewhere: room there is no one's reserve
    assert decision.rejected["hv2"] == "HA reservation: the HA VMs of host hv1 (10 GiB) could not restart on " \
        "the others"
    scheduler.commit(vm(memory_mib=4096), "hv1")
    assert scheduler.place(vm(memory_mib=4096)).host is None
    # without the reservation the same VM fits
    assert Scheduler(hosts, ha_reservation=False).place(vm(memory_mib=4096)).host is not None


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("policy", ["none", "evenly_distributed", "power_saving", "vm_evenly_distributed"])
def test_the_index_chooses_what_the_exhaustive_reference_chooses(seed, policy):
    rnd = random.Random(seed)
    hosts = [host("hv%03d" % i, memory_mib=rnd.choice([8192, 16384, 32768]), cpu_count=rnd.choice([4, 8, 16]),
                  cpu_overcommit_ratio=2, committed_memory_mib=rnd.choice([0, 2048, 6144]), vms=rnd.randint(0, 5),
                  cpu_load_percent=rnd.randint(0, 100), status="Up" if rnd.random() > 0.1 else "Maintenance",
                  networks=["app", "db"] if rnd.random() > 0.2 else ["app"],
                  cpu_features=["avx2"] if rnd.random() > 0.2 else [],
                  cpu_models=rnd.choice([None, ["qemu64"], ["qemu64", "EPYC"]]))
             for i in range(60)]
    where = {"old%d" % i: "hv%03d" % rnd.randrange(60) for i in range(20)}
    groups = [{"name": "g%d" % g, "vms": rnd.sample(sorted(where), 2) + ["vm%d" % v for v in range(g, 200, 9)],
               "vm_rule": rnd.choice(["positive", "negative"]), "vm_enforcing": rnd.random() > 0.5}
              for g in range(6)]
    scheduler = Scheduler(hosts, policy=policy, vms=where, groups=groups, ha_reservation=seed % 2 == 0,
                          cpu_model=(None, "qemu64", "EPYC")[seed % 3])
    for v in range(200):
        request = vm("vm%d" % v, memory_mib=rnd.choice([512, 1024, 2048, 4096]), vcpus=rnd.choice([1, 2, 4]),
                     networks=["app", "db"] if v % 3 else ["app"], cpu_features=["avx2"] if v % 2 else [],
                     ha=v % 4 == 0, hosts=rnd.sample([h["name"] for h in hosts], 3) if v % 17 == 0 else [])
        best = scheduler.exhaustive(request)
        decision = scheduler.place(request)
        assert (decision.host or {}).get("name") == (best.host or {}).get("name"), (v, best.score, decision.score)
        if decision.host is not None:
            scheduler.commit(request, decision.host["name"])
    for entry in scheduler.hosts:
        assert entry.limit_mib is None or entry.committed_mib <= entry.limit_mib
        assert entry.committed_vcpus <= entry.cpu_limit


def test_the_ha_reservation_ignores_hosts_of_unknown_memory_and_counts_no_negative_room():
    # a host that never reported its memory, and one overcommitted since the cluster's ratio was lowered
    hosts = [host("unknown", memory_mib=None), host("over", committed_memory_mib=20480),
             host("hv1", committed_memory_mib=8192, ha_memory_mib=4096, ha_vms=1), host("hv2")]
    scheduler = Scheduler(hosts, policy="evenly_distributed", ha_reservation=True)
    decision = scheduler.place(vm(memory_mib=1024))
    assert decision.host["name"] in ("hv1", "hv2", "unknown")
    assert "HA reservation" not in decision.explain()
    assert scheduler.reason(vm(memory_mib=1024), "hv2") is None


def test_hard_host_rules_contradict_only_when_no_host_is_left():
    from ansible_collections.virtplane.kvm.plugins.module_utils.services._affinity import contradiction

    def group(name, rule, hosts):
        return {"name": name, "vms": ["a"], "vm_rule": "none", "vm_enforcing": False, "host_rule": rule,
                "host_enforcing": True, "hosts": hosts}
    assert contradiction(group("on", "positive", ["h1", "h2"]), [group("off", "negative", ["h1"])]) is None
    assert contradiction(group("on", "positive", ["h1"]), [group("off", "negative", ["h1", "h2"])]) == (
        "VM a must run on hosts h1 (group on) and must not run on any of them (group off), both hard")


def test_growth_of_a_running_vm_is_checked_against_its_host_with_the_ha_reservation():
    from ansible_collections.virtplane.kvm.plugins.module_utils.scheduler._placement import growth_reason

    hosts = [host("hv1", committed_memory_mib=10240, ha_memory_mib=10240, ha_vms=2),
             host("hv2", committed_memory_mib=12288)]
    assert growth_reason("hv2", {"memory_mib": 2048, "vcpus": 0}, hosts) is None
    assert growth_reason("hv2", {"memory_mib": 8192, "vcpus": 0}, hosts) == (
        "memory 12 of 16 GiB committed, 8 GiB more does not fit")
    assert growth_reason("hv2", {"memory_mib": 2048, "vcpus": 0}, hosts, ha_reservation=True).startswith(
        "HA reservation: the HA VMs of host hv1")
