"""engine_database module and schema migrations on a real PostgreSQL server."""

import os
import stat

import pytest

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import EngineConnectionError, SchemaVersionError
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db, _schema
from tests.support.playbook import run_play


def provision(postgres, name, **options):
    login = postgres.superuser_login()
    values = dict(name=name, owner="engine_" + name[:40], login_host=login["host"], login_port=login["port"],
                  login_user=login["user"], login_password=login["password"])
    values.update(options)
    return {"virtplane.kvm.engine_database": values}


def connect_as(postgres, database, user, password):
    return _db.connect({"host": postgres.socket_dir, "port": postgres.port, "database": database, "user": user,
                        "password": password, "password_file": None})


def test_check_real_idempotent_with_a_generated_password_file(postgres, tmp_path):
    secret = tmp_path / "conf" / "engine-db.secret"
    task = provision(postgres, "gen", owner_password_file=str(secret))
    run = run_play([dict(name="check", check_mode=True, **task)])
    assert run["check"]["changed"]
    assert run["check"]["actions"][:3] == ["generate the password file %s" % secret, "create role engine_gen",
                                           "create database gen"]
    assert run["check"]["schema"] == {"from_version": 0, "to_version": _schema.LATEST_VERSION,
                                      "applied": ["%d: %s" % (m.version, m.description) for m in _schema.MIGRATIONS]}
    assert not secret.exists()

    run = run_play([dict(name="create", **task), dict(name="again", **task)])
    assert run.rc == 0, run.output
    assert run["create"]["changed"] and not run["again"]["changed"]
    assert run["again"]["actions"] == [] and run["again"]["schema"]["applied"] == []
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    password = secret.read_text().strip()
    assert len(password) >= 24
    assert password not in run.output  # never printed
    engine = connect_as(postgres, "gen", "engine_gen", password)
    assert _db.schema_version(engine.conn) == _schema.LATEST_VERSION
    engine.close()


def test_password_change_is_detected_and_applied(postgres):
    first, second = "first-password-123", "second-password-456"
    run = run_play([dict(name="create", **provision(postgres, "pw", owner_password=first)),
                    dict(name="same", **provision(postgres, "pw", owner_password=first)),
                    dict(name="new", **provision(postgres, "pw", owner_password=second))])
    assert run.rc == 0, run.output
    assert not run["same"]["changed"]
    assert run["new"]["actions"] == ["set the password of role engine_pw"]
    assert first not in run.output and second not in run.output
    connect_as(postgres, "pw", "engine_pw", second).close()
    with pytest.raises(EngineConnectionError, match="password authentication failed for user \"engine_pw\""):
        connect_as(postgres, "pw", "engine_pw", first)


def test_older_schema_is_upgraded_step_by_step(postgres):
    run = run_play([dict(name="v1", **provision(postgres, "old", owner_password="x" * 16, schema_version=1)),
                    dict(name="latest", **provision(postgres, "old", owner_password="x" * 16))])
    assert run.rc == 0, run.output
    assert run["v1"]["schema"] == {"from_version": 0, "to_version": 1,
                                   "applied": ["1: data centers, clusters and hosts"]}
    latest = run["latest"]["schema"]
    assert (latest["from_version"], latest["to_version"]) == (1, _schema.LATEST_VERSION)
    assert [a.split(":")[0] for a in latest["applied"]] == [str(v) for v in range(2, _schema.LATEST_VERSION + 1)]
    engine = connect_as(postgres, "old", "engine_old", "x" * 16)
    with engine.transaction() as cur:
        cur.execute("SELECT version FROM schema_migration ORDER BY version")
        assert [r["version"] for r in cur.fetchall()] == list(range(1, _schema.LATEST_VERSION + 1))
        # objects belong to the engine's role, not to the superuser that ran the migrations
        cur.execute("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")
        assert [r["tableowner"] for r in cur.fetchall()] == ["engine_old"]
    engine.close()


def test_modules_refuse_an_older_schema_with_the_way_out(postgres):
    run_play([dict(name="v1", **provision(postgres, "v1only", owner_password="x" * 16, schema_version=1))])
    with pytest.raises(SchemaVersionError) as refused:
        connect_as(postgres, "v1only", "engine_v1only", "x" * 16)
    # the message names the database it reached, and the way out
    assert str(refused.value) == (
        "The engine database 'v1only' as 'engine_v1only' at %s has schema version 1, this collection needs version "
        "%d: upgrade it with the virtplane.kvm.engine role" % (postgres.socket_dir, _schema.LATEST_VERSION))


def test_newer_schema_is_refused_and_left_as_it_was(postgres):
    run_play([dict(name="create", **provision(postgres, "future", owner_password="x" * 16))])
    engine = connect_as(postgres, "future", "engine_future", "x" * 16)
    with engine.transaction() as cur:
        cur.execute("INSERT INTO schema_migration (version, description) VALUES (99, 'from a newer collection')")
    engine.close()

    run = run_play([dict(name="again", ignore_errors=True, **provision(postgres, "future", owner_password="x" * 16))])
    assert run["again"]["failed"]
    assert run["again"]["msg"] == (
        "Cannot set up the engine database 'future': The engine database has schema version 99, newer than the "
        "version %d this collection knows: use a virtplane.kvm collection at least as new as the one that "
        "upgraded it" % _schema.LATEST_VERSION)
    conn = _db.connect_raw(_db.resolve_engine_options(dict(postgres.superuser_login("future"), password_file=None)))
    assert _db.schema_version(conn) == 99
    conn.close()
    with pytest.raises(SchemaVersionError, match="version 99, newer than"):
        connect_as(postgres, "future", "engine_future", "x" * 16)


def test_short_password_is_refused_before_anything_is_created(postgres):
    run = run_play([dict(name="short", ignore_errors=True, **provision(postgres, "short", owner_password="tiny"))])
    assert run["short"]["msg"] == ("Cannot set up the engine database 'short': Invalid value for 'owner_password': "
                                   "must be at least 12 characters")
    conn = _db.connect_raw(_db.resolve_engine_options(dict(postgres.superuser_login(), password_file=None)))
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM pg_database WHERE datname = 'short'")
        assert cur.fetchone()["n"] == 0
    conn.close()


def _server_state(postgres):
    """Roles, databases, their owners and whether template1 holds tables: what a refusal must not touch."""
    conn = _db.connect_raw(_db.resolve_engine_options(dict(postgres.superuser_login(), password_file=None)))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT rolname, rolpassword FROM pg_authid ORDER BY rolname")
            roles = cur.fetchall()
            cur.execute("SELECT d.datname, r.rolname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba"
                        " ORDER BY d.datname")
            databases = cur.fetchall()
    finally:
        conn.close()
    conn = _db.connect_raw(_db.resolve_engine_options(dict(postgres.superuser_login("template1"), password_file=None)))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public'")
            template_tables = cur.fetchone()["n"]
    finally:
        conn.close()
    return roles, databases, template_tables


def test_hostile_input_is_refused_before_the_server_or_a_file_is_touched(postgres, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00password")
    good = "x" * 16
    cases = [
        ("template1", dict(name="template1", owner_password=good), "name", "PostgreSQL's own databases"),
        ("postgres db", dict(name="postgres", owner_password=good), "name", "PostgreSQL's own databases"),
        ("superuser role", dict(name="hostile1", owner="postgres", owner_password=good), "owner", "PostgreSQL's own"),
        ("reserved role", dict(name="hostile2", owner="pg_evil", owner_password=good), "owner", "reserved name"),
        ("schema negative", dict(name="hostile3", owner_password=good, schema_version=-1), "schema_version",
         "not a schema version"),
        ("schema future", dict(name="hostile4", owner_password=good, schema_version=99), "schema_version",
         "not a schema version"),
        ("name too long", dict(name="d" * 64, owner_password=good), "name", "longer than the 63 characters"),
        ("password newline", dict(name="hostile5", owner_password=good + "\n"), "owner_password", "control"),
        ("password file relative", dict(name="hostile6", owner_password_file="relative/pw"), "owner_password_file",
         "absolute"),
        ("password file newline", dict(name="hostile7", owner_password_file=str(tmp_path / "pw\n")),
         "owner_password_file", "not allowed in a path"),
        ("password file fifo", dict(name="hostile8", owner_password_file=str(fifo)), "owner_password_file",
         "not a regular file"),
        ("password file binary", dict(name="hostile9", owner_password_file=str(binary)), "owner_password_file",
         "does not hold text"),
        ("lease", dict(name="hostile10", owner_password=good, reservation_lease_seconds=1),
         "reservation_lease_seconds", "outside 5-3600"),
        ("login port", dict(name="hostile11", owner_password=good, login_port=70000), "login_port", "outside"),
    ]
    before = _server_state(postgres)
    for check in (True, False):
        tasks = []
        for name, options, _field, _cause in cases:
            task = provision(postgres, **options)
            task.update(name=name, ignore_errors=True)
            tasks.append(task)
        run = run_play(tasks, check=check)
        for name, _options, field, cause in cases:
            msg = run[name]["msg"]
            assert "'%s'" % field in msg and cause in msg, (name, msg)
            assert "\n" not in msg, msg
    assert _server_state(postgres) == before
    assert sorted(os.listdir(tmp_path)) == ["binary", "fifo"]


def test_engine_password_files_that_are_no_files(engine_options, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00password")
    without_password = {k: v for k, v in engine_options.items() if k != "password"}
    tasks = [{"name": name, "ignore_errors": True,
              "virtplane.kvm.engine_info": {"engine": dict(without_password, password_file=path)}}
             for name, path in (("fifo", str(fifo)), ("binary", str(binary)), ("directory", str(tmp_path)),
                                ("variable", "/etc/$USER/pw"))]
    run = run_play(tasks)
    assert run["fifo"]["msg"] == "Invalid value for 'engine.password_file': '%s' is not a regular file" % fifo
    assert run["binary"]["msg"] == "Invalid value for 'engine.password_file': '%s' does not hold text (UTF-8)" % binary
    assert run["directory"]["msg"].startswith("Invalid value for 'engine.password_file': ")
    assert run["variable"]["msg"].startswith("Cannot connect to the engine database")  # taken literally, not expanded
