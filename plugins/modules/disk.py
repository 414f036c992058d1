#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: disk
short_description: Manage disks (volumes) in virtplane storage domains
version_added: 0.1.0
description:
  - Create a disk in a storage domain (V(qcow2) thin or V(raw) preallocated), grow it, import it from an
    image file on the engine host, take over a LUN of an iSCSI domain, or remove it.
  - Disks only grow; a smaller O(size) is refused. A disk attached to a VM is not removed.
  - A disk never exists on storage without its engine record, nor the reverse. When any step fails the
    volume is deleted and nothing is recorded.
  - An import streams the file through the host's libvirt and reports its progress in RV(actions) and
    in the audit log.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.hosts
  - virtplane.kvm.hosts.wait
  - virtplane.kvm.attributes
options:
  name:
    description: Name of the disk, unique in its storage domain.
    type: str
    required: true
  storage_domain:
    description: Storage domain of the disk.
    type: str
    required: true
  datacenter:
    description: Data center of the storage domain, when its name exists in several.
    type: str
  size:
    description:
      - Virtual size with a unit, for example V(10GiB), V(512MiB), V(20GB) (decimal) or a number of bytes;
        a whole number of bytes, at most 1 PiB.
      - Required to create a disk unless O(source) is given (then it defaults to the image's virtual size).
        A larger value grows the disk; a smaller one is refused. The disk of a running VM grows through
        its QEMU, so the guest sees the new size at once.
    type: str
  format:
    description:
      - V(qcow2) is thin (storage is allocated as the guest writes), V(raw) is allocated in full when created.
      - Defaults to V(qcow2), or to the format of O(source). The format of a disk cannot change.
    type: str
    choices: [qcow2, raw]
  source:
    description:
      - Path of an image file on the engine host to import when the disk is created (ignored afterwards).
        Its format (qcow2 or raw) is read from the file. Only a regular file is taken, never a device,
        a FIFO or a file of C(/proc), C(/sys), C(/dev) or C(/run).
    type: str
  lun:
    description:
      - For an V(iscsi) storage domain, the number of the target's LUN this disk is. libvirt cannot create
        volumes on an iSCSI target, so that is the only way to have a disk there. 0 to 16383.
    type: int
  vm:
    description:
      - Attach the disk to this VM (recorded in the engine). When the VM runs, the disk is plugged into the
        guest at once; if the guest refuses, nothing is recorded. A disk attached to another VM is refused.
    type: str
  bus:
    description: Bus of the disk in the VM when it is attached.
    type: str
    choices: [virtio, scsi, sata]
    default: virtio
  bootable:
    description: Whether the VM boots from this disk.
    type: bool
    default: false
  state:
    description:
      - V(present) creates (and with O(vm) attaches) the disk; V(detached) takes it off its VM (unplugged
        from the running guest) and keeps it; V(absent) removes it (refused while attached).
    type: str
    choices: [present, detached, absent]
    default: present
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: A 10 GiB thin disk
  virtplane.kvm.disk:
    name: web01-data
    storage_domain: shared
    size: 10GiB

- name: Grow it
  virtplane.kvm.disk:
    name: web01-data
    storage_domain: shared
    size: 20GiB

- name: Import a cloud image
  virtplane.kvm.disk:
    name: debian12-base
    storage_domain: shared
    source: /srv/images/debian-12-genericcloud-amd64.qcow2

- name: Attach it to a VM (plugged in at once if the VM runs)
  virtplane.kvm.disk:
    name: web01-data
    storage_domain: shared
    vm: web01

- name: LUN 1 of an iSCSI domain as a disk
  virtplane.kvm.disk:
    name: db01-data
    storage_domain: san1
    lun: 1
"""

RETURN = r"""
disk:
  description: The disk after the change (predicted in check mode); empty after removal.
  returned: always
  type: dict
  sample:
    name: web01-data
    storage_domain: shared
    datacenter: dc1
    format: qcow2
    size_bytes: 21474836480
    size: 20 GiB
    preallocated: false
    volume_name: web01-data.qcow2
    lun: null
    status: ok
    vm: null
actions:
  description: What was done (or would be done in check mode); an import lists its progress.
  returned: always
  type: list
  elements: str
  sample: ["import /srv/images/base.qcow2 (312 MiB)", "progress 10%", "progress 100%"]
"""

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
from ansible_collections.virtplane.kvm.plugins.module_utils._module import TIMEOUT_OPTIONS, WAIT_OPTIONS, EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _disk


def main():
    module = EngineModule(dict(
        name=dict(type="str", required=True),
        storage_domain=dict(type="str", required=True),
        datacenter=dict(type="str"),
        size=dict(type="str"),
        format=dict(type="str", choices=list(_choices.DISK_FORMATS)),
        source=dict(type="str"),
        lun=dict(type="int"),
        vm=dict(type="str"),
        bus=dict(type="str", choices=list(_choices.DISK_BUSES), default="virtio"),
        bootable=dict(type="bool", default=False),
        state=dict(type="str", choices=list(_choices.DISK_STATES), default="present"),
        **TIMEOUT_OPTIONS,
        **WAIT_OPTIONS,
    ), needs_libvirt=True, supports_check_mode=True, mutually_exclusive=[("lun", "source"), ("lun", "size")])
    module.ensure(_disk, _disk.DiskSpec, "disk")


if __name__ == "__main__":
    main()
