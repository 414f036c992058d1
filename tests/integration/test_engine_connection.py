"""The engine connection option: one clear message when the database is down or refuses us."""

from tests.support.playbook import run_play

INFO = {"name": "info", "ignore_errors": True, "virtplane.kvm.engine_info": {}}


def test_database_down(engine_options, tmp_path):
    down = dict(engine_options, host=str(tmp_path))  # no server has its socket there
    run = run_play([INFO], engine=down)
    assert run["info"]["failed"]
    msg = run["info"]["msg"]
    assert msg.startswith("Cannot connect to the engine database '%s' as 'virtplane' at %s: "
                          % (engine_options["database"], tmp_path))
    assert "No such file or directory (is PostgreSQL running and listening there?)" in msg


def test_wrong_password_and_no_password_leak(engine_options):
    run = run_play([INFO], engine=dict(engine_options, password="not-the-password"))
    assert run["info"]["msg"].endswith(': password authentication failed for user "virtplane"')
    assert "not-the-password" not in run.output


def test_password_from_environment_and_file(engine_options, tmp_path):
    without_password = {k: v for k, v in engine_options.items() if k != "password"}
    run = run_play([INFO], engine=without_password,
                   extra_env={"VIRTPLANE_ENGINE_PASSWORD": engine_options["password"]})
    assert not run["info"]["failed"], run.output

    secret = tmp_path / "secret"
    secret.write_text(engine_options["password"] + "\n")
    run = run_play([INFO], engine=dict(without_password, password_file=str(secret)))
    assert not run["info"]["failed"], run.output


def test_unknown_database_names_it(engine_options):
    run = run_play([INFO], engine=dict(engine_options, database="nosuchdb"))
    assert run["info"]["msg"].startswith("Cannot connect to the engine database 'nosuchdb' as 'virtplane'")
    assert 'database "nosuchdb" does not exist' in run["info"]["msg"]
