# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every object of the engine by kind, names and what a description compares (the site module), and the hosts as
the inventory plugin lists them: read in bulk, one query a kind."""

from __future__ import annotations


def by_kind(cur):
    """{kind: [row]} of every data center, cluster, host, storage domain, logical network, affinity group, template
    and VM, with the names of what each stands on."""
    queries = {
        "datacenters": "SELECT name FROM datacenter",
        "clusters": "SELECT c.name, d.name AS datacenter FROM cluster c JOIN datacenter d ON d.id = c.datacenter_id",
        "hosts": "SELECT h.name, c.name AS cluster, h.status FROM host h JOIN cluster c ON c.id = h.cluster_id",
        "storage_domains": "SELECT s.name, d.name AS datacenter FROM storage_domain s"
                           " JOIN datacenter d ON d.id = s.datacenter_id",
        "logical_networks": "SELECT n.name, d.name AS datacenter FROM logical_network n"
                            " JOIN datacenter d ON d.id = n.datacenter_id",
        "affinity_groups": "SELECT g.name, c.name AS cluster FROM affinity_group g"
                           " JOIN cluster c ON c.id = g.cluster_id",
        "templates": "SELECT t.name, d.name AS datacenter FROM template t JOIN datacenter d ON d.id = t.datacenter_id",
        "vms": "SELECT v.name, c.name AS cluster, r.status, h.name AS host FROM vm v"
               " JOIN cluster c ON c.id = v.cluster_id JOIN vm_runtime r ON r.vm_id = v.id"
               " LEFT JOIN host h ON h.id = r.run_host_id",
    }
    found = {}
    for kind, query in queries.items():
        cur.execute(query + " ORDER BY 1")
        found[kind] = cur.fetchall()
    return found


def hosts(cur):
    """The hosts with their cluster and data center, by name."""
    cur.execute("SELECT h.name, h.address, h.libvirt_uri, h.status, h.status_reason, c.name AS cluster,"
                " d.name AS datacenter, h.cpu_count, h.memory_mib, h.domain_type FROM host h"
                " JOIN cluster c ON c.id = h.cluster_id JOIN datacenter d ON d.id = c.datacenter_id ORDER BY h.name")
    return cur.fetchall()
