#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: storage_domain_info
short_description: Report storage domains and each host's view of them
version_added: 0.1.0
description:
  - Lists storage domains with their clusters, disks and, per host, whether its pool is active, its
    capacity, allocation, free space and the last error.
  - C(status) of each domain is V(active) when every host that should have the domain has it
    active, V(partial) (with C(missing_on) naming the hosts) or V(inactive) otherwise,
    V(maintenance), or V(unattached) when no host uses it.
  - With O(refresh=true) every host is asked now; its answer is returned, not recorded.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.hosts
  - virtplane.kvm.attributes.info
options:
  name:
    description: Names of the domains to report; all when omitted.
    type: list
    elements: str
  datacenter:
    description: Only the domains of this data center.
    type: str
  refresh:
    description:
      - Ask every host now instead of reporting the last recorded view. What the hosts say
        is returned, not recorded; the module never changes the engine or a host.
    type: bool
    default: false
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: Which hosts lack a domain right now
  virtplane.kvm.storage_domain_info:
    datacenter: dc1
    refresh: true
  register: domains

- name: Show the partial ones
  ansible.builtin.debug:
    msg: "{{ domains.storage_domains | selectattr('status', 'eq', 'partial') | map(attribute='missing_on') }}"
"""

RETURN = r"""
storage_domains:
  description: The selected domains.
  returned: always
  type: list
  elements: dict
  sample:
    - name: shared
      datacenter: dc1
      type: posixfs
      params: {path: /srv/virtplane/shared}
      clusters: [cluster1]
      state: active
      status: partial
      missing_on: [hv2]
      hosts:
        - {host: hv1, pool_name: vp-shared, active: true, capacity_bytes: 53687091200,
           allocation_bytes: 1073741824, available_bytes: 52613349376, error: ""}
        - {host: hv2, pool_name: vp-shared, active: false, capacity_bytes: null,
           allocation_bytes: null, available_bytes: null, error: "cannot open directory ..."}
      disks: []
"""

from ansible_collections.virtplane.kvm.plugins.module_utils._module import TIMEOUT_OPTIONS, EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _storage


def main():
    module = EngineModule(dict(
        name=dict(type="list", elements="str"),
        datacenter=dict(type="str"),
        refresh=dict(type="bool", default=False),
        **TIMEOUT_OPTIONS,
    ), needs_libvirt=True, supports_check_mode=True, read_only=True)
    p = module.params

    def operation(engine):
        return _storage.domain_info(engine, names=p["name"], datacenter=p["datacenter"], refresh=p["refresh"],
                                    timeout=p["timeout"])

    module.exit_json(changed=False, storage_domains=module.run(operation))


if __name__ == "__main__":
    main()
