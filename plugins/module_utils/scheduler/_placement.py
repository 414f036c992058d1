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


def growth_reason(host_name, growth, hosts, policy="none", vms=None, groups=(), ha_reservation=False, cpu_model=None):
    """Why the host ``host_name`` cannot take ``growth`` (memory_mib, vcpus, ha) of a VM it runs — every filter
    that capacity answers, the HA reservation included — or None. (The VM runs there: the cluster's CPU model,
    which the host was checked for when the VM started, is not asked again.)"""
    del cpu_model
    scheduler = Scheduler(hosts, policy=policy, vms=vms, groups=groups, ha_reservation=ha_reservation)
    return scheduler.reason(dict(growth, name=None), host_name)


def place(request, hosts, policy="none", vms=None, groups=(), ha_reservation=False, cpu_model=None):
    """The best host for the VM under the cluster's policy.

    ``request``: name, memory_mib, vcpus, networks, storage_domains, hosts (pinning, may be empty), ha;
    ``hosts``: name, status, status_reason, memory_mib, memory_overcommit_percent, committed_memory_mib,
    cpu_count, cpu_overcommit_ratio, committed_vcpus, vms, networks, storage_domains (and optionally
    reserved_memory_mib, cpu_load_percent, cpu_features, ha_memory_mib, ha_vms); ``vms``: {VM name: host
    name} of the cluster's running VMs; ``groups``: its affinity groups.
    """
    return Scheduler(hosts, policy=policy, vms=vms, groups=groups, ha_reservation=ha_reservation,
                     cpu_model=cpu_model).place(request)
