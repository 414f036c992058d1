# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every fixed set of values a module offers, in one place: argument specs and services use these.

The database keeps its own copies in its migrations (a migration's text never changes once
released); tests/unit/test_choices.py checks that each set here is one the database accepts.
"""

from __future__ import annotations

PRESENT_ABSENT = ("present", "absent")

DATACENTER_STORAGE_TYPES = ("shared", "local")

# CPU modes a cluster may name instead of a CPU model: the guest gets (a model of) its host's CPU
CPU_MODES = ("host-model", "host-passthrough")

SCHEDULING_POLICIES = ("none", "evenly_distributed", "power_saving", "vm_evenly_distributed")
MIGRATION_POLICIES = ("minimal_downtime", "post_copy", "suspend_workload", "legacy")

HOST_STATES = ("present", "refreshed", "maintenance", "active", "fenced", "absent")
# how a host is fenced: the fence-agents programs (fence_ipmilan, fence_redfish), an SSH soft fence (libvirtd
# restarted: the host recovers, it is not proven dead), the lab's power controller; none
FENCE_AGENTS = ("ipmilan", "redfish", "ssh", "lab", "none")
# what the monitor moves off a host that became NonOperational
RESILIENCE_POLICIES = ("migrate", "ha_only", "none")
HOST_DOMAIN_TYPES = ("auto", "kvm", "qemu")

STORAGE_TYPES = ("dir", "posixfs", "nfs", "logical", "iscsi", "rbd")
STORAGE_STATES = ("present", "maintenance", "absent")

DISK_FORMATS = ("qcow2", "raw")
DISK_BUSES = ("virtio", "scsi", "sata")
DISK_STATES = ("present", "detached", "absent")

NETWORK_MODES = ("bridge", "nat", "isolated")

VM_STATUSES = ("Down", "WaitForLaunch", "PoweringUp", "Up", "PoweringDown", "Paused", "Suspended",
               "MigratingFrom", "MigratingTo", "NotResponding", "RestartingHA", "Unknown")
VM_STATES = ("present", "running", "stopped", "suspended", "restarted", "absent")
VM_NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139")
VM_BOOT_DEVICES = ("hd", "cdrom", "network")
VM_CONSOLE_TYPES = ("vnc", "spice", "none")
VM_CLONE_MODES = ("thin", "full")
SNAPSHOT_STATES = ("present", "absent", "reverted")
AFFINITY_RULES = ("positive", "negative", "none")

EVENT_SEVERITIES = ("normal", "warning", "error")
JOB_STATUSES = ("running", "finished", "failed", "aborted")
OBJECT_TYPES = ("datacenter", "cluster", "host", "vm", "storage_domain", "logical_network", "disk", "template",
                "snapshot")

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

# host_state: compare a host with its record, or write the record
HOST_STATE_STATES = ("check", "record")
