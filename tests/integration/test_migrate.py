"""vm_migrate, host maintenance (host state maintenance / active) and cluster_balance on a real PostgreSQL with
libvirt's test driver as the hosts: every refusal, before anything moves, in check mode as for real (a drain that
cannot happen names each VM that blocks it); a migration, a drain or a balancing pass that fails leaves the VM where a
host says it is and the host as it was, the engine's record right; a host in maintenance is out of placement until
it is active again. Guests that really move (ping, heartbeat, downtime, drains) are in tests/lab/test_resources.py."""

import sys

import pytest

from tests.support.engine import engine_write
from tests.support.playbook import run_play, start_plays

BASE = [{"name": "dc", "virtplane.kvm.datacenter": {"name": "paris"}},
        {"name": "prod", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris"}},
        {"name": "dev", "virtplane.kvm.cluster": {"name": "dev", "datacenter": "paris"}},
        {"name": "app", "virtplane.kvm.logical_network": {"name": "app", "datacenter": "paris", "mode": "isolated",
                                                          "clusters": [{"name": "prod"}]}},
        {"name": "shared", "virtplane.kvm.storage_domain": {"name": "shared", "datacenter": "paris", "type": "posixfs",
                                                            "posixfs": {"path": "/srv/shared"}}}]
KERNEL = {"kernel": "/var/lib/virtplane/images/vmlinuz", "cmdline": "console=ttyS0"}
# test-driver hosts of their own (a node file each): what a host has is there whatever connection asks, so a
# domain that runs on hv1 is found there by every run
POOL = """<pool type='dir'><name>vp-shared</name><uuid>35bb2ad9-388a-cdfe-461a-b8907f6e53f%d</uuid>
<capacity unit='GiB'>100</capacity><allocation unit='GiB'>0</allocation><available unit='GiB'>100</available>
<target><path>/srv/shared</path></target></pool>"""
WEB = """<domain type='test'><name>web</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>
<os><type>hvm</type></os></domain>"""


def _nodes(directory):
    """hv1 runs web; hv1 to hv3 have the storage domain's pool."""
    uris = {}
    for number, name in enumerate(("hv1", "hv2", "hv3", "hv4"), 1):
        path = directory / ("%s.xml" % name)
        path.write_text("<node><cpu><mhz>2400</mhz></cpu>%s%s</node>" % (
            POOL % number if name != "hv4" else "", WEB if name == "hv1" else ""))
        uris[name] = "test://%s" % path
    return uris


def vm(name, **options):
    values = dict(name=name, cluster="prod", memory="256MiB", vcpus=1, nics=[{"network": "app"}], boot=KERNEL)
    values.update(options)
    return {"virtplane.kvm.vm": values}


def _play(tasks):
    return {"hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks,
            "vars": {"ansible_python_interpreter": sys.executable}}


def migrate(name, task=None, **options):
    return {"name": task or name, "ignore_errors": True, "virtplane.kvm.vm_migrate": dict(name=name, **options)}


@pytest.fixture
def cluster(engine_options, sql, tmp_path):
    """web runs on hv1 (its disk on shared), db is Down; hv2 is in maintenance, hv3 lacks the network app, hv4 the
    storage domain shared (its libvirt lost the pool); dv1 is in another cluster."""
    uris = _nodes(tmp_path)
    hosts = [{"virtplane.kvm.host": {"name": name, "cluster": "prod", "libvirt_uri": uris[name]}} for name in uris]
    hosts.append({"virtplane.kvm.host": {"name": "dv1", "cluster": "dev", "libvirt_uri": "test:///default"}})
    disk = {"name": "web-data", "storage_domain": "shared", "size": "64MiB"}
    run = run_play(BASE[:3] + hosts + BASE[3:] + [vm("web", disks=[disk]), vm("db")], engine=engine_options)
    assert run.rc == 0, run.output[-3000:]
    # what a start on hv1 and the host module would have recorded (hv1's libvirt runs web from its node file;
    # maintenance comes with the host module's drain; a network and a pool the hosts lost)
    engine_write(engine_options, [
        "UPDATE vm_runtime SET status = 'Up', run_host_id = (SELECT id FROM host WHERE name = 'hv1'),"
        " reserved_memory_mib = 256, reserved_vcpus = 1 WHERE vm_id = (SELECT id FROM vm WHERE name = 'web')",
        "UPDATE host SET status = 'Maintenance', status_reason = 'kept out by an administrator' WHERE name = 'hv2'",
        "UPDATE host_network SET realized = false WHERE host_id = (SELECT id FROM host WHERE name = 'hv3')",
        "UPDATE storage_domain_host SET active = false WHERE host_id = (SELECT id FROM host WHERE name = 'hv4')"])
    with_host = sql("SELECT h.name FROM vm_runtime r JOIN vm v ON v.id = r.vm_id JOIN host h ON h.id = r.run_host_id")
    assert with_host == [{"name": "hv1"}]
    active = sql("SELECT h.name, sh.active FROM storage_domain_host sh JOIN host h ON h.id = sh.host_id ORDER BY 1")
    assert [r["name"] for r in active if not r["active"]] == ["hv4"], active
    return engine_options


MAINTENANCE = "host is Maintenance (kept out by an administrator)"
REFUSALS = [
    ("stopped", dict(name="db", host="hv3"), "Cannot migrate VM 'db': it is Down; only a running VM (Up) migrates"),
    ("same host", dict(name="web", host="hv1"), "Cannot migrate VM 'web' to host hv1: it runs there already"),
    ("maintenance", dict(name="web", host="hv2"), "Cannot migrate VM 'web' to host hv2: "),
    ("other cluster", dict(name="web", host="dv1"), "Cannot migrate VM 'web' to host dv1: the host is in cluster dev "
                                                    "and the VM in cluster prod (a VM migrates within its cluster)"),
    ("no network", dict(name="web", host="hv3"), "Cannot migrate VM 'web' to host hv3: logical network app not "
                                                 "realized"),
    ("no storage", dict(name="web", host="hv4"), "Cannot migrate VM 'web' to host hv4: storage domain shared not "
                                                 "active"),
    ("nowhere", dict(name="web"), "Cannot migrate VM 'web': no other host of cluster prod can run it: hv1: the VM "
                                  "runs there; hv2: "),
    ("no such host", dict(name="web", host="hv9"), "Cannot migrate VM 'web' there: host 'hv9' does not exist"),
    ("no such vm", dict(name="ghost"), "VM 'ghost' does not exist"),
    ("bandwidth zero", dict(name="web", bandwidth=0), "Invalid value for 'bandwidth': 0 is outside 1-100000 MiB/s"),
    ("bandwidth negative", dict(name="web", bandwidth=-5), "Invalid value for 'bandwidth': -5 is outside 1-100000"),
    ("policy", dict(name="web", policy="fast"), "Invalid value for 'policy': 'fast' is not one of minimal_downtime, "
                                                "post_copy, suspend_workload, legacy"),
    ("policy newline", dict(name="web", policy="legacy\n"), "Invalid value for 'policy': "),
    ("host newline", dict(name="web", host="hv3\n"), "Invalid value for 'host': "),
    ("timeout huge", dict(name="web", migration_timeout=10 ** 20), "Invalid value for 'migration_timeout': "),
    ("cancel with host", dict(name="web", cancel=True, host="hv3"), "Invalid value for 'cancel': cancels the VM's "
                                                                    "running migration"),
]


def test_every_refusal_comes_before_anything_moves_in_check_mode_as_for_real(cluster, sql):
    before = sql("SELECT v.name, r.status, r.run_host_id, r.migrating_to_host_id, r.job_id, r.reserved_memory_mib"
                 " FROM vm v JOIN vm_runtime r ON r.vm_id = v.id ORDER BY v.name")
    events = sql("SELECT count(*) AS n FROM event")[0]["n"]
    tasks = [migrate(task=name, **options) for name, options, _message in REFUSALS]
    # both at once: each task is refused before anything changes, so neither run sees the other
    started = [start_plays([_play(tasks)], engine=cluster, check=check) for check in (True, False)]
    check, real = (run.wait() for run in started)
    for name, _options, message in REFUSALS:
        for run in (check, real):
            result = run[name]
            assert result.get("failed"), (name, result)
            assert message in result["msg"], (name, result["msg"])
            assert "\n" not in result["msg"]
        assert check[name]["msg"] == real[name]["msg"]
    # the reasons are the scheduler's, host by host
    assert real["nowhere"]["msg"] == ("Cannot migrate VM 'web': no other host of cluster prod can run it: hv1: the VM "
                                      "runs there; hv2: %s; hv3: logical network app not realized; hv4: storage "
                                      "domain shared not active" % MAINTENANCE)
    assert real["maintenance"]["msg"] == "Cannot migrate VM 'web' to host hv2: %s" % MAINTENANCE
    after = sql("SELECT v.name, r.status, r.run_host_id, r.migrating_to_host_id, r.job_id, r.reserved_memory_mib"
                " FROM vm v JOIN vm_runtime r ON r.vm_id = v.id ORDER BY v.name")
    assert after == before
    assert sql("SELECT count(*) AS n FROM event")[0]["n"] == events
    assert sql("SELECT * FROM migration") == [] and sql("SELECT * FROM job WHERE action = 'vm.migrate'") == []


def test_a_failed_migration_leaves_the_vm_on_its_source_and_the_engine_says_so(cluster, sql):
    """The test driver cannot migrate: the attempt fails after the reservation, the VM still runs on hv1, and the
    engine takes the reservation on hv2 back."""
    engine_write(cluster, ["UPDATE host SET status = 'Up', status_reason = '' WHERE name = 'hv2'"])
    run = run_play([migrate("web", task="check", host="hv2")], engine=cluster, check=True)
    assert run["check"]["changed"] and run["check"]["actions"] == ["migrate from hv1 to hv2 (minimal_downtime)"]
    assert run["check"]["vm"]["host"] == "hv2"
    assert sql("SELECT * FROM migration") == []

    run = run_play([migrate("web", task="move", host="hv2", policy="legacy", bandwidth=64)], engine=cluster)
    failure = run["move"]
    assert failure.get("failed"), failure
    assert failure["msg"].startswith("Failed to migrate VM 'web' to host hv2 on host hv1: "), failure["msg"]
    runtime = sql("SELECT r.status, h.name AS host, r.migrating_to_host_id, r.job_id, r.reserved_memory_mib"
                  " FROM vm_runtime r JOIN vm v ON v.id = r.vm_id LEFT JOIN host h ON h.id = r.run_host_id"
                  " WHERE v.name = 'web'")
    assert runtime == [{"status": "Up", "host": "hv1", "migrating_to_host_id": None, "job_id": None,
                        "reserved_memory_mib": 256}]
    migration = sql("SELECT source_host, destination_host, policy, bandwidth_mibps, status, reason FROM migration")
    assert [(m["source_host"], m["destination_host"], m["policy"], m["bandwidth_mibps"], m["status"])
            for m in migration] == [("hv1", "hv2", "legacy", 64, "failed")]
    assert migration[0]["reason"]
    events = [e["code"] for e in sql("SELECT code FROM event WHERE object_name = 'web' ORDER BY id")]
    assert events[-2:] == ["VM_MIGRATION_STARTED", "VM_MIGRATION_FAILED"]
    assert "it keeps running on host hv1" in sql(
        "SELECT message FROM event WHERE code = 'VM_MIGRATION_FAILED'")[0]["message"]
    # nothing is held on hv2 any more: its committed memory is what its own VMs hold
    held = sql("SELECT count(*) AS n FROM vm_runtime WHERE migrating_to_host_id IS NOT NULL")
    assert held == [{"n": 0}]
    assert [j["status"] for j in sql("SELECT status FROM job WHERE action = 'vm.migrate'")] == ["failed"]


def test_a_migrating_vm_holds_its_room_on_both_hosts(cluster, sql, engine):
    """While a migration runs (recorded as its reserve step leaves it), the destination counts the VM, and a snapshot
    kept from before learns it from the change log; when it ends, the room moves (done) or goes back (failed)."""
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _placing

    cluster_id = sql("SELECT id FROM cluster WHERE name = 'prod'")[0]["id"]

    def committed():
        with engine.transaction() as cur:
            return {h.name: h.committed_mib for h in _placing.scheduler_for(engine, cur, cluster_id).hosts}

    engine_write(cluster, ["UPDATE host SET status = 'Up', status_reason = '' WHERE name = 'hv2'"])
    assert committed()["hv1"] == 256 and committed()["hv2"] == 0  # the snapshot this connection keeps
    reserve = ("UPDATE vm_runtime SET migrating_to_host_id = (SELECT id FROM host WHERE name = 'hv2'),"
               " status = 'MigratingFrom' WHERE vm_id = (SELECT id FROM vm WHERE name = 'web')")
    engine_write(cluster, [reserve])
    assert (committed()["hv1"], committed()["hv2"]) == (256, 256)
    # a disk of a migrating VM is not grown (its image is open on a host, and no guest there can be asked)
    grow = {"name": "grow", "ignore_errors": True, "virtplane.kvm.disk": {
        "name": "web-data", "storage_domain": "shared", "size": "128MiB"}}
    for check in (True, False):
        run = run_play([grow], engine=cluster, check=check)
        assert run["grow"]["msg"] == ("Cannot grow disk 'web-data': VM web is MigratingFrom; grow it when the VM is "
                                      "Up or Down"), run["grow"]
    # failed: the destination's room goes back
    engine_write(cluster, ["UPDATE vm_runtime SET migrating_to_host_id = NULL, status = 'Up'"
                           " WHERE vm_id = (SELECT id FROM vm WHERE name = 'web')"])
    assert (committed()["hv1"], committed()["hv2"]) == (256, 0)
    # done: the VM's room moves to the destination
    engine_write(cluster, [reserve, "UPDATE vm_runtime SET run_host_id = migrating_to_host_id,"
                           " migrating_to_host_id = NULL, status = 'Up' WHERE vm_id = (SELECT id FROM vm"
                           " WHERE name = 'web')"])
    assert (committed()["hv1"], committed()["hv2"]) == (0, 256)


# --- host maintenance and balancing ------------------------------------------------------------

def host(name, task=None, **options):
    return {"name": task or name, "ignore_errors": True, "virtplane.kvm.host": dict(name=name, **options)}


def balance(task="balance", **options):
    return {"name": task, "ignore_errors": True, "virtplane.kvm.cluster_balance": dict(cluster="prod", **options)}


def _state(sql):
    return (sql("SELECT name, status, status_reason, job_id FROM host ORDER BY name"),
            sql("SELECT v.name, r.status, r.run_host_id, r.migrating_to_host_id, r.job_id FROM vm v"
                " JOIN vm_runtime r ON r.vm_id = v.id ORDER BY v.name"),
            sql("SELECT count(*) AS n FROM event")[0]["n"], sql("SELECT count(*) AS n FROM job")[0]["n"])


DRAIN_REFUSALS = [
    ("nowhere", dict(name="hv1", state="maintenance"),
     "Cannot put host hv1 into maintenance: VM web cannot leave it: VM web: no other host can run it: hv1: it goes "
     "into maintenance; hv2: host is Maintenance (kept out by an administrator); hv3: logical network app not "
     "realized; hv4: storage domain shared not active"),
    ("no such host", dict(name="hv9", state="maintenance"), "host 'hv9' does not exist"),
    ("no such host active", dict(name="hv9", state="active"), "host 'hv9' does not exist"),
    ("settings", dict(name="hv1", state="maintenance", cluster="dev"),
     "Invalid value for 'state': maintenance takes a host as it is; change its settings with state present"),
    ("settings active", dict(name="hv2", state="active", reserved_cpus=1), "Invalid value for 'state': active takes"),
    ("state newline", dict(name="hv1", state="maintenance\n"), "Invalid value for 'state': "),
    ("name metacharacters", dict(name="hv1;reboot", state="maintenance"), "Invalid value for 'name': "),
    ("timeout negative", dict(name="hv1", state="maintenance", timeout=-1), "Invalid value for 'timeout': "),
]


def test_a_drain_that_cannot_happen_is_refused_naming_each_vm_before_anything_moves(cluster, sql):
    before = _state(sql)
    tasks = [host(task=name, **options) for name, options, _message in DRAIN_REFUSALS]
    tasks.append(balance("bad policy", policy="fastest"))
    tasks.append(balance("bad timeout", migration_timeout=0))
    started = [start_plays([_play(tasks)], engine=cluster, check=check) for check in (True, False)]
    check, real = (run.wait() for run in started)
    for name, _options, message in DRAIN_REFUSALS:
        for run in (check, real):
            assert run[name].get("failed"), (name, run[name])
            assert message in run[name]["msg"] and "\n" not in run[name]["msg"], (name, run[name]["msg"])
        assert check[name]["msg"] == real[name]["msg"]
    assert real["nowhere"]["msg"] == DRAIN_REFUSALS[0][2]
    assert "Invalid value for 'policy': 'fastest' is not one of none," in real["bad policy"]["msg"]
    assert real["bad timeout"]["msg"] == "Invalid value for 'migration_timeout': 0 is outside 1-86400 seconds"
    assert _state(sql) == before

    # a VM that does not run there as Up blocks it too, with its status; every blocking VM is named
    engine_write(cluster, [
        "UPDATE host SET status = 'Up', status_reason = '' WHERE name = 'hv2'",
        "UPDATE vm_runtime SET status = 'Paused', status_reason = 'paused by its guest', reserved_memory_mib = 256,"
        " reserved_vcpus = 1, run_host_id = (SELECT id FROM host WHERE name = 'hv1')"
        " WHERE vm_id = (SELECT id FROM vm WHERE name = 'db')"])
    before = _state(sql)
    for check in (True, False):
        run = run_play([host("hv1", state="maintenance")], engine=cluster, check=check)
        assert run["hv1"]["msg"] == ("Cannot put host hv1 into maintenance: VM db cannot leave it: VM db: it is Paused "
                                     "(paused by its guest); only a running VM (Up) migrates"), run["hv1"]
    assert _state(sql) == before


def test_a_host_in_maintenance_is_out_of_placement_until_active_again(cluster, sql):
    # hv2 is in maintenance already, with nothing on it: nothing to do
    for check in (True, False):
        run = run_play([host("hv2", state="maintenance")], engine=cluster, check=check)
        assert run["hv2"]["changed"] is False and run["hv2"]["host"]["status"] == "Maintenance", run["hv2"]
    # hv4 has no VM: check mode says what happens, the real run does it, a second run changes nothing
    run = run_play([host("hv4", state="maintenance")], engine=cluster, check=True)
    assert run["hv4"]["changed"] and run["hv4"]["actions"] == ["status Up -> Maintenance"]
    assert sql("SELECT status FROM host WHERE name = 'hv4'") == [{"status": "Up"}]
    run = run_play([host("hv4", state="maintenance"), host("hv4", task="again", state="maintenance"),
                    host("hv4", task="refreshed", state="refreshed"),
                    migrate("web", task="there", host="hv4")], engine=cluster)
    assert run["hv4"]["changed"] and run["hv4"]["host"]["status"] == "Maintenance", run["hv4"]
    assert run["again"]["changed"] is False
    assert run["refreshed"]["host"]["status"] == "Maintenance"  # checked, it stays there
    assert run["there"]["msg"].startswith("Cannot migrate VM 'web' to host hv4: host is Maintenance"), run["there"]
    events = [e["code"] for e in sql("SELECT code FROM event WHERE host_name = 'hv4' ORDER BY id")]
    assert events[-2:] == ["HOST_MAINTENANCE_STARTED", "HOST_MAINTENANCE"]
    # active: checked again (its pool defined again: a test-driver host forgets it between connections), and Up
    run = run_play([host("hv4", state="active"), host("hv4", task="again", state="active")], engine=cluster,
                   diff=True)
    assert run["hv4"]["changed"] and "status Maintenance -> Up" in run["hv4"]["actions"], run["hv4"]
    assert run["hv4"]["host"]["status"] == "Up"
    assert run["again"]["host"]["status"] == "Up" and not any(a.startswith("status ")
                                                              for a in run["again"]["actions"])


def test_a_drain_that_fails_half_way_puts_the_host_back_and_the_vm_stays(cluster, sql):
    """The test driver cannot migrate: the drain reserves, its migration fails, the host is Up again and web still
    runs on hv1 (the lab drains for real)."""
    engine_write(cluster, ["UPDATE host SET status = 'Up', status_reason = '' WHERE name = 'hv2'"])
    run = run_play([host("hv1", state="maintenance")], engine=cluster, check=True)
    assert run["hv1"]["actions"] == ["migrate VM web (to hv2, as things are now)", "status Up -> Maintenance"]
    run = run_play([host("hv1", state="maintenance")], engine=cluster)
    message = run["hv1"]["msg"]
    assert message.startswith("Cannot put host hv1 into maintenance: VM web: Failed to migrate VM 'web' to host hv2 "
                              "on host hv1: "), message
    assert message.endswith("; no VM moved")
    assert sql("SELECT status, status_reason, job_id FROM host WHERE name = 'hv1'") == [
        {"status": "Up", "status_reason": "", "job_id": None}]
    runtime = sql("SELECT r.status, h.name AS host, r.migrating_to_host_id FROM vm_runtime r JOIN vm v ON"
                  " v.id = r.vm_id JOIN host h ON h.id = r.run_host_id WHERE v.name = 'web'")
    assert runtime == [{"status": "Up", "host": "hv1", "migrating_to_host_id": None}]
    codes = [e["code"] for e in sql("SELECT code FROM event WHERE host_name = 'hv1' ORDER BY id")
             if e["code"].startswith("HOST_")]
    assert codes[-2:] == ["HOST_MAINTENANCE_STARTED", "HOST_MAINTENANCE_FAILED"]
    assert sorted(j["status"] for j in sql("SELECT status FROM job WHERE action IN ('host.maintenance',"
                                           " 'vm.migrate')")) == ["failed", "failed"]


def test_a_balancing_pass_moves_what_its_host_no_longer_suits(cluster, sql):
    # balanced: nothing proposed, nothing changed
    for check in (True, False):
        run = run_play([balance()], engine=cluster, check=check)
        assert run["balance"]["changed"] is False and run["balance"]["balance"]["migrations"] == [], run["balance"]
    # web's host hv1 no longer suits it (pinned to hv2 now): check mode plans the move with its reason; db, pinned
    # there too but Paused on hv1, cannot migrate, and is not proposed (a pass could never make it)
    engine_write(cluster, ["UPDATE host SET status = 'Up', status_reason = '' WHERE name = 'hv2'",
                           "UPDATE vm SET spec = jsonb_set(spec, '{hosts}', '[\"hv2\"]') WHERE name IN ('web', 'db')",
                           "UPDATE vm_runtime SET status = 'Paused', reserved_memory_mib = 256, reserved_vcpus = 1,"
                           " run_host_id = (SELECT id FROM host WHERE name = 'hv1')"
                           " WHERE vm_id = (SELECT id FROM vm WHERE name = 'db')"])
    run = run_play([balance()], engine=cluster, check=True)
    assert run["balance"]["changed"]
    assert run["balance"]["actions"] == ["migrate VM web from hv1 to hv2: its host hv1 no longer suits it: the VM is "
                                         "pinned to hv2"], run["balance"]
    assert sql("SELECT * FROM migration") == []
    # for real: the test driver cannot migrate, and the pass says which VM did not move and why
    run = run_play([balance()], engine=cluster)
    assert run["balance"]["msg"].startswith("Cluster prod was not balanced: VM web did not migrate to hv2: Failed to "
                                            "migrate VM 'web' to host hv2 on host hv1: "), run["balance"]
    assert run["balance"]["msg"].endswith("; no VM moved")
    assert [m["status"] for m in sql("SELECT status FROM migration")] == ["failed"]


def test_a_planned_move_of_a_vm_that_has_left_its_host_is_not_made(cluster, engine, sql):
    """A drain or a balancing pass plans moves off a host; a VM that left it meanwhile (moved or stopped by
    another run) is not moved from where it is now."""
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _migrate

    engine_write(cluster, ["UPDATE host SET status = 'Up', status_reason = '' WHERE name = 'hv2'"])
    results = _migrate.migrate_many(engine, [("web", "hv2", "hv3"), ("db", None, "hv1")], 2)
    for name in ("web", "db"):
        outcome, error = results[name]
        assert error is None and outcome.changed is False, (name, outcome, error)
    assert results["web"][0].resource["host"] == "hv1"
    assert sql("SELECT * FROM migration") == [] and sql("SELECT * FROM job WHERE action = 'vm.migrate'") == []
