#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: logical_network
short_description: Manage logical networks of a data center, realized on the hosts of their clusters
version_added: 0.1.0
description:
  - Define a logical network once for a data center and assign it to clusters, as required or optional.
    Each host of those clusters gets a libvirt network C(vp-<name>).
  - In V(bridge) mode the network is a Linux bridge on the host's network NIC (M(virtplane.kvm.host)
    O(virtplane.kvm.host#module:network_nic)), untagged, on a VLAN sub-interface (O(vlan)), or on a VXLAN
    segment (O(vxlan)) that spans hosts without any switch configuration. The network hook installed by the
    M(virtplane.kvm.hypervisor) role creates the bridge and its uplink when libvirt starts the network.
    V(nat) and V(isolated) networks are bridged by libvirt on each host alone.
  - After the change every affected host is checked. A host that cannot realize a required network (no
    802.1Q support for a VLAN, no NIC, ...) becomes V(NonOperational) with the reason; it is V(Up) again once
    the cause is fixed. C(status) in RV(logical_network) says whether every host has the network.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.hosts
  - virtplane.kvm.hosts.wait
  - virtplane.kvm.attributes
options:
  name:
    description: Name of the network, unique in its data center.
    type: str
    required: true
  datacenter:
    description: Data center of the network. Required unless the name is unique and O(state=absent).
    type: str
  description:
    description: Free text shown in reports.
    type: str
  mode:
    description: V(bridge) (default when created), V(nat) or V(isolated).
    type: str
    choices: [bridge, nat, isolated]
  vlan:
    description: VLAN id (1-4094) for a tagged network. Mutually exclusive with O(vxlan).
    type: int
  vxlan:
    description:
      - VXLAN network identifier (1-16777215) for an overlay segment across the hosts' network NICs
        (multicast group derived from it, UDP port 4789).
    type: int
  mtu:
    description: MTU of the bridge (68-9216). Defaults to 1500, or 1450 for a VXLAN segment.
    type: int
  subnet:
    description: IPv4 or IPv6 network of the segment in CIDR notation. Subnets of one data center must not overlap.
    type: str
  gateway:
    description: Gateway address in O(subnet). For a V(nat) network it is the host's address on the bridge.
    type: str
  bridge:
    description:
      - Name of the bridge on each host (1-15 letters, digits, '_' or '-'). Derived from the name when
        the network is created (C(vp<name>-<hash>)), unique in the data center.
    type: str
  clusters:
    description:
      - Clusters that use the network. Defaults to the current assignment (none for a new network).
        The hosts of a cluster removed from the list lose the network.
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of the cluster.
        type: str
        required: true
      required:
        description: Whether a host of the cluster that lacks the network is V(NonOperational).
        type: bool
        default: true
  state:
    description: V(present) or V(absent) (refused while VMs have NICs on the network).
    type: str
    choices: [present, absent]
    default: present
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: An overlay segment across the hosts of cluster1, required there
  virtplane.kvm.logical_network:
    name: app
    datacenter: dc1
    vxlan: 100
    subnet: 192.0.2.0/24
    clusters:
      - name: cluster1

- name: A tagged network, optional in cluster2
  virtplane.kvm.logical_network:
    name: storage
    datacenter: dc1
    vlan: 30
    mtu: 9000
    clusters:
      - name: cluster2
        required: false
"""

RETURN = r"""
logical_network:
  description: The network after the change (predicted in check mode); empty after removal.
  returned: always
  type: dict
  sample:
    name: app
    datacenter: dc1
    mode: bridge
    vlan_id: null
    vxlan_vni: 100
    mtu: 1450
    subnet: 192.0.2.0/24
    gateway: null
    bridge: vpapp-3f2a
    libvirt_name: vp-app
    clusters: [{name: cluster1, required: true}]
    status: realized
    missing_on: []
    hosts: [{host: hv1, host_status: Up, nic: eth1, realized: true, error: ""}]
actions:
  description: What was done (or would be done in check mode), per host.
  returned: always
  type: list
  elements: str
  sample: [create, "define network on hv1", "define network on hv2"]
"""

from ansible_collections.virtplane.kvm.plugins.module_utils import _options
from ansible_collections.virtplane.kvm.plugins.module_utils._module import TIMEOUT_OPTIONS, WAIT_OPTIONS, EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _network


def main():
    module = EngineModule(dict(
        _options.LOGICAL_NETWORK,
        **TIMEOUT_OPTIONS,
        **WAIT_OPTIONS,
    ), needs_libvirt=True, supports_check_mode=True, **_options.LOGICAL_NETWORK_RULES)
    module.ensure(_network, _network.NetworkSpec, "logical_network")


if __name__ == "__main__":
    main()
