#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: template
short_description: Make templates of virtplane VMs, or remove them
version_added: 0.4.0
description:
  - A template is a stopped VM's definition (CPU, memory, boot, NICs without their MACs, cloud-init,
    console type, HA) with a full copy of each of its disks in a storage domain, owned by the template.
  - The source VM cannot start while its disks are copied; a failure removes the copies and the template.
  - VMs are made from it with M(virtplane.kvm.vm) and O(virtplane.kvm.vm#module:template); their disks are
    thin clones (qcow2 volumes whose backing file is the template's disk, in the same storage domain) or full
    copies (O(virtplane.kvm.vm#module:clone=full)).
  - A template is not removed while a thin clone stands on one of its disks.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.hosts
  - virtplane.kvm.hosts.wait
  - virtplane.kvm.attributes
options:
  name:
    description: Name of the template, unique in its data center.
    type: str
    required: true
  vm:
    description: The stopped VM it is made from; required to create it.
    type: str
  storage_domain:
    description: Storage domain for the copies of the VM's disks; required to create it.
    type: str
  datacenter:
    description: Data center of the template, when its name exists in several.
    type: str
  description:
    description: Free text.
    type: str
  state:
    description: V(present) makes the template (once; later runs change only its description), V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: A template of the stopped VM base01, its disks copied to the shared domain
  virtplane.kvm.template:
    name: debian12
    vm: base01
    storage_domain: shared

- name: A VM made from it, its disks thin clones of the template's
  virtplane.kvm.vm:
    name: web02
    cluster: prod
    template: debian12
    state: running
"""

RETURN = r"""
template:
  description: The template (predicted in check mode); empty after removal.
  returned: always
  type: dict
  sample:
    name: debian12
    datacenter: dc1
    vm: base01
    disks: [{name: debian12-base01-root, storage_domain: shared, format: qcow2, size_bytes: 10737418240,
             source: base01-root, bus: virtio, bootable: true}]
actions:
  description: What was done (or would be done in check mode).
  returned: always
  type: list
  elements: str
  sample: ["create", "copy disk base01-root to shared"]
"""

from ansible_collections.virtplane.kvm.plugins.module_utils import _options
from ansible_collections.virtplane.kvm.plugins.module_utils._module import TIMEOUT_OPTIONS, WAIT_OPTIONS, EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _template


def main():
    module = EngineModule(dict(
        _options.TEMPLATE,
        **TIMEOUT_OPTIONS,
        **WAIT_OPTIONS,
    ), needs_libvirt=True, supports_check_mode=True)
    module.ensure(_template, _template.TemplateSpec, "template")


if __name__ == "__main__":
    main()
