"""Writes to a test's engine database that no module makes (a state to start from)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.support.playbook import ensure_collection_link


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


def start_monitor(engine_options, directory, name, *args):
    """A monitor service (virtplane-monitor, as the engine role runs it) on ``engine_options``, its log in
    ``directory``/``name``.log; ``args``: its settings (``--interval 1`` ...)."""
    config = os.path.join(str(directory), "%s.json" % name)
    with open(config, "w") as handle:
        json.dump({"engine": engine_options}, handle)
    env = dict(os.environ, PYTHONPATH=ensure_collection_link())
    with open(os.path.join(str(directory), "%s.log" % name), "w") as log:
        return subprocess.Popen([sys.executable, "-c", "import sys; from ansible_collections.virtplane.kvm.plugins."
                                 "module_utils.services import _monitor; sys.exit(_monitor.main(sys.argv[1:]))",
                                 "--config", config, *args], stdout=log, stderr=subprocess.STDOUT, env=env)


def until(predicate, timeout, what, step=0.3):
    """What ``predicate()`` returns once it is true, asked every ``step`` seconds; fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(step)
    raise AssertionError("%s: not within %d s" % (what, timeout))
