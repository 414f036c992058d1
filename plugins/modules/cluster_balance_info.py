#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: cluster_balance_info
short_description: The migrations a virtplane cluster's scheduling policy proposes now, with their reasons
version_added: 0.4.0
description:
  - The balancer of the engine's scheduler, on the cluster as the engine has it now - its hosts' capacity,
    load and commitments, its running VMs and its affinity groups. Nothing moves; the proposals say which VM
    would go from which host to which, and why.
  - Every policy first moves VMs whose host no longer passes the hard filters for them (an affinity group
    made or changed after they started, a pinning, a host in maintenance or whose capacity was lowered).
  - V(evenly_distributed) and V(power_saving) then take one VM off each host whose CPU load is above
    C(high_utilization), to a host below it; V(power_saving) empties the least loaded host below
    C(low_utilization) onto hosts between the thresholds (all of its VMs or none), so that it can be switched
    off; V(vm_evenly_distributed) moves one VM from the host with the most VMs, when it runs more than
    C(high_vm_count) and C(migration_threshold) or more than the host with the fewest, to that host.
    V(none) proposes nothing more.
  - Each destination is chosen by the scheduler's filters and weights, with the proposals before it already
    made, so that two proposals never fill one host twice. What the policy would change but cannot is listed
    in RV(balance) under C(problems).
  - A host counts as above C(high_utilization) (below C(low_utilization)) only when its CPU load stayed there
    for the policy's C(duration_minutes). The loads are those the engine measured each time
    M(virtplane.kvm.host) read the host, as the busy share of its CPU time between two readings, kept for a
    day. A host whose loads do not reach back that far is left alone. A host gives one VM per call, and the
    next call sees the load that follows.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.attributes.info
options:
  cluster:
    description: The cluster.
    type: str
    required: true
  policy:
    description:
      - Another policy than the cluster's, to see what it would propose (the cluster is not changed).
    type: str
    choices: [none, evenly_distributed, power_saving, vm_evenly_distributed]
  policy_params:
    description:
      - The policy's parameters (as the C(cluster) module's O(virtplane.kvm.cluster#module:scheduling_policy_params));
        the cluster's own when unset and O(policy) is the cluster's, else the policy's defaults.
    type: dict
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: What would the balancer move in prod?
  virtplane.kvm.cluster_balance_info:
    cluster: prod
  register: balance

- name: And if prod saved power?
  virtplane.kvm.cluster_balance_info:
    cluster: prod
    policy: power_saving
    policy_params: {low_utilization: 15, high_utilization: 75}
  register: saving

- name: Say it
  ansible.builtin.debug:
    msg: "{{ balance.balance.migrations | map(attribute='reason') | list }}"
"""

RETURN = r"""
balance:
  description: The proposals.
  returned: always
  type: dict
  sample:
    cluster: prod
    policy: evenly_distributed
    params: {high_utilization: 80, duration_minutes: 2}
    migrations:
      - {vm: web1, from: hv1, to: hv3,
         reason: "CPU load of host hv1 was above high_utilization 80% for the last 2 minutes (86% to 97%)"}
      - vm: db2
        from: hv2
        to: hv4
        reason: "its host hv2 no longer suits it: affinity group db: the VM must not run with db1"
    problems: []
"""

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
from ansible_collections.virtplane.kvm.plugins.module_utils._module import EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _vm


def main():
    module = EngineModule(dict(
        cluster=dict(type="str", required=True),
        policy=dict(type="str", choices=list(_choices.SCHEDULING_POLICIES)),
        policy_params=dict(type="dict"),
    ), supports_check_mode=True, read_only=True)
    params = module.params
    module.exit_json(changed=False, balance=module.run(lambda engine: _vm.balance_info(
        engine, params["cluster"], params["policy"], params["policy_params"])))


if __name__ == "__main__":
    main()
