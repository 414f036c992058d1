# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jobs: the reservations of long work, with an owner and a heartbeat.

A job row is written in the short transaction that reserves an object (the object's ``job_id``
points at it); the work on the hosts runs with no lock held while a heartbeat keeps the job alive;
a second short transaction confirms or releases it. A job whose heartbeat is older than its lease
was left by a run that died: it is *expired*, and whoever meets it takes it over to finish or roll
it back. A live job is never taken over.
"""

from __future__ import annotations

import os
import secrets
import socket

from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import jsonb as Jsonb

# Who this module run is: enough to tell two runs on one engine host apart, and to read in a log.
OWNER = "%s:%d:%s" % (socket.gethostname(), os.getpid(), secrets.token_hex(3))

_COLUMNS = ("id, action, description, status, object_type, object_id, object_name, progress, actor, owner,"
            " started_at, ended_at, heartbeat_at, lease_seconds, datacenter_name, plan, result,"
            " (status = 'running' AND heartbeat_at + lease_seconds * interval '1 second' < clock_timestamp())"
            " AS expired, extract(epoch FROM clock_timestamp() - heartbeat_at)::integer AS silent_seconds")


def start(cur, action, object_type, object_id, object_name, description, lease_seconds, actor, datacenter=None,
          plan=None):
    """A running job owned by this run; its row is the reservation."""
    # clock_timestamp(), not now(): the transaction may have waited for its lock, which no lease should pay for
    cur.execute("INSERT INTO job (action, description, object_type, object_id, object_name, actor, owner,"
                " lease_seconds, datacenter_name, plan, heartbeat_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " %s, clock_timestamp()) RETURNING " + _COLUMNS,
                (action, description, object_type, object_id, object_name, actor, OWNER, lease_seconds, datacenter,
                 Jsonb(plan or {})))
    return cur.fetchone()


def get(cur, job_id, lock=False):
    if job_id is None:
        return None
    cur.execute("SELECT " + _COLUMNS + " FROM job WHERE id = %s" + (" FOR UPDATE" if lock else ""), (job_id,))
    return cur.fetchone()


def note(cur, job_id, values):
    """Add to what the job's plan records (what a recovery needs to know of how far the work got)."""
    cur.execute("UPDATE job SET plan = plan || %s, heartbeat_at = clock_timestamp() WHERE id = %s AND owner = %s",
                (Jsonb(values), job_id, OWNER))


def attach_object(cur, job_id, object_id):
    """Name the object once it has an id (a job made before the row it reserves)."""
    cur.execute("UPDATE job SET object_id = %s WHERE id = %s", (object_id, job_id))


def beat(cur, job_id, owner=OWNER):
    """Keep the job alive; False when it is no longer ours (taken over after we were silent too long)."""
    cur.execute("UPDATE job SET heartbeat_at = clock_timestamp() WHERE id = %s AND owner = %s AND status = 'running'",
                (job_id, owner))
    return cur.rowcount == 1


def set_progress(cur, job_id, percent):
    cur.execute("UPDATE job SET progress = %s, heartbeat_at = clock_timestamp() WHERE id = %s AND owner = %s",
                (max(0, min(100, int(percent))), job_id, OWNER))


def take_over(cur, job_id, previous_owner):
    """Make an expired job ours (to finish or roll back); False if it is not expired or not what we saw."""
    cur.execute("UPDATE job SET owner = %s, heartbeat_at = clock_timestamp() WHERE id = %s AND owner = %s"
                " AND status = 'running' AND heartbeat_at + lease_seconds * interval '1 second' < clock_timestamp()",
                (OWNER, job_id, previous_owner))
    return cur.rowcount == 1


def end(cur, job_id, status, result=None):
    """finished, failed (the run gave up and released what it reserved) or aborted (rolled back by another)."""
    cur.execute("UPDATE job SET status = %s, ended_at = clock_timestamp(), progress = CASE WHEN %s = 'finished'"
                " THEN 100 ELSE progress END, result = result || %s WHERE id = %s AND owner = %s"
                " AND status = 'running'", (status, status, Jsonb(result or {}), job_id, OWNER))


def running(cur, object_type=None, names=None, limit=100):
    """Jobs still running (live or expired), newest first."""
    clauses, args = ["status = 'running'"], []
    if object_type:
        clauses.append("object_type = %s")
        args.append(object_type)
    if names:
        clauses.append("object_name = ANY(%s)")
        args.append(list(names))
    cur.execute("SELECT " + _COLUMNS + " FROM job WHERE " + " AND ".join(clauses) + " ORDER BY started_at DESC"
                " LIMIT %s", args + [limit])
    return cur.fetchall()
