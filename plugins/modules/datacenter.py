#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: datacenter
short_description: Manage data centers in the virtplane engine
version_added: 0.1.0
description:
  - Create, update or remove a data center, the top of the model; clusters, storage domains
    and logical networks belong to one data center.
  - A data center that still has clusters, storage domains, logical networks or templates is
    not removed; the error lists them.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.attributes
options:
  name:
    description:
      - Name of the data center, unique in the engine (letters, digits, C(.), C(_), C(-); 64 at most).
    type: str
    required: true
  description:
    description:
      - Free text shown in reports.
    type: str
  storage_type:
    description:
      - V(shared) when its storage domains are reachable from every host of its clusters,
        V(local) when each host uses its own local storage.
      - Defaults to V(shared) when the data center is created.
    type: str
    choices: [shared, local]
  state:
    description:
      - V(present) creates or updates the data center, V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: A data center for the Paris site
  virtplane.kvm.datacenter:
    name: paris
    description: Paris, building 2
  delegate_to: engine1

- name: Remove it once it is empty
  virtplane.kvm.datacenter:
    name: paris
    state: absent
  delegate_to: engine1
"""

RETURN = r"""
datacenter:
  description: The data center after the change (empty when removed).
  returned: always
  type: dict
  sample:
    id: 9a0f3c55-5c9e-4a43-9f0d-2b7d3c1f6e10
    name: paris
    description: Paris, building 2
    storage_type: shared
    clusters: [prod]
actions:
  description: What was done (or would be done in check mode).
  returned: always
  type: list
  elements: str
  sample: [create]
"""

from ansible_collections.virtplane.kvm.plugins.module_utils import _options
from ansible_collections.virtplane.kvm.plugins.module_utils._module import EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _datacenter


def main():
    module = EngineModule(_options.DATACENTER, supports_check_mode=True)
    module.ensure(_datacenter, _datacenter.DatacenterSpec, "datacenter")


if __name__ == "__main__":
    main()
