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
  - With O(refresh=true) the engine checks every selected host now, in parallel, and records
    status changes (and changed capabilities) as its monitor does; the task then reports C(changed).
    Memory size, NUMA cells and the current clock move with the machine (memory hot-add), so they are
    refreshed too, without counting as a change.
extends_documentation_fragment:
  - virtplane.kvm.engine
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
  refresh:
    description:
      - Check each host's libvirt now and record what changed.
      - A check also brings the host what its cluster uses (storage domain pools, logical networks) where
        they are missing, as M(virtplane.kvm.host) does; a host that cannot realize them is V(NonOperational).
        In check mode nothing is changed on the hosts or recorded.
    type: bool
    default: false
  probe_timeout:
    description:
      - Seconds to wait for each host's libvirt when O(refresh=true), 1 to 3600.
    type: int
    default: 15
attributes:
  check_mode:
    support: full
    description: With O(refresh=true), reports what the check found without recording it.
  diff_mode:
    support: none
    description: Status changes are in the returned hosts and the audit log.
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: Check every host of the prod cluster now
  virtplane.kvm.host_info:
    cluster: prod
    refresh: true
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
      cpu_count: 8
      memory_mib: 31992
      numa_cells: [{id: 0, memory_mib: 31992, cpus: 8}]
"""

from ansible_collections.virtplane.kvm.plugins.module_utils._module import EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _host


def main():
    module = EngineModule(dict(
        name=dict(type="list", elements="str"),
        cluster=dict(type="str"),
        refresh=dict(type="bool", default=False),
        probe_timeout=dict(type="int", default=15),
    ), needs_libvirt=True, supports_check_mode=True)
    p = module.params
    module.read_only = not p["refresh"]

    def operation(engine):
        return _host.host_info(engine, names=p["name"], cluster=p["cluster"], refresh=p["refresh"],
                               probe_timeout=p["probe_timeout"], check_mode=module.check_mode)

    changed, hosts = module.run(operation)
    module.exit_json(changed=changed, hosts=hosts)


if __name__ == "__main__":
    main()
