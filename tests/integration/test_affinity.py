"""affinity_group and vm_placement_info on a real PostgreSQL, with test-driver hosts: groups as the
scheduler reads them when a VM starts, what contradicts itself, and the dry run host by host."""

from tests.support.playbook import run_play


def _hosts(tmp_path, count=3):
    tasks = []
    for i in range(count):
        node = tmp_path / ("node%d.xml" % i)
        node.write_text("<node><cpu><mhz>2400</mhz><nodes>1</nodes><sockets>1</sockets><cores>4</cores>"
                        "<threads>1</threads></cpu><memory>4194304</memory></node>")
        tasks.append({"name": "hv%d" % i, "virtplane.kvm.host": {"name": "hv%d" % i, "cluster": "prod",
                                                                 "libvirt_uri": "test://%s" % node}})
    return tasks


BASE = [{"name": "dc", "virtplane.kvm.datacenter": {"name": "paris"}},
        {"name": "prod", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris"}},
        {"name": "test", "virtplane.kvm.cluster": {"name": "test", "datacenter": "paris"}}]


def vm(name, **options):
    return {"name": name, "virtplane.kvm.vm": dict({"name": name, "cluster": "prod", "memory": "256MiB",
                                                    "boot": {"kernel": "/boot/vmlinuz"}}, **options)}


def group(task, **options):
    return {"name": task, "ignore_errors": True,
            "virtplane.kvm.affinity_group": dict({"name": "db", "cluster": "prod"}, **options)}


def test_groups_are_checked_kept_and_followed_by_placement(engine_options, sql, tmp_path):
    setup = BASE + _hosts(tmp_path) + [vm("db1"), vm("db2"), vm("db3"),
                                       {"name": "other", "virtplane.kvm.vm": {"name": "t1", "cluster": "test",
                                                                              "memory": "256MiB"}}]
    assert run_play(setup, engine=engine_options).rc == 0
    run = run_play([
        group("check", vm_rule="negative", vm_enforcing=True, vms=["db1", "db2", "db3"]),
    ], engine=engine_options, check=True, diff=True)
    assert run["check"]["changed"] and run["check"]["actions"] == ["create"]
    assert sql("SELECT * FROM affinity_group") == []
    run = run_play([
        group("create", vm_rule="negative", vm_enforcing=True, vms=["db1", "db2", "db3"]),
        group("again", vm_rule="negative", vm_enforcing=True, vms=["db3", "db2", "db1"]),
        group("together", **{"name": "pair", "vm_rule": "positive", "vm_enforcing": True, "vms": ["db1", "db2"]}),
        group("other cluster", **{"name": "mixed", "vms": ["db1", "t1"], "vm_rule": "positive"}),
        group("unknown host", **{"name": "rack", "host_rule": "negative", "hosts": ["hv9"], "vms": ["db1"]}),
        group("no hosts", **{"name": "rack", "host_rule": "positive", "vms": ["db1"]}),
        group("unknown cluster", cluster="nowhere"),
        group("duplicate", **{"name": "dup", "vms": ["db1", "db1"]}),
        group("bad rule", **{"name": "bad", "vm_rule": "sideways"}),
    ], engine=engine_options, diff=True)
    assert run["create"]["changed"] and not run["again"]["changed"], run.output[-3000:]
    assert run["create"]["affinity_group"]["vms"] == ["db1", "db2", "db3"]
    assert run["together"]["msg"] == ("Cannot create affinity group 'pair': affinity group pair keeps VMs db1, db2 "
                                      "together and group db keeps them apart (both hard)")
    assert "VM 't1' is in cluster test, not prod" in run["other cluster"]["msg"]
    assert "'vms[1]'" in run["other cluster"]["msg"]
    assert "host 'hv9' does not exist" in run["unknown host"]["msg"]
    assert "host_rule positive needs the hosts it is about" in run["no hosts"]["msg"]
    assert "cluster 'nowhere' does not exist" in run["unknown cluster"]["msg"]
    assert "names db1 more than once" in run["duplicate"]["msg"]
    assert "sideways" in run["bad rule"]["msg"]
    assert [r["name"] for r in sql("SELECT name FROM affinity_group")] == ["db"]

    # the scheduler follows the hard group: three VMs on three hosts, and a fourth member has nowhere to go
    run = run_play([vm("db1", state="running"), vm("db2", state="running"), vm("db3", state="running"),
                    vm("db4"), group("grow", vms=["db1", "db2", "db3", "db4"]),
                    {"name": "where", "virtplane.kvm.vm_placement_info": {"name": "db4"}},
                    dict(vm("db4", state="running"), ignore_errors=True)], engine=engine_options)
    hosts = {run[n]["vm"]["host"] for n in ("db1", "db2", "db3")}
    assert hosts == {"hv0", "hv1", "hv2"}, run.output[-3000:]
    where = run["where"]["placement"]
    assert where["host"] is None and [h["verdict"] for h in where["hosts"]] == ["rejected"] * 3
    assert all(h["reason"].startswith("affinity group db: the VM must not run with db") for h in where["hosts"])
    assert "no host of cluster prod can run it" in run["db4"]["msg"]
    assert "affinity group db: the VM must not run with db" in run["db4"]["msg"]

    # a VM that fits: chosen, and every host's verdict with its score
    run = run_play([{"name": "where", "virtplane.kvm.vm_placement_info": {"name": "t1"}},
                    vm("free"), {"name": "free where", "virtplane.kvm.vm_placement_info": {"name": "free"}},
                    {"name": "remove", "virtplane.kvm.affinity_group": {"name": "db", "cluster": "prod",
                                                                        "state": "absent"}}],
                   engine=engine_options)
    free = run["free where"]["placement"]
    assert free["host"] in ("hv0", "hv1", "hv2") and free["policy"] == "evenly_distributed"
    assert sorted(h["verdict"] for h in free["hosts"]) == ["chosen", "fits", "fits"]
    assert all(h["score"] is not None for h in free["hosts"])
    assert run["remove"]["changed"] and sql("SELECT * FROM affinity_group") == []


def test_the_balancer_proposes_what_each_policy_would_move_with_its_reasons(engine_options, sql, tmp_path):
    setup = BASE + _hosts(tmp_path) + [
        vm("db1", host=["hv0"], state="running"), vm("db2", host=["hv0"], state="running"),
        vm("web1", host=["hv1"], state="running")]
    run = run_play(setup, engine=engine_options)
    assert run.rc == 0, run.output[-3000:]
    # their pinning undone (in the engine's rows: the vm module of another process would find the test driver's
    # domains gone), and a hard group made after both started: they share hv0, which the group forbids
    sql("UPDATE vm SET spec = spec - 'hosts' WHERE name IN ('db1', 'db2', 'web1') RETURNING name")
    run = run_play([group("apart", vm_rule="negative", vm_enforcing=True, vms=["db1", "db2"])], engine=engine_options)
    assert run.rc == 0 and run["apart"]["changed"], run.output[-3000:]
    sql("INSERT INTO host_statistics (host_id, cpu_percent) SELECT id, CASE name WHEN 'hv1' THEN 92 ELSE 30 END"
        " FROM host ON CONFLICT (host_id) DO UPDATE SET cpu_percent = EXCLUDED.cpu_percent RETURNING host_id")
    # hv1 above high_utilization for a minute only: not for the policy's two, so it keeps its VM
    load = ("INSERT INTO host_load_sample (host_id, sampled_at, cpu_percent) SELECT id, now() - %s * interval"
            " '1 second', CASE name WHEN 'hv1' THEN %s ELSE 30 END FROM host RETURNING host_id")
    sql(load, 60, 92)
    info = {"virtplane.kvm.cluster_balance_info": {"cluster": "prod"}}
    run = run_play([dict(name="brief", **info)], engine=engine_options)
    assert [m["vm"] for m in run["brief"]["balance"]["migrations"]] == ["db1"], run.output[-3000:]
    # and from three minutes ago on: it has been above for the whole duration
    sql(load, 180, 85)
    run = run_play([
        dict(name="now", **info),
        dict(name="vms", **{"virtplane.kvm.cluster_balance_info": {
            "cluster": "prod", "policy": "vm_evenly_distributed",
            "policy_params": {"high_vm_count": 1, "migration_threshold": 1}}}),
        dict(name="bad params", ignore_errors=True, **{"virtplane.kvm.cluster_balance_info": {
            "cluster": "prod", "policy": "power_saving",
            "policy_params": {"low_utilization": 90, "high_utilization": 50}}}),
        dict(name="unknown", ignore_errors=True, **{"virtplane.kvm.cluster_balance_info": {"cluster": "nowhere"}}),
    ], engine=engine_options, check=True)
    balance = run["now"]["balance"]
    assert (balance["policy"], balance["params"]) == ("evenly_distributed", {"high_utilization": 80,
                                                                             "duration_minutes": 2})
    assert balance["migrations"] == [
        {"vm": "db1", "from": "hv0", "to": "hv2",
         "reason": "its host hv0 no longer suits it: affinity group db: the VM must not run with db2"},
        {"vm": "web1", "from": "hv1", "to": "hv0",
         "reason": "CPU load of host hv1 was above high_utilization 80% for the last 2 minutes (92% to 92%)"}]
    assert balance["problems"] == []
    # another policy, asked without changing the cluster
    assert [m["vm"] for m in run["vms"]["balance"]["migrations"]] == ["db1"]
    assert run["bad params"]["msg"] == ("Invalid value for 'policy_params': low_utilization (90) must be below "
                                        "high_utilization (50)")
    assert run["unknown"]["msg"] == "Cannot balance cluster 'nowhere': cluster 'nowhere' does not exist"
    # nothing moved
    assert sql("SELECT v.name, h.name AS host FROM vm v JOIN vm_runtime r ON r.vm_id = v.id"
               " JOIN host h ON h.id = r.run_host_id ORDER BY v.name") == [
        {"name": "db1", "host": "hv0"}, {"name": "db2", "host": "hv0"}, {"name": "web1", "host": "hv1"}]
