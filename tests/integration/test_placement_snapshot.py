"""The cluster's placement snapshot an engine connection keeps: read whole once, then only what changed —
and always what the database holds, whatever another connection changed and whenever it committed."""

import pytest

from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _vms as vm_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.scheduler._scheduler import Scheduler
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _placing
from tests.support.playbook import run_play

BASE = [{"name": "dc", "virtplane.kvm.datacenter": {"name": "paris"}},
        {"name": "prod", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris"}}]


def _state(scheduler):
    """What placement decides on, host by host, and where the VMs run."""
    hosts = {h.name: (h.up, h.status_text, h.limit_mib, h.committed_mib, h.cpu_limit, h.committed_vcpus, h.vms,
                      h.ha_mib, h.load, sorted(h.networks), sorted(h.domains)) for h in scheduler.hosts}
    return hosts, dict(scheduler.locations), round(scheduler.total_free, 3), scheduler.policy


def _fresh(cur, cluster_id):
    return Scheduler(vm_rows.placement_hosts(cur, cluster_id), **vm_rows.placement_context(cur, cluster_id))


@pytest.fixture
def cluster(engine_options, tmp_path):
    hosts = []
    for i in range(3):
        node = tmp_path / ("node%d.xml" % i)
        node.write_text("<node><cpu><mhz>2400</mhz><nodes>1</nodes><sockets>1</sockets><cores>4</cores>"
                        "<threads>1</threads></cpu><memory>%d</memory></node>" % ((4 + i) * 1024 ** 2))
        hosts.append({"name": "hv%d" % i, "virtplane.kvm.host": {"name": "hv%d" % i, "cluster": "prod",
                                                                 "libvirt_uri": "test://%s" % node}})
    vms = [{"name": "vm%d" % v, "cluster": "prod", "memory": "512MiB", "vcpus": 1,
            "boot": {"kernel": "/boot/vmlinuz"}} for v in range(6)]
    run = run_play(BASE + hosts + [{"name": "vms", "virtplane.kvm.vm": {"vms": vms}}], engine=engine_options)
    assert run.rc == 0, run.output[-3000:]
    kept, other = _db.connect(engine_options), _db.connect(engine_options)
    with kept.transaction() as cur:
        cur.execute("SELECT id FROM cluster WHERE name = 'prod'")
        cluster_id = cur.fetchone()["id"]
    yield kept, other, cluster_id
    kept.close()
    other.close()


def _kept_matches_fresh(kept, cluster_id):
    with kept.transaction() as cur:
        scheduler = _placing.scheduler_for(kept, cur, cluster_id)
        assert _state(scheduler) == _state(_fresh(cur, cluster_id))
        return scheduler


def test_a_kept_snapshot_follows_every_change_another_connection_commits(cluster):
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _vm

    kept, other, cluster_id = cluster
    first = _kept_matches_fresh(kept, cluster_id)
    # VMs started elsewhere: their reservations and locations
    for name in ("vm0", "vm1", "vm2"):
        _vm.ensure(other, _vm.VmSpec(name=name, state="running"))
    scheduler = _kept_matches_fresh(kept, cluster_id)
    assert scheduler is first  # read again only where it changed, not rebuilt
    assert set(scheduler.locations) == {"vm0", "vm1", "vm2"}
    # a host's status, its capacity settings, its load, a VM's HA flag
    with other.transaction() as cur:
        cur.execute("UPDATE host SET status = 'Maintenance' WHERE name = 'hv1'")
        cur.execute("UPDATE host SET reserved_memory_mib = 1024 WHERE name = 'hv2'")
        cur.execute("INSERT INTO host_statistics (host_id, cpu_percent) SELECT id, 55 FROM host WHERE name = 'hv0'"
                    " ON CONFLICT (host_id) DO UPDATE SET cpu_percent = EXCLUDED.cpu_percent")
        cur.execute("UPDATE vm SET ha_enabled = true WHERE name = 'vm0'")
        # a VM that stopped gives its host back
        cur.execute("UPDATE vm_runtime r SET run_host_id = NULL, reserved_memory_mib = 0, reserved_vcpus = 0,"
                    " status = 'Down' FROM vm v WHERE v.id = r.vm_id AND v.name = 'vm1'")
    assert _kept_matches_fresh(kept, cluster_id) is first
    # a VM renamed while it runs, a host removed: where VMs run is the database's
    with other.transaction() as cur:
        cur.execute("UPDATE vm SET name = 'vm0-renamed' WHERE name = 'vm0'")
        cur.execute("UPDATE host SET status = 'Up' WHERE name = 'hv1'")
    assert "vm0-renamed" in _kept_matches_fresh(kept, cluster_id).locations
    # the cluster's policy, and an affinity group: the cluster is read whole again
    with other.transaction() as cur:
        cur.execute("UPDATE cluster SET scheduling_policy = 'power_saving' WHERE id = %s", (cluster_id,))
    rebuilt = _kept_matches_fresh(kept, cluster_id)
    assert rebuilt is not first and rebuilt.policy == "power_saving"


def test_a_transaction_that_commits_after_the_snapshot_was_read_is_not_missed(cluster):
    """Another transaction reserves, the snapshot is read while it is open (it sees nothing of it), then it
    commits: the next read has it, although no later change came after."""
    kept, other, cluster_id = cluster
    _kept_matches_fresh(kept, cluster_id)
    with other.transaction() as cur:
        cur.execute("UPDATE vm_runtime r SET run_host_id = h.id, reserved_memory_mib = 512, reserved_vcpus = 1,"
                    " status = 'Up' FROM vm v, host h WHERE v.id = r.vm_id AND v.name = 'vm3' AND h.name = 'hv0'")
        # a second, later transaction commits first
        late = _db.connect(other.options)
        try:
            with late.transaction() as cur2:
                cur2.execute("UPDATE vm_runtime r SET run_host_id = h.id, reserved_memory_mib = 512,"
                             " reserved_vcpus = 1, status = 'Up' FROM vm v, host h WHERE v.id = r.vm_id"
                             " AND v.name = 'vm4' AND h.name = 'hv2'")
        finally:
            late.close()
        scheduler = _kept_matches_fresh(kept, cluster_id)
        assert "vm4" in scheduler.locations and "vm3" not in scheduler.locations
    scheduler = _kept_matches_fresh(kept, cluster_id)
    assert scheduler.locations.get("vm3") == "hv0"
    assert scheduler.by_name["hv0"].committed_mib == 512


def test_its_own_reservation_is_seen_and_a_rolled_back_one_forgotten(cluster):
    kept, _other, cluster_id = cluster
    with kept.transaction() as cur:
        scheduler = _placing.scheduler_for(kept, cur, cluster_id)
        cur.execute("UPDATE vm_runtime r SET run_host_id = h.id, reserved_memory_mib = 512, reserved_vcpus = 1,"
                    " status = 'Up' FROM vm v, host h WHERE v.id = r.vm_id AND v.name = 'vm5' AND h.name = 'hv1'")
    assert _kept_matches_fresh(kept, cluster_id).locations.get("vm5") == "hv1"
    # written before the snapshot is read, in a transaction that then fails: nothing of it is kept
    with pytest.raises(RuntimeError):
        with kept.transaction() as cur:
            cur.execute("UPDATE host SET status = 'Maintenance' WHERE name = 'hv0'")
            assert not _placing.scheduler_for(kept, cur, cluster_id).by_name["hv0"].up
            raise RuntimeError("the run fails")
    assert kept.placement_snapshots == {}
    assert _kept_matches_fresh(kept, cluster_id).by_name["hv0"].up
    assert scheduler is not None


def test_a_kept_snapshot_is_read_whole_again_when_old_and_the_change_log_is_pruned(cluster, monkeypatch):
    """The kept snapshot lasts ``KEEP_SECONDS``; a whole read removes changes older than ``LOG_SECONDS`` and
    keeps the recent ones (another connection's kept snapshot may still ask for them)."""
    kept, other, cluster_id = cluster
    first = _kept_matches_fresh(kept, cluster_id)
    assert _kept_matches_fresh(kept, cluster_id) is first
    with other.transaction() as cur:
        # another cluster's (this one's kept snapshot does not read it again for that)
        cur.execute("INSERT INTO placement_change (cluster_id, host_id, created_at)"
                    " VALUES (gen_random_uuid(), NULL, clock_timestamp() - interval '2 hours') RETURNING id")
        stale = cur.fetchone()["id"]
        cur.execute("UPDATE host SET reserved_memory_mib = 512 WHERE name = 'hv0' RETURNING id")
        cur.execute("SELECT max(id) AS id FROM placement_change")
        recent = cur.fetchone()["id"]
    monkeypatch.setattr(_placing, "KEEP_SECONDS", 0)
    rebuilt = _kept_matches_fresh(kept, cluster_id)
    assert rebuilt is not first
    with other.transaction() as cur:
        cur.execute("SELECT id FROM placement_change WHERE id = ANY(%s)", ([stale, recent],))
        assert [r["id"] for r in cur.fetchall()] == [recent]


def test_a_kept_snapshot_follows_random_changes_applied_as_differences(cluster):
    """Reservations that come, go, move between hosts and grow, mixed in one transaction with changes that read
    a host again (its status, a VM's HA flag): after every transaction the kept snapshot equals a fresh read."""
    import random

    kept, other, cluster_id = cluster
    first = _kept_matches_fresh(kept, cluster_id)
    rnd = random.Random(7)
    vms = ["vm%d" % v for v in range(6)]
    hosts = ["hv0", "hv1", "hv2"]
    place = ("UPDATE vm_runtime r SET run_host_id = h.id, reserved_memory_mib = %s, reserved_vcpus = %s,"
             " status = 'Up' FROM vm v, host h WHERE v.id = r.vm_id AND v.name = %s AND h.name = %s")
    for _round in range(25):
        with other.transaction() as cur:
            for _change in range(rnd.randint(1, 4)):
                kind = rnd.choice(("place", "place", "stop", "grow", "ha", "status"))
                vm, host = rnd.choice(vms), rnd.choice(hosts)
                if kind == "place":  # a start, or a move from wherever it runs
                    cur.execute(place, (rnd.choice((256, 512)), rnd.randint(1, 2), vm, host))
                elif kind == "stop":
                    cur.execute("UPDATE vm_runtime r SET run_host_id = NULL, reserved_memory_mib = 0,"
                                " reserved_vcpus = 0, status = 'Down' FROM vm v WHERE v.id = r.vm_id"
                                " AND v.name = %s", (vm,))
                elif kind == "grow":  # live growth of what a running VM holds
                    cur.execute("UPDATE vm_runtime r SET reserved_memory_mib = reserved_memory_mib + 128"
                                " FROM vm v WHERE v.id = r.vm_id AND v.name = %s AND r.run_host_id IS NOT NULL",
                                (vm,))
                elif kind == "ha":
                    cur.execute("UPDATE vm SET ha_enabled = NOT ha_enabled WHERE name = %s", (vm,))
                else:
                    cur.execute("UPDATE host SET status = CASE WHEN status = 'Up' THEN 'Maintenance' ELSE 'Up'"
                                " END WHERE name = %s", (host,))
        assert _kept_matches_fresh(kept, cluster_id) is first
    with kept.transaction() as cur:
        cur.execute("SELECT count(*) AS n FROM placement_change WHERE sign IS NOT NULL")
        assert cur.fetchone()["n"] > 0  # the differences were there to apply
