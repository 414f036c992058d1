#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: snapshot_info
short_description: List the snapshots of virtplane VMs
version_added: 0.4.0
description:
  - Lists snapshots as the engine took them - of which VM, with or without its memory, what consistency each gives,
    of which disks, and whether one is C(broken) (a run died while it worked on it; delete it).
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.attributes.info
options:
  vm:
    description: Only the snapshots of these VMs; of all VMs when omitted.
    type: list
    elements: str
  name:
    description: Only the snapshots of these names.
    type: list
    elements: str
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: The snapshots of web01
  virtplane.kvm.snapshot_info:
    vm: [web01]
  register: found
"""

RETURN = r"""
snapshots:
  description: The snapshots, by VM and in the order they were taken.
  returned: always
  type: list
  elements: dict
  sample:
    - name: before-upgrade
      vm: web01
      kind: internal
      memory: true
      vm_status: Up
      state: ok
      disks: [{name: web01-root, storage_domain: shared, target: vda}]
      created_at: "2026-12-02T10:00:00+00:00"
"""

from ansible_collections.virtplane.kvm.plugins.module_utils._module import EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import validate_name
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _snapshot


def main():
    module = EngineModule(dict(
        vm=dict(type="list", elements="str"),
        name=dict(type="list", elements="str"),
    ), supports_check_mode=True, read_only=True)
    p = module.params

    def read(engine):
        for field in ("vm", "name"):
            for index, value in enumerate(p[field] or ()):
                validate_name("%s[%d]" % (field, index), value)
        return _snapshot.snapshot_info(engine, p["vm"], p["name"])
    module.exit_json(changed=False, snapshots=module.run(read))


if __name__ == "__main__":
    main()
