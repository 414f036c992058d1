#!/usr/bin/python
# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: host
short_description: Register hypervisor hosts in the virtplane engine
version_added: 0.1.0
description:
  - Register a KVM host in a cluster, update it, check it, put it in maintenance and back, or remove it.
  - The engine connects to the host's libvirt and records what it reports, that is the CPU model,
    vendor and topology, memory, NUMA cells, libvirt version and the domain type its guests will
    use (V(kvm), or V(qemu) software emulation when KVM is not offered).
  - A host is V(Up) only when the engine reaches its libvirt. Registering a host whose libvirt does
    not answer fails and records nothing; for a registered host that stops answering, the status
    becomes V(NonResponsive) with the reason, and it is V(Up) again once it answers.
  - A host in V(Maintenance) stays there until O(state=active); a host with running VMs is not removed or
    moved.
  - Memory size, NUMA cells and the current CPU clock are refreshed on every run but do not count as a
    change, since they move with the machine (memory hot-add), not with its configuration.
  - Registering or checking a host also realizes the storage domains and logical networks of its cluster on
    it. A host that cannot realize one of them (or a required network) is V(NonOperational) with the reason,
    and V(Up) again once the cause is fixed and the host checked again (O(state=refreshed)).
  - The host's libvirt is read before anything is locked; the host is then reserved (a job with a heartbeat)
    while its pools and networks are changed, so other runs never wait behind a slow host.
extends_documentation_fragment:
  - virtplane.kvm.engine
  - virtplane.kvm.hosts
  - virtplane.kvm.hosts.wait
  - virtplane.kvm.attributes
options:
  name:
    description:
      - Name of the host in the engine, unique. Required unless O(hosts) is given.
    type: str
  cluster:
    description:
      - Cluster of the host. Required to register it; changing it moves the host (refused while VMs run on it).
    type: str
  libvirt_uri:
    description:
      - How the engine reaches the host's libvirt, for example V(qemu+tls://hv1.example.com/system)
        or V(qemu+ssh://root@hv1/system). Required to register the host.
      - Accepted are the C(qemu) driver at C(/system), locally or over the C(tcp), C(tls), C(ssh), C(libssh)
        and C(libssh2) transports, with the parameters C(pkipath) and C(no_verify) (tls), C(keyfile),
        C(known_hosts), C(no_verify), C(no_tty) (ssh) and C(sshauth), C(known_hosts_verify) (libssh).
        Parameters that point libvirt at another socket, program or URI (C(socket), C(command),
        C(netcat), C(name), C(proxy)) are refused.
      - A URI never carries a password; libvirt authenticates with TLS client certificates, SSH keys or SASL.
        A password typed into one is refused and masked in the task's output.
      - V(test:///default) or V(test:///path/to/node.xml) (libvirt's test driver) registers a simulated host,
        for trials and tests, only on an engine that allows it
        (O(virtplane.kvm.engine_database#module:allow_test_driver)).
      - Changing it for a registered host is refused, and the host keeps its URI, when libvirt does not
        answer there.
    type: str
  address:
    description:
      - Address of the host on the management network, a host name or an IP address.
        Defaults to the host part of O(libvirt_uri).
    type: str
  domain_type:
    description:
      - V(auto) uses KVM when the host offers it and software emulation (V(qemu)) otherwise.
      - V(kvm) or V(qemu) force one; a type the host does not offer is refused.
      - The setting is kept; when unset, the host keeps the one it has (V(auto) for a new host).
        The C(virtplane.kvm.hypervisor) role sets it from a boot probe.
    type: str
    choices: [auto, kvm, qemu]
  network_nic:
    description:
      - The host's NIC that carries bridge-mode logical networks (untagged, as VLAN sub-interfaces or as
        the underlay of VXLAN segments), for example V(eth1).
      - A host without one is V(NonOperational) while its cluster requires a bridge-mode network.
      - Changing it while VMs run on the host is refused, since their networks would move under them.
    type: str
  reserved_memory:
    description:
      - Memory the host keeps for itself (its system, libvirt, QEMU's own overhead), never given to VMs,
        as V(256MiB) or V(1GiB); the scheduler's memory filter counts the host's memory less this
        (oVirt's reserved host memory). V(0) reserves none.
      - When unset, the host keeps what it has (V(256MiB) for a new host).
      - Refused when it leaves the host no memory for VMs.
    type: str
  reserved_cpus:
    description:
      - CPU threads the host keeps for itself. vCPUs are counted against the host's CPUs less these,
        times the cluster's O(virtplane.kvm.cluster#module:cpu_overcommit_ratio).
      - When unset, the host keeps what it has (V(0) for a new host). Refused when it leaves no CPU.
    type: int
  schedulable_memory:
    description:
      - At most this much of the memory libvirt reports is scheduled (before O(reserved_memory) is taken
        off), for a host that shares its machine with others, as the lab's hosts do, or that keeps memory
        for something else. V(0) schedules all of it.
      - When unset, the host keeps what it has (V(0) for a new host).
      - Lowering it below what running VMs hold stops none of them; no VM starts there until they fit again.
    type: str
  schedulable_cpus:
    description:
      - At most this many of the CPU threads libvirt reports are scheduled (before O(reserved_cpus) are
        taken off). V(0) schedules all of them. When unset, the host keeps what it has (V(0) for a new host).
    type: int
  state:
    description:
      - V(present) registers or updates the host, refreshes its status and capabilities and realizes what
        its cluster needs (storage domains, networks) on it.
      - V(refreshed) checks a registered host as it is, and realizes what it lacks (a host that was
        NonResponsive or NonOperational is Up again once the cause is gone); it takes no settings.
      - V(maintenance) drains the host and puts it in V(Maintenance), where no VM is placed. Its running VMs
        live-migrate to the hosts the scheduler picks, HA VMs first (the higher HA priority first), then the
        larger, at most the cluster's O(virtplane.kvm.cluster#module:migration_max_parallel) at once, each
        under the cluster's O(virtplane.kvm.cluster#module:migration_policy), given 600 seconds, and recorded
        as a M(virtplane.kvm.vm_migrate) would. While it drains the host is V(PreparingForMaintenance).
      - A VM another run holds (starting, changing, migrating) is waited for, up to O(wait_timeout); one left
        by a run that died is recovered first.
      - Before anything moves - in check mode as in a real run - every VM is placed in turn on the cluster as it
        is, with the placements before it made. A VM that is not running (V(Paused), V(Unknown) ...), that is
        migrating, or that no other host can run (pinned there, no room elsewhere, an affinity group, a
        network or storage domain no other host has) blocks the maintenance, which is refused naming each
        blocking VM with why. Check mode lists the migrations the drain would make as things are now; the
        real run lets the scheduler choose each destination when its migration starts.
      - A drain that fails half-way (a migration that fails, a VM that arrives meanwhile) puts the host back
        as it was (V(Up), or V(NonOperational) if it lacks something its cluster needs); the VMs that moved
        stay where they went, and running the task again drains the rest.
        A host already in V(Maintenance) with nothing on it is not changed.
      - A host in maintenance stays there whether it answers or not (it may be switched off); its storage
        domains and networks are not realized meanwhile.
      - V(active) takes a host out of maintenance. It is checked as V(refreshed) does and is V(Up) (or
        V(NonOperational) or V(NonResponsive), with the reason) again. For a host that is not in maintenance
        it is the same as V(refreshed). VMs do not come back by themselves; see
        M(virtplane.kvm.cluster_balance).
      - V(fenced) powers the host off through its fence agent (O(fence)) and waits until the agent reports it
        off; the host is V(NonResponsive), recorded fenced, its HA VMs restart on other hosts (one monitor pass,
        as M(virtplane.kvm.reconcile) runs it) and its other VMs are V(Down) with the reason. Refused for a host
        without an agent that powers it off. A host its agent reports off that is recorded fenced is not
        changed. Check mode asks the agent for the host's power state and changes nothing.
      - V(refreshed), V(maintenance), V(active) and V(fenced) take no settings.
      - V(absent) removes the host from the engine.
    type: str
    choices: [present, refreshed, maintenance, active, fenced, absent]
    default: present
  fence:
    description:
      - How the engine fences the host when it stops answering (the monitor, M(virtplane.kvm.reconcile)) or when
        asked (O(state=fenced)). Omitted, the host keeps what it has.
      - Before anything is written, in check mode too, the agent must be able to run on the engine host and the
        power controller must answer a status query with the credentials given; otherwise the task fails with the
        agent's words, the password masked.
    type: dict
    suboptions:
      agent:
        description:
          - V(ipmilan) and V(redfish) run the fence-agents programs C(fence_ipmilan) and C(fence_redfish), which
            must be installed on the engine host (the C(virtplane.kvm.engine) role installs them); the options go
            to them on standard input, never on their command line (C(fence_ipmilan) hands the password on to
            C(ipmitool -P), which hides it from the process list where the system lets it).
          - V(lab) is the lab's power controller (Redfish's system power over HTTP), which kills the lab host's
            processes.
          - V(ssh) is a soft fence, libvirtd restarted over SSH with C(identity_file) in O(fence.options); it helps a
            host whose libvirtd hung but proves nothing, so no VM of the host is restarted elsewhere because of it.
          - V(none) removes the host's fencing.
        type: str
        choices: [ipmilan, redfish, ssh, lab, none]
        required: true
      address:
        description: The power controller's address (BMC, Redfish service, lab gateway), or the host's for V(ssh).
        type: str
      port:
        description: Its port; 623 (ipmilan), 443 (redfish), 3143 (lab), 22 (ssh) when omitted.
        type: int
      username:
        description: The user the agent logs in as.
        type: str
      password:
        description:
          - The agent's password. Kept in the engine database apart from the host's row, never shown in results,
            diffs, events or messages.
        type: str
      options:
        description:
          - V(ipmilan) takes C(lanplus) (default true), C(privlvl) (V(user), V(operator), V(administrator)) and
            C(cipher), the IPMI 2.0 cipher suite (0 to 17; one given spares a BMC that cannot list its suites the
            lookup); it needs C(ipmitool) on the engine host as well.
          - V(redfish) needs C(systems_uri), the host's system on the Redfish service (for example
            C(/redfish/v1/Systems/System.Embedded.1)), since C(fence_redfish) left to itself takes the service's
            last system, which need not be the host's. It takes C(ssl_insecure) too (the service's certificate
            is verified otherwise).
          - V(lab) takes C(system) (the lab host's name, the host's own by default); V(ssh) C(identity_file), a key
            file on the engine host.
        type: dict
  storage_leases:
    description:
      - Whether the host's libvirt takes a lease for each disk it opens (virtlockd, as the
        C(virtplane.kvm.hypervisor) role configures it, with its lockspace on shared storage). Where it does, an HA
        VM of a host that stops answering and cannot be fenced is tried on another host, and that host's lock
        manager refuses it for as long as the silent host still holds the disks - so it starts only once that
        host is really gone, and never twice.
    type: bool
  hosts:
    description:
      - Many hosts registered in one call, each a mapping of the options below; they are applied in order, each as
        O(state=present) (or V(refreshed), V(absent)) with the same options alone would be. Mutually exclusive with
        O(name). A fence agent is set with O(fence), one host at a time (the role C(virtplane.kvm.hypervisor) does).
    type: list
    elements: dict
    version_added: 0.6.0
    suboptions:
      name:
        description: Name of the host in the engine.
        type: str
        required: true
      cluster:
        description: Its cluster, as O(cluster).
        type: str
      libvirt_uri:
        description: How the engine reaches its libvirt, as O(libvirt_uri).
        type: str
      address:
        description: Its address, as O(address).
        type: str
      domain_type:
        description: As O(domain_type).
        type: str
        choices: [auto, kvm, qemu]
      network_nic:
        description: As O(network_nic).
        type: str
      reserved_memory:
        description: As O(reserved_memory).
        type: str
      reserved_cpus:
        description: As O(reserved_cpus).
        type: int
      schedulable_memory:
        description: As O(schedulable_memory).
        type: str
      schedulable_cpus:
        description: As O(schedulable_cpus).
        type: int
      state:
        description: V(present), V(refreshed) or V(absent), as O(state).
        type: str
        choices: [present, refreshed, absent]
        default: present
author:
  - virtplane.kvm maintainers (@virtplane)
"""

EXAMPLES = r"""
- name: Register every hypervisor of the inventory in the prod cluster
  virtplane.kvm.host:
    name: "{{ inventory_hostname }}"
    cluster: prod
    libvirt_uri: "qemu+tls://{{ ansible_host }}/system"
  delegate_to: "{{ groups['engine'][0] }}"

- name: Check a host again after its NFS mount was fixed; it is Up again once it has every domain
  virtplane.kvm.host:
    name: hv3
    state: refreshed
  delegate_to: engine1

- name: Drain hv2 for a kernel update (its VMs live-migrate elsewhere; refused, naming them, if some cannot)
  virtplane.kvm.host:
    name: hv2
    state: maintenance
  delegate_to: engine1

- name: Bring it back
  virtplane.kvm.host:
    name: hv2
    state: active
  delegate_to: engine1

- name: Fence hv3 through its BMC (IPMI), its disks under virtlockd leases
  virtplane.kvm.host:
    name: hv3
    cluster: prod
    libvirt_uri: qemu+tls://hv3.example.com/system
    fence:
      agent: ipmilan
      address: hv3-bmc.example.com
      username: fence
      password: "{{ vault_hv3_bmc_password }}"
    storage_leases: true
  delegate_to: engine1

- name: Power hv3 off now; its HA VMs restart elsewhere
  virtplane.kvm.host:
    name: hv3
    state: fenced
  delegate_to: engine1

- name: Remove a host that was decommissioned
  virtplane.kvm.host:
    name: hv7
    state: absent
  delegate_to: engine1
"""

RETURN = r"""
host:
  description: The host after the change (empty when removed).
  returned: always
  type: dict
  sample:
    name: hv1
    cluster: prod
    datacenter: paris
    address: hv1.example.com
    libvirt_uri: qemu+tls://hv1.example.com/system
    status: Up
    status_reason: ""
    domain_type_setting: auto
    hypervisor_type: QEMU
    domain_type: kvm
    libvirt_version: 9.0.0
    cpu_arch: x86_64
    cpu_model: Skylake-Client-IBRS
    cpu_models: [qemu64, Skylake-Client, Skylake-Client-IBRS]
    cpu_vendor: Intel
    cpu_sockets: 1
    cpu_cores: 4
    cpu_threads: 2
    cpu_count: 8
    cpu_mhz: 2400
    memory_mib: 31992
    reserved_memory_mib: 256
    reserved_cpus: 0
    schedulable_memory_mib: 0
    schedulable_cpus: 0
    capacity: {memory_mib: 31736, cpus: 8}
    numa_cells: [{id: 0, memory_mib: 31992, cpus: 8}]
    hardware_uuid: 4c4c4544-0042-3510-8052-b3c04f4e3232
    hostname: hv1.example.com
    fence: {agent: ipmilan, address: hv1-bmc.example.com, port: 623, username: fence, options: {}}
    storage_leases: true
    fenced_at: null
    unmanaged_domains: []
hosts:
  description: With O(hosts), each host after the change, in order, with C(changed) and its C(actions).
  returned: when O(hosts) is given
  type: list
  elements: dict
actions:
  description:
    - What was done (or would be done in check mode), status transitions included. With O(hosts), each prefixed
      with the host's name.
    - For O(state=maintenance), the migrations of the drain (in check mode with the destination the scheduler
      would choose as things are now) and the status change.
  returned: always
  type: list
  elements: str
  sample: [migrate VM web1 to hv3, migrate VM db1 to hv2, status Up -> Maintenance]
"""

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices, _options
from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils._module import TIMEOUT_OPTIONS, WAIT_OPTIONS, EngineModule
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _host, _maintenance


def main():
    module = EngineModule(dict(
        _options.HOST_SETTINGS,
        name=dict(type="str"),
        hosts=dict(type="list", elements="dict", options=_options.HOST_ITEM),
        state=dict(type="str", choices=list(_choices.HOST_STATES), default="present"),
        fence=dict(type="dict", options=dict(
            agent=dict(type="str", choices=list(_choices.FENCE_AGENTS), required=True),
            address=dict(type="str"),
            port=dict(type="int"),
            username=dict(type="str"),
            password=dict(type="str", no_log=True),
            options=dict(type="dict"),
        )),
        storage_leases=dict(type="bool"),
        **TIMEOUT_OPTIONS,
        **WAIT_OPTIONS,
    ), needs_libvirt=True, supports_check_mode=True, mutually_exclusive=[("name", "hosts")],
        required_one_of=[("name", "hosts")])
    if module.params["hosts"] is None:
        module.ensure(_maintenance, _host.HostSpec, "host")
    params = module.spec_params()
    items = params["hosts"]

    def operation(engine):
        specs = []
        for index, item in enumerate(items):
            values = dict(params, hosts=None, fence=None, storage_leases=None, **item)
            try:
                specs.append(_host.HostSpec.from_params(values))
            except ValidationError as exc:
                raise ValidationError("hosts[%d].%s" % (index, exc.field), exc.cause)
        return [_maintenance.ensure(engine, spec, module.check_mode) for spec in specs]

    outcomes = module.run(operation)
    pairs = list(zip(outcomes, items))  # noqa: B905 - one outcome per item
    result = dict(changed=any(o.changed for o in outcomes), host={},
                  actions=["%s: %s" % (item["name"], action) for o, item in pairs for action in o.actions],
                  hosts=[dict(o.resource or {"name": item["name"]}, changed=o.changed, actions=o.actions)
                         for o, item in pairs])
    if module._diff:  # pylint: disable=protected-access
        result["diff"] = {"before": {item["name"]: o.before for o, item in pairs if o.changed},
                          "after": {item["name"]: o.after for o, item in pairs if o.changed}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
