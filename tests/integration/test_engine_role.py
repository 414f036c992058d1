"""The engine role on this machine: PostgreSQL from the distribution, the database, idempotence."""

import os
import socket
import stat
import subprocess
import time

import pytest

from tests.support.playbook import run_play

ROLE = {"name": "engine role", "ansible.builtin.include_role": {"name": "virtplane.kvm.engine"}}


def test_bad_settings_are_refused_before_anything_changes():
    run = run_play([dict(ROLE, vars={"engine_db_name": "bad name;", "engine_db_password_file": "relative/path"})])
    assert run.rc != 0
    failed = [r for r in run.results if r["result"]["failed"]]
    assert [r["task"] for r in failed] == ["virtplane.kvm.engine : Check the engine settings"]
    assert "engine_db_name 'bad name;'" in failed[0]["result"]["msg"]
    assert "engine_db_password_file 'relative/path' (an absolute path)" in failed[0]["result"]["msg"]
    assert run.changed_tasks == []


@pytest.mark.parametrize("settings, task, message", [
    ({"engine_db_clients": ["10.0.0.0/24", "10.0.0.0/33"]}, "Check the networks that may reach the engine database",
     'Invalid engine_db_clients ["10.0.0.0/24", "10.0.0.0/33"]: a list of networks in CIDR notation'),
    ({"engine_db_clients": ["999.1.1.1/8"]}, "Check the networks that may reach the engine database",
     'Invalid engine_db_clients ["999.1.1.1/8"]'),
    ({"engine_db_clients": [1]}, "Check the networks that may reach the engine database", "Invalid engine_db_clients"),
    ({"engine_db_clients": ["10.0.0.0/24"], "engine_pki": False},
     "Check that the engine's CA is on (engine_db_clients take TLS only)", "engine_db_clients needs engine_pki"),
    ({"engine_db_clients": ["10.0.0.0/24"], "engine_db_address": "db$(id).example"},
     "Check the address PostgreSQL listens on for them", "Invalid engine_db_address 'db$(id).example'"),
    ({"engine_db_clients": ["10.0.0.0/24"], "engine_db_address": "999.1.1.1"},
     "Check the address PostgreSQL listens on for them", "Invalid engine_db_address '999.1.1.1'"),
    ({"engine_db_clients": ["10.0.0.0/24"], "engine_db_tls_dir": "/etc/virtplane/pki"},
     "Check the directory of PostgreSQL's server key and certificate",
     "Invalid engine_db_tls_dir '/etc/virtplane/pki'"),
    ({"engine_pki_organization": 'Acme"; touch /tmp/x; "'}, "Check the organization in the engine's certificates",
     "Invalid engine_pki_organization"),
])
def test_network_client_settings_are_refused_before_anything_changes(settings, task, message):
    run = run_play([dict(ROLE, vars=settings)])
    assert run.rc != 0
    failed = [r for r in run.results if r["result"].get("failed")]
    assert [r["task"] for r in failed] == ["virtplane.kvm.engine : " + task], run.output[-2000:]
    assert message in failed[0]["result"]["msg"], failed[0]["result"]["msg"]
    assert run.changed_tasks == []


def test_wrong_type_is_refused_by_the_argument_spec():
    run = run_play([dict(ROLE, vars={"engine_db_port": "five"})])
    assert run.rc != 0
    assert "engine_db_port" in run.output and "int" in run.output
    assert run.changed_tasks == []


def test_deploys_postgresql_and_the_engine_then_changes_nothing():
    try:
        _deploys_and_changes_nothing()
    finally:  # the monitor this machine got is the test's: it goes with it
        subprocess.run(["/usr/local/sbin/virtplane-monitor-service", "stop"], check=False, capture_output=True)


def _deploys_and_changes_nothing():
    run = run_play([ROLE, {"name": "summary", "virtplane.kvm.engine_info": {}}])
    assert run.rc == 0, run.output[-3000:]
    # no systemd here: the monitor runs under virtplane-monitor-service, and is the active one
    status = subprocess.run(["/usr/local/sbin/virtplane-monitor-service", "status"], capture_output=True, text=True,
                            check=False)
    assert status.returncode == 0 and status.stdout.strip() == "virtplane-monitor running", status
    lease = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-At", "-d", "virtplane", "-c",
                            "SELECT holder FROM monitor_lease WHERE expires_at > clock_timestamp()"],
                           capture_output=True, text=True, cwd="/tmp", check=False)
    for _attempt in range(50):
        if lease.stdout.strip():
            break
        time.sleep(0.2)
        lease = subprocess.run(lease.args, capture_output=True, text=True, cwd="/tmp", check=False)
    assert lease.stdout.strip().split(":")[0] == socket.gethostname(), (lease.stdout, lease.stderr)
    assert stat.S_IMODE(os.stat("/etc/virtplane/monitor.json").st_mode) == 0o600
    assert run["summary"]["schema_version"] >= 1
    secret = "/etc/virtplane/engine-db/password"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    with open(secret) as handle:
        assert handle.read().strip() not in run.output

    again = run_play([ROLE])
    assert again.rc == 0, again.output[-3000:]
    assert again.changed_tasks == []

    check = run_play([ROLE], check=True, diff=True)
    assert check.rc == 0, check.output[-3000:]
    assert check.changed_tasks == []
