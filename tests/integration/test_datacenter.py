"""datacenter module: check mode, real run, idempotence, diff, refusals (ansible-playbook, real PostgreSQL)."""

from tests.support.playbook import run_play


def dc(name="paris", **options):
    return {"virtplane.kvm.datacenter": dict(name=name, **options)}


def test_create_check_then_real_then_idempotent(engine_options, sql):
    run = run_play([dict(name="check", **dc(description="Paris, building 2"))], engine=engine_options, check=True)
    assert run["check"]["changed"] and run["check"]["actions"] == ["create"]
    assert sql("SELECT * FROM datacenter") == []

    run = run_play([dict(name="create", **dc(description="Paris, building 2")),
                    dict(name="again", **dc(description="Paris, building 2")),
                    dict(name="unset options keep their value", **dc())], engine=engine_options)
    assert run.rc == 0, run.output
    assert run["create"]["changed"]
    assert run["create"]["datacenter"]["description"] == "Paris, building 2"
    assert run["create"]["datacenter"]["storage_type"] == "shared"
    assert not run["again"]["changed"]
    assert not run["unset options keep their value"]["changed"]
    rows = sql("SELECT name, description, storage_type FROM datacenter")
    assert rows == [{"name": "paris", "description": "Paris, building 2", "storage_type": "shared"}]
    assert [e["code"] for e in sql("SELECT code FROM event")] == ["DATACENTER_ADDED"]


def test_update_shows_only_the_changed_fields(engine_options, sql):
    run_play([dict(name="create", **dc())], engine=engine_options)
    run = run_play([dict(name="update", **dc(storage_type="local"))], engine=engine_options, diff=True)
    assert run["update"]["changed"]
    assert run["update"]["diff"] == {"before": {"storage_type": "shared"}, "after": {"storage_type": "local"}}
    assert sql("SELECT storage_type FROM datacenter")[0]["storage_type"] == "local"


def test_remove_refused_while_clusters_remain_then_allowed(engine_options, sql):
    run = run_play([dict(name="dc", **dc()),
                    {"name": "c1", "virtplane.kvm.cluster": {"name": "c1", "datacenter": "paris"}},
                    {"name": "c2", "virtplane.kvm.cluster": {"name": "c2", "datacenter": "paris"}},
                    dict(name="remove", ignore_errors=True, **dc(state="absent"))], engine=engine_options)
    assert run["remove"]["failed"]
    assert run["remove"]["msg"] == "Cannot remove data center 'paris': it still has clusters c1, c2"
    assert len(sql("SELECT * FROM datacenter")) == 1

    run = run_play([{"name": "c1 gone", "virtplane.kvm.cluster": {"name": "c1", "state": "absent"}},
                    {"name": "c2 gone", "virtplane.kvm.cluster": {"name": "c2", "state": "absent"}},
                    dict(name="check remove", check_mode=True, **dc(state="absent")),
                    dict(name="remove", **dc(state="absent")),
                    dict(name="remove again", **dc(state="absent"))], engine=engine_options)
    assert run.rc == 0, run.output
    assert run["check remove"]["changed"]
    assert run["remove"]["changed"] and not run["remove again"]["changed"]
    assert sql("SELECT * FROM datacenter") == []


def test_invalid_name_is_refused_before_anything_changes(engine_options, sql):
    run = run_play([dict(name="bad", ignore_errors=True, **dc(name="paris; drop table host"))], engine=engine_options)
    assert run["bad"]["failed"]
    assert run["bad"]["msg"].startswith("Invalid value for 'name': 'paris; drop table host' is not a valid name")
    assert sql("SELECT * FROM datacenter") == []
