#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_info
short_description: Report virtplane VMs with their runtime
version_added: 0.4.0
description:
  - Lists VMs with their definition and runtime - status, host, uptime, addresses where known, console
    and what waits for a restart - filtered by name, cluster, host, tag and status.
  - The hosts that run the selected VMs are asked in bulk (one libvirt call per host); a VM the engine
    records as running that its host does not have says so in its C(status_reason).
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.hosts
  - virtplane.kvm.attributes.info
options:
  name:
    description: Names of the VMs to report; all when omitted.
    type: list
    elements: str
  cluster:
    description: Only the VMs of this cluster.
    type: str
  host:
    description: Only the VMs running on this host.
    type: str
  tags:
    description: Only the VMs with at least one of these tags.
    type: list
    elements: str
  status:
    description: Only the VMs in these statuses.
    type: list
    elements: str
    choices: [Down, WaitForLaunch, PoweringUp, Up, PoweringDown, Paused, Suspended, MigratingFrom, MigratingTo,
              NotResponding, RestartingHA, Unknown]
  console_log:
    description:
      - Also return the last 16 KiB of each running VM's serial console log (read from its host through
        libvirt) as C(console_log).
    type: bool
    default: false
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: The running VMs of cluster prod
  virtplane.kvm.vm_info:
    cluster: prod
    status: [Up]
  register: running

- name: What web01 printed on its serial console
  virtplane.kvm.vm_info:
    name: [web01]
    console_log: true
  register: web01
"""

RETURN = r"""
vms:
  description: The selected VMs, as M(virtplane.kvm.vm) returns them.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: web01, cluster: prod, status: Up, host: hv1, uptime_s: 3600, vcpus: 2, memory: 2 GiB,
       addresses: [], pending_restart: [], console: {type: vnc, url: "vnc://10.0.0.11:5900"}}
"""

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
from ansible_collections.virtplane.kvm.plugins.module_utils._module import TIMEOUT_OPTIONS, EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import validate_name
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _vm


def main():
    module = EngineModule(dict(
        name=dict(type="list", elements="str"),
        cluster=dict(type="str"),
        host=dict(type="str"),
        tags=dict(type="list", elements="str"),
        status=dict(type="list", elements="str", choices=list(_choices.VM_STATUSES)),
        console_log=dict(type="bool", default=False),
        **TIMEOUT_OPTIONS,
    ), needs_libvirt=True, supports_check_mode=True, read_only=True)
    p = module.params

    def read(engine):
        for field in ("cluster", "host"):
            if p[field] is not None:
                validate_name(field, p[field])
        for field in ("name", "tags"):
            for index, value in enumerate(p[field] or ()):
                validate_name("%s[%d]" % (field, index), value)
        return _vm.vm_info(engine, p["name"], p["cluster"], p["host"], p["tags"], p["status"], p["console_log"],
                           p["timeout"])
    module.exit_json(changed=False, vms=module.run(read))


if __name__ == "__main__":
    main()
