"""host module: registration from libvirt's test driver, status Up/NonResponsive, moves and removal."""

import shutil

import pytest

from tests.support.playbook import run_play

BASE = [{"name": "dc", "virtplane.kvm.datacenter": {"name": "paris"}},
        {"name": "prod", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris"}},
        {"name": "test", "virtplane.kvm.cluster": {"name": "test", "datacenter": "paris"}}]
# A simulated host of its own: libvirt's test driver reads its node from this file.
NODE_XML = "<node><cpu><mhz>2400</mhz></cpu></node>"


def host(name="hv1", **options):
    return {"virtplane.kvm.host": dict(name=name, **options)}


@pytest.fixture
def node_file(tmp_path):
    path = tmp_path / "node.xml"
    path.write_text(NODE_XML)
    return path


def test_register_check_real_idempotent(engine_options, sql):
    run = run_play(BASE + [dict(name="check", check_mode=True,
                                **host(cluster="prod", libvirt_uri="test:///default"))],
                   engine=engine_options, diff=True)
    assert run["check"]["changed"] and run["check"]["actions"] == ["register"]
    assert run["check"]["host"]["status"] == "Up"
    assert run["check"]["diff"]["after"]["memory_mib"] == 3072
    assert sql("SELECT * FROM host") == []

    run = run_play([dict(name="register", **host(cluster="prod", libvirt_uri="test:///default")),
                    dict(name="again", **host(cluster="prod", libvirt_uri="test:///default")),
                    dict(name="again by name only", **host())], engine=engine_options)
    assert run.rc == 0, run.output
    registered = run["register"]["host"]
    # what libvirt's test driver reports about its simulated machine
    assert registered["status"] == "Up" and registered["status_reason"] == ""
    assert (registered["cpu_count"], registered["cpu_sockets"], registered["cpu_cores"]) == (16, 2, 2)
    assert registered["memory_mib"] == 3072 and registered["hypervisor_type"] == "TEST"
    assert [c["id"] for c in registered["numa_cells"]] == [0, 1]
    assert registered["domain_type"] == "test" and registered["libvirt_version"].count(".") == 2
    assert not run["again"]["changed"] and not run["again by name only"]["changed"]
    row = sql("SELECT status, cpu_count, memory_mib, last_seen_at FROM host WHERE name = 'hv1'")[0]
    assert (row["status"], row["cpu_count"], row["memory_mib"]) == ("Up", 16, 3072)
    assert row["last_seen_at"] is not None


def test_capacity_keeps_the_hosts_reserve_and_its_share_of_a_shared_machine(engine_options, sql):
    """The test driver's machine: 16 CPUs and 3 GiB. What VMs get is capped and less the host's reserve."""
    uri = "test:///default"
    run = run_play(BASE + [
        dict(name="default", **host(cluster="prod", libvirt_uri=uri)),
        dict(name="check", check_mode=True, **host(schedulable_memory="2GiB", reserved_memory="512MiB",
                                                   schedulable_cpus=8, reserved_cpus=2)),
        dict(name="share", **host(schedulable_memory="2GiB", reserved_memory="512MiB", schedulable_cpus=8,
                                  reserved_cpus=2)),
        dict(name="again", **host(schedulable_memory="2GiB", reserved_memory="512MiB", schedulable_cpus=8,
                                  reserved_cpus=2)),
        dict(name="no memory left", ignore_errors=True, **host(reserved_memory="2GiB")),
        dict(name="no cpu left", ignore_errors=True, check_mode=True, **host(reserved_cpus=8)),
        dict(name="info", **{"virtplane.kvm.host_info": {"name": ["hv1"]}}),
    ], engine=engine_options, diff=True)
    assert run.rc == 0, run.output
    # a new host keeps 256 MiB for itself and schedules all it has
    assert run["default"]["host"]["capacity"] == {"memory_mib": 3072 - 256, "cpus": 16}
    assert run["check"]["changed"] and run["check"]["actions"] == ["update"]
    assert run["check"]["diff"]["before"] == {"reserved_memory_mib": 256, "reserved_cpus": 0,
                                              "schedulable_memory_mib": 0, "schedulable_cpus": 0}
    assert run["check"]["diff"]["after"] == {"reserved_memory_mib": 512, "reserved_cpus": 2,
                                             "schedulable_memory_mib": 2048, "schedulable_cpus": 8}
    assert run["share"]["changed"] and run["share"]["host"]["capacity"] == {"memory_mib": 1536, "cpus": 6}
    assert not run["again"]["changed"]
    assert run["no memory left"]["msg"] == ("Invalid value for 'reserved_memory': 2048 MiB reserved of the 2048 MiB "
                                            "host hv1 schedules leaves no memory for VMs")
    assert run["no cpu left"]["msg"] == ("Invalid value for 'reserved_cpus': 8 CPUs reserved of the 8 host hv1 "
                                         "schedules leave no CPU for VMs")
    assert run["info"]["hosts"][0]["capacity"] == {"memory_mib": 1536, "cpus": 6}
    assert sql("SELECT reserved_memory_mib, reserved_cpus, schedulable_memory_mib, schedulable_cpus FROM host") == [
        {"reserved_memory_mib": 512, "reserved_cpus": 2, "schedulable_memory_mib": 2048, "schedulable_cpus": 8}]
    # the VM module and the scheduler count the same capacity
    run = run_play([
        {"name": "too big", "ignore_errors": True, "virtplane.kvm.vm": {
            "name": "big", "cluster": "prod", "memory": "2GiB", "boot": {"kernel": "/boot/vmlinuz"}}},
        {"name": "fits", "virtplane.kvm.vm": {"name": "a", "cluster": "prod", "memory": "1GiB", "vcpus": 4,
                                              "boot": {"kernel": "/boot/vmlinuz"}, "state": "running"}},
        {"name": "full", "ignore_errors": True, "virtplane.kvm.vm": {
            "name": "b", "cluster": "prod", "memory": "1GiB", "boot": {"kernel": "/boot/vmlinuz"},
            "state": "running"}},
        # all of the machine again: the same VM fits
        dict(name="whole", **host(schedulable_memory="0", reserved_memory="0")),
        {"name": "fits now", "virtplane.kvm.vm": {"name": "b", "state": "running"}},
    ], engine=engine_options)
    assert run["too big"]["msg"] == ("Invalid value for 'memory': 2 GiB is more than any host of cluster prod has "
                                     "for VMs (the largest has 1536 MiB)")
    assert run["fits"]["vm"]["host"] == "hv1"
    assert run["full"]["msg"] == ("Cannot start VM 'b': no host of cluster prod can run it: hv1: memory 1 of 1.5 GiB "
                                  "committed, 1 GiB more does not fit")
    assert run["whole"]["host"]["capacity"] == {"memory_mib": 3072, "cpus": 6}
    assert run["fits now"]["vm"]["status"] == "Up"


def test_unreachable_host_becomes_nonresponsive_and_comes_back(engine_options, sql, node_file, tmp_path):
    uri = "test://%s" % node_file
    run = run_play(BASE + [dict(name="register", **host(cluster="prod", libvirt_uri=uri))], engine=engine_options)
    assert run["register"]["host"]["status"] == "Up"

    hidden = tmp_path / "hidden.xml"
    shutil.move(node_file, hidden)  # the host's libvirt no longer answers
    run = run_play([dict(name="check refresh", check_mode=True, **host()),
                    dict(name="refresh", **host()), dict(name="refresh again", **host())],
                   engine=engine_options, diff=True)
    assert run["check refresh"]["changed"]
    refreshed = run["refresh"]["host"]
    assert refreshed["status"] == "NonResponsive"
    assert refreshed["status_reason"].startswith("cannot connect to libvirt at %s: " % uri)
    assert str(node_file) in refreshed["status_reason"]
    assert run["refresh"]["diff"]["before"] == {"status": "Up", "status_reason": ""}
    assert run["refresh"]["diff"]["after"]["status"] == "NonResponsive"
    assert run["refresh"]["actions"] == ["status Up -> NonResponsive"]
    assert not run["refresh again"]["changed"]
    # the capabilities read while it was Up are kept
    assert sql("SELECT status, memory_mib FROM host")[0] == {"status": "NonResponsive", "memory_mib": 3072}
    warning = sql("SELECT severity, message FROM event WHERE code = 'HOST_STATUS_CHANGED'")
    assert warning[0]["severity"] == "warning" and "hv1 is NonResponsive" in warning[0]["message"]

    shutil.move(hidden, node_file)
    run = run_play([dict(name="refresh", **host())], engine=engine_options)
    assert run["refresh"]["host"]["status"] == "Up" and run["refresh"]["host"]["status_reason"] == ""


def test_registering_an_unreachable_host_fails_and_records_nothing(engine_options, sql):
    run = run_play(BASE + [dict(name="register", ignore_errors=True,
                                **host(cluster="prod", libvirt_uri="qemu+tcp://127.0.0.1:1/system",
                                       timeout=5))], engine=engine_options)
    assert run["register"]["failed"]
    assert run["register"]["msg"].startswith(
        "Cannot register host 'hv1': cannot connect to libvirt at qemu+tcp://127.0.0.1:1/system: ")
    assert "127.0.0.1" in run["register"]["msg"]
    assert sql("SELECT * FROM host") == []
    assert sql("SELECT * FROM event WHERE object_type = 'host'") == []


def test_bad_input_is_refused_with_the_field(engine_options, sql):
    run = run_play(BASE + [
        dict(name="bad uri", ignore_errors=True, **host(cluster="prod", libvirt_uri="qemu://hv1/system")),
        dict(name="shell uri", ignore_errors=True, **host(cluster="prod", libvirt_uri="qemu+ssh://hv1/system;id")),
        dict(name="unknown cluster", ignore_errors=True, **host(cluster="nope", libvirt_uri="test:///default")),
        dict(name="no uri", ignore_errors=True, **host(cluster="prod")),
        dict(name="no cluster", ignore_errors=True, **host(libvirt_uri="test:///default")),
    ], engine=engine_options)
    assert run["bad uri"]["msg"].startswith("Invalid value for 'libvirt_uri': 'qemu://hv1/system' names host")
    assert "metacharacters" in run["shell uri"]["msg"]
    assert run["unknown cluster"]["msg"] == "Cannot register host 'hv1': cluster 'nope' does not exist"
    assert run["no uri"]["msg"] == "Invalid value for 'libvirt_uri': is required to register host 'hv1'"
    assert run["no cluster"]["msg"] == "Invalid value for 'cluster': is required to register host 'hv1'"
    assert sql("SELECT * FROM host") == []


def test_move_between_clusters_and_remove(engine_options, sql):
    run = run_play(BASE + [dict(name="register", **host(cluster="prod", libvirt_uri="test:///default")),
                           dict(name="move", **host(cluster="test")),
                           dict(name="check remove", check_mode=True, **host(state="absent")),
                           dict(name="remove", **host(state="absent")),
                           dict(name="remove again", **host(state="absent"))], engine=engine_options, diff=True)
    assert run.rc == 0, run.output
    assert run["move"]["diff"] == {"before": {"cluster": "prod"}, "after": {"cluster": "test"}}
    assert run["check remove"]["changed"] and run["remove"]["changed"]
    assert not run["remove again"]["changed"]
    assert sql("SELECT * FROM host") == []
    codes = [r["code"] for r in sql("SELECT code FROM event WHERE object_type = 'host' ORDER BY id")]
    assert codes == ["HOST_ADDED", "HOST_UPDATED", "HOST_REMOVED"]


def test_host_with_running_vm_is_not_removed(engine_options, sql):
    run = run_play(BASE + [dict(name="register", **host(cluster="prod", libvirt_uri="test:///default")),
                           {"name": "start", "virtplane.kvm.vm": {"name": "web01", "cluster": "prod", "memory": "64MiB",
                                                                  "state": "running"}}], engine=engine_options)
    assert run["start"]["vm"]["host"] == "hv1", run.output[-3000:]
    run = run_play([dict(name="remove", ignore_errors=True, **host(state="absent")),
                    dict(name="move", ignore_errors=True, **host(cluster="test")),
                    dict(name="nic", ignore_errors=True, **host(cluster="prod", network_nic="eth9"))],
                   engine=engine_options)
    assert run["remove"]["msg"] == ("Cannot remove host 'hv1': VMs web01 run on it; migrate them or stop them first")
    assert run["move"]["msg"].startswith("Cannot move host 'hv1' to cluster 'test': VMs web01 run on it")
    assert run["nic"]["msg"].startswith("Cannot change the network NIC of host 'hv1' from (none) to eth9: VMs web01")
    assert sql("SELECT c.name, h.network_nic FROM host h JOIN cluster c ON c.id = h.cluster_id") == [
        {"name": "prod", "network_nic": None}]


def test_memory_that_grows_under_a_host_is_refreshed_without_a_change(engine_options, sql, node_file):
    # memory hot-added or onlined over time moves with the machine, not with its configuration
    node_file.write_text("<node><cpu><mhz>2400</mhz></cpu><memory>2097152</memory></node>")
    run = run_play(BASE + [dict(name="register", **host(cluster="prod", libvirt_uri="test://%s" % node_file))],
                   engine=engine_options)
    assert run["register"]["host"]["memory_mib"] == 2048
    node_file.write_text("<node><cpu><mhz>2400</mhz></cpu><memory>4194304</memory></node>")
    run = run_play([dict(name="again", **host()), dict(name="refresh", **host(state="refreshed"))],
                   engine=engine_options)
    assert not run["again"]["changed"] and not run["refresh"]["changed"]
    assert run["again"]["host"]["memory_mib"] == 4096 and run["again"]["host"]["cluster"] == "prod"
    assert sql("SELECT memory_mib FROM host") == [{"memory_mib": 4096}]


def test_host_info_reads_and_refreshed_records_status_changes(engine_options, sql, node_file, tmp_path):
    uri = "test://%s" % node_file
    run_play(BASE + [dict(name="hv1", **host(cluster="prod", libvirt_uri=uri)),
                     dict(name="hv2", **host(name="hv2", cluster="test", libvirt_uri="test:///default"))],
             engine=engine_options)
    node_file.rename(tmp_path / "gone.xml")
    events_before = len(sql("SELECT id FROM event"))
    run = run_play([
        {"name": "read", "virtplane.kvm.host_info": {}},
        {"name": "prod only", "virtplane.kvm.host_info": {"cluster": "prod"}},
        {"name": "unknown", "ignore_errors": True, "virtplane.kvm.host_info": {"name": ["hv9"]}},
        {"name": "no refresh here", "ignore_errors": True, "virtplane.kvm.host_info": {"refresh": True}},
    ], engine=engine_options)
    # host_info reads what the engine recorded and never changes a host
    assert not run["read"]["changed"]
    assert [(h["name"], h["status"]) for h in run["read"]["hosts"]] == [("hv1", "Up"), ("hv2", "Up")]
    assert [h["name"] for h in run["prod only"]["hosts"]] == ["hv1"]
    assert run["unknown"]["msg"] == "Host 'hv9' does not exist"
    assert "refresh" in run["no refresh here"]["msg"]
    assert len(sql("SELECT id FROM event")) == events_before

    run = run_play([dict(name="check refresh", check_mode=True, **host(state="refreshed")),
                    dict(name="refresh", **host(state="refreshed")),
                    dict(name="refresh again", **host(state="refreshed")),
                    dict(name="refresh hv2", **host(name="hv2", state="refreshed")),
                    dict(name="settings", ignore_errors=True, **host(state="refreshed", network_nic="eth1")),
                    dict(name="unknown", ignore_errors=True, **host(name="hv9", state="refreshed"))],
                   engine=engine_options, diff=True)
    assert run["check refresh"]["changed"] and run["check refresh"]["actions"] == ["status Up -> NonResponsive"]
    assert run["refresh"]["actions"] == ["status Up -> NonResponsive"]
    assert run["check refresh"]["diff"] == run["refresh"]["diff"]
    refreshed = run["refresh"]["host"]
    assert refreshed["status"] == "NonResponsive" and str(node_file) in refreshed["status_reason"]
    assert refreshed["memory_mib"] == 3072
    assert not run["refresh again"]["changed"] and not run["refresh hv2"]["changed"]
    assert run["settings"]["msg"].startswith("Invalid value for 'state': refreshed takes a host as it is")
    assert run["unknown"]["msg"] == "Cannot refresh host 'hv9': host 'hv9' does not exist"
    assert [r["status"] for r in sql("SELECT status FROM host ORDER BY name")] == ["NonResponsive", "Up"]
