#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: host_info
short_description: Status and capabilities of the virtplane engine's hypervisor hosts
version_added: 0.1.0
description:
  - Each host's status (V(Up), V(NonResponsive), V(Maintenance), V(NonOperational)…) with the
    reason, and the capabilities libvirt reported (CPU model and topology, memory, NUMA cells,
    domain type).
  - It only reads what the engine recorded and never changes a host. To check a host now (and bring it
    what its cluster uses), run M(virtplane.kvm.host) with O(virtplane.kvm.host#module:state=refreshed).
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.attributes.info
options:
  name:
    description:
      - Only these hosts. Naming a host that does not exist is an error.
    type: list
    elements: str
  cluster:
    description:
      - Only the hosts of this cluster.
    type: str
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: The hosts of the prod cluster as the engine knows them
  virtplane.kvm.host_info:
    cluster: prod
  register: prod_hosts
  delegate_to: engine1

- name: Hosts that are not Up, with the reason
  ansible.builtin.debug:
    msg: "{{ prod_hosts.hosts | rejectattr('status', 'eq', 'Up') | map(attribute='status_reason') }}"
"""

RETURN = r"""
hosts:
  description: The selected hosts, by name.
  returned: always
  type: list
  elements: dict
  sample:
    - name: hv1
      cluster: prod
      datacenter: paris
      status: NonResponsive
      status_reason: "cannot connect to libvirt at qemu+tls://hv1/system: unable to connect to server"
      status_changed_at: "2026-11-22T08:15:02+00:00"
      last_seen_at: "2026-11-22T08:14:02+00:00"
      libvirt_uri: qemu+tls://hv1/system
      domain_type: kvm
      cpu_model: Skylake-Client-IBRS
      cpu_models: [qemu64, Skylake-Client, Skylake-Client-IBRS]
      cpu_count: 8
      memory_mib: 31992
      reserved_memory_mib: 256
      reserved_cpus: 0
      schedulable_memory_mib: 0
      schedulable_cpus: 0
      capacity: {memory_mib: 31736, cpus: 8}
      numa_cells: [{id: 0, memory_mib: 31992, cpus: 8}]
"""

from ansible_collections.virtplane.kvm.plugins.module_utils._module import EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _host


def main():
    module = EngineModule(dict(
        name=dict(type="list", elements="str"),
        cluster=dict(type="str"),
    ), supports_check_mode=True, read_only=True)
    p = module.params
    hosts = module.run(lambda engine: _host.host_info(engine, names=p["name"], cluster=p["cluster"]))
    module.exit_json(changed=False, hosts=hosts)


if __name__ == "__main__":
    main()
