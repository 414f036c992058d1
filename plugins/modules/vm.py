#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vm
short_description: Define, start, stop and remove virtplane VMs
version_added: 0.4.0
description:
  - A VM is a definition in the engine database and, while it runs, a transient libvirt domain on exactly
    one host of its cluster. A stopped VM exists only in the engine, so it can start on any host.
  - Starting places the VM on a host of its cluster that is Up, has its logical networks and storage
    domains and has room for its memory and vCPUs (with the cluster's overcommit). The reservation is
    written under the cluster's lock before the domain is made; when the start fails, the domain, its
    seed and the reservation are taken back and the VM is recorded Down with the reason.
  - A change to a running VM is applied live where libvirt can (memory up to O(memory_max), vCPUs up to
    O(cpu.max_vcpus), a NIC or disk plugged or unplugged). Anything else is reported in
    RV(pending_restart) and applied at the next start; the VM is never restarted on its own.
  - Stopping presses the guest's ACPI power button and waits O(stop_timeout) seconds; only with
    O(force=true) is a guest that has not powered off by then powered off.
  - O(vms) reconciles a list of VMs in one call, reading them in bulk (one engine query, and one libvirt
    call per host that runs some of them); a VM that is already as asked costs nothing more.
  - Check mode and C(--diff) report the changes field by field; a console password shows only as set.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.hosts
  - virtplane.kvm.hosts.wait
  - virtplane.kvm.attributes
options:
  name:
    description: Name of the VM, unique in the engine; also its libvirt domain's name.
    type: str
  cluster:
    description:
      - Cluster of the VM; required to create it. A stopped VM may move to another cluster.
    type: str
  description:
    description: Free text.
    type: str
  tags:
    description: Tags (names) for selecting VMs, for example with M(virtplane.kvm.vm_info).
    type: list
    elements: str
  vcpus:
    description:
      - Number of vCPUs, 1 to 512. With O(cpu) it must agree with sockets x cores x threads.
      - Raised or lowered live on a running VM within O(cpu.max_vcpus).
    type: int
  cpu:
    description: CPU topology and the most vCPUs a running VM may be given (hot-plug).
    type: dict
    suboptions:
      sockets:
        description: Sockets.
        type: int
      cores:
        description: Cores per socket.
        type: int
      threads:
        description: Threads per core.
        type: int
      max_vcpus:
        description:
          - The most vCPUs the VM can have while it runs, a whole number of sockets; defaults to O(vcpus).
        type: int
  memory:
    description:
      - Memory with a unit, for example V(512MiB) or V(2GiB); at least 16 MiB, and no more than the largest
        host of the cluster has. Required to create a VM.
      - Changed live on a running VM within O(memory_max) (the balloon).
    type: str
  memory_max:
    description: The most memory a running VM can be given without a restart; defaults to O(memory).
    type: str
  disks:
    description:
      - The disks of the VM, in order. A disk that does not exist is created in its storage domain with
        O(disks[].size); an existing one is attached (refused when another VM has it). A disk left out of
        the list is detached (and kept). On a running VM disks are plugged and unplugged live.
      - Omit to leave the disks as they are; V([]) detaches them all.
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of the disk in its storage domain.
        type: str
        required: true
      storage_domain:
        description: Storage domain of the disk.
        type: str
        required: true
      size:
        description: Size with a unit, to create the disk or grow it (see M(virtplane.kvm.disk)).
        type: str
      format:
        description: Format of a new disk.
        type: str
        choices: [qcow2, raw]
      bus:
        description: Bus of the disk in the guest.
        type: str
        choices: [virtio, scsi, sata]
        default: virtio
      bootable:
        description: Whether the VM boots from this disk (in the order of the list).
        type: bool
        default: false
  nics:
    description:
      - The NICs of the VM. Omit to leave them as they are; V([]) removes them all.
    type: list
    elements: dict
    suboptions:
      name:
        description: Name of the NIC in the VM; defaults to V(nic1), V(nic2) ... by position.
        type: str
      network:
        description: A logical network of the VM's data center.
        type: str
        required: true
      model:
        description: Device model.
        type: str
        choices: [virtio, e1000, e1000e, rtl8139]
        default: virtio
      mac:
        description:
          - MAC address; a unicast address no other NIC of the engine has. When omitted, a free address of
            the data center's MAC pool is taken once and kept.
        type: str
  boot:
    description: How the VM boots.
    type: dict
    suboptions:
      devices:
        description: Boot devices in order when the VM boots from its devices; V([hd]) by default.
        type: list
        elements: str
        choices: [hd, cdrom, network]
      kernel:
        description: Path of a kernel on the host to boot directly.
        type: str
      initrd:
        description: Path of an initramfs on the host, with O(boot.kernel).
        type: str
      cmdline:
        description: Kernel command line, with O(boot.kernel); one line of at most 2048 characters.
        type: str
  cloud_init:
    description:
      - Documents for cloud-init's NoCloud data source. At each start the engine builds a seed ISO
        (volume label C(cidata)) from them, writes it to the host, attaches it as a CD-ROM, and removes it
        when the VM stops. C(instance-id) defaults to the VM's id and C(local-hostname) to its name.
      - Each document is YAML text or a mapping; text that is not valid YAML is refused (a user-data
        script starting with C(#!) is taken as it is).
    type: dict
    suboptions:
      user_data:
        description: The user-data document (a mapping is written as C(#cloud-config)).
        type: raw
      meta_data:
        description: The meta-data document, a mapping.
        type: raw
      network_config:
        description: The network-config document.
        type: raw
  console:
    description: A graphical console. While the VM runs, C(console) in RV(vm) says how to connect.
    type: dict
    suboptions:
      type:
        description: V(none) for no graphical console.
        type: str
        choices: [vnc, spice, none]
        default: vnc
      listen:
        description: Address the console listens on, on the host.
        type: str
        default: 127.0.0.1
      password:
        description: Password of the console; at most 8 characters for VNC. Never shown in results.
        type: str
  serial_console:
    description:
      - A serial console whose output is logged on the host, under C(/var/lib/virtplane/local); the engine
        reads it through libvirt (M(virtplane.kvm.vm_info) with O(virtplane.kvm.vm_info#module:console_log=true)).
    type: bool
  ha:
    description:
      - High availability. When the VM's host dies and is fenced (the engine's monitor,
        M(virtplane.kvm.reconcile)), the VM is started again on another host the scheduler picks
        (V(RestartingHA) meanwhile), the higher O(ha.priority) first, retried with backoff; when the VM dies or
        is destroyed outside the engine on a host that answers, it is started again too. A VM that is not HA is
        recorded V(Down) with the reason instead.
      - A host that cannot be fenced is not presumed dead; the VM is then started elsewhere only once its disks'
        storage leases are free (see M(virtplane.kvm.host) O(virtplane.kvm.host#module:storage_leases)), never
        twice. A VM pinned (O(host)) to its failed host alone stays waiting.
    type: dict
    suboptions:
      enabled:
        description: Whether the VM is highly available.
        type: bool
        default: true
      priority:
        description: Restart order, 0 to 100 (higher first).
        type: int
        default: 0
  host:
    description: Pin the VM to these hosts of its cluster (it starts on no other).
    type: list
    elements: str
  state:
    description:
      - V(present) defines the VM (or changes its definition) and leaves it running or not as it is; a new VM
        is not started.
      - V(running) and V(stopped) also start or stop it; V(restarted) stops it (when it runs) and starts it
        again, which applies what was pending; V(absent) removes it with its disks (see O(remove_disks)),
        a running VM only with O(force=true).
      - V(suspended) saves the running guest's memory to a file on its host (the domain ends, the host's
        memory is free again); V(running) resumes it on that host. Stopping a suspended VM discards its
        memory, so it needs O(force=true).
    type: str
    choices: [present, running, stopped, suspended, restarted, absent]
    default: present
  force:
    description:
      - Power off a guest that has not shut down within O(stop_timeout), and allow removing a running VM
        (it is powered off first).
    type: bool
    default: false
  stop_timeout:
    description: Seconds to wait for the guest to power off after the ACPI power button, 1 to 3600.
    type: int
    default: 120
  remove_disks:
    description: With O(state=absent), remove the VM's disks too (else they are detached and kept).
    type: bool
    default: true
  template:
    description:
      - Make the VM from this template (M(virtplane.kvm.template)) when it is created. Its definition is the
        template's where the options above say nothing, and it gets a clone of each template disk, named
        C(<vm>-<disk of the source VM>), kept whether O(disks) lists it or not. Ignored afterwards; another
        template for an existing VM is refused.
    type: str
  clone:
    description:
      - How the template's disks are cloned - V(thin), a qcow2 volume whose backing file is the template's disk
        (in its storage domain; the template then stays while the VM has it), or V(full), a copy.
    type: str
    choices: [thin, full]
    default: thin
  vms:
    description:
      - Many VMs in one call, each a mapping of the options above (O(name) to O(remove_disks)); they are
        read in bulk and applied in order. Mutually exclusive with O(name).
    type: list
    elements: dict
    suboptions:
        name:
          description: Name of the VM, unique in the engine; also its libvirt domain's name.
          type: str
        cluster:
          description:
            - Cluster of the VM; required to create it. A stopped VM may move to another cluster.
          type: str
        description:
          description: Free text.
          type: str
        tags:
          description: Tags (names) for selecting VMs, for example with M(virtplane.kvm.vm_info).
          type: list
          elements: str
        vcpus:
          description:
            - Number of vCPUs, 1 to 512. With O(cpu) it must agree with sockets x cores x threads.
            - Raised or lowered live on a running VM within O(cpu.max_vcpus).
          type: int
        cpu:
          description: CPU topology and the most vCPUs a running VM may be given (hot-plug).
          type: dict
          suboptions:
            sockets:
              description: Sockets.
              type: int
            cores:
              description: Cores per socket.
              type: int
            threads:
              description: Threads per core.
              type: int
            max_vcpus:
              description:
                - The most vCPUs the VM can have while it runs, a whole number of sockets; defaults to O(vcpus).
              type: int
        memory:
          description:
            - Memory with a unit, for example V(512MiB) or V(2GiB); at least 16 MiB, and no more than the largest
              host of the cluster has. Required to create a VM.
            - Changed live on a running VM within O(memory_max) (the balloon).
          type: str
        memory_max:
          description: The most memory a running VM can be given without a restart; defaults to O(memory).
          type: str
        disks:
          description:
            - The disks of the VM, in order. A disk that does not exist is created in its storage domain with
              O(disks[].size); an existing one is attached (refused when another VM has it). A disk left out of
              the list is detached (and kept). On a running VM disks are plugged and unplugged live.
            - Omit to leave the disks as they are; V([]) detaches them all.
          type: list
          elements: dict
          suboptions:
            name:
              description: Name of the disk in its storage domain.
              type: str
              required: true
            storage_domain:
              description: Storage domain of the disk.
              type: str
              required: true
            size:
              description: Size with a unit, to create the disk or grow it (see M(virtplane.kvm.disk)).
              type: str
            format:
              description: Format of a new disk.
              type: str
              choices: [qcow2, raw]
            bus:
              description: Bus of the disk in the guest.
              type: str
              choices: [virtio, scsi, sata]
              default: virtio
            bootable:
              description: Whether the VM boots from this disk (in the order of the list).
              type: bool
              default: false
        nics:
          description:
            - The NICs of the VM. Omit to leave them as they are; V([]) removes them all.
          type: list
          elements: dict
          suboptions:
            name:
              description: Name of the NIC in the VM; defaults to V(nic1), V(nic2) ... by position.
              type: str
            network:
              description: A logical network of the VM's data center.
              type: str
              required: true
            model:
              description: Device model.
              type: str
              choices: [virtio, e1000, e1000e, rtl8139]
              default: virtio
            mac:
              description:
                - MAC address; a unicast address no other NIC of the engine has. When omitted, a free address of
                  the data center's MAC pool is taken once and kept.
              type: str
        boot:
          description: How the VM boots.
          type: dict
          suboptions:
            devices:
              description: Boot devices in order when the VM boots from its devices; V([hd]) by default.
              type: list
              elements: str
              choices: [hd, cdrom, network]
            kernel:
              description: Path of a kernel on the host to boot directly.
              type: str
            initrd:
              description: Path of an initramfs on the host, with O(boot.kernel).
              type: str
            cmdline:
              description: Kernel command line, with O(boot.kernel); one line of at most 2048 characters.
              type: str
        cloud_init:
          description:
            - Documents for cloud-init's NoCloud data source. At each start the engine builds a seed ISO
              (volume label C(cidata)) from them, writes it to the host, attaches it as a CD-ROM, and removes it
              when the VM stops. C(instance-id) defaults to the VM's id and C(local-hostname) to its name.
            - Each document is YAML text or a mapping; text that is not valid YAML is refused (a user-data
              script starting with C(#!) is taken as it is).
          type: dict
          suboptions:
            user_data:
              description: The user-data document (a mapping is written as C(#cloud-config)).
              type: raw
            meta_data:
              description: The meta-data document, a mapping.
              type: raw
            network_config:
              description: The network-config document.
              type: raw
        console:
          description: A graphical console. While the VM runs, C(console) in RV(vm) says how to connect.
          type: dict
          suboptions:
            type:
              description: V(none) for no graphical console.
              type: str
              choices: [vnc, spice, none]
              default: vnc
            listen:
              description: Address the console listens on, on the host.
              type: str
              default: 127.0.0.1
            password:
              description: Password of the console; at most 8 characters for VNC. Never shown in results.
              type: str
        serial_console:
          description:
            - A serial console whose output is logged on the host, under C(/var/lib/virtplane/local); the engine
              reads it through libvirt (M(virtplane.kvm.vm_info) with O(virtplane.kvm.vm_info#module:console_log=true)).
          type: bool
        ha:
          description:
            - High availability. When the VM's host dies and is fenced (the engine's monitor,
              M(virtplane.kvm.reconcile)), the VM is started again on another host the scheduler picks
              (V(RestartingHA) meanwhile), the higher O(ha.priority) first, retried with backoff; when the VM
              dies or is destroyed outside the engine on a host that answers, it is started again too. A VM that
              is not HA is recorded V(Down) with the reason instead.
            - A host that cannot be fenced is not presumed dead; the VM is then started elsewhere only once its
              disks' storage leases are free (see M(virtplane.kvm.host)
              O(virtplane.kvm.host#module:storage_leases)), never twice. A VM pinned (O(host)) to its failed
              host alone stays waiting.
          type: dict
          suboptions:
            enabled:
              description: Whether the VM is highly available.
              type: bool
              default: true
            priority:
              description: Restart order, 0 to 100 (higher first).
              type: int
              default: 0
        host:
          description: Pin the VM to these hosts of its cluster (it starts on no other).
          type: list
          elements: str
        state:
          description:
            - V(present) defines the VM (or changes its definition) and leaves it running or not as it is; a new VM
              is not started.
            - V(running) and V(stopped) also start or stop it; V(restarted) stops it (when it runs) and starts it
              again, which applies what was pending; V(absent) removes it with its disks (see O(remove_disks)),
              a running VM only with O(force=true).
            - V(suspended) saves the running guest's memory to a file on its host (the domain ends, the host's
              memory is free again); V(running) resumes it on that host. Stopping a suspended VM discards its
              memory, so it needs O(force=true).
          type: str
          choices: [present, running, stopped, suspended, restarted, absent]
          default: present
        force:
          description:
            - Power off a guest that has not shut down within O(stop_timeout), and allow removing a running VM
              (it is powered off first).
          type: bool
          default: false
        stop_timeout:
          description: Seconds to wait for the guest to power off after the ACPI power button, 1 to 3600.
          type: int
          default: 120
        remove_disks:
          description: With O(state=absent), remove the VM's disks too (else they are detached and kept).
          type: bool
          default: true
        template:
          description:
            - Make the VM from this template (M(virtplane.kvm.template)) when it is created. Its definition is the
              template's where the options above say nothing, and it gets a clone of each template disk, named
              C(<vm>-<disk of the source VM>), kept whether O(disks) lists it or not. Ignored afterwards; another
              template for an existing VM is refused.
          type: str
        clone:
          description:
            - How the template's disks are cloned - V(thin), a qcow2 volume whose backing file is the template's disk
              (in its storage domain; the template then stays while the VM has it), or V(full), a copy.
          type: str
          choices: [thin, full]
          default: thin
notes:
  - The lab guest image powers off on the ACPI power button and prints the NoCloud seed's C(instance-id)
    and C(local-hostname) on its serial console, which is how graceful stops and cloud-init are tested.
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: A VM with a new disk and a NIC, running
  virtplane.kvm.vm:
    name: web01
    cluster: prod
    memory: 2GiB
    memory_max: 4GiB
    vcpus: 2
    cpu: {sockets: 2, cores: 1, threads: 1, max_vcpus: 4}
    disks:
      - {name: web01-root, storage_domain: shared, size: 20GiB, bootable: true}
    nics:
      - {network: app}
    cloud_init:
      user_data:
        users: [{name: admin, ssh_authorized_keys: ["ssh-ed25519 AAAA..."]}]
    console: {type: vnc, password: "{{ vault_console_password }}"}
    state: running

- name: More memory while it runs (within memory_max)
  virtplane.kvm.vm:
    name: web01
    memory: 3GiB

- name: Stop it, powering it off if it has not shut down in a minute
  virtplane.kvm.vm:
    name: web01
    state: stopped
    stop_timeout: 60
    force: true

- name: Many VMs at once
  virtplane.kvm.vm:
    vms: "{{ my_vms }}"
"""

RETURN = r"""
vm:
  description: The VM after the change (predicted in check mode); empty after removal or with O(vms).
  returned: always
  type: dict
  sample:
    name: web01
    cluster: prod
    status: Up
    host: hv1
    uptime_s: 42
    vcpus: 2
    memory: 2 GiB
    nics: [{name: nic1, network: app, model: virtio, mac: "56:6f:a3:00:00:01"}]
    disks: [{name: web01-root, storage_domain: shared, bus: virtio, bootable: true}]
    console: {type: vnc, host: 10.0.0.11, port: 5900, url: "vnc://10.0.0.11:5900",
              serial_log: "hv1:/var/lib/virtplane/local/web01-console.log"}
    pending_restart: []
vms:
  description: With O(vms), each VM after the change, with its own C(changed) and C(actions).
  returned: when O(vms) is given
  type: list
  elements: dict
pending_restart:
  description: Fields of the running VM's definition that it takes only at its next start.
  returned: always
  type: list
  elements: str
  sample: [max_memory_mib, boot]
actions:
  description: What was done (or would be done in check mode).
  returned: always
  type: list
  elements: str
  sample: ["create", "create qcow2 20 GiB", "attach as vda", "start on hv1"]
"""

from ansible_collections.virtplane.kvm.plugins.module_utils import _options
from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils._module import TIMEOUT_OPTIONS, WAIT_OPTIONS, EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _vm


def _spec(params, module_params):
    values = {field: params.get(field) for field in _vm.VmSpec.FIELDS}
    for field in ("timeout", "wait_timeout"):
        values[field] = module_params.get(field)
    return values


def main():
    module = EngineModule(dict(
        _options.VM,
        vms=dict(type="list", elements="dict", options=_options.VM),
        **TIMEOUT_OPTIONS,
        **WAIT_OPTIONS,
    ), needs_libvirt=True, supports_check_mode=True, mutually_exclusive=[("name", "vms")],
        required_one_of=[("name", "vms")])
    params = module.spec_params()
    bulk = params.get("vms") is not None
    items = params["vms"] if bulk else [params]

    def operation(engine):
        specs = []
        for index, item in enumerate(items):
            try:
                specs.append(_vm.VmSpec(**_spec(item, params)))
            except ValidationError as exc:
                if bulk:
                    raise ValidationError("vms[%d].%s" % (index, exc.field), exc.cause)
                raise
        return _vm.ensure_many(engine, specs, module.check_mode)

    outcomes = module.run(operation)
    if not bulk:
        outcome = outcomes[0]
        module.exit_outcome(outcome, "vm", pending_restart=(outcome.resource or {}).get("pending_restart", []))
    pairs = list(zip(outcomes, items))  # noqa: B905 - one outcome per item
    result = dict(changed=any(o.changed for o in outcomes), vm={}, pending_restart=[],
                  actions=["%s: %s" % (item.get("name"), action) for o, item in pairs for action in o.actions],
                  vms=[dict(o.resource or {"name": item.get("name")}, changed=o.changed, actions=o.actions)
                       for o, item in pairs])
    if module._diff:  # pylint: disable=protected-access
        result["diff"] = {"before": {item.get("name"): o.before for o, item in pairs if o.changed},
                          "after": {item.get("name"): o.after for o, item in pairs if o.changed}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
