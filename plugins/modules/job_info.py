#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: job_info
short_description: Long work of the virtplane engine, running and past
version_added: 0.2.0
description:
  - Every change that works on hosts (registering a host, applying a storage domain or a network, creating,
    importing or growing a disk) reserves its object with a job while it runs. The job has an owner (the
    module run), a heartbeat and a progress; it ends finished, failed (the run gave up and put everything
    back) or aborted (a run that died was recovered by the next one).
  - A running job whose heartbeat is older than its lease is C(expired), that is it belongs to a run that died; the
    next run that meets its object finishes or rolls back its work.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.attributes.info
options:
  status:
    description:
      - Only jobs in these states.
    type: list
    elements: str
    choices: [running, finished, failed, aborted]
  object_type:
    description:
      - Only jobs on this kind of object.
    type: str
    choices: [datacenter, cluster, host, vm, storage_domain, logical_network, disk, template, snapshot]
  object_name:
    description:
      - Only jobs on the object of this name.
    type: str
  limit:
    description:
      - At most this many jobs, newest first, 1 to 10000.
    type: int
    default: 100
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: What is running now, and how far an import has got
  virtplane.kvm.job_info:
    status: [running]
  register: running
  delegate_to: engine1
"""

RETURN = r"""
jobs:
  description: The jobs, newest first.
  returned: always
  type: list
  elements: dict
  sample:
    - id: 3c1d8b8e-1f0a-4a5c-9d43-8a8f0a6a0e11
      action: disk.create
      description: import disk 'debian12' from /srv/images/debian-12.qcow2
      status: running
      object_type: disk
      object_name: debian12
      progress: 40
      owner: engine1:4242:9f2c1a
      started_at: "2026-12-01T22:10:03.123456+00:00"
      heartbeat_at: "2026-12-01T22:10:41.004002+00:00"
      lease_seconds: 60
      expired: false
"""

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
from ansible_collections.virtplane.kvm.plugins.module_utils._module import EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _info


def main():
    module = EngineModule(dict(
        status=dict(type="list", elements="str", choices=list(_choices.JOB_STATUSES)),
        object_type=dict(type="str", choices=list(_choices.OBJECT_TYPES)),
        object_name=dict(type="str"),
        limit=dict(type="int", default=100),
    ), supports_check_mode=True, read_only=True)
    p = module.params

    def operation(engine):
        return _info.jobs(engine, statuses=p["status"], object_type=p["object_type"], object_name=p["object_name"],
                          limit=p["limit"])

    module.exit_json(changed=False, jobs=module.run(operation))


if __name__ == "__main__":
    main()
