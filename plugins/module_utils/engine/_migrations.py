# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Migration rows: one per live migration, with its outcome and libvirt's figures."""

from __future__ import annotations


def running_on(cur, host_id):
    """Migrations going from or to the host whose jobs run, oldest first."""
    cur.execute("SELECT m.id, m.vm_name, m.job_id, m.source_host_id = %s AS outgoing FROM migration m"
                " JOIN job j ON j.id = m.job_id AND j.status = 'running'"
                " WHERE m.status = 'running' AND (m.source_host_id = %s OR m.destination_host_id = %s)"
                " ORDER BY m.started_at", (host_id, host_id, host_id))
    return cur.fetchall()


def insert(cur, vm, source, destination, policy, bandwidth_mibps, job_id):
    cur.execute("INSERT INTO migration (vm_id, vm_name, source_host_id, destination_host_id, source_host,"
                " destination_host, policy, bandwidth_mibps, job_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " RETURNING id", (vm["id"], vm["name"], source["id"], destination["id"], source["name"],
                                  destination["name"], policy, bandwidth_mibps, job_id))
    return cur.fetchone()["id"]


def done(cur, migration_id, note, total_ms, downtime_ms, transferred_mib, postcopy):
    cur.execute("UPDATE migration SET status = 'done', ended_at = clock_timestamp(), reason = %s, total_ms = %s,"
                " downtime_ms = %s, transferred_mib = %s, postcopy = %s WHERE id = %s",
                (note, total_ms, downtime_ms, transferred_mib, postcopy, migration_id))


def ended(cur, migration_id, status, reason):
    """A migration that ended otherwise than in ``done`` (a failure, or what a recovery found)."""
    cur.execute("UPDATE migration SET status = %s, reason = %s, ended_at = clock_timestamp() WHERE id = %s"
                " AND status = 'running'", (status, reason, migration_id))


def get(cur, migration_id):
    cur.execute("SELECT * FROM migration WHERE id = %s", (migration_id,))
    return cur.fetchone()


def ask_cancel(cur, job_id):
    """Mark the migration's job: its run aborts the migration at its next reading."""
    cur.execute("UPDATE job SET plan = plan || '{\"cancel\": true}'::jsonb WHERE id = %s", (job_id,))


def cancel_asked(cur, job_id):
    cur.execute("SELECT (plan ->> 'cancel')::boolean AS cancel FROM job WHERE id = %s", (job_id,))
    found = cur.fetchone()
    return bool(found and found["cancel"])


def keep_status_since(cur, vm_id, since):
    """The VM's status time set back (a migration that never stopped the guest does not restart its uptime)."""
    cur.execute("UPDATE vm_runtime SET status_changed_at = %s WHERE vm_id = %s", (since, vm_id))
