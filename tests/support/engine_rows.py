"""Rows the tests put into an engine database directly, for what no module makes yet (running VMs)."""

from __future__ import annotations


def running_vm(cur, name, host, status="Up"):
    """A VM row whose runtime says it runs on ``host``: the definition and its runtime, as the engine keeps them."""
    cur.execute("INSERT INTO vm (cluster_id, name, vcpus, memory_mib) SELECT cluster_id, %s, 1, 128 FROM host"
                " WHERE name = %s RETURNING id", (name, host))
    vm_id = cur.fetchone()["id"]
    cur.execute("INSERT INTO vm_runtime (vm_id, status, run_host_id) SELECT %s, %s, id FROM host WHERE name = %s",
                (vm_id, status, host))
    return vm_id
