# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: engine
author: virtplane.kvm maintainers (@virtplane)
short_description: VMs (and hypervisor hosts) from the virtplane engine database
version_added: 0.6.0
description:
  - Reads the VMs the engine knows from its PostgreSQL database, in one snapshot, and makes each an inventory
    host, grouped by cluster, by the host it runs on, by tag and by status (C(status_up), C(status_down) ...).
  - Each VM's variables are under C(virtplane_vm), with the same fields as M(virtplane.kvm.vm_info) returns
    (no console password, cloud-init secrets masked). C(ansible_host) is the VM's first address where the
    engine knows one.
  - With O(hosts=true), the hypervisor hosts too, in C(virtplane_hosts) and C(hypervisors_<cluster>) (never in
    the VMs' C(cluster_<name>)), with C(virtplane_host) and C(ansible_host) (the address the engine reaches them
    at).
  - The cache is kept per configuration file and per set of options (the password aside).
  - Reads only; the engine database is not changed. No hypervisor is asked.
  - The configuration file's name ends with C(virtplane.yml) or C(virtplane.yaml).
extends_documentation_fragment:
  - constructed
  - inventory_cache
options:
  plugin:
    description: The name of this plugin; makes the file a configuration of it.
    required: true
    type: str
    choices: [virtplane.kvm.engine]
  engine:
    description:
      - How to reach the engine database, as the modules' O(engine) option (same keys, same defaults, the same
        E(VIRTPLANE_ENGINE_*) environment variables).
      - Where the password is not given, it is read from O(engine.password_file) if that file exists.
    type: dict
    default: {}
    suboptions:
      host:
        description: Database server host name or address, or the directory of its unix socket.
        type: str
        default: localhost
      port:
        description: Database server port.
        type: int
        default: 5432
      database:
        description: Name of the engine database.
        type: str
        default: virtplane
      user:
        description: Database role to log in as.
        type: str
        default: virtplane
      password:
        description: Its password. Never shown in the inventory or in a message.
        type: str
      password_file:
        description: File holding the password (one line).
        type: str
        default: /etc/virtplane/engine-db/password
      sslmode:
        description: libpq TLS mode for TCP connections.
        type: str
        default: prefer
        choices: [disable, allow, prefer, require, verify-ca, verify-full]
      sslrootcert:
        description:
          - Absolute path of the CA certificate that signed the server's (the engine role's
            C(engine_pki_dir)/cacert.pem), for V(verify-ca) and V(verify-full).
        type: str
        version_added: 0.6.0
      connect_timeout:
        description: Seconds to wait for the database server.
        type: int
        default: 10
  clusters:
    description: Only the VMs (and hosts) of these clusters; all when empty.
    type: list
    elements: str
    default: []
  status:
    description: Only the VMs in these statuses (for example C([Up]), as M(virtplane.kvm.vm_info) spells them); all
      when empty.
    type: list
    elements: str
    default: []
  tags:
    description: Only the VMs with at least one of these tags; all when empty.
    type: list
    elements: str
    default: []
  hosts:
    description: Also list the hypervisor hosts.
    type: bool
    default: false
  console:
    description:
      - Make the P(virtplane.kvm.console#connection) connection the connection of each VM that is C(Up) and whose
        address the engine does not know, so that M(ansible.builtin.raw) commands reach it through its interactive
        console. Every VM on a host has C(ansible_virtplane_libvirt_uri) (its host's libvirt URI) and
        C(ansible_virtplane_domain) either way, unless its host's URI carries a password.
    type: bool
    default: false
    version_added: 0.6.0
"""

EXAMPLES = r"""
# inventories/vms.virtplane.yml: the running VMs of cluster prod, grouped as the plugin does, and by OS tag
plugin: virtplane.kvm.engine
engine:
  host: engine1.example.com
  sslmode: verify-full
  password_file: ~/.virtplane/engine-password
clusters: [prod]
status: [Up]
keyed_groups:
  - key: virtplane_vm.vcpus | string
    prefix: vcpus
groups:
  big: virtplane_vm.memory_mib >= 4096
compose:
  ansible_user: "'cloud'"
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/virtplane-inventory
cache_timeout: 300
"""

import hashlib
import json
import os
import re

from ansible.errors import AnsibleParserError
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

ENGINE_KEYS = ("host", "port", "database", "user", "password", "password_file", "sslmode", "sslrootcert",
               "connect_timeout")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def read_engine(options, clusters=(), statuses=(), tags=(), with_hosts=False):
    """{"vms": [view...], "hosts": [...]}: the engine's VMs (and hosts) as the plugin lists them, read in one
    snapshot; a plain structure, so that a cache keeps it as JSON."""
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db, _objects, _vms
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _vm
    from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import plain
    from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _client

    engine = _db.connect(options)
    try:
        with engine.consistent_read() as cur:
            rows = _vms.listed(cur, tags=list(tags) or None, statuses=list(statuses) or None)
            rows = [r for r in rows if not clusters or r["cluster"] in clusters]
            vms = [plain(_vm.view(r)) for r in rows]
            every = _objects.hosts(cur)
            hosts = [plain(h) for h in every if not clusters or h["cluster"] in clusters] if with_hosts else []
            # how the controller opens a running VM's console: its host's libvirt URI (none with a password in it)
            running = {vm["host"] for vm in vms if vm["host"]}
            uris = {h["name"]: h["libvirt_uri"] for h in every
                    if h["name"] in running and h["libvirt_uri"] and not _client.uri_passwords(h["libvirt_uri"])}
    finally:
        engine.close()
    return {"vms": vms, "hosts": hosts, "libvirt_uris": uris}


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "virtplane.kvm.engine"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(("virtplane.yml", "virtplane.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        options = self._engine_options()
        clusters, statuses, tags = (self._names(k) for k in ("clusters", "status", "tags"))
        with_hosts = self.get_option("hosts")

        # a change of what is read is another cache entry
        what = json.dumps([{k: v for k, v in options.items() if k != "password"}, clusters, statuses, tags,
                           with_hosts], sort_keys=True, default=str)
        cache_key = "%s_%s" % (self.get_cache_key(path), hashlib.sha256(what.encode()).hexdigest()[:12])
        use_cache = self.get_option("cache") and cache
        update_cache = self.get_option("cache") and not cache
        data = None
        if use_cache:
            try:
                data = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if data is None:
            data = self._read(options, clusters, statuses, tags, with_hosts)
        if update_cache:
            self._cache[cache_key] = data
        self._populate(data)

    def _engine_options(self):
        given = self.get_option("engine") or {}
        if not isinstance(given, dict):
            raise AnsibleParserError("virtplane.kvm.engine: engine must be a mapping of the connection's options")
        unknown = sorted(set(given) - set(ENGINE_KEYS))
        if unknown:
            raise AnsibleParserError("virtplane.kvm.engine: engine.%s is not an option (%s)"
                                     % (unknown[0], ", ".join(ENGINE_KEYS)))
        options = {}
        for key in ENGINE_KEYS:
            value = given.get(key)
            if value is None:
                value = os.environ.get("VIRTPLANE_ENGINE_%s" % key.upper())
                if value is not None and key in ("port", "connect_timeout"):
                    value = int(value) if value.isdigit() else value
            if value is not None and key in ("password_file", "sslrootcert"):
                value = os.path.expanduser(value)
            options[key] = value
        return options

    def _names(self, key):
        from ansible_collections.virtplane.kvm.plugins.module_utils._choices import VM_STATUSES

        values = self.get_option(key) or []
        for value in values:
            if not isinstance(value, str) or not _NAME.fullmatch(value):
                raise AnsibleParserError("virtplane.kvm.engine: %s: %r is not a name" % (key, value))
            if key == "status" and value not in VM_STATUSES:
                raise AnsibleParserError("virtplane.kvm.engine: status: %r is not a VM status (%s)"
                                         % (value, ", ".join(VM_STATUSES)))
        return values

    def _read(self, options, clusters, statuses, tags, with_hosts):
        from ansible_collections.virtplane.kvm.plugins.module_utils._errors import VirtplaneError

        try:
            return read_engine(options, clusters, statuses, tags, with_hosts)
        except VirtplaneError as exc:
            raise AnsibleParserError("virtplane.kvm.engine: %s" % to_native(exc))

    def _populate(self, data):
        strict = self.get_option("strict")
        console = self.get_option("console")
        self.inventory.add_group("virtplane_vms")
        if data["hosts"]:
            self.inventory.add_group("virtplane_hosts")
        vm_names = {vm["name"] for vm in data["vms"]}
        for host in data["hosts"]:
            if host["name"] in vm_names:
                raise AnsibleParserError("virtplane.kvm.engine: %r is the name of a host and of a VM; an inventory "
                                         "can hold only one of them (list the hosts with another source)"
                                         % host["name"])
            name = host["name"]
            self.inventory.add_host(name, group="virtplane_hosts")
            self._group(name, "hypervisors", host["cluster"])
            self.inventory.set_variable(name, "virtplane_host", host)
            if host["address"]:
                self.inventory.set_variable(name, "ansible_host", host["address"])
            self._construct(name, strict)
        for vm in data["vms"]:
            name = vm["name"]
            self.inventory.add_host(name, group="virtplane_vms")
            self._group(name, "cluster", vm["cluster"])
            self._group(name, "status", vm["status"])
            if vm["host"]:
                self._group(name, "host", vm["host"])
            for tag in vm["tags"]:
                self._group(name, "tag", tag)
            self.inventory.set_variable(name, "virtplane_vm", vm)
            addresses = [a for a in vm["addresses"] if isinstance(a, str)]
            if addresses:
                self.inventory.set_variable(name, "ansible_host", addresses[0])
            uri = data.get("libvirt_uris", {}).get(vm["host"])
            if uri:
                self.inventory.set_variable(name, "ansible_virtplane_libvirt_uri", uri)
                self.inventory.set_variable(name, "ansible_virtplane_domain", name)
                if console and not addresses and vm["status"] == "Up":
                    self.inventory.set_variable(name, "ansible_connection", "virtplane.kvm.console")
            self._construct(name, strict)

    def _group(self, name, kind, value):
        group = self._sanitize_group_name("%s_%s" % (kind, value)).lower()
        self.inventory.add_group(group)
        self.inventory.add_child(group, name)

    def _construct(self, name, strict):
        variables = self.inventory.get_host(name).get_vars()
        self._set_composite_vars(self.get_option("compose"), variables, name, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), variables, name, strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, name, strict=strict)
