# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a VM starts: the one placement interface (pure: no DB, no libvirt).

``place(request, hosts, ...)`` takes a snapshot — the VM's needs and the cluster's hosts with their
capacity, what their running VMs reserve and what they have realized, where the cluster's VMs run, its
affinity groups and its policy — and returns a ``Decision`` of the scheduler (``_scheduler``): the
chosen host, or none, with the reason every other host was rejected (computed when asked).
"""

from __future__ import annotations

from ansible_collections.virtplane.kvm.plugins.module_utils.scheduler._scheduler import Scheduler


def _gib(mib):
    return ("%.1f" % (mib / 1024.0)).rstrip("0").rstrip(".")


def reject_reason(request, host):
    """Why ``host`` cannot take the VM, or None when it can."""
    if request.get("hosts") and host["name"] not in request["hosts"]:
        return "the VM is pinned to %s" % ", ".join(sorted(request["hosts"]))
    if host["status"] != "Up":
        return "host is %s%s" % (host["status"], " (%s)" % host["status_reason"] if host.get("status_reason") else "")
    missing = sorted(set(request.get("networks", ())) - set(host.get("networks") or ()))
    if missing:
        return "logical network %s not realized" % ", ".join(missing)
    missing = sorted(set(request.get("storage_domains", ())) - set(host.get("storage_domains") or ()))
    if missing:
        return "storage domain %s not active" % ", ".join(missing)
    if host.get("memory_mib"):
        limit = host["memory_mib"] * host.get("memory_overcommit_percent", 100) / 100.0
        committed = host.get("committed_memory_mib", 0)
        if committed + request["memory_mib"] > limit:
            return "memory %s of %s GiB committed, %s GiB more does not fit" % (
                _gib(committed), _gib(limit), _gib(request["memory_mib"]))
    if host.get("cpu_count"):
        if request["vcpus"] > host["cpu_count"]:
            return "%d vCPUs are more than its %d CPUs" % (request["vcpus"], host["cpu_count"])
        limit = host["cpu_count"] * float(host.get("cpu_overcommit_ratio", 1))
        committed = host.get("committed_vcpus", 0)
        if committed + request["vcpus"] > limit:
            return "%d of %g vCPUs committed, %d more do not fit" % (committed, limit, request["vcpus"])
    return None


def place(request, hosts, policy="none", vms=None, groups=(), ha_reservation=False):
    """The best host for the VM under the cluster's policy.

    ``request``: name, memory_mib, vcpus, networks, storage_domains, hosts (pinning, may be empty), ha;
    ``hosts``: name, status, status_reason, memory_mib, memory_overcommit_percent, committed_memory_mib,
    cpu_count, cpu_overcommit_ratio, committed_vcpus, vms, networks, storage_domains (and optionally
    reserved_memory_mib, cpu_load_percent, cpu_features, ha_memory_mib, ha_vms); ``vms``: {VM name: host
    name} of the cluster's running VMs; ``groups``: its affinity groups.
    """
    return Scheduler(hosts, policy=policy, vms=vms, groups=groups, ha_reservation=ha_reservation).place(request)
