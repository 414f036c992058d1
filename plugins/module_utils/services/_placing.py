# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cluster's scheduler as the engine keeps it: read whole once, then only where it changed.

``scheduler_for(engine, cur, cluster_id)`` is called under the cluster's lock, in the transaction
that writes the reservation. The first call of a connection reads the cluster's whole snapshot from
PostgreSQL (hosts, where the VMs run, affinity groups, policy) and builds its ``Scheduler``; later
calls ask the ``placement_change`` log (kept by triggers) what changed since the snapshot was read —
by transactions it did not see, its own included: a reservation that came to or left a host is applied as
the difference it makes, any other change of a host reads that host again. A change of the
cluster itself or of its affinity groups reads it all again, as does a snapshot older than
``KEEP_SECONDS``. ``warm`` reads the whole snapshot before the lock is taken, so that the lock waits
only for what changed. A placement that is not committed leaves nothing behind: the scheduler learns of
reservations only from the database.
"""

from __future__ import annotations

import time

from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _vms as vm_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.scheduler._scheduler import Scheduler

# a kept snapshot is read whole again after this long; the log keeps changes far longer
KEEP_SECONDS = 60
LOG_SECONDS = 3600


class _Kept:
    __slots__ = ("scheduler", "snapshot", "own", "ids", "taken")


def scheduler_for(engine, cur, cluster_id):
    """The cluster's Scheduler, up to date within this transaction (see the module's docstring)."""
    return ask(engine, cur, cluster_id).answer()


def ask(engine, cur, cluster_id):
    """``scheduler_for`` in two steps: the question (what changed since the kept snapshot) is sent now, on a
    cursor of its own, and the Question's ``answer()`` reads it and gives the Scheduler. In pipeline mode the
    question goes in one round trip with the statements sent before it (the locks), and is answered after them."""
    return _Question(engine, cur, cluster_id)


class _Question:
    def __init__(self, engine, cur, cluster_id):
        self.engine, self.cur, self.cluster_id = engine, cur, cluster_id
        self.kept = engine.placement_snapshots.get(cluster_id)
        self.asking = None
        if self.kept is not None and time.monotonic() - self.kept.taken < KEEP_SECONDS:
            self.asking = engine.conn.cursor()
            vm_rows.send_placement_update(self.asking, cluster_id, self.kept.snapshot, self.kept.own)

    def answer(self):
        if self.asking is not None:
            with self.asking:
                update = vm_rows.placement_update_answer(self.asking)
            self.asking = None
            if not update["everything"]:
                _apply(self.kept, update)
                self.kept.snapshot, self.kept.own = update["snapshot"], update["own"]
                return self.kept.scheduler
        return _read_whole(self.engine, self.cur, self.cluster_id)

    def close(self):
        """Not asked after all: the answer is read and dropped (the kept snapshot stays as it was)."""
        if self.asking is not None:
            with self.asking:
                self.asking.fetchall()
            self.asking = None


def warm(engine, cluster_id):
    """Read the cluster's whole snapshot now, before any lock is taken, unless the one kept is fresh: the
    question asked under the lock then reads only what changed since (at 1,000 hosts a whole read takes
    tens of milliseconds, which every other start of the data center would wait for). Outside the lock
    other runs commit between statements: the read is one transaction of one snapshot, the one the next
    question asks from."""
    kept = engine.placement_snapshots.get(cluster_id)
    if kept is None or time.monotonic() - kept.taken >= KEEP_SECONDS / 2:
        with engine.consistent_read() as cur:
            _read_whole(engine, cur, cluster_id, prune=False)


def _read_whole(engine, cur, cluster_id, prune=True):
    changes = vm_rows.placement_changes(cur, cluster_id)  # the mark the next call asks from
    if prune:
        vm_rows.prune_placement_changes(cur, LOG_SECONDS)
    hosts = vm_rows.placement_hosts(cur, cluster_id)
    kept = _Kept()
    kept.scheduler = Scheduler(hosts, **vm_rows.placement_context(cur, cluster_id))
    kept.ids = {str(h["id"]): h["name"] for h in hosts}
    kept.snapshot, kept.own, kept.taken = changes["snapshot"], changes["own"], time.monotonic()
    engine.placement_snapshots[cluster_id] = kept
    return kept.scheduler


def _apply(kept, update):
    _reread(kept, update)
    scheduler = kept.scheduler
    for host_id, vm, memory, vcpus, ha, sign in update["deltas"]:
        host = kept.ids.get(host_id)
        if host is not None:  # another cluster's, or a host that is gone (read again: the log says so)
            scheduler.adjust(host, vm, {"memory_mib": memory, "vcpus": vcpus, "ha": ha}, sign)


def _reread(kept, update):
    host_ids = [str(h) for h in update["hosts"]]
    if not host_ids:
        return
    entries = update["entries"]
    found = {str(h["id"]) for h in entries}
    removed = [kept.ids.pop(i) for i in host_ids if i not in found and i in kept.ids]
    removed += [kept.ids[str(h["id"])] for h in entries if kept.ids.get(str(h["id"]), h["name"]) != h["name"]]
    moved = [kept.ids[i] for i in host_ids if i in kept.ids] + removed
    kept.ids.update((str(h["id"]), h["name"]) for h in entries)
    kept.scheduler.refresh(entries, removed=removed, locations=update["locations"],
                           moved=moved + [h["name"] for h in entries])


def forget(engine, cluster_id=None):
    """Drop kept snapshots (all of them without ``cluster_id``)."""
    if cluster_id is None:
        engine.placement_snapshots.clear()
    else:
        engine.placement_snapshots.pop(cluster_id, None)
