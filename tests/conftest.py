"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
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
