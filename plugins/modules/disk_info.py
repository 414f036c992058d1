#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: disk_info
short_description: Report disks of virtplane storage domains
version_added: 0.1.0
description:
  - Lists disks with their storage domain, format, size, LUN and the VM they are attached to.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.attributes.info
options:
  name:
    description: Names of the disks to report; all when omitted.
    type: list
    elements: str
  storage_domain:
    description: Only the disks of this storage domain.
    type: str
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: Disks of the shared domain
  virtplane.kvm.disk_info:
    storage_domain: shared
  register: shared_disks
"""

RETURN = r"""
disks:
  description: The selected disks, as M(virtplane.kvm.disk) returns them.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: web01-data, storage_domain: shared, datacenter: dc1, format: qcow2, size_bytes: 10737418240,
       size: 10 GiB, preallocated: false, volume_name: web01-data.qcow2, lun: null, status: ok, vm: null}
"""

from ansible_collections.virtplane.kvm.plugins.module_utils._module import EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _disk


def main():
    module = EngineModule(dict(
        name=dict(type="list", elements="str"),
        storage_domain=dict(type="str"),
    ), supports_check_mode=True, read_only=True)
    p = module.params
    disks = module.run(lambda engine: _disk.disk_info(engine, names=p["name"], domain_name=p["storage_domain"]))
    module.exit_json(changed=False, disks=disks)


if __name__ == "__main__":
    main()
