# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the monitor reads and writes: the lease of the active monitor, the hosts it watches with how they are
fenced, the VMs each host should run, and the HA restarts that are due."""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _vms as vm_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_MONITOR

LEASE = "monitor"
# statuses of a VM the engine records as holding its host (its domain should be there)
ON_HOST = ("Up", "Paused", "PoweringUp", "PoweringDown", "NotResponding", "Unknown")


def acquire(cur, holder, ttl):
    """Take the monitor's lease when it is free, expired or already this holder's; the new epoch, or None."""
    cur.execute("UPDATE monitor_lease SET holder = %s, epoch = epoch + 1, acquired_at = clock_timestamp(),"
                " renewed_at = clock_timestamp(), expires_at = clock_timestamp() + make_interval(secs => %s)"
                " WHERE name = %s AND (holder IS NULL OR holder = %s OR expires_at < clock_timestamp())"
                " RETURNING epoch", (holder, ttl, LEASE, holder))
    row = cur.fetchone()
    return row["epoch"] if row else None


def renew(cur, holder, epoch, ttl):
    """Extend the lease this holder has (same epoch, not expired); False when it was lost."""
    cur.execute("UPDATE monitor_lease SET renewed_at = clock_timestamp(),"
                " expires_at = clock_timestamp() + make_interval(secs => %s)"
                " WHERE name = %s AND holder = %s AND epoch = %s AND expires_at >= clock_timestamp() RETURNING epoch",
                (ttl, LEASE, holder, epoch))
    return cur.fetchone() is not None


def holds(cur, holder, epoch):
    """Whether this holder still has the lease, kept shared until the transaction ends: a standby's takeover
    (an UPDATE of the row) waits for every write of the holder in flight, and finds it expired only after."""
    cur.execute("SELECT 1 FROM monitor_lease WHERE name = %s AND holder = %s AND epoch = %s"
                " AND expires_at >= clock_timestamp() FOR SHARE", (LEASE, holder, epoch))
    return cur.fetchone() is not None


def release(cur, holder):
    cur.execute("UPDATE monitor_lease SET holder = NULL, expires_at = NULL WHERE name = %s AND holder = %s",
                (LEASE, holder))


def lease(cur):
    cur.execute("SELECT holder, epoch, acquired_at, renewed_at, expires_at, expires_at >= clock_timestamp() AS"
                " valid FROM monitor_lease WHERE name = %s", (LEASE,))
    return cur.fetchone()


def hosts(cur):
    """Every registered host with its cluster's resilience policy and its fencing (never its secret)."""
    cur.execute("SELECT h.*, c.name AS cluster, c.resilience_policy, d.name AS datacenter,"
                " clock_timestamp() - h.unreachable_since AS unreachable_for FROM host h"
                " JOIN cluster c ON c.id = h.cluster_id JOIN datacenter d ON d.id = c.datacenter_id"
                " WHERE h.status <> 'Installing' ORDER BY h.name")
    return cur.fetchall()


def secret(cur, host_id):
    cur.execute("SELECT secret FROM host_fence_secret WHERE host_id = %s", (host_id,))
    row = cur.fetchone()
    return row["secret"] if row else None


def set_fencing(cur, host_id, agent, options, secret_value):
    """The host's fence agent and options; its secret (None: none)."""
    _rows.update(cur, "host", host_id, {"fence_agent": agent, "fence_options": options})
    cur.execute("DELETE FROM host_fence_secret WHERE host_id = %s", (host_id,))
    if secret_value:
        cur.execute("INSERT INTO host_fence_secret (host_id, secret) VALUES (%s, %s)", (host_id, secret_value))


# a VM's row as the services read it, with when its runtime last changed
_SELECT = vm_rows.SELECT.replace("SELECT v.*,", "SELECT v.*, r.updated_at AS runtime_updated_at,", 1)


def vms_on(cur, host_id):
    """The VMs the engine records on the host (running there, or held there since it stopped answering)."""
    cur.execute(_SELECT + " WHERE r.run_host_id = %s ORDER BY v.ha_priority DESC, v.name", (host_id,))
    return cur.fetchall()


def vms_by_ids(cur, ids):
    cur.execute(_SELECT + " WHERE v.id = ANY(%s::uuid[])", (list(ids),))
    return {str(r["id"]): r for r in cur.fetchall()}


# storage whose disks are files every host opens by one path: virtlockd leases them in its shared lockspace
# (network disks - iSCSI through QEMU's libiscsi, RBD - and local directories take no lease there)
LEASED_TYPES = ("posixfs", "nfs")


def shared_leased_disks(cur, vm_id):
    """How many of the VM's disks are files on shared storage, which virtlockd leases."""
    cur.execute("SELECT count(*) AS n FROM vm_disk vd JOIN disk k ON k.id = vd.disk_id"
                " JOIN storage_domain s ON s.id = k.storage_domain_id WHERE vd.vm_id = %s AND s.type = ANY(%s)",
                (vm_id, list(LEASED_TYPES)))
    return cur.fetchone()["n"]


def cluster_leased(cur, cluster_id):
    """Whether every host of the cluster takes storage leases: wherever the VM is tried, its lock manager asks."""
    cur.execute("SELECT bool_and(storage_leases) AS all FROM host WHERE cluster_id = %s", (cluster_id,))
    return bool(cur.fetchone()["all"])


def ha_due(cur):
    """VMs waiting for an HA restart whose next attempt is due, the higher priority first."""
    cur.execute("SELECT v.id, v.name, v.ha_priority, r.ha_attempts, r.ha_since, r.ha_from_host,"
                " clock_timestamp() - r.ha_since AS waited FROM vm v JOIN vm_runtime r ON r.vm_id = v.id"
                " WHERE (r.status = 'RestartingHA' AND r.job_id IS NULL AND r.ha_next_at IS NOT NULL"
                " AND r.ha_next_at <= clock_timestamp())"
                # a restart whose run died (its job expired): due too, for its recovery
                " OR EXISTS (SELECT 1 FROM job j WHERE j.id = r.job_id AND j.action = 'vm.ha_restart'"
                " AND j.status = 'running' AND j.heartbeat_at + j.lease_seconds * interval '1 second'"
                " < clock_timestamp())"
                " ORDER BY v.ha_priority DESC, r.ha_since, v.name")
    return cur.fetchall()


def restarting(cur):
    cur.execute("SELECT v.name FROM vm v JOIN vm_runtime r ON r.vm_id = v.id WHERE r.status = 'RestartingHA'"
                " ORDER BY v.name")
    return [r["name"] for r in cur.fetchall()]


def schedule_ha(cur, vm_id, next_in_seconds, attempts=None, reason=None):
    sets, args = ["ha_next_at = clock_timestamp() + make_interval(secs => %s)"], [next_in_seconds]
    if attempts is not None:
        sets.append("ha_attempts = %s")
        args.append(attempts)
    if reason is not None:
        sets.append("status_reason = %s")
        args.append(reason)
    cur.execute("UPDATE vm_runtime SET " + ", ".join(sets) + ", updated_at = now() WHERE vm_id = %s", args + [vm_id])


def mark_ha_since(cur, vm_id):
    cur.execute("UPDATE vm_runtime SET ha_since = COALESCE(ha_since, clock_timestamp()) WHERE vm_id = %s", (vm_id,))


def ha_state(cur, vm_id):
    """The VM's HA restart: attempts so far, the host it left, seconds since it left it."""
    cur.execute("SELECT ha_attempts, ha_from_host, COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - ha_since), 0)::float"
                " AS waited, status = 'RestartingHA' AND job_id IS NULL AND ha_next_at <= clock_timestamp() AS due"
                " FROM vm_runtime WHERE vm_id = %s", (vm_id,))
    return cur.fetchone()


def due_now(cur, host_name):
    """The HA restarts of VMs that left this host are due at once (it was fenced: their leases are free)."""
    cur.execute("UPDATE vm_runtime SET ha_next_at = clock_timestamp() WHERE status = 'RestartingHA'"
                " AND ha_from_host = %s", (host_name,))


def give_up_ha(cur, vm_id, reason):
    cur.execute("UPDATE vm_runtime SET ha_next_at = NULL, status_reason = %s, updated_at = now() WHERE vm_id = %s",
                (reason, vm_id))


def max_parallel(cur, cluster_id):
    cur.execute("SELECT migration_max_parallel FROM cluster WHERE id = %s", (cluster_id,))
    return cur.fetchone()["migration_max_parallel"]


def set_unmanaged(cur, host_id, names):
    cur.execute("UPDATE host SET unmanaged_domains = %s WHERE id = %s", (_rows.jsonb(list(names)), host_id))


def try_pass(cur):
    """Take the monitor's pass lock for this session (not a transaction): True when it was free."""
    cur.execute("SELECT pg_try_advisory_lock(%s, 0) AS got", (LOCK_MONITOR,))
    return cur.fetchone()["got"]


def end_pass(cur):
    cur.execute("SELECT pg_advisory_unlock(%s, 0)", (LOCK_MONITOR,))


def keep_alive(cur, seconds):
    """The server notices within about ``seconds`` that this session's peer is gone (a monitor's machine cut off),
    and drops its locks: a standby is never kept waiting by a dead monitor's session."""
    idle = max(1, seconds // 3)
    cur.execute("SELECT set_config('tcp_keepalives_idle', %s, false), set_config('tcp_keepalives_interval', %s,"
                " false), set_config('tcp_keepalives_count', '2', false)", (str(idle), str(idle)))


def now(cur):
    return _rows.now(cur)
