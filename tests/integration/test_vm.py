"""vm and vm_info on a real PostgreSQL, with libvirt's test driver as the host.

The test driver keeps its domains only while a connection is open: one module run sees the domain
it made, the next does not (it records such a VM Down, as it would a VM its host lost). What must
hold across runs on real hosts — a guest that boots, answers ping, stops on ACPI, keeps running
between runs — is in tests/lab; here: the definition, check mode, diff, idempotence of defined VMs,
placement and its refusals, live changes in one run, and every refusal of bad input.
"""

import multiprocessing
import os
import signal
import time

from tests.support.playbook import run_play

BASE = [{"name": "dc", "virtplane.kvm.datacenter": {"name": "paris"}},
        {"name": "prod", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris"}},
        {"name": "hv1", "virtplane.kvm.host": {"name": "hv1", "cluster": "prod", "libvirt_uri": "test:///default"}},
        {"name": "app", "virtplane.kvm.logical_network": {"name": "app", "datacenter": "paris", "mode": "isolated",
                                                          "clusters": [{"name": "prod"}]}},
        {"name": "shared", "virtplane.kvm.storage_domain": {"name": "shared", "datacenter": "paris", "type": "posixfs",
                                                            "posixfs": {"path": "/srv/shared"}}}]
KERNEL = {"kernel": "/var/lib/virtplane/images/vmlinuz", "cmdline": "console=ttyS0"}


def vm(name="web01", **options):
    return {"virtplane.kvm.vm": dict(name=name, **options)}


def web(**options):
    values = dict(cluster="prod", memory="256MiB", vcpus=1, nics=[{"network": "app"}], boot=KERNEL)
    values.update(options)
    return vm(**values)


def test_define_check_then_real_then_unchanged(engine_options, sql):
    run = run_play(BASE + [dict(name="check", check_mode=True, **web(description="front"))], engine=engine_options,
                   diff=True)
    assert run.rc == 0, run.output
    check = run["check"]
    assert check["changed"] and check["actions"] == ["create"]
    assert check["diff"]["after"]["memory_mib"] == 256 and check["diff"]["after"]["description"] == "front"
    assert check["vm"]["status"] == "Down" and check["vm"]["nics"][0]["network"] == "app"
    assert sql("SELECT * FROM vm") == []

    run = run_play([dict(name="create", **web(description="front")), dict(name="again", **web(description="front")),
                    dict(name="check again", check_mode=True, **web(description="front"))], engine=engine_options)
    assert run.rc == 0, run.output
    created = run["create"]["vm"]
    assert run["create"]["changed"] and not run["again"]["changed"] and not run["check again"]["changed"]
    assert created["status"] == "Down" and created["host"] is None and created["memory"] == "256 MiB"
    mac = created["nics"][0]["mac"]
    assert mac.startswith("56:6f:") and run["again"]["vm"]["nics"][0]["mac"] == mac
    rows = sql("SELECT v.name, v.memory_mib, r.status FROM vm v JOIN vm_runtime r ON r.vm_id = v.id")
    assert rows == [{"name": "web01", "memory_mib": 256, "status": "Down"}]
    assert [r["code"] for r in sql("SELECT code FROM event WHERE object_type = 'vm'")] == ["VM_CREATED"]

    run = run_play([dict(name="change", **web(memory="512MiB", tags=["front", "web"]))], engine=engine_options,
                   diff=True)
    assert run["change"]["diff"] == {"before": {"memory_mib": 256, "max_memory_mib": 256, "tags": []},
                                     "after": {"memory_mib": 512, "max_memory_mib": 512, "tags": ["front", "web"]}}


def test_start_places_reserves_and_reports_the_console(engine_options, sql):
    console = {"type": "vnc", "password": "s3cret", "listen": "0.0.0.0"}
    run = run_play(BASE + [dict(name="start", **web(state="running", console=console))], engine=engine_options,
                   diff=True)
    assert run.rc == 0, run.output
    started = run["start"]["vm"]
    assert started["status"] == "Up" and started["host"] == "hv1"
    assert run["start"]["actions"] == ["create", "start on hv1"]
    assert started["console"]["type"] == "vnc" and started["console"]["url"].startswith("vnc://")
    assert "s3cret" not in run.output
    runtime = sql("SELECT r.status, r.reserved_memory_mib, h.name AS host FROM vm_runtime r JOIN host h"
                  " ON h.id = r.run_host_id")
    assert runtime == [{"status": "Up", "reserved_memory_mib": 256, "host": "hv1"}]
    # the test driver forgot the domain when the run ended: the next run finds it gone, records it Down
    # and, asked to keep it running, starts it again
    run = run_play([dict(name="again", **web(state="running"))], engine=engine_options)
    assert run["again"]["changed"] and run["again"]["actions"][0] == "record Down (not running on host hv1)"
    assert run["again"]["vm"]["status"] == "Up"
    codes = [r["code"] for r in sql("SELECT code FROM event WHERE object_type = 'vm' ORDER BY id")]
    assert codes == ["VM_CREATED", "VM_STARTED", "VM_DOWN", "VM_STARTED"]


def test_a_vm_that_fits_no_host_says_why_and_reserves_nothing(engine_options, sql):
    run = run_play(BASE + [dict(name="pinned", ignore_errors=True, **web(state="running", nics=[{"network": "app"}],
                                                                         host=["hv1"], memory="300GiB"))],
                   engine=engine_options)
    assert "more than any host of cluster prod has" in run["pinned"]["msg"]
    run = run_play([{"name": "other", "virtplane.kvm.logical_network": {"name": "other", "datacenter": "paris"}},
                    dict(name="start", ignore_errors=True, **web(state="running", nics=[{"network": "other"}]))],
                   engine=engine_options)
    assert "no host of cluster prod can run it: hv1: logical network other not realized" in run["start"]["msg"]
    assert sql("SELECT status, run_host_id, reserved_memory_mib FROM vm_runtime") == [
        {"status": "Down", "run_host_id": None, "reserved_memory_mib": 0}]


def test_the_clusters_cpu_model_decides_which_hosts_can_start_its_vms(engine_options, sql):
    """A named model needs a host whose libvirt lists it; the test driver lists none, so it is refused with that
    reason, and nothing is reserved. A CPU mode (host-model) suits every host, and the domain gets it."""
    model = {"name": "model", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris",
                                                        "cpu_model": "Skylake-Client-IBRS"}}
    run = run_play(BASE + [model, dict(name="start", ignore_errors=True, **web(state="running"))],
                   engine=engine_options)
    assert ("no host of cluster prod can run it: hv1: cannot tell whether it runs the cluster's CPU model "
            "Skylake-Client-IBRS: its libvirt lists no CPU models") in run["start"]["msg"]
    assert sql("SELECT status, run_host_id FROM vm_runtime") == [{"status": "Down", "run_host_id": None}]
    assert sql("SELECT cpu_models FROM host") == [{"cpu_models": None}]
    # the dry run says the same, host by host
    run = run_play([{"name": "where", "virtplane.kvm.vm_placement_info": {"name": "web01"}}], engine=engine_options)
    assert "cannot tell whether it runs" in str(run["where"]), run.output
    mode = {"name": "mode", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris",
                                                      "cpu_model": "host-model"}}
    run = run_play([mode, dict(name="start", **web(state="running"))], engine=engine_options)
    assert run.rc == 0, run.output
    assert run["start"]["vm"]["status"] == "Up" and run["start"]["vm"]["host"] == "hv1"


BAD_INPUT = [
    (dict(name="web<01>"), "'name'", "not a valid name"),
    (dict(name="web;reboot"), "'name'", "not a valid name"),
    (dict(name="../etc"), "'name'", "not a valid name"),
    (dict(name="web01\n"), "'name'", "not a valid name"),
    (dict(memory="0"), "'memory'", "no memory"),
    (dict(memory="-1GiB"), "'memory'", "not a size"),
    (dict(memory="300GiB"), "'memory'", "more than any host of cluster prod has"),
    (dict(vcpus=0), "'vcpus'", "outside 1-512"),
    (dict(vcpus=100000), "'vcpus'", "outside 1-512"),
    (dict(vcpus=400), "'vcpus'", "more than any host of cluster prod has"),
    (dict(vcpus=4, cpu={"sockets": 1, "cores": 2, "threads": 1}), "'vcpus'", "disagrees with cpu"),
    (dict(nics=[{"network": "nowhere"}]), "'nics[0].network'", "not one of the data center's"),
    (dict(nics=[{"network": "app", "mac": "ff:ff:ff:ff:ff:ff"}]), "'nics[0].mac'", "broadcast"),
    (dict(nics=[{"network": "app", "mac": "01:00:5e:00:00:01"}]), "'nics[0].mac'", "multicast"),
    (dict(nics=[{"network": "app", "mac": "56:6f:00:00:00:01"}, {"network": "app", "mac": "56:6f:00:00:00:01"}]),
     "'nics[1].mac'", "also the MAC of NIC"),
    (dict(nics=[{"network": "app", "mac": "56:6f:00:00:00:01\n"}]), "'nics[0].mac'", "not a MAC address"),
    (dict(disks=[{"name": "d1", "storage_domain": "nowhere", "size": "1GiB"}]), "storage domain 'nowhere'",
     "does not exist"),
    (dict(boot={"kernel": "/boot/../etc/shadow"}), "'boot.kernel'", "normalized path"),
    (dict(boot={"kernel": "/k", "cmdline": "a\nb"}), "'boot.cmdline'", "not one line"),
    (dict(boot={"kernel": "/boot/vmlinuz", "initrd": "/etc/shadow"}), "'boot.initrd'", "no kernel or initramfs"),
    (dict(boot={"kernel": "/proc/self/environ"}), "'boot.kernel'", "no kernel or initramfs"),
    (dict(cloud_init={"user_data": "a: [unclosed"}), "'cloud_init.user_data'", "not valid YAML"),
    (dict(console={"type": "vnc", "password": "longer than eight"}), "'console.password'", "VNC takes at most 8"),
    (dict(console={"listen": "0.0.0.0; reboot"}), "'console.listen'", "not an IP address"),
    (dict(host=["hv9"]), "'host'", "not in cluster prod"),
    (dict(cluster="nowhere"), "cluster 'nowhere'", "does not exist"),
]


def test_bad_input_gets_one_message_and_changes_nothing(engine_options, sql):
    tasks = []
    for i, (options, _field, _message) in enumerate(BAD_INPUT):
        values = web()["virtplane.kvm.vm"]
        values.update(options)
        tasks.append({"name": "bad %d" % i, "ignore_errors": True, "virtplane.kvm.vm": values})
        tasks.append({"name": "bad %d in check mode" % i, "ignore_errors": True, "check_mode": True,
                      "virtplane.kvm.vm": values})
    run = run_play(BASE + tasks, engine=engine_options)
    wrong = []
    for i, (options, field, message) in enumerate(BAD_INPUT):
        for suffix in ("", " in check mode"):
            result = run["bad %d%s" % (i, suffix)]
            if not result.get("failed") or field not in result["msg"] or message not in result["msg"]:
                wrong.append((options, suffix, result.get("msg")))
    assert wrong == []
    assert sql("SELECT name FROM vm") == [] and sql("SELECT id FROM disk") == []


def test_removing_a_running_vm_needs_force(engine_options, sql):
    run = run_play(BASE + [dict(name="start", **web(state="running")),
                           dict(name="remove", ignore_errors=True, **vm(state="absent")),
                           dict(name="check", check_mode=True, **vm(state="absent", force=True)),
                           dict(name="force", **vm(state="absent", force=True)),
                           dict(name="again", **vm(state="absent", force=True))], engine=engine_options)
    assert run["start"]["vm"]["status"] == "Up", run.output
    assert "Cannot remove VM 'web01': it is Up on host hv1; stop it first" in run["remove"]["msg"]
    # the test driver forgot the domain between the runs: the engine's record is all there is to remove
    assert run["check"]["changed"] and run["check"]["actions"] == ["power off on hv1", "remove"]
    assert run["force"]["actions"] == ["power off on hv1", "remove"]
    assert not run["again"]["changed"]
    assert sql("SELECT name FROM vm") == [] and sql("SELECT status FROM job WHERE object_type = 'vm'"
                                                    " AND status = 'running'") == []


def test_a_start_that_fails_half_way_leaves_no_domain_and_no_reservation(engine_options, sql):
    """libvirt's test driver cannot take a volume upload: the seed cannot be written, so the start fails
    after the reservation was made; it is released, the VM recorded Down with the reason, and an event says so."""
    run = run_play(BASE + [dict(name="start", ignore_errors=True, **web(
        state="running", cloud_init={"meta_data": {"local-hostname": "web01"}}))], engine=engine_options)
    assert "Failed to start VM 'web01' on host hv1" in run["start"]["msg"], run.output[-3000:]
    runtime = sql("SELECT status, status_reason, run_host_id, reserved_memory_mib, reserved_vcpus, job_id"
                  " FROM vm_runtime")
    assert len(runtime) == 1 and runtime[0]["status"] == "Down" and runtime[0]["run_host_id"] is None
    assert runtime[0]["status_reason"].startswith("start failed: ")
    assert (runtime[0]["reserved_memory_mib"], runtime[0]["reserved_vcpus"], runtime[0]["job_id"]) == (0, 0, None)
    assert sql("SELECT status FROM job WHERE action = 'vm.start'") == [{"status": "failed"}]
    assert [r["code"] for r in sql("SELECT code FROM event WHERE object_type = 'vm' ORDER BY id")] == [
        "VM_CREATED", "VM_START_FAILED"]


def test_check_mode_predicts_a_start_with_its_host(engine_options, sql):
    run = run_play(BASE + [dict(name="check", check_mode=True, **web(state="running")),
                           dict(name="define", **web()),
                           dict(name="check start", check_mode=True, **web(state="running")),
                           dict(name="check restart", check_mode=True, **web(state="restarted"))],
                   engine=engine_options, diff=True)
    assert run["check"]["actions"] == ["create", "start on hv1"], run.output[-3000:]
    assert run["check start"]["actions"] == ["start on hv1"]
    assert run["check start"]["diff"] == {"before": {"status": "Down"}, "after": {"status": "Up"}}
    assert run["check restart"]["actions"] == ["start on hv1"]
    assert sql("SELECT r.status FROM vm_runtime r") == [{"status": "Down"}]
    assert sql("SELECT id FROM job WHERE object_type = 'vm'") == []


def test_nics_keep_their_order_and_cloud_init_is_never_shown(engine_options):
    nics = [{"name": "nic%d" % i, "network": "app"} for i in (2, 10, 1)]
    secret = {"user_data": {"chpasswd": {"list": "root:s3cr3t-pw"}}}
    run = run_play(BASE + [dict(name="define", **web(nics=nics, cloud_init=secret)),
                           dict(name="again", **web(nics=nics, cloud_init=secret))], engine=engine_options, diff=True)
    assert run.rc == 0, run.output[-3000:]
    assert [n["name"] for n in run["again"]["vm"]["nics"]] == ["nic2", "nic10", "nic1"]
    assert not run["again"]["changed"]
    assert "s3cr3t-pw" not in run.output
    assert run["define"]["vm"]["cloud_init"]["user_data"].startswith("(")


def _stuck_start(engine_options, ready):
    """A start that reserved its host and then hangs in the middle of making the domain."""
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _vm
    from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _vm as virt_vm

    def hang(*_args, **_kwargs):
        ready.set()
        time.sleep(600)

    virt_vm.create = hang  # the real path up to the domain, then the run "hangs" there
    engine = _db.connect(engine_options)
    _vm.ensure(engine, _vm.VmSpec(name="web01", state="running"))


def test_a_start_killed_half_way_is_recovered_from_what_the_host_says(engine_options, engine, sql):
    run = run_play(BASE + [dict(name="define", **web())], engine=engine_options)
    assert run.rc == 0, run.output[-3000:]
    with engine.transaction() as cur:  # a short lease, as for an engine whose runs are short
        cur.execute("UPDATE engine_setting SET value = '5' WHERE name = 'reservation_lease_seconds'")
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    victim = context.Process(target=_stuck_start, args=(engine_options, ready))
    victim.start()
    assert ready.wait(60)
    # while it lives, its reservation holds the host's memory and the VM
    assert sql("SELECT status, reserved_memory_mib FROM vm_runtime") == [
        {"status": "WaitForLaunch", "reserved_memory_mib": 256}]
    run = run_play([dict(name="other", ignore_errors=True, **vm(state="running", wait_timeout=2))],
                   engine=engine_options)
    assert run["other"]["msg"].startswith("VM 'web01' is locked by job "), run["other"]["msg"]
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    time.sleep(6)  # its heartbeat stops; after the lease the job belongs to a run that died
    run = run_play([dict(name="again", **vm(state="running"))], engine=engine_options)
    assert run["again"]["changed"] and run["again"]["vm"]["status"] == "Up", run.output[-3000:]
    recovered = sql("SELECT message FROM event WHERE code = 'JOB_RECOVERED'")
    assert len(recovered) == 1 and "the VM did not start: recorded Down" in recovered[0]["message"]
    assert sql("SELECT status, reserved_memory_mib FROM vm_runtime") == [{"status": "Up", "reserved_memory_mib": 256}]


def test_a_template_keeps_a_stopped_vm_s_definition_for_new_vms(engine_options, sql):
    """Without disks (the test driver keeps no volume between runs): the definition part; disks in tests/lab."""
    run = run_play(BASE + [
        dict(name="base", **web(memory="512MiB", vcpus=2, description="base image", state="running")),
        {"name": "running", "ignore_errors": True, "virtplane.kvm.template": {
            "name": "tpl", "vm": "web01", "storage_domain": "shared"}},
        dict(name="stop", **vm(state="stopped", force=True, stop_timeout=1)),
        {"name": "check", "check_mode": True, "virtplane.kvm.template": {
            "name": "tpl", "vm": "web01", "storage_domain": "shared"}},
        {"name": "template", "virtplane.kvm.template": {"name": "tpl", "vm": "web01", "storage_domain": "shared"}},
        {"name": "again", "virtplane.kvm.template": {"name": "tpl", "vm": "web01", "storage_domain": "shared"}},
        dict(name="made", **vm("web02", cluster="prod", template="tpl", tags=["from-template"])),
        dict(name="made again", **vm("web02", cluster="prod", template="tpl", tags=["from-template"])),
        dict(name="other template", ignore_errors=True, **vm("web02", template="other")),
        {"name": "remove", "virtplane.kvm.template": {"name": "tpl", "state": "absent"}},
    ], engine=engine_options)
    assert "a template is made from a stopped VM" in run["running"]["msg"], run.output[-3000:]
    assert run["check"]["changed"] and run["check"]["actions"] == ["create"] and run["template"]["changed"]
    assert run["template"]["template"]["definition"]["memory_mib"] == 512 and not run["again"]["changed"]
    made = run["made"]["vm"]
    assert (made["memory_mib"], made["vcpus"], made["description"], made["tags"]) == (512, 2, "base image",
                                                                                      ["from-template"])
    assert made["nics"][0]["network"] == "app" and made["nics"][0]["mac"] != run["base"]["vm"]["nics"][0]["mac"]
    assert made["template"]["name"] == "tpl" and not run["made again"]["changed"]
    assert "a VM's template is chosen when it is created" in run["other template"]["msg"]
    assert run["remove"]["changed"] and sql("SELECT name FROM template") == []
    assert [r["code"] for r in sql("SELECT code FROM event WHERE object_type = 'template' ORDER BY id")] == [
        "TEMPLATE_CREATED", "TEMPLATE_REMOVED"]


def test_a_start_on_a_host_that_runs_a_domain_of_its_name_is_refused_with_the_reason(engine_options, sql, tmp_path):
    """A host already runs a domain named like the VM (started by hand, or by another manager): the start is
    refused before the engine makes or writes anything there (it looks before it writes the seed or creates the
    domain, and its undo destroys nothing it did not make). The test driver reads its node file again for every
    connection, so that the domain still runs afterwards cannot be seen here: the message is what shows it."""
    node = tmp_path / "node.xml"
    node.write_text("<node><cpu><mhz>2400</mhz></cpu><domain type='test'><name>web01</name>"
                    "<memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain></node>")
    hosts = [dict(BASE[2], **{"virtplane.kvm.host": dict(BASE[2]["virtplane.kvm.host"],
                                                         libvirt_uri="test://%s" % node)})]
    run = run_play(BASE[:2] + hosts + BASE[3:] + [dict(name="start", ignore_errors=True, **web(state="running"))],
                   engine=engine_options)
    message = run["start"]["msg"]
    assert message == ("Failed to start VM 'web01' on host hv1: a domain named web01 already runs there and the "
                       "engine did not start it (it records the VM Down): stop that domain, or give the VM another "
                       "name"), message
    runtime = sql("SELECT r.status, r.run_host_id, r.reserved_memory_mib FROM vm_runtime r")
    assert runtime == [{"status": "Down", "run_host_id": None, "reserved_memory_mib": 0}]
    assert [e["code"] for e in sql("SELECT code FROM event WHERE object_type = 'vm' ORDER BY id")][-1] == \
        "VM_START_FAILED"
