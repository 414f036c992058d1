#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: storage_domain
short_description: Manage storage domains of a data center, realized as libvirt pools on its hosts
version_added: 0.1.0
description:
  - Define a storage domain once for a data center and attach it to clusters; the engine realizes it as
    a libvirt storage pool (named C(vp-<name>)) on every V(Up) host of those clusters and records each
    host's view of it (active, capacity, free space, error).
  - Before anything changes, every host is asked to start a transient copy of the pool. A host that
    cannot (a path that does not exist there, no NFS client, no LVM) stops the change with its name
    and libvirt's reason, and nothing is written to the engine or to any host.
  - In check mode only directory domains (V(dir), V(posixfs)) are probed that way, since mounting an NFS export,
    logging in to an iSCSI target or activating a volume group would change the host. For those types a
    host that cannot realize the domain is found by the real run, which then changes nothing.
  - A host that joins one of the clusters later, or comes back, gets the domain when the
    M(virtplane.kvm.host) module registers or checks it; a host that cannot realize it becomes V(NonOperational).
  - The type and the type's parameters cannot change in place (a pool's source and target are fixed while
    it holds disks); such a change is refused with the reason. Clusters, description and state can change.
  - A domain that still holds disks is not removed; the error lists them.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.hosts
  - virtplane.kvm.hosts.wait
  - virtplane.kvm.attributes
options:
  name:
    description: Name of the storage domain, unique in its data center.
    type: str
    required: true
  datacenter:
    description:
      - Data center of the domain. Required to create it; for other states it is needed only when the
        name exists in several data centers.
    type: str
  type:
    description:
      - V(dir) is a directory local to one host (O(host)); V(posixfs) a path every host of the clusters sees
        (a shared mount); V(nfs) a libvirt netfs pool each host mounts; V(logical) an LVM volume group;
        V(iscsi) the LUNs of an iSCSI target, used directly by QEMU (libvirt C(iscsi-direct), no kernel
        initiator); V(rbd) a Ceph RBD pool.
      - Required unless O(state=absent). The matching option (O(dir), O(posixfs), ...) gives its parameters.
    type: str
    choices: [dir, posixfs, nfs, logical, iscsi, rbd]
  clusters:
    description:
      - Clusters whose hosts use the domain. Defaults to the current ones, or every cluster of the data
        center when the domain is created. Hosts of a cluster removed from this list lose the pool (refused
        while running VMs there use its disks).
      - A V(dir) domain is used by its host's cluster only.
    type: list
    elements: str
  host:
    description: The host of a V(dir) domain. Required to create one.
    type: str
  description:
    description: Free text shown in reports.
    type: str
  dir:
    description: Parameters of a V(dir) domain.
    type: dict
    suboptions:
      path:
        description: Absolute path of an existing directory on O(host).
        type: str
        required: true
  posixfs:
    description: Parameters of a V(posixfs) domain.
    type: dict
    suboptions:
      path:
        description: Absolute path that exists, with the same content, on every host of the clusters.
        type: str
        required: true
  nfs:
    description: Parameters of an V(nfs) domain.
    type: dict
    suboptions:
      server:
        description: NFS server name or IPv4 address.
        type: str
        required: true
      export:
        description: Exported path on the server.
        type: str
        required: true
      path:
        description: Mount point on each host. Defaults to C(/var/lib/virtplane/mnt/<name>).
        type: str
  logical:
    description: Parameters of a V(logical) (LVM) domain.
    type: dict
    suboptions:
      volume_group:
        description: Name of the volume group.
        type: str
        required: true
      devices:
        description: Physical volumes of the group (informational for libvirt; the group must exist).
        type: list
        elements: str
  iscsi:
    description:
      - Parameters of an V(iscsi) domain. Its disks are the target's LUNs (M(virtplane.kvm.disk) with
        O(virtplane.kvm.disk#module:lun)); libvirt cannot create volumes on it.
    type: dict
    suboptions:
      portal:
        description: Portal as C(address) or C(address:port) (port 3260 by default).
        type: str
        required: true
      target:
        description: Target IQN, for example V(iqn.2026-11.com.example:storage).
        type: str
        required: true
      initiator_prefix:
        description:
          - Each host logs in as C(<initiator_prefix>:<host name>); the target's ACL must allow it.
          - Defaults to V(iqn.2026-11.dev.virtplane).
        type: str
  rbd:
    description: Parameters of an V(rbd) (Ceph) domain.
    type: dict
    suboptions:
      monitors:
        description: Ceph monitors as C(address) or C(address:port).
        type: list
        elements: str
        required: true
      pool:
        description: Name of the Ceph pool.
        type: str
        required: true
      user:
        description: Ceph user (cephx). Requires O(rbd.secret_uuid).
        type: str
      secret_uuid:
        description:
          - UUID of the libvirt secret, defined on every host, that holds the user's key. The key is
            referenced, never passed to or stored by the engine.
        type: str
  state:
    description:
      - V(present) realizes the domain and keeps its pools active; V(maintenance) keeps it defined but stops
        its pools (autostart off) on every host; V(absent) removes the pools and the domain.
    type: str
    choices: [present, absent, maintenance]
    default: present
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: A shared directory every host of cluster1 mounts
  virtplane.kvm.storage_domain:
    name: shared
    datacenter: dc1
    type: posixfs
    posixfs:
      path: /srv/virtplane/shared
    clusters: [cluster1]

- name: The LUNs of an iSCSI target, used by QEMU directly
  virtplane.kvm.storage_domain:
    name: san1
    datacenter: dc1
    type: iscsi
    iscsi:
      portal: 192.0.2.10:3260
      target: iqn.2026-11.com.example:san1

- name: Put a domain into maintenance
  virtplane.kvm.storage_domain:
    name: shared
    datacenter: dc1
    type: posixfs
    posixfs:
      path: /srv/virtplane/shared
    state: maintenance

- name: Remove it (refused while it holds disks)
  virtplane.kvm.storage_domain:
    name: shared
    state: absent
"""

RETURN = r"""
storage_domain:
  description: The domain after the change (predicted in check mode); empty after removal.
  returned: always
  type: dict
  sample:
    name: shared
    datacenter: dc1
    type: posixfs
    params: {path: /srv/virtplane/shared}
    clusters: [cluster1]
    state: active
    status: active
    missing_on: []
    hosts:
      - {host: hv1, pool_name: vp-shared, active: true, capacity_bytes: 53687091200,
         allocation_bytes: 1073741824, available_bytes: 52613349376, error: ""}
    disks: [web01-root]
actions:
  description: What was done (or would be done in check mode), per host.
  returned: always
  type: list
  elements: str
  sample: [create, "define pool on hv1", "define pool on hv2"]
"""

from ansible_collections.virtplane.kvm.plugins.module_utils import _options
from ansible_collections.virtplane.kvm.plugins.module_utils._module import TIMEOUT_OPTIONS, WAIT_OPTIONS, EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _storage


def main():
    module = EngineModule(dict(
        _options.STORAGE_DOMAIN,
        **TIMEOUT_OPTIONS,
        **WAIT_OPTIONS,
    ), needs_libvirt=True, supports_check_mode=True, **_options.STORAGE_DOMAIN_RULES)
    mismatch = _options.storage_type_mismatch(module.params)
    if mismatch:
        module.fail_json(msg=mismatch[1], field=mismatch[0])
    module.ensure(_storage, _storage.StorageDomainSpec, "storage_domain")


if __name__ == "__main__":
    main()
