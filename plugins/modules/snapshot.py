#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: snapshot
short_description: Take, revert to and delete snapshots of virtplane VMs
version_added: 0.4.0
description:
  - A snapshot is an internal qcow2 snapshot of every disk of the VM, kept inside the disks' images on their
    storage domain, so it follows the VM to whichever host runs it.
  - "Of a running VM it holds the memory and the devices' state with the disks, all at one instant (QEMU pauses the
    guest while it writes them): the whole VM, consistent as if time had stopped. Reverting a running VM to it
    brings the guest back to that instant, running; QEMU is restarted from the snapshot, and the VM stays on its
    host."
  - "Of a stopped VM it holds the disks as the guest left them when it powered off. Reverting restores the disks;
    the VM stays stopped."
  - Reverting discards what the disks (and the guest) have had since; other snapshots of the VM stay as they are.
    Deleting a snapshot frees its data in the images and does not touch what the VM has now.
  - "Refused, before anything changes, with the reason: a VM that is neither Up nor Down (suspended, starting,
    stopping ...); a VM with a raw disk or an iSCSI LUN (internal snapshots live in qcow2 images, and the engine
    takes no external snapshots since libvirt 9.0 cannot revert to one); a snapshot without memory of a running VM
    (libvirt 9.0 takes internal snapshots of a running VM only with its memory); a revert of a running VM to a
    snapshot without memory (libvirt 9.0 would have to power the guest off, so stop it first); a revert after a
    disk was attached to or detached from the VM."
  - The VM is reserved while the work is done (it does not start, stop or change disks meanwhile). A run that
    dies half-way leaves the snapshot marked C(broken) for the next run to delete.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.hosts
  - virtplane.kvm.hosts.wait
  - virtplane.kvm.attributes
options:
  vm:
    description: The VM.
    type: str
    required: true
  name:
    description: Name of the snapshot, unique among the VM's.
    type: str
    required: true
  description:
    description: Free text; the only thing of an existing snapshot that changes.
    type: str
  memory:
    description:
      - Whether the snapshot holds the guest's memory. Omitted, it does when the VM runs and does not when it is
        stopped, the only combinations libvirt 9.0 offers for internal snapshots; given, it must agree.
    type: bool
  state:
    description:
      - V(present) takes the snapshot if the VM has none of that name (later runs change nothing).
      - V(reverted) brings the VM back to the snapshot, every time it runs (changed).
      - V(absent) deletes it.
    type: str
    choices: [present, absent, reverted]
    default: present
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: Before the upgrade, the running VM with its memory
  virtplane.kvm.snapshot:
    vm: web01
    name: before-upgrade
    description: the state before the package upgrade

- name: The upgrade went wrong - back to that instant
  virtplane.kvm.snapshot:
    vm: web01
    name: before-upgrade
    state: reverted

- name: It went well - free the snapshot's space
  virtplane.kvm.snapshot:
    vm: web01
    name: before-upgrade
    state: absent
"""

RETURN = r"""
snapshot:
  description: The snapshot (predicted in check mode); empty after deletion.
  returned: always
  type: dict
  sample:
    name: before-upgrade
    vm: web01
    kind: internal
    memory: true
    vm_status: Up
    consistency: "the whole VM at one instant: memory, devices and disks (the guest is paused while they are written)"
    state: ok
    disks: [{name: web01-root, storage_domain: shared, target: vda}]
    memory_mib: 2048
    vcpus: 2
    host: hv1
actions:
  description: What was done (or would be done in check mode).
  returned: always
  type: list
  elements: str
  sample: ["take snapshot before-upgrade on hv1, with its memory"]
"""

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
from ansible_collections.virtplane.kvm.plugins.module_utils._module import TIMEOUT_OPTIONS, WAIT_OPTIONS, EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _snapshot


def main():
    module = EngineModule(dict(
        vm=dict(type="str", required=True),
        name=dict(type="str", required=True),
        description=dict(type="str"),
        memory=dict(type="bool"),
        state=dict(type="str", choices=list(_choices.SNAPSHOT_STATES), default="present"),
        **TIMEOUT_OPTIONS,
        **WAIT_OPTIONS,
    ), needs_libvirt=True, supports_check_mode=True)
    module.ensure(_snapshot, _snapshot.SnapshotSpec, "snapshot")


if __name__ == "__main__":
    main()
