#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: reconcile
short_description: Run the virtplane monitor's pass now - host health, VMs, fencing, HA restarts
version_added: 0.5.0
description:
  - Runs one pass (or O(rounds) passes) of the engine's monitor, as the monitor service runs one every few
    seconds - for AWX schedules where no monitor service runs, and to act at once after a change.
  - Every host is asked at once for its running domains, each answer bounded by O(probe_timeout). A host that
    does not answer is V(Connecting); still silent O(grace) seconds later, V(NonResponsive), and the VMs recorded
    on it V(Unknown). A host that answers again is V(Up) (or V(NonOperational)) again. Each transition is an
    event (M(virtplane.kvm.event_info)).
  - On each host that answers, the engine's view of its VMs is made true - a VM recorded there that the host no
    longer runs is V(Down) (an HA VM is restarted elsewhere); a VM's domain started behind the engine's back is
    recorded running there; a domain the engine does not manage is reported.
  - A V(NonResponsive) host that holds VMs is fenced by its agent
    (M(virtplane.kvm.host) O(virtplane.kvm.host#module:fence)), powered off and confirmed off; then its HA
    VMs restart on other hosts through the scheduler, the higher priority first, and its other VMs are
    V(Down) with the reason.
  - A host that cannot be fenced is not presumed dead. Its HA VMs with disks on shared storage under storage
    leases are tried elsewhere, and the lock manager refuses them as long as the host holds the leases, for up
    to O(lease_wait) seconds; its other VMs wait.
  - One pass runs at a time, whoever runs it (the monitor service or this module); a pass waits up to
    O(wait_timeout) seconds for the one under way.
  - A pass records what the hosts say as it asks them, so the module does not run in check mode.
options:
  rounds:
    description:
      - How many passes, O(grace) seconds apart; two passes take a host that stopped answering to V(NonResponsive).
    type: int
    default: 1
  grace:
    description:
      - Seconds a host may stay silent as V(Connecting) before it is V(NonResponsive). V(0) makes a silent host
        V(NonResponsive) in the same pass.
    type: int
    default: 4
  probe_timeout:
    description: Seconds each host has to answer (1-120).
    type: int
    default: 5
  lease_wait:
    description:
      - Seconds an HA VM of a host that could not be fenced waits for its disks' storage leases before its restart
        is given up (0-3600).
    type: int
    default: 300
  wait_timeout:
    description: Seconds to wait for a pass under way to end (0-3600).
    type: int
    default: 60
extends_documentation_fragment:
  - virtplane.kvm.engine
attributes:
  check_mode:
    support: none
    description: A pass records what the hosts say as it asks them; in check mode the task is skipped.
  diff_mode:
    support: none
    description: What a pass saw change and did is in RV(actions).
  idempotent:
    support: partial
    description: A pass changes something only where the hosts differ from the engine's record.
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: One monitor pass on the engine host
  virtplane.kvm.reconcile:
  delegate_to: engine1

- name: Two rounds, so that a host that stopped answering is NonResponsive (and fenced) by the end
  virtplane.kvm.reconcile:
    rounds: 2
    grace: 3
"""

RETURN = r"""
reconcile:
  description: The hosts' statuses after the pass, and the VMs still waiting for an HA restart.
  returned: always
  type: dict
  sample:
    hosts: {hv1: NonResponsive, hv2: Up}
    restarting: []
    actions: ["host hv1: Connecting -> NonResponsive", "host hv1: fenced by its lab agent", "VM web: restarted on hv2"]
actions:
  description: What the passes saw change and did, in order.
  returned: always
  type: list
  elements: str
  sample: ["host hv1: Up -> Connecting (cannot list its domains: ...)"]
"""

from ansible_collections.virtplane.kvm.plugins.module_utils._module import EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _monitor


def main():
    module = EngineModule(dict(
        rounds=dict(type="int", default=1),
        grace=dict(type="int", default=4),
        probe_timeout=dict(type="int", default=5),
        lease_wait=dict(type="int", default=300),
        wait_timeout=dict(type="int", default=60),
    ), needs_libvirt=True, supports_check_mode=False)
    module.ensure(_monitor, _monitor.ReconcileSpec, "reconcile")


if __name__ == "__main__":
    main()
