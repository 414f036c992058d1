"""Writes to a test's engine database that no module makes (a state to start from)."""

from __future__ import annotations


def engine_write(engine_options, statements):
    """Run ``statements`` in one transaction on the engine database of ``engine_options``."""
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db

    engine = _db.connect(engine_options)
    try:
        with engine.transaction() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        engine.close()
