#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: engine_info
short_description: Summary of everything the virtplane engine manages
version_added: 0.1.0
description:
  - Counts of every kind of object, hosts and VMs by status, and the data center > cluster > host
    tree, read in one transaction so the figures agree with each other.
  - Also returns the summary as lines of text, ready for a C(debug) task.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.attributes.info
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: Read the engine summary
  virtplane.kvm.engine_info:
  register: engine
  delegate_to: engine1

- name: Print it
  ansible.builtin.debug:
    msg: "{{ engine.summary }}"

- name: Fail when a host is not Up
  ansible.builtin.assert:
    that: engine.hosts_by_status.keys() | difference(['Up']) | length == 0
"""

RETURN = r"""
schema_version:
  description: Version of the engine database schema.
  returned: always
  type: int
  sample: 3
counts:
  description: Number of objects of each kind.
  returned: always
  type: dict
  sample: {datacenters: 1, clusters: 1, hosts: 2, vms: 0, storage_domains: 0, logical_networks: 0,
           disks: 0, templates: 0, snapshots: 0, affinity_groups: 0, events: 5}
hosts_by_status:
  description: Number of hosts in each status.
  returned: always
  type: dict
  sample: {Up: 2}
vms_by_status:
  description: Number of VMs in each status.
  returned: always
  type: dict
  sample: {}
datacenters:
  description: Data centers with their clusters, and each cluster's hosts.
  returned: always
  type: list
  elements: dict
  sample:
    - name: Default
      description: ""
      storage_type: shared
      clusters:
        - name: Default
          scheduling_policy: evenly_distributed
          vms: 0
          hosts:
            - {name: hv1, status: Up, status_reason: "", libvirt_uri: "test:///default", domain_type: test,
               cpu_count: 16, memory_mib: 3072}
summary:
  description: The same as text, one line per item.
  returned: always
  type: list
  elements: str
  sample:
    - "engine schema v3: 1 data centers, 1 clusters, 2 hosts, 0 VMs, 0 storage domains, 0 logical networks"
    - "data center Default (shared storage)"
    - "  cluster Default: 2 hosts, 0 VMs, scheduling evenly_distributed"
    - "    host hv1: Up, 16 CPUs, 3072 MiB, test via test:///default"
"""

from ansible_collections.virtplane.kvm.plugins.module_utils._module import EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _info


def main():
    module = EngineModule({}, supports_check_mode=True, read_only=True)
    module.exit_json(changed=False, **module.run(_info.engine_summary))


if __name__ == "__main__":
    main()
