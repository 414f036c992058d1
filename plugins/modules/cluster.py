#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: cluster
short_description: Manage clusters of hypervisor hosts in the virtplane engine
version_added: 0.1.0
description:
  - Create, update or remove a cluster, a set of interchangeable hosts of one data center
    that share a scheduling policy, overcommit ratios, a migration policy and HA settings.
  - Options left unset keep their current value (or take their default when the cluster is created).
  - A cluster that still has hosts or VMs is not removed; the error lists them.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.attributes
options:
  name:
    description:
      - Name of the cluster, unique in the engine.
    type: str
    required: true
  datacenter:
    description:
      - Data center the cluster belongs to. Required to create it; a cluster cannot move to another data center.
    type: str
  description:
    description:
      - Free text shown in reports.
    type: str
  cpu_model:
    description:
      - CPU model the cluster's VMs are started with, by libvirt's name (for example V(Skylake-Client-IBRS),
        V(EPYC-Rome), V(qemu64)); the guest gets exactly that model or does not start, so that it can later move
        to any host of the cluster.
      - The scheduler places VMs only on hosts whose libvirt lists the model as usable for their domain type
        (C(virsh domcapabilities)); every other host is rejected with that reason.
      - V(host-model) or V(host-passthrough) instead give each guest (a model of) its host's own CPU.
      - Unset, VMs get the hypervisor's default CPU and no host is filtered out for it; an empty string removes a
        model set before (VMs that run keep theirs until they start again).
    type: str
  scheduling_policy:
    description:
      - How VMs are placed and balanced. V(evenly_distributed) spreads CPU load, V(power_saving) packs
        VMs onto few hosts, V(vm_evenly_distributed) spreads the number of VMs, V(none) only filters.
      - Defaults to V(evenly_distributed) when the cluster is created.
    type: str
    choices: [none, evenly_distributed, power_saving, vm_evenly_distributed]
  scheduling_policy_params:
    description:
      - Parameters of the policy; unset ones take the policy's defaults.
      - V(evenly_distributed) takes C(high_utilization) (percent, default 80) and C(duration_minutes) (2);
        V(power_saving) adds C(low_utilization) (20); V(vm_evenly_distributed) takes C(high_vm_count) (10)
        and C(migration_threshold) (5).
      - C(duration_minutes) (1-1440) is how long a host's CPU load must stay above C(high_utilization) (or below
        C(low_utilization)) before the balancer moves VMs for it (see M(virtplane.kvm.cluster_balance_info)).
      - When the policy changes and this is unset, the new policy's defaults apply.
    type: dict
  memory_overcommit_percent:
    description:
      - Memory the scheduler may promise to VMs, in percent of the hosts' physical memory (100-400).
      - Defaults to 100 (no overcommit) when the cluster is created.
    type: int
  cpu_overcommit_ratio:
    description:
      - Virtual CPUs per physical CPU the scheduler may place (1-64). Defaults to 4 when the cluster is created.
    type: float
  migration_policy:
    description:
      - How live migration converges. V(minimal_downtime) steps the allowed downtime up and uses
        auto-converge; V(post_copy) switches to post-copy when pre-copy does not converge;
        V(suspend_workload) allows a longer downtime; V(legacy) is plain pre-copy.
      - Defaults to V(minimal_downtime) when the cluster is created.
    type: str
    choices: [minimal_downtime, post_copy, suspend_workload, legacy]
  migration_bandwidth_mbps:
    description:
      - Bandwidth cap of one migration in Mbit/s; unlimited when never set.
    type: int
  migration_max_parallel:
    description:
      - Migrations a host sends or receives at once (1-16). Defaults to 2 when the cluster is created.
    type: int
  ha_reservation:
    description:
      - Keep enough free capacity in the cluster to restart the HA VMs of its largest host.
    type: bool
  resilience_policy:
    description:
      - What the monitor (M(virtplane.kvm.reconcile), the monitor service) moves off a host that answers but became
        V(NonOperational) (it lost a required network or a storage domain) - V(migrate) every running VM,
        V(ha_only) its HA VMs, V(none) nothing. Defaults to V(migrate) when the cluster is created.
      - The VMs live-migrate to the hosts the scheduler picks, under the cluster's O(migration_policy), at most
        O(migration_max_parallel) at once. A VM no host can take stays, and the next pass tries again.
    type: str
    choices: [migrate, ha_only, none]
  state:
    description:
      - V(present) creates or updates the cluster, V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: A production cluster that packs VMs and migrates with post-copy
  virtplane.kvm.cluster:
    name: prod
    datacenter: paris
    scheduling_policy: power_saving
    scheduling_policy_params:
      low_utilization: 10
      high_utilization: 75
    memory_overcommit_percent: 150
    migration_policy: post_copy
    migration_bandwidth_mbps: 5000
  delegate_to: engine1

- name: Remove a cluster (refused while it still has hosts)
  virtplane.kvm.cluster:
    name: old
    state: absent
  delegate_to: engine1
"""

RETURN = r"""
cluster:
  description: The cluster after the change (empty when removed).
  returned: always
  type: dict
  sample:
    name: prod
    datacenter: paris
    scheduling_policy: power_saving
    scheduling_params: {low_utilization: 10, high_utilization: 75, duration_minutes: 2}
    memory_overcommit_percent: 150
    cpu_overcommit_ratio: 4.0
    migration_policy: post_copy
    migration_bandwidth_mbps: 5000
    migration_max_parallel: 2
    ha_reservation: false
    resilience_policy: migrate
    hosts: [hv1, hv2]
actions:
  description: What was done (or would be done in check mode).
  returned: always
  type: list
  elements: str
  sample: [update]
"""

from ansible_collections.virtplane.kvm.plugins.module_utils import _options
from ansible_collections.virtplane.kvm.plugins.module_utils._module import EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _cluster


def main():
    module = EngineModule(_options.CLUSTER, supports_check_mode=True)
    module.ensure(_cluster, _cluster.ClusterSpec, "cluster")


if __name__ == "__main__":
    main()
