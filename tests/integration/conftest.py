"""Integration fixtures: a fresh engine database per test on the session's PostgreSQL."""

from __future__ import annotations

import re
import secrets

import pytest


@pytest.fixture
def engine_options(postgres, request):
    """The `engine` option of the modules, pointing at a new database with the latest schema."""
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _provision

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + "_" + secrets.token_hex(3)
    password = secrets.token_urlsafe(18)
    _provision.ensure_database(postgres.superuser_login(), name, "virtplane", password)
    return {"host": postgres.socket_dir, "port": postgres.port, "database": name, "user": "virtplane",
            "password": password}


@pytest.fixture
def engine(engine_options):
    """The same database, opened for the test's own reads."""
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db

    opened = _db.connect(engine_options)
    yield opened
    opened.close()


@pytest.fixture
def sql(engine):
    """Run one read query, return the rows as dicts."""
    def query(statement, *args):
        with engine.transaction() as cur:
            cur.execute(statement, args)
            return cur.fetchall()
    return query
