#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: affinity_group
short_description: Keep VMs of a virtplane cluster together or apart, on some hosts or off them
version_added: 0.4.0
description:
  - An affinity group of a cluster names VMs and hosts with two rules. The VM rule keeps the group's VMs on one host
    (V(positive)) or each on a host of its own (V(negative)); the host rule keeps them on the group's hosts
    (V(positive)) or off them (V(negative)).
  - A hard rule (O(vm_enforcing), O(host_enforcing)) is a filter of the scheduler, which then refuses every host that
    would break it, with the group's name in the reason; a soft rule is a weight that prefers the hosts that keep it.
  - Groups are written under the cluster's lock, which VM starts take too. Hard rules that contradict each other
    (two VMs that must and must not share a host; a VM that must and must not run on a host) are refused, as are VMs
    and hosts of another cluster.
  - The rules apply to placements from then on; VMs that run already are not moved.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.attributes
options:
  name:
    description: Name of the group, unique in its cluster.
    type: str
    required: true
  cluster:
    description: The cluster of the group, its VMs and its hosts.
    type: str
    required: true
  vm_rule:
    description: V(positive) keeps the VMs together, V(negative) apart, V(none) neither.
    type: str
    choices: [positive, negative, none]
  vm_enforcing:
    description: Whether the VM rule is hard (a filter) or soft (a preference).
    type: bool
  host_rule:
    description: V(positive) keeps the VMs on O(hosts), V(negative) off them, V(none) neither.
    type: str
    choices: [positive, negative, none]
  host_enforcing:
    description: Whether the host rule is hard (a filter) or soft (a preference).
    type: bool
  priority:
    description:
      - Weight of a soft group, 1 to 100. A host with a VM of the group gains (positive rule) or loses
        (negative rule) a score proportional to it, above every load weight, so that of two soft groups that
        disagree about a host the one of higher priority wins; of equal priorities they cancel out.
      - Hard groups are filters and take no part in it.
    type: int
  vms:
    description: The VMs of the group (the whole list; VMs not named leave it).
    type: list
    elements: str
  hosts:
    description: The hosts the host rule is about (the whole list).
    type: list
    elements: str
  state:
    description: V(present) defines the group as given (options left out keep their value), V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: The two database VMs never on one host
  virtplane.kvm.affinity_group:
    name: db-apart
    cluster: prod
    vm_rule: negative
    vm_enforcing: true
    vms: [db1, db2]

- name: The web VMs preferably on the hosts of rack A
  virtplane.kvm.affinity_group:
    name: web-rack-a
    cluster: prod
    host_rule: positive
    host_enforcing: false
    vms: [web1, web2]
    hosts: [hv1, hv2]
"""

RETURN = r"""
affinity_group:
  description: The group (predicted in check mode); empty after removal.
  returned: always
  type: dict
  sample:
    name: db-apart
    cluster: prod
    vm_rule: negative
    vm_enforcing: true
    host_rule: none
    host_enforcing: false
    priority: 1
    vms: [db1, db2]
    hosts: []
actions:
  description: What was done (or would be done in check mode).
  returned: always
  type: list
  elements: str
  sample: ["create"]
"""

from ansible_collections.virtplane.kvm.plugins.module_utils import _options
from ansible_collections.virtplane.kvm.plugins.module_utils._module import EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _affinity


def main():
    module = EngineModule(_options.AFFINITY_GROUP, supports_check_mode=True)
    module.ensure(_affinity, _affinity.AffinityGroupSpec, "affinity_group")


if __name__ == "__main__":
    main()
