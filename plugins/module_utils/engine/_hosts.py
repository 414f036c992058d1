# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host rows, their status, and what a host has realized of its cluster's storage and networks."""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _rows

SELECT = ("SELECT h.*, c.name AS cluster, c.datacenter_id, d.name AS datacenter FROM host h"
          " JOIN cluster c ON c.id = h.cluster_id JOIN datacenter d ON d.id = c.datacenter_id")
# hosts the engine uses: they get the storage domains and networks of their cluster
SERVING = ("Up", "NonOperational")


def find(cur, name, lock=False):
    cur.execute(SELECT + " WHERE h.name = %s" + (" FOR UPDATE OF h" if lock else ""), (name,))
    return cur.fetchone()


def by_id(cur, host_id, lock=False):
    cur.execute(SELECT + " WHERE h.id = %s" + (" FOR UPDATE OF h" if lock else ""), (host_id,))
    return cur.fetchone()


def rows(cur, names=None, cluster=None):
    clauses, args = [], []
    if names:
        clauses.append("h.name = ANY(%s)")
        args.append(list(names))
    if cluster:
        clauses.append("c.name = %s")
        args.append(cluster)
    cur.execute(SELECT + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY h.name", args)
    return cur.fetchall()


def of_clusters(cur, cluster_names, statuses=None, host_name=None):
    """Hosts of these clusters (with those statuses; for a 'dir' domain, only ``host_name``)."""
    cur.execute(SELECT + " WHERE c.name = ANY(%s) AND (%s::text[] IS NULL OR h.status = ANY(%s))"
                " AND (%s::text IS NULL OR h.name = %s) ORDER BY h.name",
                (list(cluster_names), statuses and list(statuses), statuses and list(statuses), host_name, host_name))
    return cur.fetchall()


def existing_ids(cur, host_ids):
    """Which of these hosts are still registered (one whose registration failed meanwhile is gone)."""
    cur.execute("SELECT id FROM host WHERE id = ANY(%s)", (list(host_ids),))
    return {r["id"] for r in cur.fetchall()}


def same_machine(cur, hardware_uuid, name):
    """The other host registered with this hardware UUID, if any."""
    cur.execute("SELECT name FROM host WHERE hardware_uuid = %s AND name <> %s", (hardware_uuid, name))
    other = cur.fetchone()
    return other["name"] if other else None


def vms_on(cur, host_id):
    """VMs that run on the host or are migrating to it."""
    return _rows.names(cur, "SELECT v.name FROM vm v JOIN vm_runtime r ON r.vm_id = v.id WHERE r.run_host_id = %s"
                            " OR r.migrating_to_host_id = %s ORDER BY v.name", (host_id, host_id))


def local_domains(cur, host_id):
    return _rows.names(cur, "SELECT name FROM storage_domain WHERE host_id = %s ORDER BY name", (host_id,))


def insert(cur, values):
    return _rows.insert(cur, "host", values)


def update(cur, host_id, changes):
    return _rows.update(cur, "host", host_id, changes)


def delete(cur, host_id):
    _rows.delete(cur, "host", host_id)


def set_job(cur, host_id, job_id):
    cur.execute("UPDATE host SET job_id = %s WHERE id = %s", (job_id, host_id))


def seen(cur, host_id):
    cur.execute("UPDATE host SET last_seen_at = now() WHERE id = %s", (host_id,))


def problems(cur, host_id):
    """What the host lacks of its cluster, from what was recorded: the reasons it is NonOperational."""
    cur.execute("SELECT s.name, sh.active, sh.error FROM storage_domain s"
                " JOIN storage_domain_cluster sc ON sc.storage_domain_id = s.id"
                " JOIN host h ON h.cluster_id = sc.cluster_id AND h.id = %s"
                " LEFT JOIN storage_domain_host sh ON sh.storage_domain_id = s.id AND sh.host_id = h.id"
                " WHERE s.state = 'active' AND (s.host_id IS NULL OR s.host_id = h.id) ORDER BY s.name", (host_id,))
    found = ["storage domain %s: %s" % (r["name"], r["error"] or "not active on the host")
             for r in cur.fetchall() if not r["active"]]
    cur.execute("SELECT n.name, hn.realized, hn.error FROM logical_network n"
                " JOIN cluster_network cn ON cn.network_id = n.id AND cn.required"
                " JOIN host h ON h.cluster_id = cn.cluster_id AND h.id = %s"
                " LEFT JOIN host_network hn ON hn.network_id = n.id AND hn.host_id = h.id ORDER BY n.name", (host_id,))
    found += ["required network %s is not realized: %s" % (r["name"], r["error"] or "not on the host")
              for r in cur.fetchall() if not r["realized"]]
    return found


# the longest duration_minutes a policy takes is a day: older loads are of no use
LOAD_HISTORY_SECONDS = 86400


def record_load(cur, host_id, busy_ns, total_ns):
    """The host's CPU counters as read now; with an earlier reading, the load between the two (percent busy) is
    the host's current load and joins its history. Returns that load, or None (a first reading, or counters
    that went back: the machine restarted)."""
    cur.execute("SELECT cpu_busy_ns, cpu_total_ns FROM host_statistics WHERE host_id = %s FOR UPDATE", (host_id,))
    before = cur.fetchone()
    load = None
    if before and before["cpu_total_ns"] is not None and total_ns > before["cpu_total_ns"] \
            and busy_ns >= before["cpu_busy_ns"]:
        load = round(100.0 * (busy_ns - before["cpu_busy_ns"]) / (total_ns - before["cpu_total_ns"]), 2)
        load = min(100.0, max(0.0, load))
    # the load is set only when there is one: placement reads a host again when its load is written
    cur.execute("INSERT INTO host_statistics (host_id, sampled_at, cpu_busy_ns, cpu_total_ns, cpu_percent)"
                " VALUES (%(host)s, now(), %(busy)s, %(total)s, %(load)s) ON CONFLICT (host_id) DO UPDATE SET"
                " sampled_at = now(), cpu_busy_ns = %(busy)s, cpu_total_ns = %(total)s"
                + (", cpu_percent = %(load)s" if load is not None else ""),
                {"host": host_id, "busy": busy_ns, "total": total_ns, "load": load})
    if load is not None:
        cur.execute("INSERT INTO host_load_sample (host_id, sampled_at, cpu_percent) VALUES (%s, now(), %s)"
                    " ON CONFLICT DO NOTHING", (host_id, load))
        cur.execute("DELETE FROM host_load_sample WHERE host_id = %s AND sampled_at < now() - %s * interval '1 second'",
                    (host_id, LOAD_HISTORY_SECONDS))
    return load


def sustained_loads(cur, cluster_id, minutes):
    """{host name: (lowest, highest) load} of the cluster's hosts whose history covers the last ``minutes``: a load
    stamped when it was measured covers the time since the reading before, so a host qualifies when it has a
    load from before the window began and every one since is counted."""
    cur.execute("SELECT h.name, min(s.cpu_percent)::float AS low, max(s.cpu_percent)::float AS high"
                " FROM host h JOIN host_load_sample s ON s.host_id = h.id"
                " WHERE h.cluster_id = %(cluster)s AND s.sampled_at > now() - %(minutes)s * interval '1 minute'"
                " AND EXISTS (SELECT 1 FROM host_load_sample o WHERE o.host_id = h.id"
                "   AND o.sampled_at <= now() - %(minutes)s * interval '1 minute')"
                " GROUP BY h.name", {"cluster": cluster_id, "minutes": minutes})
    return {r["name"]: (r["low"], r["high"]) for r in cur.fetchall()}
