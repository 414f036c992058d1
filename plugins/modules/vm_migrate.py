#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_migrate
short_description: Live-migrate a running virtplane VM to another host of its cluster
version_added: 0.4.0
description:
  - Moves a running VM to another host while it runs. The source host's libvirtd migrates the guest to the
    destination's peer to peer; the engine starts the migration, steers it by the policy and records the outcome.
  - The destination is the host named in O(host), or the one the cluster's scheduler picks (every filter and weight
    of a VM start, the source ruled out). Either way the destination must pass every filter for the VM (Up, not in
    maintenance, memory and vCPUs with the cluster's overcommit, the VM's networks and storage domains, CPU model,
    pinning, hard affinity); otherwise the migration is refused with the host's reason, before anything moves.
  - While it migrates the VM's reservation is held on both hosts (a start elsewhere cannot take the destination's
    room), and the VM is C(MigratingFrom). When it completes, the engine's record of its host and reservation moves
    to the destination in one transaction. When it fails, the guest keeps running on the source, its reservation
    on the destination goes, and an event says why.
  - "At most the cluster's C(migration_max_parallel) migrations (default 2) go out of and into each host at once; a
    migration beyond waits for a slot, up to O(wait_timeout) seconds."
  - Progress (data transferred and remaining, pre-copy iteration, dirty rate) is written to the migration's job
    about every second (M(virtplane.kvm.job_info)); each migration is kept in the engine with its policy, outcome,
    total time, downtime and data transferred (returned as RV(vm.migration)).
  - Check mode says where the VM would go and why it could not, with nothing moved.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.hosts
  - virtplane.kvm.hosts.wait
  - virtplane.kvm.attributes
options:
  name:
    description: The VM; it must be running (C(Up)).
    type: str
    required: true
  host:
    description:
      - The destination, a host of the VM's cluster other than the one it runs on. Omitted, the scheduler picks it.
    type: str
  policy:
    description:
      - V(minimal_downtime) (as oVirt's) allows 100 ms of downtime at first and steps it up to 500 ms each time a
        pre-copy iteration does not shrink what remains; still not converging after that, the migration is aborted
        and the guest stays on the source.
      - V(post_copy) starts as pre-copy and, when an iteration no longer shrinks what remains, switches the guest to
        the destination, its memory following on demand. It finishes whatever the guest dirties, but a failure
        after the switch loses the guest. QEMU needs userfaultfd on the destination (C(vm.unprivileged_userfaultfd=1),
        which the hypervisor role sets).
      - V(suspend_workload) allows up to 5 s of final downtime from the start, so that a busy guest converges.
      - V(legacy) is QEMU's defaults (300 ms of allowed downtime), nothing steered.
      - Omitted, the cluster's C(migration_policy).
    type: str
    choices: [minimal_downtime, post_copy, suspend_workload, legacy]
  bandwidth:
    description:
      - Bandwidth cap of the migration in MiB/s, 1 to 100000. Omitted, the cluster's C(migration_bandwidth_mbps)
        (in Mbit/s), or no cap.
    type: int
  auto_converge:
    description:
      - Let QEMU throttle the guest's vCPUs while pre-copy does not converge (with any policy but V(legacy)'s
        defaults, this is the other way to finish a busy guest).
    type: bool
    default: false
  cancel:
    description:
      - Cancel the VM's migration that another run is doing; that run aborts it at its next reading and the guest
        stays on its source. Nothing to cancel is no change.
    type: bool
    default: false
  migration_timeout:
    description:
      - Seconds a migration may take, 1 to 86400; one still going then is aborted (before a post-copy switch) and
        the guest stays on the source.
    type: int
    default: 600
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: Move web01 to hv2
  virtplane.kvm.vm_migrate:
    name: web01
    host: hv2

- name: Move db01 wherever the scheduler says, switching to post-copy if it does not converge
  virtplane.kvm.vm_migrate:
    name: db01
    policy: post_copy
    bandwidth: 500

- name: Give up the migration another run is doing
  virtplane.kvm.vm_migrate:
    name: db01
    cancel: true
"""

RETURN = r"""
vm:
  description: The VM after the migration (in check mode, as it would be), with RV(vm.migration).
  returned: always
  type: dict
  contains:
    host:
      description: The host the VM runs on.
      type: str
    migration:
      description: The migration as the engine recorded it (not in check mode).
      type: dict
      sample:
        source: hv1
        destination: hv2
        policy: minimal_downtime
        status: done
        total_ms: 1420
        downtime_ms: 18
        transferred_mib: 131.5
        postcopy: false
actions:
  description: What was done (or would be done in check mode).
  returned: always
  type: list
  elements: str
  sample: ["migrate from hv1 to hv2 (minimal_downtime)"]
"""

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
from ansible_collections.virtplane.kvm.plugins.module_utils._module import TIMEOUT_OPTIONS, WAIT_OPTIONS, EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _migrate


def main():
    module = EngineModule(dict(
        name=dict(type="str", required=True),
        host=dict(type="str"),
        policy=dict(type="str", choices=list(_choices.MIGRATION_POLICIES)),
        bandwidth=dict(type="int"),
        auto_converge=dict(type="bool", default=False),
        cancel=dict(type="bool", default=False),
        migration_timeout=dict(type="int", default=600),
        **TIMEOUT_OPTIONS,
        **WAIT_OPTIONS,
    ), needs_libvirt=True, supports_check_mode=True)
    module.ensure(_migrate, _migrate.MigrateSpec, "vm")


if __name__ == "__main__":
    main()
