#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: event_info
short_description: Read the virtplane engine's audit log
version_added: 0.1.0
description:
  - Every change the engine makes (objects added, updated, removed; host status transitions) is
    recorded as an event in the same transaction as the change. This module returns them, newest first.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.attributes.info
options:
  severity:
    description:
      - Only events of these severities.
    type: list
    elements: str
    choices: [normal, warning, error]
  object_type:
    description:
      - Only events about this kind of object.
    type: str
    choices: [datacenter, cluster, host, vm, storage_domain, logical_network, disk, template, snapshot]
  object_name:
    description:
      - Only events about the object of this name.
    type: str
  code:
    description:
      - Only events with this code, for example V(HOST_STATUS_CHANGED).
    type: str
  since:
    description:
      - Only events at or after this ISO 8601 timestamp (UTC when it has no offset).
    type: str
  limit:
    description:
      - At most this many events, 1 to 10000; page further back with O(since).
    type: int
    default: 100
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: Warnings about host hv1 today
  virtplane.kvm.event_info:
    object_type: host
    object_name: hv1
    severity: [warning, error]
    since: "2026-11-22T00:00:00"
  register: hv1_events
  delegate_to: engine1
"""

RETURN = r"""
events:
  description: Matching events, newest first.
  returned: always
  type: list
  elements: dict
  sample:
    - id: 42
      occurred_at: "2026-11-22T08:15:02.120+00:00"
      severity: warning
      code: HOST_STATUS_CHANGED
      message: "Host hv1 is NonResponsive: cannot connect to libvirt at qemu+tls://hv1/system: ..."
      object_type: host
      object_name: hv1
      datacenter_name: paris
      cluster_name: prod
      host_name: hv1
      vm_name: null
      actor: root
      correlation_id: null
      details: {from: Up, to: NonResponsive}
"""

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
from ansible_collections.virtplane.kvm.plugins.module_utils._module import EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _info


def main():
    module = EngineModule(dict(
        severity=dict(type="list", elements="str", choices=list(_choices.EVENT_SEVERITIES)),
        object_type=dict(type="str", choices=list(_choices.OBJECT_TYPES)),
        object_name=dict(type="str"),
        code=dict(type="str"),
        since=dict(type="str"),
        limit=dict(type="int", default=100),
    ), supports_check_mode=True, read_only=True)
    p = module.params

    def operation(engine):
        return _info.events(engine, severity=p["severity"], object_type=p["object_type"],
                            object_name=p["object_name"], code=p["code"], since=p["since"], limit=p["limit"])

    module.exit_json(changed=False, events=module.run(operation))


if __name__ == "__main__":
    main()
