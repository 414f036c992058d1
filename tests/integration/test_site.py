"""playbooks/datacenter.yml (what site.yml applies after the roles): a data center described in inventory variables,
applied in order, idempotent, planned in check mode, pruned on request; a bad description refused as a whole before
anything changes. libvirt's test driver is the hosts; a real PostgreSQL the engine."""

import copy
import json
import os
import sys

import pytest
import yaml

from tests.support.engine import engine_write
from tests.support.playbook import ROOT, run_plays

TABLES = ("datacenter", "cluster", "host", "storage_domain", "logical_network", "cluster_network", "vm", "vm_nic",
          "affinity_group", "affinity_group_vm")
DESCRIPTION = {
    "virtplane_datacenter": "paris",
    "virtplane_clusters": [{"name": "prod", "datacenter": "paris"},
                           {"name": "dev", "datacenter": "paris", "memory_overcommit_percent": 150}],
    # the test driver forgets a pool or a network when its connection closes: a host that had to realize the
    # storage domain or the network would do it again at every run. The hosts are in dev, the rest in prod; a
    # re-apply on hosts that keep what they are given is make demo's second run (and the lab tests).
    "virtplane_hosts": [{"name": "hv1", "cluster": "dev", "libvirt_uri": "test:///default"},
                        {"name": "hv2", "cluster": "dev", "libvirt_uri": "test:///default"}],
    "virtplane_storage_domains": [{"name": "shared", "type": "posixfs", "posixfs": {"path": "/srv/shared"},
                                   "clusters": ["prod"]}],
    "virtplane_logical_networks": [{"name": "app", "mode": "isolated", "mtu": 1500, "clusters": [{"name": "prod"}]},
                                   {"name": "backup", "mode": "isolated", "mtu": 1500, "clusters": [{"name": "prod"}]}],
    "virtplane_vms": [
        {"name": "web01", "cluster": "prod", "memory": "64MiB", "nics": [{"name": "eth0", "network": "app"}],
         "console": {"type": "vnc", "password": "S3cret!"}},
        {"name": "web02", "cluster": "prod", "memory": "64MiB", "nics": [{"name": "eth0", "network": "app"}]},
        {"name": "db01", "cluster": "prod", "memory": "128MiB"}],
    "virtplane_affinity_groups": [{"name": "spread", "cluster": "prod", "vm_rule": "negative",
                                   "vms": ["web01", "web02"]}],
}


def credential(engine_options):
    return {"VIRTPLANE_ENGINE_HOST": engine_options["host"], "VIRTPLANE_ENGINE_PORT": str(engine_options["port"]),
            "VIRTPLANE_ENGINE_DATABASE": engine_options["database"],
            "VIRTPLANE_ENGINE_PASSWORD": engine_options["password"]}


def apply(engine_options, tmp_path, description, check=False, diff=False):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "children": {"engine": {"hosts": {"engine1": {"ansible_connection": "local",
                                                      "ansible_python_interpreter": sys.executable}}}},
        "vars": description}}))
    run = run_plays([{"import_playbook": os.path.join(ROOT, "playbooks", "datacenter.yml")}], check=check, diff=diff,
                    extra_env=credential(engine_options), inventory=str(inventory))
    assert "S3cret!" not in run.output and engine_options["password"] not in run.output
    return run


def snapshot(sql):
    return {t: json.dumps(sql("SELECT * FROM %s ORDER BY 1" % t), default=str, sort_keys=True) for t in TABLES}


def test_a_description_is_planned_applied_and_reapplied_without_change(engine_options, tmp_path, sql):
    empty = snapshot(sql)
    check = apply(engine_options, tmp_path, DESCRIPTION, check=True, diff=True)
    assert check.rc == 0, check.output[-3000:]
    plan = check["Check the description as a whole, before anything changes"]
    assert plan["creations"] == [
        "create data center 'paris'", "create cluster 'prod'", "create cluster 'dev'", "create host 'hv1'",
        "create host 'hv2'", "create storage domain 'shared' (data center paris)",
        "create logical network 'app' (data center paris)", "create logical network 'backup' (data center paris)",
        "create affinity group 'spread' (cluster prod)", "create VM 'web01'", "create VM 'web02'", "create VM 'db01'"]
    assert snapshot(sql) == empty

    first = apply(engine_options, tmp_path, DESCRIPTION)
    assert first.rc == 0, first.output[-3000:]
    assert [r["name"] for r in sql("SELECT name FROM vm ORDER BY 1")] == ["db01", "web01", "web02"]
    [dev] = sql("SELECT memory_overcommit_percent FROM cluster WHERE name = 'dev'")
    assert dev["memory_overcommit_percent"] == 150
    assert [r["name"] for r in sql("SELECT v.name FROM affinity_group_vm a JOIN vm v ON v.id = a.vm_id ORDER BY 1")] \
        == ["web01", "web02"]

    again = apply(engine_options, tmp_path, DESCRIPTION)
    assert again.rc == 0 and again.changed_tasks == [], again.changed_tasks
    assert "changed=0" in again.output
    # the first task compared each item with the engine: nothing differs, and each task had nothing to do - but
    # for web01, whose console password the site module is never given (the VM task compares it)
    site = again["Check the description as a whole, before anything changes"]
    assert site["pending"] == {"datacenters": [], "clusters": [], "hosts": [], "storage_domains": [],
                               "logical_networks": [], "affinity_groups": [], "vms": [0]}
    assert site["invocation"]["module_args"]["compare"]["vms"][0] is None
    for task in ("Data centers", "Clusters", "Hosts registered as they are, in one call", "Storage domains",
                 "Logical networks", "Affinity groups"):
        assert again[task]["_status"] == "skipped", task
    assert [v["name"] for v in again["VMs, in one call (read in bulk, changed where they differ)"]["vms"]] == ["web01"]

    # one VM's memory and one network's MTU (one no NIC is on: the MTU of a network in use does not change under its
    # VMs): exactly those change, in check mode as for real
    changed = copy.deepcopy(DESCRIPTION)
    changed["virtplane_vms"][2]["memory"] = "256MiB"
    changed["virtplane_logical_networks"][1]["mtu"] = 9000
    before = snapshot(sql)
    planned = apply(engine_options, tmp_path, changed, check=True, diff=True)
    assert planned.rc == 0, planned.output[-3000:]
    assert sorted(planned.changed_tasks) == ["Logical networks", "VMs, in one call (read in bulk, changed where they "
                                                                 "differ)"]
    assert snapshot(sql) == before
    vms = planned["VMs, in one call (read in bulk, changed where they differ)"]
    assert [v["name"] for v in vms["vms"] if v["changed"]] == ["db01"]
    real = apply(engine_options, tmp_path, changed)
    assert sorted(real.changed_tasks) == sorted(planned.changed_tasks), real.output[-3000:]
    assert sql("SELECT memory_mib FROM vm WHERE name = 'db01'")[0]["memory_mib"] == 256
    assert [(r["name"], r["mtu"]) for r in sql("SELECT name, mtu FROM logical_network ORDER BY 1")] == [
        ("app", 1500), ("backup", 9000)]
    assert sql("SELECT memory_mib FROM vm WHERE name = 'web01'")[0]["memory_mib"] == 64


def test_a_change_made_behind_the_description_is_found_and_undone_by_a_re_apply(engine_options, tmp_path, sql):
    assert apply(engine_options, tmp_path, DESCRIPTION).rc == 0
    engine_write(engine_options, ["UPDATE cluster SET memory_overcommit_percent = 100 WHERE name = 'dev'",
                                  "UPDATE vm SET memory_mib = 512 WHERE name = 'web02'"])
    for check in (True, False):
        run = apply(engine_options, tmp_path, DESCRIPTION, check=check)
        assert run.rc == 0, run.output[-3000:]
        assert run["Check the description as a whole, before anything changes"]["pending"]["clusters"] == [1]
        assert run["Check the description as a whole, before anything changes"]["pending"]["vms"] == [0, 1]
        assert sorted(run.changed_tasks) == ["Clusters", "VMs, in one call (read in bulk, changed where they differ)"]
        vms = run["VMs, in one call (read in bulk, changed where they differ)"]["vms"]
        assert [(v["name"], v["changed"]) for v in vms] == [("web01", False), ("web02", True)]
    assert sql("SELECT memory_overcommit_percent FROM cluster WHERE name = 'dev'")[0]["memory_overcommit_percent"] \
        == 150
    assert sql("SELECT memory_mib FROM vm WHERE name = 'web02'")[0]["memory_mib"] == 64
    assert apply(engine_options, tmp_path, DESCRIPTION).changed_tasks == []


def test_prune_removes_what_the_description_no_longer_names_and_refuses_a_running_vm(engine_options, tmp_path, sql):
    assert apply(engine_options, tmp_path, DESCRIPTION).rc == 0
    smaller = copy.deepcopy(DESCRIPTION)
    smaller["virtplane_vms"] = smaller["virtplane_vms"][:2]
    smaller["virtplane_affinity_groups"] = []
    # a kind the description does not list is not pruned: the storage domain stays
    del smaller["virtplane_storage_domains"]

    # without prune, what the description no longer names stays
    kept = apply(engine_options, tmp_path, smaller)
    assert kept.rc == 0 and kept.changed_tasks == []
    assert len(sql("SELECT name FROM vm")) == 3

    # a VM that runs is not pruned unless asked, and nothing changes
    engine_write(engine_options, [
        "UPDATE vm_runtime SET status = 'Up', run_host_id = (SELECT id FROM host WHERE name = 'hv1'),"
        " reserved_memory_mib = 128, reserved_vcpus = 1 WHERE vm_id = (SELECT id FROM vm WHERE name = 'db01')"])
    before = snapshot(sql)
    for check in (True, False):
        refused = apply(engine_options, tmp_path, dict(smaller, virtplane_prune=True), check=check)
        assert refused.rc != 0
        assert refused["Check the description as a whole, before anything changes"]["msg"] == (
            "Cannot prune VMs that do not stand still: 'db01' is Up on hv1; set prune_running to power them off "
            "and remove them")
        assert snapshot(sql) == before
    # the description removing it itself is the vm module's to stop (with force), not a prune's refusal
    absent = copy.deepcopy(DESCRIPTION)
    absent["virtplane_vms"][2] = {"name": "db01", "state": "absent"}
    plan = apply(engine_options, tmp_path, absent, check=True)
    assert plan["Check the description as a whole, before anything changes"]["removals"] == []
    assert "db01" in plan["VMs, in one call (read in bulk, changed where they differ)"]["msg"]
    engine_write(engine_options, ["UPDATE vm_runtime SET status = 'Down', run_host_id = NULL, reserved_memory_mib = 0,"
                                  " reserved_vcpus = 0 WHERE vm_id = (SELECT id FROM vm WHERE name = 'db01')"])

    planned = apply(engine_options, tmp_path, dict(smaller, virtplane_prune=True), check=True)
    assert planned.rc == 0
    assert planned["Remove what the description no longer names"]["actions"] == [
        "remove VM 'db01'", "remove affinity group 'spread' (cluster prod)"]
    assert len(sql("SELECT name FROM vm")) == 3
    pruned = apply(engine_options, tmp_path, dict(smaller, virtplane_prune=True))
    assert pruned.rc == 0 and pruned.changed_tasks == ["Remove what the description no longer names"]
    assert [r["name"] for r in sql("SELECT name FROM vm ORDER BY 1")] == ["web01", "web02"]
    assert sql("SELECT name FROM affinity_group") == []
    assert [r["name"] for r in sql("SELECT name FROM storage_domain")] == ["shared"]
    again = apply(engine_options, tmp_path, dict(smaller, virtplane_prune=True))
    assert again.rc == 0 and again.changed_tasks == []


def _with(path, value):
    description = copy.deepcopy(DESCRIPTION)
    target = description
    for key in path[:-1]:
        target = target[key]
    if value is None:
        target.pop(path[-1])
    else:
        target[path[-1]] = value
    return description


BAD = [
    ("unknown cluster", _with(["virtplane_vms", 1, "cluster"], "staging"),
     "Invalid value for 'vms[1].cluster': VM 'web02' names cluster 'staging', which is neither described nor in "
     "the engine"),
    ("unknown network", _with(["virtplane_vms", 0, "nics"], [{"name": "eth0", "network": "blue"}]),
     "Invalid value for 'vms[0].nics': VM 'web01' names logical network 'blue', which is neither described nor "
     "in the engine"),
    ("typo", _with(["virtplane_clusters", 1, "memory_overcommit"], 150),
     "Invalid value for 'clusters[1].memory_overcommit': is not an option of a cluster (name, datacenter,"),
    ("duplicate VM", _with(["virtplane_vms", 2], {"name": "web01", "cluster": "prod", "memory": "64MiB"}),
     "Invalid value for 'vms[2].name': VM 'web01' is described twice (vms[0] and vms[2])"),
    ("VM in two clusters", _with(["virtplane_vms", 2], {"name": "web01", "cluster": "dev", "memory": "64MiB"}),
     "Invalid value for 'vms[2].cluster': VM 'web01' is described in two clusters: 'prod' (vms[0]) and 'dev' "
     "(vms[2])"),
    ("unknown data center", _with(["virtplane_clusters", 1, "datacenter"], "lyon"),
     "Invalid value for 'clusters[1].datacenter': cluster 'dev' names data center 'lyon', which is neither "
     "described nor in the engine"),
    ("bad name", _with(["virtplane_vms", 2, "name"], "db01\n"), "Invalid value for 'vms[2].name': 'db01\\n'"),
    # what the module of an item's kind would refuse is refused by the first task too, before any kind is applied
    ("bad memory", _with(["virtplane_vms", 2, "memory"], "lots"), "Invalid value for 'vms[2].memory': "),
    ("bad choice", _with(["virtplane_logical_networks", 1, "mode"], "wide"),
     "Invalid value for 'logical_networks[1].mode': 'wide' is not one of"),
    ("bad number", _with(["virtplane_clusters", 1, "memory_overcommit_percent"], "150\n"),
     "Invalid value for 'clusters[1].memory_overcommit_percent': '150\\n' is not a whole number"),
]


@pytest.mark.parametrize("case", [c[0] for c in BAD])
def test_a_bad_description_is_refused_as_a_whole_before_anything_changes(engine_options, tmp_path, sql, case):
    _name, description, message = next(c for c in BAD if c[0] == case)
    before = snapshot(sql)
    for check in (True, False):
        run = apply(engine_options, tmp_path, description, check=check)
        assert run.rc != 0
        msg = run["Check the description as a whole, before anything changes"]["msg"]
        assert msg.startswith(message), msg
        assert "\n" not in msg
        assert snapshot(sql) == before


def test_the_example_description_is_whole_and_its_plan_lists_every_object(engine_options):
    # only the engine host, run here: the example's other addresses are never reached
    run = run_plays([{"import_playbook": os.path.join(ROOT, "playbooks", "datacenter.yml")}], check=True, diff=True,
                    extra_env=credential(engine_options), inventory=os.path.join(ROOT, "inventories", "example",
                                                                                 "production"),
                    limit="engine1", extra_vars={"ansible_connection": "local",
                                                 "ansible_python_interpreter": sys.executable})
    assert run.rc == 0, run.output[-3000:]
    assert run["Check the description as a whole, before anything changes"]["creations"] == [
        "create data center 'paris'", "create cluster 'prod'", "create host 'hv1'", "create host 'hv2'",
        "create host 'hv3'", "create storage domain 'shared' (data center paris)",
        "create logical network 'app' (data center paris)", "create logical network 'backend' (data center paris)",
        "create affinity group 'web-apart' (cluster prod)", "create VM 'web01'", "create VM 'web02'",
        "create VM 'db01'"]
    assert run.changed_tasks == ["Data centers"]
