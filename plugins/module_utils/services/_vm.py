# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""VMs: a definition in the engine, and while it runs a transient libvirt domain on exactly one host.

``ensure_many`` reconciles a list of VMs. It reads them in bulk — one engine query for every VM
of the list, one ``listAllDomains`` per host that the engine records as running one of them — and
compares each with its definition; a VM that already is as asked costs nothing more. The rest go
one by one through operations (``_operation``):

- the definition (the vm, vm_nic and vm_disk rows) is written under the data center's lock, which
  the disk and network services take too; a change to a running VM is applied live where libvirt
  can (memory within its maximum, vCPUs within theirs, a NIC or disk plugged or unplugged), and
  what it cannot take is the VM's ``pending_restart``, applied at its next start;
- a start places the VM (``scheduler._placement``) and writes the reservation — the host, the
  memory and vCPUs it holds there, a job — under the cluster's lock; the seed and the domain are
  made with no lock held; a short transaction confirms it ``Up``, or a failure destroys what was
  made and releases the reservation;
- a stop presses the ACPI power button and waits; only ``force`` powers the guest off.
"""

from __future__ import annotations

import hashlib
import secrets

try:
    import yaml
except ImportError:  # pragma: no cover - ansible-core depends on PyYAML
    yaml = None

from ansible_collections.virtplane.kvm.plugins.module_utils import _choices
from ansible_collections.virtplane.kvm.plugins.module_utils._errors import (
    ConflictError,
    HypervisorError,
    NotFoundError,
    ValidationError,
)
from ansible_collections.virtplane.kvm.plugins.module_utils._validation import (
    SYSTEM_TREES,
    parse_size,
    shown,
    validate_description,
    validate_name,
    validate_path,
    validate_range,
    validate_timeout,
)
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _clusters, _events, _jobs, _rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _hosts as host_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _snapshots as snapshot_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _templates as template_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _vms as vm_rows
from ansible_collections.virtplane.kvm.plugins.module_utils.engine._db import LOCK_CLUSTER, LOCK_DATACENTER
from ansible_collections.virtplane.kvm.plugins.module_utils.scheduler import _balancer, _placement
from ansible_collections.virtplane.kvm.plugins.module_utils.scheduler._policies import normalize_parameters
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _disk, _hosts, _operation, _placing
from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import Outcome, Spec, plain
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _domain, _network, _seed
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _snapshot as virt_snapshot
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _storage as virt_storage
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _vm as virt_vm

try:
    import netaddr
except ImportError:  # pragma: no cover - a declared requirement of the engine host
    netaddr = None

MIB = 1024 ** 2
MEMORY_MIN_MIB = 16
VCPUS_MAX = 512
NIC_MODELS = _choices.VM_NIC_MODELS
BOOT_DEVICES = _choices.VM_BOOT_DEVICES
CONSOLE_TYPES = _choices.VM_CONSOLE_TYPES
RUNNING = ("Up", "Paused", "PoweringUp", "PoweringDown")
# what a VM is when the engine cannot tell whether its domain runs (a host that did not answer while a
# start was taken back): it keeps its host and reservation, and only a stop, or its host's word, ends it
UNKNOWN = "Unknown"
# statuses with a domain that is (or may be) on a host
ON_HOST = RUNNING + (UNKNOWN, "WaitForLaunch")
CMDLINE_MAX = 2048
# where a kernel or initramfs to boot may not come from: libvirt would hand the file to QEMU (and relabel it
# for QEMU's user), so a path such as /etc/shadow would end up in guest memory
BOOT_REFUSED = tuple(t for t in SYSTEM_TREES if t != "/boot") + (
    "/root", "/home", "/var/lib/postgresql", "/var/lib/virtplane/local")
CLOUD_INIT_MAX = 65536
# what the running domain can take without a restart; every other field waits for the next start
LIVE_FIELDS = ("memory_mib", "vcpus", "nics")
RESTART_FIELDS = ("max_vcpus", "cpu", "max_memory_mib", "boot", "cloud_init", "console", "serial_console",
                  "console_password")
# the fields of the definition a running domain was made from: where they differ, it waits for a restart
DOMAIN_FIELDS = LIVE_FIELDS + RESTART_FIELDS


def _memory_mib(field, value):
    if isinstance(value, str) and value.strip() in ("0", "0MiB", "0GiB", "0B"):
        raise ValidationError(field, "%s is no memory: a VM has at least %d MiB" % (shown(value), MEMORY_MIN_MIB))
    size = parse_size(field, value)
    if size % MIB:
        raise ValidationError(field, "%s is not a whole number of MiB" % shown(value))
    if size // MIB < MEMORY_MIN_MIB:
        raise ValidationError(field, "%s is less than the %d MiB a VM needs" % (shown(value), MEMORY_MIN_MIB))
    return size // MIB


def _human_mib(mib):
    return "%d GiB" % (mib // 1024) if mib % 1024 == 0 else "%d MiB" % mib


def _yaml_document(field, value, script_allowed=False):
    """A cloud-init document as text: a mapping is written as YAML, text must parse as YAML."""
    if value is None:
        return None
    if isinstance(value, dict):
        text = yaml.safe_dump(value, default_flow_style=False, sort_keys=True)
        return ("#cloud-config\n" + text) if field.endswith("user_data") else text
    if not isinstance(value, str):
        raise ValidationError(field, "must be text or a mapping")
    if len(value) > CLOUD_INIT_MAX:
        raise ValidationError(field, "is %d characters long; at most %d are taken" % (len(value), CLOUD_INIT_MAX))
    if "\x00" in value:
        raise ValidationError(field, "contains a NUL character")
    if script_allowed and value.startswith("#!"):
        return value
    try:
        yaml.safe_load(value)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = " (line %d, column %d)" % (mark.line + 1, mark.column + 1) if mark else ""
        raise ValidationError(field, "is not valid YAML%s: %s" % (where, getattr(exc, "problem", None) or exc))
    return value


def _mac(field, value):
    if not isinstance(value, str) or not value.strip() == value:
        raise ValidationError(field, "%s is not a MAC address" % shown(value))
    try:
        eui = netaddr.EUI(value, version=48)
    except (netaddr.AddrFormatError, TypeError, ValueError):
        raise ValidationError(field, "%s is not a MAC address" % shown(value))
    octets = eui.words
    if all(o == 0xff for o in octets):
        raise ValidationError(field, "%s is the broadcast address, which no NIC may have" % shown(value))
    if octets[0] & 1:
        raise ValidationError(field, "%s is a multicast address, which no NIC may have" % shown(value))
    if all(o == 0 for o in octets):
        raise ValidationError(field, "%s is the all-zero address, which no NIC may have" % shown(value))
    return ":".join("%02x" % o for o in octets)


def _check_keys(field, value, allowed):
    if not isinstance(value, dict):
        raise ValidationError(field, "must be a mapping")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ValidationError(field, "has unknown keys %s (known: %s)" % (", ".join(unknown), ", ".join(allowed)))


class VmSpec(Spec):
    """One VM as asked: every field None is left as it is (a new VM takes its default)."""

    FIELDS = ("name", "cluster", "description", "tags", "vcpus", "cpu", "memory", "memory_max", "disks", "nics",
              "boot", "cloud_init", "console", "serial_console", "ha", "host", "state", "force", "stop_timeout",
              "timeout", "wait_timeout", "remove_disks", "template", "clone")

    def validate(self):
        validate_name("name", self.name)
        if self.cluster is not None:
            validate_name("cluster", self.cluster)
        validate_description("description", self.description)
        self.state = self.state or "present"
        if self.state not in _choices.VM_STATES:
            raise ValidationError("state", "%s is not one of %s" % (shown(self.state), ", ".join(_choices.VM_STATES)))
        self.force = bool(self.force)
        self.remove_disks = True if self.remove_disks is None else bool(self.remove_disks)
        self.timeout = 15 if self.timeout is None else self.timeout
        validate_timeout("timeout", self.timeout)
        self.stop_timeout = 120 if self.stop_timeout is None else self.stop_timeout
        validate_timeout("stop_timeout", self.stop_timeout)
        self.wait_timeout = 60 if self.wait_timeout is None else self.wait_timeout
        validate_range("wait_timeout", self.wait_timeout, 0, 3600, "seconds")
        if self.tags is not None:
            self.tags = sorted(set(validate_name("tags[%d]" % i, t) for i, t in enumerate(self.tags)))
        self._validate_cpu()
        self.memory_mib = _memory_mib("memory", self.memory) if self.memory is not None else None
        self.max_memory_mib = _memory_mib("memory_max", self.memory_max) if self.memory_max is not None else None
        if self.memory_mib and self.max_memory_mib and self.max_memory_mib < self.memory_mib:
            raise ValidationError("memory_max", "%s is less than memory %s" % (_human_mib(self.max_memory_mib),
                                                                               _human_mib(self.memory_mib)))
        self._validate_disks()
        self._validate_nics()
        self._validate_boot()
        self._validate_cloud_init()
        self._validate_console()
        if self.ha is not None:
            _check_keys("ha", self.ha, ("enabled", "priority"))
            validate_range("ha.priority", self.ha.get("priority"), 0, 100)
            self.ha = {"enabled": bool(self.ha.get("enabled", True)), "priority": self.ha.get("priority") or 0}
        if self.host is not None:
            self.host = sorted(set(validate_name("host[%d]" % i, h) for i, h in enumerate(self.host)))
        if self.template is not None:
            validate_name("template", self.template)
        self.clone = self.clone or "thin"
        if self.clone not in _choices.VM_CLONE_MODES:
            raise ValidationError("clone", "%s is not one of %s"
                                  % (shown(self.clone), ", ".join(_choices.VM_CLONE_MODES)))

    def _validate_cpu(self):
        """The CPU fields as given: ``topology`` only when sockets, cores or threads are named (then it sets the
        vCPU count), ``max_vcpus`` only when named; the rest is settled against the current definition."""
        validate_range("vcpus", self.vcpus, 1, VCPUS_MAX)
        self.topology = None
        self.max_vcpus = None
        if self.cpu is None:
            return
        _check_keys("cpu", self.cpu, ("sockets", "cores", "threads", "max_vcpus"))
        for key in ("sockets", "cores", "threads", "max_vcpus"):
            validate_range("cpu." + key, self.cpu.get(key), 1, VCPUS_MAX)
        self.max_vcpus = self.cpu.get("max_vcpus")
        if any(self.cpu.get(k) for k in ("sockets", "cores", "threads")):
            sockets, cores, threads = (self.cpu.get(k) or 1 for k in ("sockets", "cores", "threads"))
            product = sockets * cores * threads
            if product > VCPUS_MAX:
                raise ValidationError("cpu", "sockets %d x cores %d x threads %d = %d vCPUs, more than %d"
                                      % (sockets, cores, threads, product, VCPUS_MAX))
            if self.vcpus is not None and self.vcpus != product:
                raise ValidationError("vcpus", "%d disagrees with cpu: sockets %d x cores %d x threads %d = %d"
                                      % (self.vcpus, sockets, cores, threads, product))
            self.vcpus = product
            self.topology = {"cores": cores, "threads": threads}
        if self.max_vcpus is not None and self.vcpus is not None:
            _check_max_vcpus(self.max_vcpus, self.vcpus, self.topology or {"cores": 1, "threads": 1})

    def _validate_disks(self):
        if self.disks is None:
            return
        seen = set()
        for i, disk in enumerate(self.disks):
            field = "disks[%d]" % i
            _check_keys(field, disk, ("name", "storage_domain", "size", "format", "bus", "bootable"))
            validate_name(field + ".name", disk.get("name"))
            validate_name(field + ".storage_domain", disk.get("storage_domain"))
            if (disk["name"], disk["storage_domain"]) in seen:
                raise ValidationError(field, "disk '%s' of storage domain '%s' is listed twice"
                                      % (disk["name"], disk["storage_domain"]))
            seen.add((disk["name"], disk["storage_domain"]))
            if disk.get("size") is not None:
                parse_size(field + ".size", disk["size"])
            if disk.get("format") is not None and disk["format"] not in _choices.DISK_FORMATS:
                raise ValidationError(field + ".format", "%s is not one of %s"
                                      % (shown(disk["format"]), ", ".join(_choices.DISK_FORMATS)))
            if disk.get("bus", "virtio") not in _choices.DISK_BUSES:
                raise ValidationError(field + ".bus", "%s is not one of %s"
                                      % (shown(disk["bus"]), ", ".join(_choices.DISK_BUSES)))

    def _validate_nics(self):
        if self.nics is None:
            return
        names, macs, nics = set(), {}, []
        for i, nic in enumerate(self.nics):
            field = "nics[%d]" % i
            _check_keys(field, nic, ("name", "network", "model", "mac"))
            name = validate_name(field + ".name", nic.get("name") or "nic%d" % (i + 1))
            if name in names:
                raise ValidationError(field + ".name", "NIC '%s' is listed twice" % name)
            names.add(name)
            validate_name(field + ".network", nic.get("network"))
            model = nic.get("model") or "virtio"
            if model not in NIC_MODELS:
                raise ValidationError(field + ".model", "%s is not one of %s" % (shown(model), ", ".join(NIC_MODELS)))
            mac = _mac(field + ".mac", nic["mac"]) if nic.get("mac") is not None else None
            if mac in macs:
                raise ValidationError(field + ".mac", "%s is also the MAC of NIC '%s'" % (mac, macs[mac]))
            if mac:
                macs[mac] = name
            nics.append({"name": name, "network": nic["network"], "model": model, "mac": mac})
        self.nics = nics

    def _validate_boot(self):
        if self.boot is None:
            return
        _check_keys("boot", self.boot, ("devices", "kernel", "initrd", "cmdline"))
        devices = self.boot.get("devices") or []
        if not isinstance(devices, list) or any(d not in BOOT_DEVICES for d in devices):
            raise ValidationError("boot.devices", "%s is not a list of %s" % (shown(devices), ", ".join(BOOT_DEVICES)))
        for key in ("kernel", "initrd"):
            if self.boot.get(key) is not None:
                path = validate_path("boot." + key, self.boot[key])
                tree = next((t for t in BOOT_REFUSED if path == t or path.startswith(t + "/")), None)
                if tree:
                    raise ValidationError("boot." + key, "%s is in %s, where no kernel or initramfs to boot is "
                                                         "taken from" % (shown(path), tree))
        if self.boot.get("initrd") and not self.boot.get("kernel"):
            raise ValidationError("boot.initrd", "is only used with boot.kernel")
        cmdline = self.boot.get("cmdline")
        if cmdline is not None:
            if not isinstance(cmdline, str) or any(ord(c) < 32 or ord(c) == 127 for c in cmdline):
                raise ValidationError("boot.cmdline", "%s is not one line of text" % shown(cmdline))
            if len(cmdline) > CMDLINE_MAX:
                raise ValidationError("boot.cmdline", "is %d characters long; a kernel takes at most %d"
                                      % (len(cmdline), CMDLINE_MAX))
            if not self.boot.get("kernel"):
                raise ValidationError("boot.cmdline", "is only used with boot.kernel")
        self.boot = {"devices": list(devices) or (["hd"] if not self.boot.get("kernel") else []),
                     "kernel": self.boot.get("kernel"), "initrd": self.boot.get("initrd"), "cmdline": cmdline}

    def _validate_cloud_init(self):
        if self.cloud_init is None:
            return
        _check_keys("cloud_init", self.cloud_init, ("user_data", "meta_data", "network_config"))
        documents = {"user_data": _yaml_document("cloud_init.user_data", self.cloud_init.get("user_data"), True),
                     "meta_data": _yaml_document("cloud_init.meta_data", self.cloud_init.get("meta_data")),
                     "network_config": _yaml_document("cloud_init.network_config",
                                                      self.cloud_init.get("network_config"))}
        if documents["meta_data"] is not None and not isinstance(yaml.safe_load(documents["meta_data"]) or {}, dict):
            raise ValidationError("cloud_init.meta_data", "must be a YAML mapping (instance-id, local-hostname ...)")
        self.cloud_init = documents if any(documents.values()) else {}

    def _validate_console(self):
        if self.console is None:
            return
        _check_keys("console", self.console, ("type", "listen", "password"))
        kind = self.console.get("type") or "vnc"
        if kind not in CONSOLE_TYPES:
            raise ValidationError("console.type", "%s is not one of %s" % (shown(kind), ", ".join(CONSOLE_TYPES)))
        listen = self.console.get("listen") or "127.0.0.1"
        try:
            listen = str(netaddr.IPAddress(listen, flags=netaddr.INET_PTON))
        except (netaddr.AddrFormatError, TypeError, ValueError):
            raise ValidationError("console.listen", "%s is not an IP address" % shown(listen))
        password = self.console.get("password")
        if password is not None:
            if not isinstance(password, str) or not password or any(ord(c) < 32 or ord(c) > 126 for c in password):
                raise ValidationError("console.password", "must be printable ASCII text")
            if kind == "vnc" and len(password) > 8:
                raise ValidationError("console.password", "is %d characters long; VNC takes at most 8"
                                      % len(password))
        self.console = {"type": kind, "listen": listen, "password": password}


# -- the definition as the engine keeps it ----------------------------------------------------------

def _masked_documents(documents):
    """cloud-init documents as results and diffs show them: user-data often holds passwords and keys, so only
    their size and a digest (which tells whether they changed) are shown."""
    return {name: "(%d bytes, sha256 %s)" % (len(text.encode()), hashlib.sha256(text.encode()).hexdigest()[:12])
            for name, text in sorted((documents or {}).items()) if text}


def _stored_console(console):
    if not console or console.get("type") in (None, "none"):
        return {"type": "none"}
    return {"type": console["type"], "listen": console["listen"], "password_set": bool(console.get("password"))}


def current_definition(row):
    """The VM's definition in the fields a spec names (a password only as whether one is set)."""
    spec = row["spec"] or {}
    return {
        "description": row["description"], "tags": sorted(row["tags"] or []), "vcpus": row["vcpus"],
        "max_vcpus": spec.get("max_vcpus", row["vcpus"]), "cpu": spec.get("cpu"),
        "memory_mib": row["memory_mib"], "max_memory_mib": spec.get("max_memory_mib", row["memory_mib"]),
        "boot": spec.get("boot"), "cloud_init": spec.get("cloud_init") or {},
        "console": _stored_console(spec.get("console")), "serial_console": spec.get("serial_console", True),
        "ha": {"enabled": row["ha_enabled"], "priority": row["ha_priority"]}, "hosts": spec.get("hosts") or [],
        "nics": [{"name": n["name"], "network": n["network"], "model": n["model"], "mac": n["mac"]}
                 for n in row["nics"]],
        "disks": [{"name": d["name"], "storage_domain": d["storage_domain"], "bus": d["bus"],
                   "bootable": d["bootable"]} for d in row["disks"]],
        "template": spec.get("template"),
    }


def desired_definition(spec, current, template=None):
    """What the VM is to be: the spec's fields, the current definition where the spec says nothing (for a new
    VM made from ``template``, a template row, the template's)."""
    if current is None and template is not None:
        current_like = dict((template["spec"] or {}).get("definition") or {})
        current_like["disks"] = []
        current_like["template"] = {"name": template["name"], "clone": spec.clone, "disks": [
            {"name": "%s-%s" % (spec.name, d["source"]), "storage_domain": d["storage_domain"], "bus": d["bus"],
             "bootable": d["bootable"]} for d in template_disks(template)]}
        desired = desired_definition(spec, dict(_NEW_VM, **current_like))
        if spec.disks is None:
            desired["disks"] = list(current_like["template"]["disks"])
        return desired
    base = current or dict(_NEW_VM)
    desired = dict(base)
    for field, value in (("description", spec.description), ("tags", spec.tags), ("boot", spec.boot),
                         ("cloud_init", spec.cloud_init), ("ha", spec.ha), ("hosts", spec.host)):
        if value is not None:
            desired[field] = value
    _desired_cpu(spec, current, base, desired)
    if spec.memory_mib is not None:
        desired["memory_mib"] = spec.memory_mib
        # a balloon maximum set before stays while the memory fits in it
        ballooned = current is not None and base["max_memory_mib"] > base["memory_mib"] \
            and spec.memory_mib <= base["max_memory_mib"]
        desired["max_memory_mib"] = spec.max_memory_mib or (base["max_memory_mib"] if ballooned else spec.memory_mib)
    elif spec.max_memory_mib is not None:
        desired["max_memory_mib"] = spec.max_memory_mib
    if desired["memory_mib"] and desired["max_memory_mib"] and desired["max_memory_mib"] < desired["memory_mib"]:
        raise ValidationError("memory_max", "%s is less than memory %s" % (
            _human_mib(desired["max_memory_mib"]), _human_mib(desired["memory_mib"])))
    if spec.console is not None:
        desired["console"] = _stored_console(spec.console)
    if spec.serial_console is not None:
        desired["serial_console"] = bool(spec.serial_console)
    if spec.nics is not None:
        known = {n["name"]: n for n in base["nics"]}
        desired["nics"] = [dict(n, mac=n["mac"] or (known[n["name"]]["mac"] if n["name"] in known
                                                    and known[n["name"]]["network"] == n["network"] else None))
                           for n in spec.nics]
    if spec.disks is not None:
        # a VM made from a template keeps the clones it was made with, listed or not
        kept = list((base.get("template") or {}).get("disks") or [])
        listed = [{"name": d["name"], "storage_domain": d["storage_domain"], "bus": d.get("bus") or "virtio",
                   "bootable": bool(d.get("bootable"))} for d in spec.disks]
        keys = {(d["name"], d["storage_domain"]) for d in listed}
        desired["disks"] = [d for d in kept if (d["name"], d["storage_domain"]) not in keys] + listed
    return desired


def template_disks(template):
    """The template's disks with the source disk each was copied from (its position, bus and boot flag)."""
    placed = {d["name"]: d for d in (template["spec"] or {}).get("disks", [])}
    disks = [dict(d, **{k: v for k, v in placed.get(d["name"], {}).items()
                        if k in ("source", "bus", "bootable", "position")}) for d in template["disks"]]
    return sorted(disks, key=lambda d: (d.get("position", 0), d["name"]))


_NEW_VM = {
    "description": "", "tags": [], "vcpus": 1, "max_vcpus": 1, "cpu": None, "memory_mib": None,
    "max_memory_mib": None, "boot": {"devices": ["hd"], "kernel": None, "initrd": None, "cmdline": None},
    "cloud_init": {}, "console": {"type": "none"}, "serial_console": True, "ha": {"enabled": False, "priority": 0},
    "hosts": [], "nics": [], "disks": [], "template": None}


def _check_max_vcpus(max_vcpus, vcpus, topology):
    per_socket = topology["cores"] * topology["threads"]
    if max_vcpus < vcpus:
        raise ValidationError("cpu.max_vcpus", "%d is less than the VM's %d vCPUs" % (max_vcpus, vcpus))
    if max_vcpus % per_socket:
        raise ValidationError("cpu.max_vcpus", "%d is not a whole number of sockets of %d cores x %d threads "
                                               "(vCPUs are plugged a socket at a time)"
                              % (max_vcpus, topology["cores"], topology["threads"]))


def _desired_cpu(spec, current, base, desired):
    """vCPUs, their maximum and the topology: what the spec names, the current definition for the rest.

    The topology covers the most vCPUs the VM may have (hot-plug adds sockets). A count alone keeps the
    maximum and topology set before while it fits in them; a maximum alone keeps the count and topology."""
    base_cpu = base.get("cpu") or None
    vcpus = spec.vcpus if spec.vcpus is not None else base["vcpus"]
    if spec.topology is not None:
        topology = spec.topology
    elif base_cpu and (spec.cpu is not None or vcpus <= base["max_vcpus"]):
        topology = {"cores": base_cpu["cores"], "threads": base_cpu["threads"]}
    else:
        topology = None
    if spec.max_vcpus is not None:
        max_vcpus = spec.max_vcpus
    elif spec.topology is None and base_cpu and base_cpu.get("max_vcpus") and vcpus <= base["max_vcpus"]:
        max_vcpus = base["max_vcpus"]
    else:
        max_vcpus = vcpus
    if topology is not None:
        _check_max_vcpus(max_vcpus, vcpus, topology)
        desired["cpu"] = {"sockets": max_vcpus // (topology["cores"] * topology["threads"]),
                          "cores": topology["cores"], "threads": topology["threads"],
                          "max_vcpus": max_vcpus if max_vcpus != vcpus else None}
    elif max_vcpus != vcpus:
        _check_max_vcpus(max_vcpus, vcpus, {"cores": 1, "threads": 1})
        desired["cpu"] = {"sockets": max_vcpus, "cores": 1, "threads": 1, "max_vcpus": max_vcpus}
    else:
        desired["cpu"] = None
    desired["vcpus"], desired["max_vcpus"] = vcpus, max_vcpus


def changed(current, desired):
    """Field-level changes: {field: (before, after)}; a NIC without its MAC yet differs only if the rest does."""
    changes = {}
    for field, value in desired.items():
        before = current.get(field) if current else None
        if field == "nics" and before is not None:
            same = len(before) == len(value) and all(
                b["name"] == a["name"] and b["network"] == a["network"] and b["model"] == a["model"]
                and (a["mac"] is None or a["mac"] == b["mac"])
                for b, a in zip(before, value))  # noqa: B905 - same length, checked first
            if same:
                continue
        if plain(before) != plain(value):
            changes[field] = (before, value)
    return changes


# -- reading many VMs at once ----------------------------------------------------------------------

def _live_states(engine, rows, timeout):
    """{vm name: True/False} of the VMs the engine records as running: one listAllDomains per host."""
    by_host = {}
    for row in rows:
        if row["status"] in RUNNING + (UNKNOWN,) and row["run_host_id"] is not None:
            by_host.setdefault(row["run_host_id"], {"id": row["run_host_id"], "name": row["host"],
                                                    "libvirt_uri": row["host_uri"], "names": []})["names"].append(
                row["name"])
    if not by_host:
        return {}
    hosts = list(by_host.values())
    outcomes = _hosts.on_hosts(engine, hosts, lambda conn, host: virt_vm.running_names(conn), timeout, readonly=True)
    live = {}
    for host in hosts:
        names, reason = outcomes.get(host["name"], (None, "no answer"))
        for name in host["names"]:
            live[name] = None if reason else name in names  # None: the host did not answer
    return live


def _runtime_view(row):
    running_config = row.get("running_config") or {}
    pending = []
    if row["status"] in RUNNING and running_config:
        definition = current_definition(row)
        pending = sorted(f for f in DOMAIN_FIELDS
                         if f in running_config and plain(running_config[f]) != plain(definition.get(f)))
    return pending


def view(row, live=None):
    definition = current_definition(row)
    status = row["status"]
    console = dict(row["console"] or {}) if status in RUNNING else {}
    result = {
        "id": plain(row["id"]), "name": row["name"], "cluster": row["cluster"], "datacenter": row["datacenter"],
        "status": status, "status_reason": row["status_reason"], "host": row["host"] if status in RUNNING else None,
        "uptime_s": None, "addresses": row["guest_addresses"] or [], "console": console,
        "memory": _human_mib(definition["memory_mib"]), "memory_max": _human_mib(definition["max_memory_mib"]),
        "pending_restart": _runtime_view(row) if status in RUNNING else [],
        # a suspended VM's memory is in a file on this host, where it resumes
        "suspended_on": _saved_host(row)["name"] if status == "Suspended" else None,
    }
    result.update({k: v for k, v in definition.items() if k not in ("memory_mib", "max_memory_mib")})
    result["cloud_init"] = _masked_documents(definition["cloud_init"])
    result["memory_mib"], result["max_memory_mib"] = definition["memory_mib"], definition["max_memory_mib"]
    # the console as defined, and while the VM runs how to reach it
    result["console"] = dict(definition["console"], **console)
    if status in RUNNING and row.get("status_changed_at") is not None and row.get("now") is not None:
        result["uptime_s"] = int((row["now"] - row["status_changed_at"]).total_seconds())
    if live is False:
        result["status_reason"] = "not found on host %s" % row["host"]
    return result


# -- the entry points ------------------------------------------------------------------------------

def ensure(engine, spec, check_mode=False):
    return ensure_many(engine, [spec], check_mode)[0]


def ensure_many(engine, specs, check_mode=False):
    """Reconcile every VM of ``specs``; one Outcome each, in order."""
    if not specs:
        return []
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        twice = sorted(n for n in set(names) if names.count(n) > 1)
        raise ValidationError("vms", "VM %s is listed more than once" % ", ".join(twice))
    with engine.transaction() as cur:
        rows = vm_rows.by_names(cur, names)
        now = _now(cur)
    live = _live_states(engine, rows.values(), max(s.timeout for s in specs))
    outcomes = []
    for spec in specs:
        row = rows.get(spec.name)
        if row is not None:
            row = dict(row, now=now)
        if row is not None and _unchanged(spec, row, live.get(spec.name)):
            outcomes.append(Outcome(False, {}, {}, view(row), []))
            continue
        outcomes.append(_apply(engine, spec, row, live.get(spec.name), check_mode))
    return outcomes


def _now(cur):
    return _rows.now(cur)


def _unchanged(spec, row, live):
    """Nothing to do for this VM: its definition and its run state are as asked, and its host agrees."""
    if spec.state in ("absent", "restarted"):
        return False
    if spec.cluster is not None and spec.cluster != row["cluster"]:
        return False
    current = current_definition(row)
    if spec.template is not None and (current["template"] or {}).get("name") != spec.template:
        return False
    if changed(current, desired_definition(spec, current)):
        return False
    if any(d.get("size") is not None for d in spec.disks or ()):
        sizes = {(d["name"], d["storage_domain"]): d for d in row["disks"]}
        for disk in spec.disks:
            if disk.get("size") is not None and (disk["name"], disk["storage_domain"]) in sizes:
                return False  # the disk service tells whether it grows
    running = row["status"] in RUNNING
    if running and live is False or row["status"] == UNKNOWN:
        return False  # recorded running, but its host does not have it; or the engine could not tell
    stored_password = ((row["spec"] or {}).get("console") or {}).get("password")
    if spec.console is not None and spec.console.get("password") not in (None, stored_password):
        return False
    return {"present": True, "running": row["status"] == "Up", "stopped": row["status"] == "Down",
            "suspended": row["status"] == "Suspended"}[spec.state]


def _apply(engine, spec, row, live, check_mode):
    if spec.state == "absent":
        if row is None:
            return Outcome(False, {}, {}, {}, [])
        return _operation.run(engine, VmRemove(engine, check_mode, spec))
    actions, before, after = [], {}, {}
    changed_any = False
    assume_down = False
    if row is not None and (row["status"] in RUNNING + (UNKNOWN,) and live is False
                            or row["status"] == UNKNOWN and live is True):
        # the engine and the host disagree (or the engine could not tell): the host is the truth
        lost = _operation.run(engine, VmLost(engine, check_mode, spec, predicted=dict(row, live_found=live)))
        if lost.changed:
            changed_any = True
            status_now = "Up" if live else "Down"
            where = "%s on host %s" % ("running" if live else "not running", row["host"])
            actions.append("record %s (%s)" % (status_now, where))
            before["status"], after["status"] = row["status"], status_now
            assume_down = check_mode and not live
    _check_disks(engine, spec, row)  # before the definition is written: a refused disk changes nothing
    define = _operation.run(engine, VmDefine(engine, check_mode, spec))
    changed_any = changed_any or define.changed
    actions += define.actions
    before.update(define.before)
    after.update(define.after)
    resource = define.resource
    disk_outcomes = _disks(engine, spec, check_mode, row, resource)
    if any(o.changed for o in disk_outcomes):
        changed_any = True
        for outcome in disk_outcomes:
            actions += outcome.actions
        before["disks"] = current_definition(row)["disks"] if row else []
        after["disks"] = desired_definition(spec, None)["disks"]
    if check_mode and row is not None and live is False:
        resource = dict(resource, status="Down", host=None)
    status = resource.get("status", "Down")
    steps = []
    if spec.state == "running" and status != "Up":
        steps = [VmResume] if status == "Suspended" else [VmStart]
    elif spec.state == "stopped" and status != "Down":
        steps = [VmStop]
    elif spec.state == "suspended" and status != "Suspended":
        steps = [VmSuspend]
    elif spec.state == "restarted":
        steps = [VmStop, VmStart] if status in RUNNING + ("Suspended",) else [VmStart]
    for step in steps:
        outcome = _operation.run(engine, step(engine, check_mode, spec, predicted=resource if check_mode else None,
                                              restart=spec.state == "restarted" or assume_down))
        changed_any = changed_any or outcome.changed
        actions += outcome.actions
        if outcome.changed and outcome.resource:
            resource = outcome.resource
    if steps and resource.get("status") != status:
        before["status"], after["status"] = before.get("status", status), resource.get("status")
    if not check_mode and not steps and (define.changed or disk_outcomes):
        with engine.transaction() as cur:
            resource = view(dict(vm_rows.find(cur, spec.name), now=_now(cur)))
    return Outcome(changed_any, before, after, resource, actions)


def _disks(engine, spec, check_mode, row, resource):
    """Create, grow, attach and detach the VM's disks through the disk service (which plugs them live)."""
    clones = _template_clones(engine, spec, resource)
    if spec.disks is None and not clones:
        return []
    outcomes = []
    wanted = dict(clones)
    wanted.update({(d["name"], d["storage_domain"]): d for d in spec.disks or ()})
    current = {(d["name"], d["storage_domain"]): d for d in (row or {}).get("disks", [])}
    kept = {(d["name"], d["storage_domain"])
            for d in ((current_definition(row)["template"] or {}).get("disks") or [] if row else [])}
    for key in current:
        if spec.disks is not None and key not in wanted and key not in kept:
            outcomes.append(_operation.run(engine, _disk.DiskDetach(engine, check_mode, _disk.DiskSpec(
                name=key[0], storage_domain=key[1], state="detached", timeout=spec.timeout,
                wait_timeout=spec.wait_timeout))))
    for key, disk in wanted.items():
        attached = key in current
        same = attached and current[key]["bus"] == (disk.get("bus") or "virtio") and \
            current[key]["bootable"] == bool(disk.get("bootable"))
        if same and disk.get("size") is None:
            continue
        disk_spec = _disk.DiskSpec(name=disk["name"], storage_domain=disk["storage_domain"], size=disk.get("size"),
                                   format=disk.get("format"), vm=None if same else spec.name,
                                   bus=disk.get("bus") or "virtio", bootable=disk.get("bootable"),
                                   clone_of=None if attached else disk.get("clone_of"),
                                   timeout=spec.timeout, wait_timeout=spec.wait_timeout)
        if check_mode and resource.get("id") is None:
            # the VM does not exist yet: what the disk service would do to the disk, then the attachment
            outcome = _operation.run(engine, _disk.DiskPresent(engine, True, dataclass_copy(disk_spec, vm=None)))
            outcomes.append(Outcome(True, {}, {}, outcome.resource, outcome.actions + ["attach to VM '%s'"
                                                                                       % spec.name]))
            continue
        outcomes.append(_disk.ensure(engine, disk_spec, check_mode))
    return outcomes


def _template_clones(engine, spec, resource):
    """{(name, storage domain): disk} of the clones a VM made from a template has: one of each template disk."""
    if spec.template is None:
        return {}
    with engine.transaction() as cur:
        template = template_rows.find(cur, spec.template, resource.get("datacenter"))
    if template is None:
        raise NotFoundError("template", spec.template, "make VM '%s'" % spec.name)
    clones = {}
    for disk in template_disks(template):
        name = "%s-%s" % (spec.name, disk["source"])
        clones[(name, disk["storage_domain"])] = {"name": name, "storage_domain": disk["storage_domain"],
                                                  "bus": disk["bus"], "bootable": disk["bootable"],
                                                  "clone_of": _disk.clone_source(disk, spec.clone == "thin")}
    return clones


def dataclass_copy(disk_spec, **changes):
    """The disk spec with ``changes`` (a spec is checked once, when it is made)."""
    copy = object.__new__(type(disk_spec))
    copy.__dict__.update(disk_spec.__dict__)
    copy.__dict__.update(changes)
    return copy


def _check_disks(engine, spec, row):
    """The disks the VM is to have exist in storage domains of its data center, and no other VM has them."""
    current = {(d["name"], d["storage_domain"]) for d in (row or {}).get("disks", [])}
    for index, disk in enumerate(spec.disks or ()):
        if (disk["name"], disk["storage_domain"]) in current:
            continue
        owner = _disk_owner(engine, disk["name"], disk["storage_domain"])
        if owner is not None and owner != spec.name:
            raise ValidationError("disks[%d]" % index, "disk '%s' of storage domain '%s' is attached to VM '%s'"
                                  % (disk["name"], disk["storage_domain"], owner))


def _disk_owner(engine, name, domain_name):
    with engine.transaction() as cur:
        domain = _disk.domain_rows.find(cur, domain_name, None)
        if domain is None:
            raise NotFoundError("storage domain", domain_name, "attach disk '%s'" % name)
        row = _disk.disk_rows.find(cur, name, domain["id"])
        return row["vm"] if row else None


# -- operations ------------------------------------------------------------------------------------

class _VmOperation(_operation.Operation):
    def __init__(self, engine, check_mode, spec, predicted=None, restart=False):
        super().__init__(engine, check_mode)
        self.spec = spec
        self.wait_timeout = spec.wait_timeout
        self.predicted = predicted
        self.restart = restart

    def _row(self, cur, lock=False, required=True, sent=False):
        """The VM's row with the transaction's time, read in one statement (``sent``: already sent on ``cur``)."""
        if not sent:
            vm_rows.send_find(cur, self.spec.name, lock, now=True)
        row = cur.fetchone()
        if row is None:
            if self.check_mode and self.predicted is not None:
                return None
            if required:
                raise NotFoundError("VM", self.spec.name, self.action.replace("vm.", "") + " it")
        return dict(row) if row else None

    def prepare(self, cur):
        row = self._row(cur, required=False)
        if row is not None:
            self.lock = (LOCK_DATACENTER, row["datacenter"])
        elif self.spec.cluster is not None:
            cluster = _clusters.find(cur, self.spec.cluster)
            if cluster is None:
                raise NotFoundError("cluster", self.spec.cluster, "create VM '%s'" % self.spec.name)
            self.lock = (LOCK_DATACENTER, vm_rows.datacenter_name(cur, cluster["datacenter_id"]))
        else:
            self.lock = (LOCK_DATACENTER, "")
        return _operation.Plan(row=row)

    def _claim(self, cur, row):
        _operation.claim(cur, row, "VM '%s'" % self.spec.name)

    def _job(self, cur, plan, row, description):
        self.start_job(cur, plan, "vm", row["id"], row["name"], description, datacenter=row["datacenter"])
        vm_rows.set_runtime(cur, row["id"], job_id=plan.job["id"])

    def release(self, cur, plan, error):
        vm_rows.set_runtime(cur, plan.row["id"], job_id=None)


class VmDefine(_VmOperation):
    """Create or change the definition; a running VM takes what it can live."""

    action = "vm.define"

    def reserve(self, cur, plan):
        spec = self.spec
        row = self._row(cur, lock=True, required=False)
        if (row is None) != (plan.row is None):
            raise _operation.Retry()
        if row is not None:
            self._claim(cur, row)
            if spec.cluster is not None and spec.cluster != row["cluster"] and row["status"] != "Down":
                raise ConflictError("Cannot move VM '%s' to cluster %s: it is %s; stop it first"
                                    % (spec.name, spec.cluster, row["status"]))
        elif spec.cluster is None:
            raise ValidationError("cluster", "is required to create VM '%s'" % spec.name)
        cluster = _clusters.find(cur, spec.cluster or row["cluster"])
        if cluster is None:
            raise NotFoundError("cluster", spec.cluster, "create VM '%s'" % spec.name)
        current = current_definition(row) if row else None
        template = None
        if spec.template is not None:
            if row is not None:
                made_from = (current["template"] or {}).get("name")
                if made_from != spec.template:
                    raise ValidationError("template", "VM '%s' was made from %s; a VM's template is chosen when it "
                                                      "is created" % (spec.name, "template " + made_from
                                                                      if made_from else "no template"))
            else:
                template = template_rows.find(cur, spec.template, vm_rows.datacenter_name(cur,
                                                                                          cluster["datacenter_id"]))
                if template is None:
                    raise NotFoundError("template", spec.template, "create VM '%s'" % spec.name)
        desired = desired_definition(spec, current, template)
        plan.template = template
        if desired["memory_mib"] is None:
            raise ValidationError("memory", "is required to create VM '%s'" % spec.name)
        self._check_against_engine(cur, cluster, desired, row)
        networks = vm_rows.networks(cur, cluster["datacenter_id"], {n["network"] for n in desired["nics"]})
        missing = sorted({n["network"] for n in desired["nics"]} - set(networks))
        if missing:
            index = next(i for i, n in enumerate(desired["nics"]) if n["network"] in missing)
            raise ValidationError("nics[%d].network" % index, "logical network '%s' is not one of the data center's"
                                  % missing[0])
        self._check_macs(cur, desired, row)
        plan.disks = list(row["disks"]) if row else []
        changes = changed(current, desired) if row else {k: (None, v) for k, v in desired.items()}
        if spec.cluster is not None and row is not None and spec.cluster != row["cluster"]:
            changes["cluster"] = (row["cluster"], spec.cluster)
        password = (spec.console or {}).get("password")
        stored_password = ((row["spec"] or {}).get("console") or {}).get("password") if row else None
        if spec.console is not None and password != stored_password and (password or stored_password):
            changes["console_password"] = ("(set)" if stored_password else None, "(set)" if password else None)
            if row is not None and row["status"] in RUNNING and not self.check_mode:
                # the running console keeps the password it was started with until the VM restarts
                stale = dict(row["running_config"] or {}, console_password="(changed)")
                vm_rows.set_runtime(cur, row["id"], running_config=stale)
        changes.pop("disks", None)  # the disk service does those
        if not changes:
            plan.outcome = Outcome(False, {}, {}, view(row), [])
            plan.resource_row = row
            return
        self._record(cur, plan, row, cluster, desired, changes, networks, password)

    def _check_against_engine(self, cur, cluster, desired, row):
        largest = vm_rows.largest_host(cur, cluster["id"])  # what it gives VMs: its cap, less its reserve
        if largest is None:
            return
        if desired["max_memory_mib"] > largest["memory_mib"]:
            field = "memory" if desired["max_memory_mib"] == desired["memory_mib"] else "memory_max"
            raise ValidationError(field, "%s is more than any host of cluster %s has for VMs (the largest has %s)"
                                  % (_human_mib(desired["max_memory_mib"]), cluster["name"],
                                     _human_mib(largest["memory_mib"])))
        if largest["cpu_count"] and desired["max_vcpus"] > largest["cpu_count"]:
            raise ValidationError("vcpus" if desired["max_vcpus"] == desired["vcpus"] else "cpu.max_vcpus",
                                  "%d vCPUs are more than any host of cluster %s has for VMs (the largest has %d "
                                  "CPUs)"
                                  % (desired["max_vcpus"], cluster["name"], largest["cpu_count"]))
        for host in desired["hosts"]:
            if not vm_rows.host_in_cluster(cur, host, cluster["id"]):
                raise ValidationError("host", "host '%s' is not in cluster %s" % (host, cluster["name"]))

    def _check_macs(self, cur, desired, row):
        given = {n["mac"]: i for i, n in enumerate(desired["nics"]) if n["mac"]}
        taken = vm_rows.macs_in_use(cur, list(given), row["id"] if row else None)
        for mac, owner in sorted(taken.items()):
            raise ValidationError("nics[%d].mac" % given[mac], "%s is the MAC of a NIC of VM '%s'" % (mac, owner))

    def _record(self, cur, plan, row, cluster, desired, changes, networks, password):
        spec = self.spec
        before = {k: plain(v[0]) for k, v in changes.items()} if row else {}
        after = {k: plain(v[1]) for k, v in changes.items()}
        for side in (before, after):
            if "cloud_init" in side:
                side["cloud_init"] = _masked_documents(side["cloud_init"])
        for side in (before, after):
            side.pop("disks", None)
        running = row is not None and row["status"] in RUNNING
        plan.actions = ["create" if row is None else "update " + ", ".join(sorted(changes))]
        plan.live = []
        if running and self.check_mode:
            # a new NIC gets its MAC when the change is written: what is plugged is the same
            placeholders = [dict(n, mac=n["mac"] or "00:00:00:00:00:%02x" % i) for i, n in enumerate(desired["nics"])]
            self._plan_live(plan, row, changes, dict(desired, nics=placeholders))
        plan.before, plan.after = before, after
        nics = []
        if self.check_mode:
            view_row = self._predicted_row(row, cluster, desired)
            plan.outcome = Outcome(True, before, after, view(view_row), plan.actions)
            plan.resource_row = view_row
            return
        macs = self._macs(cur, cluster["datacenter_id"], desired)
        for nic in desired["nics"]:
            nics.append({"name": nic["name"], "network_id": networks[nic["network"]], "mac": nic["mac"] or
                         macs.pop(0), "model": nic["model"]})
        stored = {"max_vcpus": desired["max_vcpus"], "cpu": desired["cpu"], "max_memory_mib": desired["max_memory_mib"],
                  "boot": desired["boot"], "cloud_init": desired["cloud_init"], "hosts": desired["hosts"],
                  "serial_console": desired["serial_console"], "template": desired.get("template"),
                  "console": dict(desired["console"], password=password if spec.console is not None else
                                  ((row["spec"] or {}).get("console") or {}).get("password") if row else None)}
        stored["console"].pop("password_set", None)
        values = {"description": desired["description"], "vcpus": desired["vcpus"],
                  "memory_mib": desired["memory_mib"], "spec": stored, "ha_enabled": desired["ha"]["enabled"],
                  "ha_priority": desired["ha"]["priority"], "cluster_id": cluster["id"]}
        if row is None:
            values["name"] = spec.name
            if plan.template is not None:
                values["template_id"] = plan.template["id"]
            vm = vm_rows.insert(cur, values)
            vm_id = vm["id"]
            _events.record(cur, "VM_CREATED", "VM %s was defined in cluster %s" % (spec.name, cluster["name"]),
                           object_type="vm", object_id=vm_id, object_name=spec.name, cluster=cluster["name"],
                           vm=spec.name)
        else:
            vm_id = row["id"]
            vm_rows.update(cur, vm_id, values)
            _events.record(cur, "VM_UPDATED", "VM %s: %s changed" % (spec.name, ", ".join(sorted(changes))),
                           object_type="vm", object_id=vm_id, object_name=spec.name, cluster=cluster["name"],
                           vm=spec.name, details={"fields": sorted(changes)})
        vm_rows.set_tags(cur, vm_id, desired["tags"])
        if "nics" in changes or row is None:
            vm_rows.set_nics(cur, vm_id, nics)
        fresh = dict(vm_rows.find(cur, spec.name), now=_now(cur))
        plan.row = fresh
        if running:
            self._plan_live(plan, row, changes, current_definition(fresh))
            self._reserve_growth(cur, plan, row, cluster, current_definition(fresh))
        if plan.live:
            fields = ", ".join(sorted({step[1] for step in plan.live}))
            self._job(cur, plan, fresh, "apply %s live to VM %s" % (fields, spec.name))
            return
        plan.outcome = Outcome(True, before, after, view(fresh), plan.actions)
        plan.resource_row = fresh

    def _reserve_growth(self, cur, plan, row, cluster, definition):
        """More memory or vCPUs taken live are reserved on the VM's host first, under the cluster's lock, as a
        start reserves them; a host without room leaves the growth for the next start (placed anew)."""
        planned = {step[1] for step in plan.live}
        memory = definition["memory_mib"] if "memory_mib" in planned else row["reserved_memory_mib"]
        vcpus = definition["vcpus"] if "vcpus" in planned else row["reserved_vcpus"]
        plan.reserved_before = (row["reserved_memory_mib"], row["reserved_vcpus"])
        plan.reserved_after = (memory, vcpus)
        grow_memory, grow_vcpus = max(0, memory - row["reserved_memory_mib"]), max(0, vcpus - row["reserved_vcpus"])
        if not grow_memory and not grow_vcpus:
            return
        self.engine.lock(cur, LOCK_CLUSTER, cluster["name"])
        hosts = vm_rows.placement_hosts(cur, cluster["id"])
        host = next((h for h in hosts if h["id"] == row["run_host_id"]), None)
        growth = {"memory_mib": grow_memory, "vcpus": grow_vcpus, "ha": row["ha_enabled"]}
        reason = _placement.growth_reason(host["name"], growth, hosts, **vm_rows.placement_context(
            cur, cluster["id"])) if host else "the host is gone"
        if reason is not None:
            plan.live = [step for step in plan.live if step[1] not in ("memory_mib", "vcpus")]
            plan.actions = [a for a in plan.actions if not a.startswith(("set memory", "set vCPUs"))]
            plan.actions.append("pending restart: memory and vCPUs as asked (host %s: %s)" % (row["host"], reason))
            plan.reserved_after = plan.reserved_before
            return
        vm_rows.set_runtime(cur, row["id"], reserved_memory_mib=max(memory, row["reserved_memory_mib"]),
                            reserved_vcpus=max(vcpus, row["reserved_vcpus"]))

    def release(self, cur, plan, error):
        vm_rows.set_runtime(cur, plan.row["id"], job_id=None)
        if getattr(plan, "reserved_before", None):
            vm_rows.set_runtime(cur, plan.row["id"], reserved_memory_mib=plan.reserved_before[0],
                                reserved_vcpus=plan.reserved_before[1])

    def _macs(self, cur, datacenter_id, desired):
        """MACs for the NICs that have none yet: free addresses of the data center's pool, never one in use."""
        needed = sum(1 for n in desired["nics"] if not n["mac"])
        if not needed:
            return []
        pool = vm_rows.mac_pool(cur, datacenter_id)
        start, end = int(netaddr.EUI(pool["start"])), int(netaddr.EUI(pool["end"]))
        used = {int(netaddr.EUI(m)) for m in vm_rows.macs_in_range(cur, pool["start"], pool["end"])}
        used |= {int(netaddr.EUI(n["mac"])) for n in desired["nics"] if n["mac"]}
        found = []
        size = end - start + 1
        if size - len(used) < needed:
            raise ConflictError("The MAC pool of the data center (%s-%s) has no free address left"
                                % (pool["start"], pool["end"]))
        while len(found) < needed:
            candidate = start + secrets.randbelow(size)
            if candidate not in used:
                used.add(candidate)
                found.append(str(netaddr.EUI(candidate, dialect=netaddr.mac_unix_expanded)))
        return found

    def _plan_live(self, plan, row, changes, desired):
        """What the running VM takes now (``plan.live``, with its actions) and what waits for its restart."""
        plan.live = self._live_plan(row, changes, desired)
        plan.actions += [step[0] for step in plan.live]
        taken = {step[1] for step in plan.live}
        pending = sorted(f for f in changes if f in RESTART_FIELDS or (f in LIVE_FIELDS and f not in taken))
        if pending:
            plan.actions.append("pending restart: " + ", ".join(pending))

    def _live_plan(self, row, changes, desired):
        """(action, field, function(conn)) for what the running domain can take now."""
        steps = []
        name = row["name"]
        running_memory_max = (row["spec"] or {}).get("max_memory_mib", row["memory_mib"])
        if "memory_mib" in changes and desired["memory_mib"] <= running_memory_max and "max_memory_mib" not in changes:
            mib = desired["memory_mib"]
            steps.append(("set memory to %s live" % _human_mib(mib), "memory_mib",
                          lambda conn: virt_vm.set_memory(conn, name, mib)))
        stored_max = (row["spec"] or {}).get("max_vcpus", row["vcpus"])
        running_max = (row.get("running_config") or {}).get("max_vcpus", stored_max)
        if "vcpus" in changes and desired["vcpus"] <= running_max:
            count = desired["vcpus"]
            steps.append(("set vCPUs to %d live" % count, "vcpus", lambda conn: virt_vm.set_vcpus(conn, name, count)))
        if "nics" in changes and all(n["mac"] for n in desired["nics"]):
            before = {n["mac"]: n for n in row["nics"]}
            after = {n["mac"]: n for n in desired["nics"]}
            for mac, nic in sorted(before.items()):
                if mac not in after or after[mac] != nic:
                    xml = _domain.interface_xml(_interface(nic))
                    steps.append(("unplug NIC %s" % nic["name"], "nics",
                                  lambda conn, xml=xml: virt_storage.change_live_disk(conn, name, xml, False)))
            for mac, nic in sorted(after.items()):
                if mac not in before or before[mac] != nic:
                    xml = _domain.interface_xml(_interface(nic))
                    steps.append(("plug NIC %s" % nic["name"], "nics",
                                  lambda conn, xml=xml: virt_storage.change_live_disk(conn, name, xml, True)))
        return steps

    def _predicted_row(self, row, cluster, desired):
        base = dict(row) if row else {"id": None, "name": self.spec.name, "cluster": cluster["name"],
                                      "datacenter": None, "status": "Down", "status_reason": "", "host": None,
                                      "run_host_id": None, "guest_addresses": [], "console": {},
                                      "running_config": None, "status_changed_at": None, "now": None, "disks": []}
        base.update({"description": desired["description"], "tags": desired["tags"], "vcpus": desired["vcpus"],
                     "memory_mib": desired["memory_mib"], "ha_enabled": desired["ha"]["enabled"],
                     "ha_priority": desired["ha"]["priority"], "cluster": cluster["name"],
                     "spec": {"max_vcpus": desired["max_vcpus"], "cpu": desired["cpu"],
                              "max_memory_mib": desired["max_memory_mib"], "boot": desired["boot"],
                              "cloud_init": desired["cloud_init"], "hosts": desired["hosts"],
                              "serial_console": desired["serial_console"], "console": desired["console"]},
                     "nics": [dict(n, mac=n["mac"] or "(generated)") for n in desired["nics"]]})
        if base["spec"]["console"].get("type") != "none":
            base["spec"]["console"] = dict(base["spec"]["console"], password="x" if base["spec"]["console"].get(
                "password_set") else None)
        base["disks"] = [dict(d, format=None, volume=None, target=None, status=None, disk_id=None)
                         for d in desired["disks"]] if self.spec.disks is not None else base["disks"]
        return base

    def act(self, plan):
        if self.check_mode or not plan.live:
            return []
        failed = []
        host = {"id": plan.row["run_host_id"], "name": plan.row["host"], "libvirt_uri": plan.row["host_uri"]}
        registry = _hosts.hypervisors(self.engine)
        applied = []
        for action, field, function in plan.live:
            try:
                registry.call(host, action, function, self.spec.timeout)
                applied.append(field)
            except HypervisorError as exc:
                failed.append("%s: %s" % (action, exc))
        plan.failed = failed
        return applied

    def confirm(self, cur, plan, result):
        if self.check_mode:
            return plan.outcome
        row = dict(vm_rows.find(cur, self.spec.name), now=_now(cur))
        config = dict(row["running_config"] or {})
        definition = current_definition(row)
        for field in set(result or ()):
            config[field] = definition[field]
        # what the host now holds for the VM: the new figures where they were applied, the old ones elsewhere
        memory = definition["memory_mib"] if "memory_mib" in (result or ()) else plan.reserved_before[0]
        vcpus = definition["vcpus"] if "vcpus" in (result or ()) else plan.reserved_before[1]
        vm_rows.set_runtime(cur, row["id"], running_config=config, job_id=None, reserved_memory_mib=memory,
                            reserved_vcpus=vcpus)
        actions = list(plan.actions)
        for failure in plan.failed:
            actions.append("not applied live (pending restart): " + failure)
        _events.record(cur, "VM_CHANGED_LIVE", "VM %s took %s live on host %s" % (
            row["name"], ", ".join(sorted(set(result or ()))) or "nothing", row["host"]),
            severity="warning" if plan.failed else "normal", object_type="vm", object_id=row["id"],
            object_name=row["name"], host=row["host"], vm=row["name"], job_id=plan.job["id"])
        fresh = dict(vm_rows.find(cur, self.spec.name), now=_now(cur))
        return Outcome(True, plan.before, plan.after, view(fresh), actions)


def _interface(nic):
    return {"type": "network", "source": _network.libvirt_name(nic["network"]), "mac": nic["mac"],
            "model": nic["model"]}


class VmLost(_VmOperation):
    """The engine recorded the VM running, but its host has no such domain: record it Down; or the engine could
    not tell (Unknown), and its host has it: record it Up."""

    action = "vm.lost"

    def reserve(self, cur, plan):
        row = self._row(cur, lock=True)
        seen = self.predicted  # the row the host was asked about
        if row["status"] not in RUNNING + (UNKNOWN,) or row["run_host_id"] is None or row["job_id"] is not None \
                or row["run_host_id"] != seen["run_host_id"] or row["status_changed_at"] != seen["status_changed_at"]:
            plan.outcome = Outcome(False)  # another run moved it meanwhile: what the host said is about the past
            return
        if self.check_mode:
            plan.outcome = Outcome(True)
            return
        if seen.get("live_found"):
            vm_rows.set_runtime(cur, row["id"], status="Up", status_reason="",
                                running_config=row["running_config"] or current_definition(row))
            _events.record(cur, "VM_FOUND", "VM %s runs on host %s" % (row["name"], row["host"]),
                           object_type="vm", object_id=row["id"], object_name=row["name"], host=row["host"],
                           vm=row["name"])
        else:
            _down(cur, row, "not found on host %s" % row["host"])
            _events.record(cur, "VM_DOWN", "VM %s is Down: host %s does not run it" % (row["name"], row["host"]),
                           severity="warning", object_type="vm", object_id=row["id"], object_name=row["name"],
                           host=row["host"], vm=row["name"])
        plan.outcome = Outcome(True)


def _down(cur, row, reason=""):
    vm_rows.set_runtime(cur, row["id"], status="Down", status_reason=reason, run_host_id=None, reserved_vcpus=0,
                        reserved_memory_mib=0, console={}, guest_addresses=[], running_config=None, job_id=None)


record_down = _down  # for the services whose work on a running VM may end its domain (a snapshot's revert)


def guest_spec(row, host, seed_path=None):
    """The domain of the VM as its definition says, for ``host`` (its domain type)."""
    definition = current_definition(row)
    stored = row["spec"] or {}
    boot = definition["boot"] or {}
    cpu = definition["cpu"]
    topology = (cpu["sockets"], cpu["cores"], cpu["threads"]) if cpu else None
    disks = []
    order = 1
    for disk in sorted(row["disks"], key=lambda d: (not d["bootable"], d["target"])):
        entry = {"pool": virt_storage.pool_name(disk["storage_domain"]), "volume": disk["volume"],
                 "format": disk["format"], "target": disk["target"], "bus": disk["bus"]}
        if disk["bootable"] and not boot.get("kernel"):
            entry["boot_order"] = order
            order += 1
        disks.append(entry)
    console = stored.get("console") or {}
    graphics = None
    if console.get("type") in ("vnc", "spice"):
        graphics = {"type": console["type"], "listen": console.get("listen"), "password": console.get("password")}
    return _domain.GuestSpec(
        row["name"], domain_type=host["domain_type"] or "qemu", memory_mib=definition["memory_mib"],
        vcpus=definition["vcpus"], max_memory_mib=definition["max_memory_mib"], max_vcpus=definition["max_vcpus"],
        topology=topology, kernel=boot.get("kernel"), initrd=boot.get("initrd"), cmdline=boot.get("cmdline"),
        boot_devices=[] if boot.get("kernel") or order > 1 else boot.get("devices") or ["hd"],
        interfaces=[_interface(n) for n in row["nics"]], disks=disks,
        serial_path=virt_vm.console_path(row["name"]) if definition["serial_console"] else None,
        uuid=str(row["id"]), cdroms=[{"path": seed_path}] if seed_path else (), graphics=graphics,
        cpu_model=row.get("cluster_cpu_model"))


def _seed_documents(row):
    documents = dict((row["spec"] or {}).get("cloud_init") or {})
    if not any(documents.values()):
        return None
    meta = yaml.safe_load(documents.get("meta_data") or "") or {}
    meta.setdefault("instance-id", str(row["id"]))
    meta.setdefault("local-hostname", row["name"])
    files = {"meta-data": yaml.safe_dump(meta, default_flow_style=False, sort_keys=True),
             "user-data": documents.get("user_data") or "#cloud-config\n{}\n"}
    if documents.get("network_config"):
        files["network-config"] = documents["network_config"]
    return files


class VmStart(_VmOperation):
    """Place, reserve under the cluster's lock, create the transient domain with no lock, confirm Up."""

    action = "vm.start"
    startable = ("Down",)  # the statuses a start takes a VM from
    pipelined = True  # starts of one data center wait for each other's reservation: the fewer round trips the better

    def observe(self, plan):
        super().observe(plan)
        if plan.row is not None and plan.row["status"] == "Down":
            _placing.warm(self.engine, plan.row["cluster_id"])

    def reserve(self, cur, plan):
        if plan.row is None:
            row, scheduler = self._row(cur, lock=True), None
        else:
            row, scheduler = self.row_and_scheduler(cur, plan.row)
        if row is None:  # check mode, a VM that is only predicted: placed as it would be
            cluster = _clusters.find(cur, self.predicted["cluster"])
            host = self._place(cur, self.predicted, cluster["id"], cluster["name"])
            plan.outcome = Outcome(True, {}, {}, dict(self.predicted, status="Up", host=host["name"]),
                                   ["start on %s" % host["name"]])
            return
        self._claim(cur, row)
        if self.check_mode and self.restart and row["status"] in RUNNING:
            row = dict(row, status="Down")  # stopped first, in the real run
        if row["status"] == "Up":
            plan.outcome = Outcome(False, {}, {}, view(row), [])
            return
        if row["status"] not in self.startable:
            raise ConflictError("Cannot start VM '%s': it is %s" % (row["name"], row["status"]))
        bad = [d["name"] for d in row["disks"] if d["status"] != "ok"]
        if bad:
            raise ConflictError("Cannot start VM '%s': disk %s is locked or illegal" % (row["name"], ", ".join(bad)))
        definition = current_definition(row)
        host = self._place(cur, dict(definition, name=row["name"]), row["cluster_id"], row["cluster"], scheduler)
        plan.row, plan.host = row, host
        plan.seed = _seed_documents(row)
        plan.actions = ["start on %s" % host["name"]] + (["write the cloud-init seed"] if plan.seed else [])
        if self.check_mode:
            plan.outcome = Outcome(True, {}, {}, dict(view(row), status="Up", host=host["name"]), plan.actions)
            return
        self._job(cur, plan, row, "start VM %s on host %s" % (row["name"], host["name"]))
        _jobs.note(cur, plan.job["id"], {"host_id": str(host["id"]), "host": host["name"]})
        reserve_on(cur, row, host, definition)

    def row_and_scheduler(self, cur, prepared):
        """The VM's row, locked, and the Scheduler of its cluster under the cluster's lock (None when the VM is no
        longer in the cluster ``prepared`` saw): the row, the lock and what changed in the kept snapshot are sent
        together, in this order (the cluster's lock after the VM's row, as ever), so that the lock is held one
        round trip the less. Each answer read is on a cursor of its own."""
        with self.engine.conn.cursor() as finding:
            vm_rows.send_find(finding, self.spec.name, lock=True, now=True)
            self.engine.lock(cur, LOCK_CLUSTER, prepared["cluster"])
            question = _placing.ask(self.engine, cur, prepared["cluster_id"])
            try:
                row = self._row(finding, lock=True, sent=True)
                if row is None or row["cluster_id"] != prepared["cluster_id"]:
                    return row, None
                return row, question.answer()
            finally:
                question.close()

    def _place(self, cur, definition, cluster_id, cluster_name, scheduler=None):
        """The host the VM starts on, chosen under the cluster's lock (held until the reservation commits);
        ``scheduler``: the cluster's, already up to date under that lock."""
        if scheduler is None:
            with self.engine.conn.pipeline():  # the lock and the first read go in one round trip, in this order
                self.engine.lock(cur, LOCK_CLUSTER, cluster_name)
                scheduler = _placing.scheduler_for(self.engine, cur, cluster_id)
        decision = scheduler.place(placement_request(definition))
        if decision.host is None:
            raise ConflictError("Cannot start VM '%s': no host of cluster %s can run it: %s"
                                % (definition["name"], cluster_name, decision.explain() or "the cluster has no hosts"))
        return decision.host

    def act(self, plan):
        if self.check_mode:
            return None
        host, row = plan.host, plan.row
        registry = _hosts.hypervisors(self.engine)
        plan.made = []

        def start(conn):
            # a definition a snapshot's run left (it died) would make the domain persistent: it goes first
            virt_snapshot.leftover(conn, row["name"])
            if virt_vm.find(conn, row["name"]) is not None:
                # not this run's: it is left alone, its files too (undo destroys nothing of it)
                plan.foreign = True
                raise HypervisorError("a domain named %s already runs there and the engine did not start it (it "
                                      "records the VM Down): stop that domain, or give the VM another name"
                                      % row["name"])
            seed_path = None
            if plan.seed:
                seed_path = virt_vm.write_seed(conn, row["name"], _seed.nocloud_seed(plan.seed))
                plan.made.append("seed")
            if row["spec"].get("serial_console", True):
                virt_vm.local_pool(conn)  # the console log's directory
            xml = _domain.guest_xml(guest_spec(row, host, seed_path))
            virt_vm.create(conn, xml)
            plan.made.append("domain")
            return virt_vm.live_view(conn, row["name"])
        return registry.call(host, "start VM '%s'" % row["name"], start, self.spec.timeout)

    def undo(self, plan, error):
        """The domain is destroyed by name whatever the run saw: a create whose answer was lost may have made
        it; but not one that ran there before this run (``foreign``). A host that cannot be asked leaves the VM
        Unknown (see ``release``), never Down."""
        if getattr(plan, "foreign", False):
            return
        registry = _hosts.hypervisors(self.engine)

        def clean(conn):
            virt_vm.destroy(conn, plan.row["name"])
            virt_vm.remove_local(conn, [virt_vm.seed_volume(plan.row["name"])])
        try:
            registry.call(plan.host, "clean up the failed start", clean, self.spec.timeout)
        except HypervisorError as exc:
            plan.unclean = str(exc)

    def release(self, cur, plan, error):
        if getattr(plan, "unclean", None):
            # it may run there: its host and reservation stay, so that nothing else starts it elsewhere
            vm_rows.set_runtime(cur, plan.row["id"], status=UNKNOWN, job_id=None,
                                status_reason="start failed (%s) and host %s could not be asked whether it runs: "
                                "%s" % (_operation.describe(error), plan.host["name"], plan.unclean))
            return
        _down(cur, plan.row, "start failed: %s" % _operation.describe(error))
        _events.record(cur, "VM_START_FAILED", "VM %s did not start on host %s: %s"
                       % (plan.row["name"], plan.host["name"], _operation.describe(error)), severity="error",
                       object_type="vm", object_id=plan.row["id"], object_name=plan.row["name"],
                       host=plan.host["name"], vm=plan.row["name"], job_id=plan.job["id"])

    def confirm(self, cur, plan, result):
        if self.check_mode:
            return plan.outcome
        row, host = plan.row, plan.host
        console = {}
        if result and result.get("console"):
            live = result["console"]
            address = live.get("listen")
            if address in (None, "0.0.0.0", "::"):
                address = host["address"] or host["name"]
            console = {"type": live["type"], "host": address, "port": live["port"],
                       "url": "%s://%s:%d" % (live["type"], address, live["port"])}
        if (row["spec"] or {}).get("serial_console", True):
            console["serial_log"] = "%s:%s" % (host["name"], virt_vm.console_path(row["name"]))
        vm_rows.set_runtime(cur, row["id"], status="Up", status_reason="", console=console, job_id=None,
                            running_config=current_definition(row))
        _events.record(cur, "VM_STARTED", "VM %s started on host %s" % (row["name"], host["name"]),
                       object_type="vm", object_id=row["id"], object_name=row["name"], host=host["name"],
                       vm=row["name"], job_id=plan.job["id"])
        fresh = dict(vm_rows.find(cur, row["name"]), now=_now(cur))
        return Outcome(True, {}, {}, view(fresh), plan.actions)


def reserve_on(cur, row, host, definition):
    """The VM's reservation on the host placement chose, written under the cluster's lock: WaitForLaunch."""
    vm_rows.set_runtime(cur, row["id"], status="WaitForLaunch", status_reason="", run_host_id=host["id"],
                        reserved_vcpus=definition["vcpus"], reserved_memory_mib=definition["memory_mib"])


def placement_request(definition):
    """What the scheduler is asked for the VM of this definition."""
    return {"name": definition["name"], "memory_mib": definition["memory_mib"], "vcpus": definition["vcpus"],
            "networks": sorted({n["network"] for n in definition["nics"]}),
            "storage_domains": sorted({d["storage_domain"] for d in definition["disks"]}),
            "hosts": definition["hosts"], "ha": bool((definition.get("ha") or {}).get("enabled"))}


def running_request(row):
    """The placement request of a VM that runs (a move takes it along): what it holds where it runs, which a
    definition changed since (memory, vCPUs pending a restart) does not change."""
    request = placement_request(dict(current_definition(row), name=row["name"]))
    request.update(memory_mib=row["reserved_memory_mib"] or request["memory_mib"],
                   vcpus=row["reserved_vcpus"] or request["vcpus"])
    return request


def placement_info(engine, name):
    """A dry run of the VM's placement: where it would start now and why not on each other host. A VM that runs
    is placed as if anew (what it holds on its host is not counted)."""
    validate_name("name", name)
    with engine.transaction() as cur:
        row = vm_rows.find(cur, name)
        if row is None:
            raise NotFoundError("VM", name, "tell where it would run")
        hosts = [dict(h) for h in vm_rows.placement_hosts(cur, row["cluster_id"])]
        context = vm_rows.placement_context(cur, row["cluster_id"])
    if row["status"] in ON_HOST and row["run_host_id"]:
        for host in hosts:
            if host["id"] == row["run_host_id"]:
                host["committed_memory_mib"] -= row["reserved_memory_mib"]
                host["committed_vcpus"] -= row["reserved_vcpus"]
                host["vms"] -= 1
                if row["ha_enabled"]:
                    host["ha_memory_mib"] -= row["reserved_memory_mib"]
                    host["ha_vms"] -= 1
        context["vms"].pop(name, None)
    request = placement_request(dict(current_definition(row), name=name))
    scheduler = _placement.Scheduler(hosts, **context)
    decision = scheduler.place(request)
    chosen = decision.host["name"] if decision.host else None
    return {"vm": name, "cluster": row["cluster"], "policy": context["policy"], "host": chosen,
            "runs_on": row["host"] if row["status"] in ON_HOST else None,
            "hosts": [{"name": host, "verdict": "chosen" if host == chosen else "fits" if why is None else "rejected",
                       "reason": why, "score": score} for host, why, score in scheduler.assess(request)]}


def balance_info(engine, cluster, policy=None, params=None):
    """The migrations the cluster's policy (or ``policy``, with ``params``) proposes for its current state, with
    their reasons, and what it would change but cannot (read only: nothing moves)."""
    validate_name("cluster", cluster)
    if policy is not None and policy not in _choices.SCHEDULING_POLICIES:
        raise ValidationError("policy", "%s is not a scheduling policy (one of %s)"
                              % (shown(policy), ", ".join(_choices.SCHEDULING_POLICIES)))
    with engine.transaction() as cur:
        row = _clusters.find(cur, cluster)
        if row is None:
            raise NotFoundError("cluster", cluster, "balance cluster '%s'" % cluster)
        hosts = vm_rows.placement_hosts(cur, row["id"])
        context = vm_rows.placement_context(cur, row["id"])
        vms = vm_rows.listed(cur, cluster=cluster, statuses=sorted(ON_HOST))
    if policy is not None and policy != context["policy"]:
        context["policy"] = policy
    elif params is None:
        params = row["scheduling_params"]
    params = normalize_parameters(context["policy"], params, field="policy_params")
    running = []
    # what may move: running VMs on hosts that answer (the others count in their hosts' commitments, which the
    # snapshot reads from the reservations, but a pass could never move them)
    answering = {h["name"] for h in hosts if h["status"] not in ("NonResponsive", "Installing")}
    for vm in vms:
        if not vm["host"] or vm["status"] != "Up" or vm["host"] not in answering:
            continue
        request = dict(running_request(vm), host=vm["host"])
        running.append(request)
    sustained = None
    if "duration_minutes" in params:  # the loads that held for the policy's duration
        with engine.transaction() as cur:
            sustained = host_rows.sustained_loads(cur, row["id"], params["duration_minutes"])
    migrations, problems = _balancer.balance(_placement.Scheduler(hosts, **context), running, params, sustained)
    return {"cluster": cluster, "policy": context["policy"], "params": params, "migrations": migrations,
            "problems": problems}


def _recover(engine, job, record, look=None):
    """A recovery: what the VM's host says of its domain (True, False, None when it does not answer), and of
    anything else ``look(found, running)`` asks it (with no lock held), then ``record(cur, row, found, running)``
    under the lock, which returns what it recorded."""
    with engine.transaction() as cur:
        found = vm_rows.run_host_of(cur, job["object_id"])
    running = _on_its_host(engine, found)
    if look is not None and found:
        look(found, running)
    how = "the VM is gone"
    with engine.transaction() as cur:
        _operation.lock_for(engine, cur, job)
        row = vm_rows.find(cur, found["name"]) if found else None
        if row is not None:
            how = record(cur, row, found, running)
        _jobs.end(cur, job["id"], "aborted", {"recovered_by": _jobs.OWNER})
    return how


recover_with = _recover  # for the services whose VM operations recover the same way (an HA restart)


@_operation.recovery("vm.start")
def _recover_start(engine, job):
    """A run died while starting: the VM runs if its host has the domain, else it is Down."""
    def record(cur, row, _found, running):
        if running:
            vm_rows.set_runtime(cur, row["id"], status="Up", job_id=None, running_config=current_definition(row))
            return "the VM runs on its host: recorded Up"
        if running is None:
            vm_rows.set_runtime(cur, row["id"], status=UNKNOWN, job_id=None,
                                status_reason="its start was interrupted and its host does not answer")
            return "its host does not answer: recorded Unknown"
        _down(cur, row, "its start was interrupted")
        return "the VM did not start: recorded Down"
    return _recover(engine, job, record)


def _on_its_host(engine, found):
    """Whether the VM's domain is on the host its runtime names: True, False, or None (the host does not answer)."""
    if not found or not found["host_id"]:
        return False
    host = {"id": found["host_id"], "name": found["host"], "libvirt_uri": found["libvirt_uri"]}
    try:
        return _hosts.hypervisors(engine).call(host, "look for VM '%s'" % found["name"],
                                               lambda conn: virt_vm.find(conn, found["name"]) is not None)
    except HypervisorError:
        return None


@_operation.recovery("vm.stop")
def _recover_stop(engine, job):
    """A run died while stopping: Down if its host no longer has the domain, else Up again (the stop can be asked
    again); Unknown when the host does not answer."""
    def record(cur, row, _found, running):
        if row["status"] == "Suspended":
            vm_rows.set_runtime(cur, row["id"], job_id=None)
            return "released"
        if running is False:
            _down(cur, row, "")
            return "the VM is down: recorded Down"
        vm_rows.set_runtime(cur, row["id"], status="Up" if running else UNKNOWN, job_id=None)
        return "recorded %s" % ("Up" if running else UNKNOWN)
    return _recover(engine, job, record)


class VmStop(_VmOperation):
    """ACPI power button and a wait; forced off only with ``force``; recorded Down."""

    action = "vm.stop"

    def reserve(self, cur, plan):
        row = self._row(cur, lock=True)
        if row is None:
            plan.outcome = Outcome(False, {}, {}, self.predicted, [])
            return
        self._claim(cur, row)
        if row["status"] == "Down":
            plan.outcome = Outcome(False, {}, {}, view(row), [])
            return
        plan.row = row
        if row["status"] == "RestartingHA":
            # it holds no host: stopping it calls its HA restart off (with force only: its host may not be proven
            # dead, and the VM may run there still)
            if not self.spec.force:
                raise ConflictError("Cannot stop VM '%s': it waits for its HA restart (%s); give force: true to "
                                    "call the restart off" % (row["name"], row["status_reason"]))
            plan.actions = ["call the HA restart off"]
            if not self.check_mode:
                _down(cur, row, "its HA restart was called off")
                _events.record(cur, "VM_STOPPED", "VM %s: its HA restart was called off" % row["name"],
                               object_type="vm", object_id=row["id"], object_name=row["name"], vm=row["name"])
            plan.outcome = Outcome(True, {}, {}, dict(view(row), status="Down", host=None), plan.actions)
            return
        if row["status"] == "Suspended":
            if not self.spec.force:
                raise ConflictError("Cannot stop VM '%s': it is suspended, and stopping it discards its memory; "
                                    "resume it (state: running) or give force: true" % row["name"])
            plan.host = _saved_host(row)
            plan.actions = ["discard the saved memory on %s" % plan.host["name"]]
            if self.check_mode:
                plan.outcome = Outcome(True, {}, {}, dict(view(row), status="Down", host=None), plan.actions)
                return
            self._job(cur, plan, row, "stop VM %s" % row["name"])
            return
        if row["status"] not in ("Up", "Paused", "PoweringDown", UNKNOWN):
            raise ConflictError("Cannot stop VM '%s': it is %s" % (row["name"], row["status"]))
        plan.host = {"id": row["run_host_id"], "name": row["host"], "libvirt_uri": row["host_uri"]}
        plan.actions = ["shut down (ACPI) on %s" % row["host"]]
        if self.spec.force:
            plan.actions.append("power off if it has not within %d s" % self.spec.stop_timeout)
        if self.check_mode:
            plan.outcome = Outcome(True, {}, {}, dict(view(row), status="Down", host=None), plan.actions)
            return
        self._job(cur, plan, row, "stop VM %s" % row["name"])
        vm_rows.set_runtime(cur, row["id"], status="PoweringDown")

    def act(self, plan):
        if self.check_mode:
            return None
        row = plan.row

        def stop(conn):
            how = "discarded" if row["status"] == "Suspended" else virt_vm.shutdown(
                conn, row["name"], self.spec.stop_timeout, self.spec.force)
            virt_vm.remove_local(conn, [virt_vm.seed_volume(row["name"]), virt_vm.save_volume(row["name"])])
            return how
        return _hosts.hypervisors(self.engine).call(plan.host, "stop VM '%s'" % row["name"], stop,
                                                    self.spec.timeout + self.spec.stop_timeout)

    def release(self, cur, plan, error):
        vm_rows.set_runtime(cur, plan.row["id"], status=plan.row["status"], job_id=None)

    def confirm(self, cur, plan, result):
        if self.check_mode:
            return plan.outcome
        row = plan.row
        _down(cur, row, "")
        actions = list(plan.actions)
        if result == "forced":
            actions.append("powered off after %d s" % self.spec.stop_timeout)
        _events.record(cur, "VM_STOPPED", "VM %s %s on host %s" % (
            row["name"], {"forced": "was powered off", "gone": "was already down"}.get(result, "shut down"),
            row["host"]), object_type="vm", object_id=row["id"], object_name=row["name"], host=row["host"],
            vm=row["name"], job_id=plan.job["id"])
        fresh = dict(vm_rows.find(cur, row["name"]), now=_now(cur))
        return Outcome(True, {}, {}, view(fresh), actions)


_operation.release_only("vm.define", lambda cur, vm_id: vm_rows.set_runtime(cur, vm_id, job_id=None),
                        "released; the definition stands and what was not applied live waits for a restart")


def _saved_host(row):
    saved = row.get("saved_state") or {}
    return {"id": saved.get("host_id"), "name": saved.get("host"), "libvirt_uri": saved.get("libvirt_uri")}


class VmSuspend(_VmOperation):
    """Save the running guest's memory to a file on its host (the domain ends) and free the host's resources.

    A transient domain has no managed save: the file is ``<vm>.save`` in the host's local pool, and the
    VM resumes on that host (``state: running``)."""

    action = "vm.suspend"

    def reserve(self, cur, plan):
        row = self._row(cur, lock=True)
        if row is None:
            raise ConflictError("Cannot suspend VM '%s': it is not running" % self.spec.name)
        self._claim(cur, row)
        if row["status"] == "Suspended":
            plan.outcome = Outcome(False, {}, {}, view(row), [])
            return
        if row["status"] not in ("Up", "Paused"):
            raise ConflictError("Cannot suspend VM '%s': it is %s, not running" % (row["name"], row["status"]))
        plan.row = row
        plan.host = {"id": row["run_host_id"], "name": row["host"], "libvirt_uri": row["host_uri"]}
        plan.actions = ["save its memory on %s" % row["host"]]
        if self.check_mode:
            plan.outcome = Outcome(True, {}, {}, dict(view(row), status="Suspended", host=None), plan.actions)
            return
        self._job(cur, plan, row, "suspend VM %s" % row["name"])

    def act(self, plan):
        if self.check_mode:
            return None
        name = plan.row["name"]
        return _hosts.hypervisors(self.engine).call(plan.host, "suspend VM '%s'" % name,
                                                    lambda conn: virt_vm.save(conn, name), self.spec.timeout + 600)

    def undo(self, plan, error):
        # the guest runs on if the save failed before it ended; a save file left half-written goes
        name = plan.row["name"]
        _hosts.hypervisors(self.engine).call(plan.host, "clean up the failed suspend", lambda conn: (
            virt_vm.remove_local(conn, [virt_vm.save_volume(name)]) if virt_vm.find(conn, name) else None),
            self.spec.timeout)

    def confirm(self, cur, plan, result):
        if self.check_mode:
            return plan.outcome
        row, host = plan.row, plan.host
        vm_rows.set_runtime(cur, row["id"], status="Suspended", status_reason="", run_host_id=None, reserved_vcpus=0,
                            reserved_memory_mib=0, console={}, job_id=None,
                            saved_state={"host_id": str(host["id"]), "host": host["name"],
                                         "libvirt_uri": host["libvirt_uri"], "path": result,
                                         "running_config": row["running_config"]})
        _events.record(cur, "VM_SUSPENDED", "VM %s was suspended on host %s" % (row["name"], host["name"]),
                       object_type="vm", object_id=row["id"], object_name=row["name"], host=host["name"],
                       vm=row["name"], job_id=plan.job["id"])
        fresh = dict(vm_rows.find(cur, row["name"]), now=_now(cur))
        return Outcome(True, {}, {}, view(fresh), plan.actions)


class VmResume(VmStart):
    """Restore a suspended VM on the host that holds its memory, with the reservation made first."""

    action = "vm.resume"

    def reserve(self, cur, plan):
        row = self._row(cur, lock=True)
        self._claim(cur, row)
        if row["status"] != "Suspended":
            return super().reserve(cur, plan)
        saved = _saved_host(row)
        definition = current_definition(row)
        definition = dict(definition, name=row["name"], hosts=[saved["name"]])
        host = self._place(cur, definition, row["cluster_id"], row["cluster"])
        plan.row, plan.host, plan.seed = row, host, None
        plan.actions = ["resume on %s" % host["name"]]
        if self.check_mode:
            plan.outcome = Outcome(True, {}, {}, dict(view(row), status="Up", host=host["name"]), plan.actions)
            return
        self._job(cur, plan, row, "resume VM %s on host %s" % (row["name"], host["name"]))
        # what its recovery needs if this run dies: where the memory is
        _jobs.note(cur, plan.job["id"], {"saved_state": row["saved_state"]})
        vm_rows.set_runtime(cur, row["id"], status="WaitForLaunch", status_reason="", run_host_id=host["id"],
                            reserved_vcpus=definition["vcpus"], reserved_memory_mib=definition["memory_mib"],
                            saved_state=None)

    def act(self, plan):
        if self.check_mode:
            return None
        name = plan.row["name"]
        plan.made = []

        def resume(conn):
            virt_vm.restore(conn, name, (plan.row["saved_state"] or {}).get("path"))
            plan.made.append("domain")
            return virt_vm.live_view(conn, name)
        return _hosts.hypervisors(self.engine).call(plan.host, "resume VM '%s'" % name, resume,
                                                    self.spec.timeout + 600)

    def undo(self, plan, error):
        """A restore that failed leaves the memory file: the VM stays suspended, to be resumed again."""
        if "domain" in plan.made:
            _hosts.hypervisors(self.engine).call(plan.host, "clean up the failed resume",
                                                 lambda conn: virt_vm.destroy(conn, plan.row["name"]),
                                                 self.spec.timeout)

    def release(self, cur, plan, error):
        row = plan.row
        vm_rows.set_runtime(cur, row["id"], status="Suspended", status_reason="resume failed: %s"
                            % _operation.describe(error), run_host_id=None, reserved_vcpus=0, reserved_memory_mib=0,
                            job_id=None, saved_state=row["saved_state"])

    def confirm(self, cur, plan, result):
        outcome = super().confirm(cur, plan, result)
        if not self.check_mode:
            config = (plan.row["saved_state"] or {}).get("running_config")
            vm_rows.set_runtime(cur, plan.row["id"], running_config=config)
            outcome.resource = view(dict(vm_rows.find(cur, plan.row["name"]), now=_now(cur)))
        return outcome

    def after_confirm(self, plan):
        name = plan.row["name"]
        try:
            _hosts.hypervisors(self.engine).call(plan.host, "delete the saved memory of VM '%s'" % name,
                                                 lambda conn: virt_vm.remove_local(conn, [virt_vm.save_volume(name)]),
                                                 self.spec.timeout)
        except HypervisorError:
            pass  # the VM runs; the file goes with its next stop or removal


@_operation.recovery("vm.suspend")
def _recover_suspend(engine, job):
    """A run died while suspending: Up if the domain still runs; else Suspended if its memory file is there, Down
    if not (the save never finished)."""
    seen = {}

    def look(found, running):
        """Whether the memory file is on the host (asked before any lock is taken)."""
        if running is not False or not found["host_id"]:
            return
        host = {"id": found["host_id"], "name": found["host"], "libvirt_uri": found["libvirt_uri"]}
        try:
            seen["saved"] = _hosts.hypervisors(engine).call(
                host, "look for the saved memory of VM '%s'" % found["name"],
                lambda conn: virt_vm.local_file(conn, virt_vm.save_volume(found["name"])))
        except HypervisorError:
            seen["saved"] = None

    def record(cur, row, found, running):
        if running or running is None:
            vm_rows.set_runtime(cur, row["id"], status="Up" if running else UNKNOWN, job_id=None)
            return "recorded %s" % ("Up" if running else UNKNOWN)
        host = {"id": found["host_id"], "name": found["host"], "libvirt_uri": found["libvirt_uri"]}
        saved = seen.get("saved")
        if not saved:
            _down(cur, row, "its suspend was interrupted before its memory was saved")
            return "recorded Down"
        vm_rows.set_runtime(cur, row["id"], status="Suspended", run_host_id=None, reserved_vcpus=0,
                            reserved_memory_mib=0, console={}, job_id=None,
                            saved_state={"host_id": str(host["id"]), "host": host["name"],
                                         "libvirt_uri": host["libvirt_uri"], "path": saved,
                                         "running_config": row["running_config"]})
        return "recorded Suspended"
    return _recover(engine, job, record, look)


@_operation.recovery("vm.resume")
def _recover_resume(engine, job):
    """A run died while resuming: Up if the domain runs, else Suspended again with the memory it had."""
    saved = (job.get("plan") or {}).get("saved_state")

    def record(cur, row, _found, running):
        if running:
            vm_rows.set_runtime(cur, row["id"], status="Up", job_id=None,
                                running_config=(saved or {}).get("running_config"))
            return "recorded Up"
        vm_rows.set_runtime(cur, row["id"], status="Suspended", run_host_id=None, reserved_vcpus=0,
                            reserved_memory_mib=0, job_id=None, saved_state=saved,
                            status_reason="its resume was interrupted")
        return "recorded Suspended again"
    return _recover(engine, job, record)


class VmRemove(_VmOperation):
    """Remove the definition (a running VM only with ``force``: it is powered off first) and its disks."""

    action = "vm.remove"

    def reserve(self, cur, plan):
        row = self._row(cur, lock=True, required=False)
        if row is None:
            plan.outcome = Outcome(False, {}, {}, {}, [])
            return
        self._claim(cur, row)
        if row["status"] in ON_HOST + ("Suspended",) and not self.spec.force:
            where = row["host"] or _saved_host(row)["name"]
            raise ConflictError("Cannot remove VM '%s': it is %s on host %s; stop it first, or give force: true to "
                                "power it off and remove it" % (row["name"], row["status"], where))
        if not self.spec.remove_disks:
            snapshots = [s["name"] for s in snapshot_rows.of_vm(cur, row["id"])]
            if snapshots:
                raise ConflictError("Cannot remove VM '%s' and keep its disks: snapshots %s are in their images; "
                                    "delete them first, or remove the disks with the VM"
                                    % (row["name"], ", ".join(snapshots)))
        plan.row = row
        plan.host = {"id": row["run_host_id"], "name": row["host"], "libvirt_uri": row["host_uri"]} \
            if row["status"] in ON_HOST and row["run_host_id"] else _saved_host(row) if row["status"] == "Suspended" \
            else None
        if row["status"] == "Suspended":
            plan.actions = ["discard the saved memory on %s" % plan.host["name"], "remove"]
        else:
            plan.actions = (["power off on %s" % row["host"]] if plan.host else []) + ["remove"]
        plan.disks = list(row["disks"]) if self.spec.remove_disks else []
        plan.actions += ["remove disk %s" % d["name"] for d in plan.disks]
        plan.before = {"name": row["name"], "status": row["status"]}
        if self.check_mode:
            plan.outcome = Outcome(True, plan.before, {}, {}, plan.actions)
            return
        self._job(cur, plan, row, "remove VM %s" % row["name"])

    def act(self, plan):
        if plan.host is None:
            return None

        def stop(conn):
            virt_vm.destroy(conn, plan.row["name"])
            virt_vm.remove_local(conn, [virt_vm.seed_volume(plan.row["name"]),
                                        virt_vm.console_volume(plan.row["name"]),
                                        virt_vm.save_volume(plan.row["name"])])
        return _hosts.hypervisors(self.engine).call(plan.host, "power off VM '%s'" % plan.row["name"], stop,
                                                    self.spec.timeout)

    def confirm(self, cur, plan, result):
        row = plan.row
        _down(cur, row, "removed")
        for disk in plan.disks:
            _disk.disk_rows.detach(cur, disk["disk_id"])
        vm_rows.delete(cur, row["id"])
        _events.record(cur, "VM_REMOVED", "VM %s was removed" % row["name"], object_type="vm",
                       object_id=row["id"], object_name=row["name"], vm=row["name"], job_id=plan.job["id"])
        return Outcome(True, plan.before, {}, {}, plan.actions)

    def after_confirm(self, plan):
        for disk in plan.disks:
            _operation.run(self.engine, _disk.DiskRemove(self.engine, False, _disk.DiskSpec(
                name=disk["name"], storage_domain=disk["storage_domain"], state="absent", timeout=self.spec.timeout,
                wait_timeout=self.spec.wait_timeout)))


_operation.release_only("vm.remove", lambda cur, vm_id: vm_rows.set_runtime(cur, vm_id, job_id=None),
                        "released; removing the VM again finishes it")


# -- reading ---------------------------------------------------------------------------------------

def vm_info(engine, names=None, cluster=None, host=None, tags=None, statuses=None, console_log=False, timeout=15):
    with engine.transaction() as cur:
        rows = vm_rows.listed(cur, names, cluster, host, tags, statuses)
        now = _now(cur)
    rows = [dict(r, now=now) for r in rows]
    live = _live_states(engine, rows, timeout)
    views = [view(r, live.get(r["name"])) for r in rows]
    if console_log:
        for row, shown_view in zip(rows, views):  # noqa: B905 - same length
            if row["status"] in RUNNING and row["run_host_id"]:
                host_row = {"id": row["run_host_id"], "name": row["host"], "libvirt_uri": row["host_uri"]}
                try:
                    shown_view["console_log"] = _hosts.hypervisors(engine).call(
                        host_row, "read the console of VM '%s'" % row["name"],
                        lambda conn, name=row["name"]: virt_vm.read_console(conn, name), timeout)
                except HypervisorError as exc:
                    shown_view["console_log"] = None
                    shown_view["console_log_error"] = str(exc)
    return views
