"""snapshot and snapshot_info on a real PostgreSQL, with libvirt's test driver as the host: what is
refused, and why, before anything changes. Snapshots taken, reverted to and deleted on real images (the
guest's memory and disks coming back) are in tests/lab."""

from tests.support.playbook import run_play

BASE = [{"name": "dc", "virtplane.kvm.datacenter": {"name": "paris"}},
        {"name": "prod", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris"}},
        {"name": "hv1", "virtplane.kvm.host": {"name": "hv1", "cluster": "prod", "libvirt_uri": "test:///default"}},
        {"name": "web01", "virtplane.kvm.vm": {"name": "web01", "cluster": "prod", "memory": "128MiB",
                                               "boot": {"kernel": "/var/lib/virtplane/images/vmlinuz"}}}]


def snapshot(task, **options):
    options = dict({"vm": "web01", "name": "s1"}, **options)
    return {"name": task, "ignore_errors": True, "virtplane.kvm.snapshot": options}


def test_what_cannot_be_snapshotted_is_refused_with_the_reason_in_check_mode_as_for_real(engine_options, sql):
    assert run_play(BASE, engine=engine_options).rc == 0
    tasks = [snapshot("no disks"), snapshot("memory of a stopped vm", memory=True),
             snapshot("unknown vm", vm="nowhere"), snapshot("revert unknown", state="reverted"),
             snapshot("delete unknown", state="absent"), snapshot("delete of unknown vm", vm="nowhere", state="absent"),
             {"name": "list", "virtplane.kvm.snapshot_info": {"vm": ["web01"]}},
             {"name": "list unknown", "ignore_errors": True, "virtplane.kvm.snapshot_info": {"vm": ["nowhere"]}}]
    events = sql("SELECT count(*) AS n FROM event")
    for check in (True, False):
        run = run_play(tasks, engine=engine_options, check=check)
        assert run["no disks"]["msg"] == ("Cannot take snapshot 's1' of VM 'web01': it has no disks; a snapshot "
                                          "keeps a VM's disks")
        assert run["memory of a stopped vm"]["msg"] == (
            "Cannot take snapshot 's1' of VM 'web01': it is stopped: it has no memory to keep (memory: true is "
            "for a running VM)")
        assert "VM 'nowhere'" in run["unknown vm"]["msg"] and "does not exist" in run["unknown vm"]["msg"]
        assert "snapshot 's1'" in run["revert unknown"]["msg"] and "does not exist" in run["revert unknown"]["msg"]
        assert not run["delete unknown"]["changed"] and not run["delete unknown"].get("failed")
        # a VM that is gone has no snapshot left: nothing to delete, no error (a pipeline may remove it first)
        assert not run["delete of unknown vm"]["changed"] and not run["delete of unknown vm"].get("failed")
        assert run["list"]["snapshots"] == []
        assert "VM 'nowhere'" in run["list unknown"]["msg"]
    assert sql("SELECT * FROM snapshot") == [] and sql("SELECT * FROM job WHERE action LIKE 'snapshot.%%'") == []
    assert sql("SELECT count(*) AS n FROM event") == events
    assert sql("SELECT r.job_id FROM vm_runtime r") == [{"job_id": None}]


NODE = """<node><cpu><mhz>2400</mhz></cpu>
<pool type='dir'><name>vp-shared</name><uuid>35bb2ad9-388a-cdfe-461a-b8907f6e53fe</uuid>
<capacity unit='GiB'>100</capacity><allocation unit='GiB'>0</allocation><available unit='GiB'>100</available>
<target><path>/srv/shared</path></target></pool></node>"""


def test_a_stopped_vm_s_snapshot_holds_its_disks_until_it_is_deleted(engine_options, sql, tmp_path):
    """The test driver keeps snapshot metadata only: what is checked here is the engine's bookkeeping."""
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    disk = {"name": "web01-root", "storage_domain": "shared"}
    setup = BASE[:2] + [
        {"name": "hv1", "virtplane.kvm.host": {"name": "hv1", "cluster": "prod", "libvirt_uri": "test://%s" % node}},
        {"name": "shared", "virtplane.kvm.storage_domain": {"name": "shared", "datacenter": "paris", "type": "posixfs",
                                                            "posixfs": {"path": "/srv/shared"}}},
        {"name": "web01", "virtplane.kvm.vm": {"name": "web01", "cluster": "prod", "memory": "128MiB",
                                               "boot": {"kernel": "/boot/k"}, "disks": [dict(disk, size="1GiB")]}},
        snapshot("take"), snapshot("again"),
        {"name": "grow", "ignore_errors": True, "virtplane.kvm.disk": dict(disk, size="2GiB")},
        {"name": "remove keeping disks", "ignore_errors": True,
         "virtplane.kvm.vm": {"name": "web01", "state": "absent", "remove_disks": False}},
        snapshot("revert", state="reverted"),
        {"name": "list", "virtplane.kvm.snapshot_info": {}}]
    run = run_play(setup, engine=engine_options)
    assert run["take"]["changed"] and not run["again"]["changed"], run.output[-3000:]
    taken = run["take"]["snapshot"]
    assert (taken["memory"], taken["vm_status"], taken["kind"]) == (False, "Down", "internal")
    assert taken["disks"] == [{"name": "web01-root", "storage_domain": "shared", "target": "vda"}]
    assert run["take"]["actions"] == ["take snapshot s1 of its disks on hv1"]
    assert "snapshots web01/s1 hold its data, and a revert would shrink it back" in run["grow"]["msg"]
    assert "snapshots s1 are in their images; delete them first" in run["remove keeping disks"]["msg"]
    assert run["revert"]["changed"] and run["revert"]["actions"] == [
        "revert the disks of VM web01 to snapshot s1 on hv1"]
    assert [s["name"] for s in run["list"]["snapshots"]] == ["s1"]
    rows = sql("SELECT name, state, job_id, host_name FROM snapshot")
    assert rows == [{"name": "s1", "state": "ok", "job_id": None, "host_name": "hv1"}]
    assert sql("SELECT size_bytes FROM disk") == [{"size_bytes": 1024 ** 3}]
    assert [r["code"] for r in sql("SELECT code FROM event WHERE code LIKE 'SNAPSHOT%%' ORDER BY id")] == [
        "SNAPSHOT_CREATED", "SNAPSHOT_REVERTED"]

    run = run_play([snapshot("delete", state="absent"), snapshot("again", state="absent"),
                    {"name": "remove", "virtplane.kvm.vm": {"name": "web01", "state": "absent",
                                                            "remove_disks": False}}], engine=engine_options)
    assert run["delete"]["changed"] and not run["again"]["changed"] and run["remove"]["changed"], run.output[-3000:]
    assert sql("SELECT * FROM snapshot") == [] and sql("SELECT name FROM disk") == [{"name": "web01-root"}]
