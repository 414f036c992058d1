#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_placement_info
short_description: Where a virtplane VM would start, and why not elsewhere
version_added: 0.4.0
description:
  - A dry run of the scheduler for one VM, on the cluster as the engine has it now - its hosts' capacity and
    commitments, where its VMs run, its affinity groups and its scheduling policy. Nothing is reserved.
  - Says the host a start would choose and, host by host, why each other host cannot take the VM (the first filter
    it fails) or its score when it could.
  - A VM that runs is placed as if it were started anew - what it holds on its host is not counted.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.attributes.info
options:
  name:
    description: The VM.
    type: str
    required: true
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: Where would db2 go?
  virtplane.kvm.vm_placement_info:
    name: db2
  register: where

- name: Say it
  ansible.builtin.debug:
    msg: "{{ where.placement.host }}; {{ where.placement.hosts | selectattr('verdict', 'eq', 'rejected')
             | map(attribute='reason') | list }}"
"""

RETURN = r"""
placement:
  description: The dry run.
  returned: always
  type: dict
  sample:
    vm: db2
    cluster: prod
    policy: evenly_distributed
    host: hv2
    runs_on: null
    hosts:
      - {name: hv1, verdict: rejected, reason: "affinity group db-apart: the VM must not run with db1", score: null}
      - {name: hv2, verdict: chosen, reason: null, score: 2.61}
      - {name: hv3, verdict: rejected, reason: "memory 7.5 of 8 GiB committed, 1 GiB more does not fit", score: null}
"""

from ansible_collections.virtplane.kvm.plugins.module_utils._module import EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _vm


def main():
    module = EngineModule(dict(
        name=dict(type="str", required=True),
    ), supports_check_mode=True, read_only=True)
    name = module.params["name"]
    module.exit_json(changed=False, placement=module.run(lambda engine: _vm.placement_info(engine, name)))


if __name__ == "__main__":
    main()
