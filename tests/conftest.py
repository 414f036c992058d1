"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.support.playbook import ensure_collection_link  # noqa: E402

# The collection's own code is imported as ansible_collections.virtplane.kvm, as Ansible does.
sys.path.insert(0, ensure_collection_link())


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of our own for the whole session, removed afterwards."""
    from tests.support.postgres import PostgresServer, remove_leftovers

    remove_leftovers()
    server = PostgresServer().start()
    yield server
    server.stop()
