#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: cluster_balance
short_description: One balancing pass of a virtplane cluster under its scheduling policy
version_added: 0.4.0
description:
  - Makes the live migrations that the cluster's scheduling policy proposes for the cluster as it is now, as
    M(virtplane.kvm.cluster_balance_info) lists them (see there for what each policy proposes) - VMs whose host
    no longer suits them first, then what the policy's thresholds ask for.
  - Each migration goes to the host the balancer chose, which is checked again when the migration starts (a
    host that no longer suits the VM refuses it, with the reason). They go one at a time in the order
    proposed, since a proposal may count on the room an earlier one frees; each runs under the cluster's
    O(virtplane.kvm.cluster#module:migration_policy) and is recorded as M(virtplane.kvm.vm_migrate) records
    one. A VM that left its host meanwhile is not moved.
  - Only running (V(Up)) VMs on hosts that answer are proposed; the others count in their hosts' commitments.
  - Check mode moves nothing and lists the planned migrations with their reasons in RV(actions) and
    RV(balance).
  - A pass that proposes nothing changes nothing, so a balanced cluster reports no change. The load
    thresholds take one VM off a hot host per pass (V(power_saving) empties its least loaded host whole, and
    VMs whose host no longer suits them all go); run it again, on a schedule, to go on. The loads are those
    the engine sampled at the hosts' last checks
    (M(virtplane.kvm.host) with O(virtplane.kvm.host#module:state=refreshed)). Check the hosts between
    passes, or a host's load from before a pass still counts after it.
  - A migration that fails leaves its VM where libvirt left it (running on its source, as a rule; see
    M(virtplane.kvm.vm_migrate)); the task then fails, naming it and the VMs that did move.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.hosts
  - virtplane.kvm.hosts.wait
  - virtplane.kvm.attributes
options:
  cluster:
    description: The cluster.
    type: str
    required: true
  policy:
    description:
      - Balance under another policy than the cluster's, this once (the cluster is not changed).
    type: str
    choices: [none, evenly_distributed, power_saving, vm_evenly_distributed]
  policy_params:
    description:
      - The policy's parameters (as the C(cluster) module's O(virtplane.kvm.cluster#module:scheduling_policy_params));
        the cluster's own when unset and O(policy) is the cluster's, else the policy's defaults.
    type: dict
  migration_timeout:
    description:
      - Seconds each migration may take before it is aborted (the VM then stays where it was), 1 to 86400.
    type: int
    default: 600
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: What would a balancing pass of prod move? (nothing moves)
  virtplane.kvm.cluster_balance:
    cluster: prod
  check_mode: true
  register: planned

- name: One balancing pass
  virtplane.kvm.cluster_balance:
    cluster: prod

- name: Empty the least loaded host of the lab, to switch it off
  virtplane.kvm.cluster_balance:
    cluster: lab
    policy: power_saving
    policy_params: {low_utilization: 20, high_utilization: 80}
"""

RETURN = r"""
balance:
  description:
    - The proposals of the pass (those made, in a real run that succeeded), as
      M(virtplane.kvm.cluster_balance_info) returns them.
  returned: always
  type: dict
  sample:
    cluster: prod
    policy: evenly_distributed
    params: {high_utilization: 80, duration_minutes: 2}
    migrations:
      - {vm: web1, from: hv1, to: hv3, migrated: true,
         reason: "CPU load of host hv1 was above high_utilization 80% for the last 2 minutes (86% to 97%)"}
    problems: []
actions:
  description: The migrations made (or planned, in check mode), each with its reason.
  returned: always
  type: list
  elements: str
  sample: ["migrate VM web1 from hv1 to hv3: CPU load of host hv1 was above high_utilization 80% for the last 2
            minutes (86% to 97%)"]
"""

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
from ansible_collections.virtplane.kvm.plugins.module_utils._module import TIMEOUT_OPTIONS, WAIT_OPTIONS, EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _balance


def main():
    module = EngineModule(dict(
        cluster=dict(type="str", required=True),
        policy=dict(type="str", choices=list(_choices.SCHEDULING_POLICIES)),
        policy_params=dict(type="dict"),
        migration_timeout=dict(type="int", default=600),
        **TIMEOUT_OPTIONS,
        **WAIT_OPTIONS,
    ), needs_libvirt=True, supports_check_mode=True)
    module.ensure(_balance, _balance.BalanceSpec, "balance")


if __name__ == "__main__":
    main()
