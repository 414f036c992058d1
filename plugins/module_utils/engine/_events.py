# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The audit log: every change the engine makes is recorded in the same transaction."""

from __future__ import annotations

import getpass
import os


def actor():
    """Who asked: the OS user of the module process, and the AWX/AAP job when there is one."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    job = os.environ.get("AWX_JOB_ID") or os.environ.get("JOB_ID")
    return "%s (job %s)" % (user, job) if job else user


def record(cur, code, message, severity="normal", object_type=None, object_id=None, object_name=None,
           datacenter=None, cluster=None, host=None, vm=None, details=None, correlation_id=None):
    from psycopg.types.json import Jsonb  # imported here: psycopg's absence is reported by _db

    cur.execute(
        "INSERT INTO event (severity, code, message, object_type, object_id, object_name,"
        " datacenter_name, cluster_name, host_name, vm_name, actor, correlation_id, details)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (severity, code, message, object_type, object_id, object_name, datacenter, cluster, host, vm,
         actor(), correlation_id, Jsonb(details or {})))
