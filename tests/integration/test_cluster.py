"""cluster module against a real engine database."""

from tests.support.playbook import run_play

DC = {"name": "dc", "virtplane.kvm.datacenter": {"name": "paris"}}


def cluster(name="prod", **options):
    return {"virtplane.kvm.cluster": dict(name=name, **options)}


def test_check_real_idempotent_and_defaults(engine_options, sql):
    run = run_play([DC, dict(name="check", check_mode=True, **cluster(datacenter="paris"))], engine=engine_options)
    assert run["check"]["changed"] and run["check"]["cluster"]["scheduling_policy"] == "evenly_distributed"
    assert sql("SELECT * FROM cluster") == []

    run = run_play([dict(name="create", **cluster(datacenter="paris")),
                    dict(name="again", **cluster(datacenter="paris")),
                    dict(name="again without datacenter", **cluster())], engine=engine_options)
    assert run.rc == 0, run.output
    created = run["create"]["cluster"]
    assert created["datacenter"] == "paris" and created["hosts"] == []
    assert created["scheduling_params"] == {"high_utilization": 80, "duration_minutes": 2}
    assert (created["memory_overcommit_percent"], created["cpu_overcommit_ratio"]) == (100, 4.0)
    assert (created["migration_policy"], created["migration_max_parallel"]) == ("minimal_downtime", 2)
    assert not run["again"]["changed"] and not run["again without datacenter"]["changed"]


def test_policy_change_diff_and_params(engine_options, sql):
    run_play([DC, dict(name="create", **cluster(datacenter="paris"))], engine=engine_options)
    change = cluster(scheduling_policy="power_saving", scheduling_policy_params={"low_utilization": 10},
                     memory_overcommit_percent=150, migration_policy="post_copy", migration_bandwidth_mbps=5000)
    run = run_play([dict(name="check", check_mode=True, **change)], engine=engine_options, diff=True)
    assert run["check"]["changed"]
    assert sql("SELECT scheduling_policy FROM cluster")[0]["scheduling_policy"] == "evenly_distributed"

    run = run_play([dict(name="change", **change), dict(name="again", **change)], engine=engine_options, diff=True)
    assert run["change"]["diff"] == {
        "before": {"scheduling_policy": "evenly_distributed",
                   "scheduling_params": {"high_utilization": 80, "duration_minutes": 2},
                   "memory_overcommit_percent": 100, "migration_policy": "minimal_downtime",
                   "migration_bandwidth_mbps": None},
        "after": {"scheduling_policy": "power_saving",
                  "scheduling_params": {"low_utilization": 10, "high_utilization": 80, "duration_minutes": 2},
                  "memory_overcommit_percent": 150, "migration_policy": "post_copy",
                  "migration_bandwidth_mbps": 5000},
    }
    assert not run["again"]["changed"]
    row = sql("SELECT scheduling_policy, scheduling_params, migration_bandwidth_mbps FROM cluster")[0]
    assert row == {"scheduling_policy": "power_saving", "migration_bandwidth_mbps": 5000,
                   "scheduling_params": {"low_utilization": 10, "high_utilization": 80, "duration_minutes": 2}}
    event = sql("SELECT code, message FROM event WHERE code = 'CLUSTER_UPDATED'")
    assert len(event) == 1 and "scheduling_policy" in event[0]["message"]


def test_bad_input_names_the_field_and_changes_nothing(engine_options, sql):
    run = run_play([DC, dict(name="prod", **cluster(datacenter="paris")),
                    {"name": "other dc", "virtplane.kvm.datacenter": {"name": "lyon"}},
                    dict(name="unknown dc", ignore_errors=True, **cluster(name="new", datacenter="nowhere")),
                    dict(name="no dc", ignore_errors=True, **cluster(name="new")),
                    dict(name="duplicate name", ignore_errors=True, **cluster(datacenter="lyon")),
                    dict(name="bad param", ignore_errors=True,
                         **cluster(scheduling_policy="none", scheduling_policy_params={"high_utilization": 5})),
                    dict(name="bad overcommit", ignore_errors=True, **cluster(memory_overcommit_percent=50)),
                    dict(name="bad choice", ignore_errors=True, **cluster(migration_policy="fast"))],
                   engine=engine_options)
    assert run["unknown dc"]["msg"] == "Cannot create cluster 'new': data center 'nowhere' does not exist"
    assert run["no dc"]["msg"] == "Invalid value for 'datacenter': is required to create cluster 'new'"
    assert run["duplicate name"]["msg"] == (
        "Cannot create cluster 'prod' in data center 'lyon': cluster 'prod' already exists in data center "
        "'paris' (cluster names are unique and a cluster cannot move between data centers)")
    assert "scheduling_policy_params" in run["bad param"]["msg"]
    assert "'high_utilization' not a parameter of policy 'none'" in run["bad param"]["msg"]
    assert run["bad overcommit"]["msg"] == "Invalid value for 'memory_overcommit_percent': 50 is outside 100-400"
    assert "migration_policy" in run["bad choice"]["msg"] and "fast" in run["bad choice"]["msg"]
    assert [r["name"] for r in sql("SELECT name FROM cluster")] == ["prod"]
    assert sql("SELECT scheduling_policy, memory_overcommit_percent FROM cluster")[0] == {
        "scheduling_policy": "evenly_distributed", "memory_overcommit_percent": 100}


def test_remove_with_hosts_is_refused_with_the_list_of_hosts(engine_options, sql):
    hosts = [{"name": "add " + h, "virtplane.kvm.host": {"name": h, "cluster": "prod", "libvirt_uri": "test:///default"}}
             for h in ("hv2", "hv1")]
    run = run_play([DC, dict(name="prod", **cluster(datacenter="paris"))] + hosts +
                   [dict(name="remove", ignore_errors=True, **cluster(state="absent"))], engine=engine_options)
    assert run["remove"]["failed"]
    assert run["remove"]["msg"] == "Cannot remove cluster 'prod': it still has hosts hv1, hv2"
    assert len(sql("SELECT * FROM cluster")) == 1
    assert len(sql("SELECT * FROM host")) == 2
    assert sql("SELECT * FROM event WHERE code = 'CLUSTER_REMOVED'") == []


def test_ratio_with_more_precision_than_stored_is_idempotent(engine_options, sql):
    ratio = cluster(datacenter="paris", cpu_overcommit_ratio=1.333)
    run = run_play([DC, dict(name="create", **ratio), dict(name="again", **ratio)], engine=engine_options)
    assert run["create"]["cluster"]["cpu_overcommit_ratio"] == 1.33
    assert not run["again"]["changed"]
    assert sql("SELECT count(*) AS n FROM event WHERE code = 'CLUSTER_UPDATED'")[0]["n"] == 0


def test_an_empty_cpu_model_removes_the_one_set_before(engine_options, sql):
    run = run_play([DC, dict(name="create", **cluster(datacenter="paris", cpu_model="Westmere")),
                    dict(name="check unset", check_mode=True, **cluster(cpu_model="")),
                    dict(name="unset", **cluster(cpu_model="")),
                    dict(name="again", **cluster(cpu_model="")),
                    dict(name="created without", **cluster(name="dev", datacenter="paris", cpu_model=""))],
                   engine=engine_options, diff=True)
    assert run.rc == 0, run.output
    assert run["create"]["cluster"]["cpu_model"] == "Westmere"
    assert run["check unset"]["changed"] and run["check unset"]["cluster"]["cpu_model"] is None
    assert run["unset"]["diff"] == {"before": {"cpu_model": "Westmere"}, "after": {"cpu_model": None}}
    assert not run["again"]["changed"]
    assert {r["name"]: r["cpu_model"] for r in sql("SELECT name, cpu_model FROM cluster")} == {"prod": None,
                                                                                               "dev": None}
