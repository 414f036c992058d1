"""Jobs: reservations of long work, what job_info shows of them, and a run killed half-way."""

import multiprocessing
import os
import signal
import time

from tests.support.playbook import run_play

NODE = """<node><cpu><mhz>2400</mhz></cpu>
<pool type='dir'><name>vp-shared</name><uuid>35bb2ad9-388a-cdfe-461a-b8907f6e53fe</uuid>
<capacity unit='GiB'>100</capacity><allocation unit='GiB'>0</allocation><available unit='GiB'>100</available>
<target><path>/srv/shared</path></target></pool></node>"""


def _setup(engine_options, node):
    run = run_play([
        {"name": "dc", "virtplane.kvm.datacenter": {"name": "paris"}},
        {"name": "prod", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris"}},
        {"name": "hv1", "virtplane.kvm.host": {"name": "hv1", "cluster": "prod", "libvirt_uri": "test://%s" % node}},
        {"name": "shared", "virtplane.kvm.storage_domain": {"name": "shared", "datacenter": "paris", "type": "posixfs",
                                                            "posixfs": {"path": "/srv/shared"}}}],
        engine=engine_options)
    assert run.rc == 0, run.output[-3000:]


def _stuck_creation(engine_options, ready):
    """A disk creation that reserves its row and then hangs in the middle of its libvirt work."""
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _disk
    from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _storage

    def hang(*_args, **_kwargs):
        ready.set()
        time.sleep(600)

    _storage.create_volume = hang  # the real path up to the volume, then the run "hangs" there
    engine = _db.connect(engine_options)
    _disk.ensure(engine, _disk.DiskSpec(name="d1", storage_domain="shared", size="1GiB"))


def test_a_run_killed_mid_work_is_recovered_by_the_next_one(engine_options, engine, sql, tmp_path):
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    _setup(engine_options, node)
    with engine.transaction() as cur:  # as the engine role sets it for an engine whose runs are short
        cur.execute("UPDATE engine_setting SET value = '5' WHERE name = 'reservation_lease_seconds'")
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    victim = context.Process(target=_stuck_creation, args=(engine_options, ready))
    victim.start()
    assert ready.wait(60)
    # while it lives, its reservation holds: another run waits for it, then gives up naming the job
    run = run_play([{"name": "other", "ignore_errors": True, "virtplane.kvm.disk": {
        "name": "d1", "storage_domain": "shared", "size": "1GiB", "wait_timeout": 2}},
        {"name": "jobs", "virtplane.kvm.job_info": {"status": ["running"]}}], engine=engine_options)
    assert run["other"]["msg"].startswith("Disk 'd1' is locked by job "), run["other"]["msg"]
    assert "wait for it to end" in run["other"]["msg"]
    [job] = run["jobs"]["jobs"]
    assert (job["action"], job["object_name"], job["expired"]) == ("disk.create", "d1", False)
    os.kill(victim.pid, signal.SIGKILL)
    victim.join()
    assert sql("SELECT status FROM disk WHERE name = 'd1'") == [{"status": "locked"}]
    time.sleep(6)  # its heartbeat stops; after the lease the job belongs to a run that died
    run = run_play([{"name": "jobs", "virtplane.kvm.job_info": {"status": ["running"]}},
                    {"name": "again", "virtplane.kvm.disk": {"name": "d1", "storage_domain": "shared",
                                                             "size": "1GiB"}},
                    {"name": "all jobs", "virtplane.kvm.job_info": {"object_name": "d1"}}], engine=engine_options)
    assert run["jobs"]["jobs"][0]["expired"] is True
    assert run["again"]["changed"] and run["again"]["disk"]["status"] == "ok", run.output[-3000:]
    assert [j["status"] for j in run["all jobs"]["jobs"]] == ["finished", "aborted"]
    recovered = sql("SELECT severity, message FROM event WHERE code = 'JOB_RECOVERED'")
    assert len(recovered) == 1 and recovered[0]["severity"] == "warning"
    assert "the creation of disk d1 was rolled back" in recovered[0]["message"]
    assert sql("SELECT status, job_id FROM disk WHERE name = 'd1'") == [{"status": "ok", "job_id": None}]
