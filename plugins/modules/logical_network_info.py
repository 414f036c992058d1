#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: logical_network_info
short_description: Report logical networks and whether each host has them
version_added: 0.1.0
description:
  - Lists logical networks with their cluster assignments and, per host, whether the network is realized
    and the last error. C(status) of each network is V(realized), V(partial) (with
    C(missing_on) naming the hosts), V(missing) or V(unattached).
  - To check the hosts again, use M(virtplane.kvm.host_info) with O(virtplane.kvm.host_info#module:refresh=true).
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.attributes.info
options:
  name:
    description: Names of the networks to report; all when omitted.
    type: list
    elements: str
  datacenter:
    description: Only the networks of this data center.
    type: str
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: Networks some host lacks
  virtplane.kvm.logical_network_info:
    datacenter: dc1
  register: nets

- name: Show them
  ansible.builtin.debug:
    msg: "{{ nets.logical_networks | rejectattr('status', 'eq', 'realized') | map(attribute='name') }}"
"""

RETURN = r"""
logical_networks:
  description: The selected networks, as M(virtplane.kvm.logical_network) returns them.
  returned: always
  type: list
  elements: dict
  sample:
    - name: app
      datacenter: dc1
      mode: bridge
      vxlan_vni: 100
      bridge: vpapp-3f2a
      status: partial
      missing_on: [hv3]
      hosts: [{host: hv3, host_status: NonOperational, nic: null, realized: false,
               error: "the host has no network NIC (set network_nic on the host) to carry it"}]
"""

from ansible_collections.virtplane.kvm.plugins.module_utils._module import EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _network


def main():
    module = EngineModule(dict(
        name=dict(type="list", elements="str"),
        datacenter=dict(type="str"),
    ), supports_check_mode=True, read_only=True)
    p = module.params
    networks = module.run(lambda engine: _network.network_info(engine, names=p["name"], datacenter=p["datacenter"]))
    module.exit_json(changed=False, logical_networks=networks)


if __name__ == "__main__":
    main()
