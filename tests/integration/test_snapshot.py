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
