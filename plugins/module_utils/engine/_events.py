# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The audit log: every change the engine makes is recorded in the same transaction."""

from __future__ import annotations

import getpass
import os
import re

from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import jsonb

_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")
_JOB = re.compile(r"[0-9]{1,20}")


def actor():
    """Who asked: the OS user of the module process, and the AWX/AAP job when there is one.

    Both come from the environment, which anyone may set: only what looks like a user name and a
    job number is kept.
    """
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    if not _USER.fullmatch(user or ""):
        user = "uid %d" % os.getuid()
    job = os.environ.get("AWX_JOB_ID") or os.environ.get("JOB_ID")
    return "%s (job %s)" % (user, job) if job and _JOB.fullmatch(job) else user


def record(cur, code, message, severity="normal", object_type=None, object_id=None, object_name=None,
           datacenter=None, cluster=None, host=None, vm=None, details=None, correlation_id=None, job_id=None):
    cur.execute(
        "INSERT INTO event (severity, code, message, object_type, object_id, object_name,"
        " datacenter_name, cluster_name, host_name, vm_name, actor, correlation_id, details, job_id)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (severity, code, message, object_type, object_id, object_name, datacenter, cluster, host, vm,
         actor(), correlation_id, jsonb(details or {}), job_id))
