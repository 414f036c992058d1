"""A host's load from its CPU counters, and the loads that held for a policy's duration (engine side, on a real
PostgreSQL; the counters of a lab host are read by the host module in tests/lab)."""

from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _hosts as host_rows
from tests.support.playbook import run_play

BASE = [{"name": "dc", "virtplane.kvm.datacenter": {"name": "paris"}},
        {"name": "prod", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris"}},
        {"name": "hv1", "virtplane.kvm.host": {"name": "hv1", "cluster": "prod", "libvirt_uri": "test:///default"}}]


def test_a_load_is_the_busy_share_between_two_readings_and_joins_the_history(engine_options, engine, sql):
    assert run_play(BASE, engine=engine_options).rc == 0
    host = sql("SELECT id, cluster_id FROM host WHERE name = 'hv1'")[0]
    with engine.transaction() as cur:
        cur.execute("DELETE FROM host_statistics")
        assert host_rows.record_load(cur, host["id"], 1000, 4000) is None  # a first reading: no load yet
        assert host_rows.record_load(cur, host["id"], 1750, 5000) == 75.0  # 750 busy of 1000
    with engine.transaction() as cur:
        # counters that went back (the machine restarted): no load, the last one stays the host's
        assert host_rows.record_load(cur, host["id"], 10, 20) is None
    assert sql("SELECT cpu_percent::float AS load, cpu_busy_ns FROM host_statistics") == [
        {"load": 75.0, "cpu_busy_ns": 10}]
    assert [r["load"] for r in sql("SELECT cpu_percent::float AS load FROM host_load_sample")] == [75.0]


def test_only_a_history_that_covers_the_duration_counts(engine_options, engine, sql):
    assert run_play(BASE, engine=engine_options).rc == 0
    host = sql("SELECT id, cluster_id FROM host WHERE name = 'hv1'")[0]

    def sample(seconds_ago, load):
        sql("INSERT INTO host_load_sample (host_id, sampled_at, cpu_percent) VALUES (%s, now() - %s * interval"
            " '1 second', %s) RETURNING host_id", host["id"], seconds_ago, load)

    def sustained(minutes):
        with engine.transaction() as cur:
            return host_rows.sustained_loads(cur, host["cluster_id"], minutes)

    sample(90, 95)
    sample(30, 85)
    assert sustained(2) == {}  # nothing from before the last two minutes: not known to have held
    assert sustained(1) == {"hv1": (85.0, 85.0)}  # the 90 s old load covers the time up to the next one
    sample(200, 40)
    assert sustained(2) == {"hv1": (85.0, 95.0)}
