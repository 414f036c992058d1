"""The migration list itself: ordered, contiguous, and covering the whole model."""

import re

from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _schema
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import pending_migrations


def test_versions_are_contiguous_from_one():
    assert [m.version for m in _schema.MIGRATIONS] == list(range(1, len(_schema.MIGRATIONS) + 1))
    assert len(_schema.MIGRATIONS) == _schema.LATEST_VERSION


def test_every_object_of_the_model_has_a_table():
    tables = set()
    for migration in _schema.MIGRATIONS:
        tables.update(re.findall(r"CREATE TABLE (\w+)", migration.sql))
    assert {"datacenter", "cluster", "host", "storage_domain", "storage_domain_host", "logical_network",
            "cluster_network", "host_network", "vm", "disk", "vm_disk", "vm_nic", "snapshot", "template",
            "affinity_group", "event", "job"} <= tables


def test_pending_migrations_step_by_step():
    target, steps = pending_migrations(1)
    assert target == _schema.LATEST_VERSION
    assert [s.split(":")[0] for s in steps] == [str(v) for v in range(2, _schema.LATEST_VERSION + 1)]
    assert pending_migrations(_schema.LATEST_VERSION)[1] == []
