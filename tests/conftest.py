"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import re
import secrets
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.support.playbook import ensure_collection_link  # noqa: E402

# The collection's code is imported as ansible_collections.virtplane.kvm through Ansible's own
# collection loader, which pytest-ansible installs (--ansible-unit-inject-only, see pyproject.toml)
# from this path.
os.environ["ANSIBLE_COLLECTIONS_PATH"] = os.pathsep.join(
    p for p in (ensure_collection_link(), os.environ.get("ANSIBLE_COLLECTIONS_PATH")) if p)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of our own for the whole session, removed afterwards."""
    from tests.support.postgres import PostgresServer, remove_leftovers

    remove_leftovers()
    server = PostgresServer().start()
    yield server
    server.stop()


def new_engine(postgres, request, allow_test_driver):
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _provision

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + "_" + secrets.token_hex(3)
    password = secrets.token_urlsafe(18)
    _provision.ensure_database(postgres.superuser_login(), name, "virtplane", password,
                               settings={"allow_test_driver": allow_test_driver})
    return {"host": postgres.socket_dir, "port": postgres.port, "database": name, "user": "virtplane",
            "password": password}


@pytest.fixture
def engine_options(postgres, request):
    """The `engine` option of the modules: a new database with the latest schema, where hosts may be
    libvirt's test driver (the simulated hosts of the integration tests)."""
    return new_engine(postgres, request, allow_test_driver=True)


@pytest.fixture
def production_engine_options(postgres, request):
    """A new engine database as the engine role makes it: the test driver is refused."""
    return new_engine(postgres, request, allow_test_driver=False)


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
