# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A VM's instance on a host: its transient domain, its seed and console files, its live changes.

What a running VM keeps on its host besides the domain — the NoCloud seed ISO and the serial
console's log — is in one directory, ``/var/lib/virtplane/local``, seen through a transient libvirt
``dir`` pool (``virtplane-local``): the engine writes the seed and reads the console log through
libvirt's volume streams, so it needs no other way into the host.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import HypervisorError
from ansible_collections.virtplane.kvm.plugins.module_utils.virt._client import libvirt, translated
from ansible_collections.virtplane.kvm.plugins.module_utils.virt._storage import send_all

LOCAL_POOL = "virtplane-local"
LOCAL_DIR = "/var/lib/virtplane/local"


def seed_volume(vm_name):
    return vm_name + "-seed.iso"


def console_volume(vm_name):
    return vm_name + "-console.log"


def save_volume(vm_name):
    return vm_name + ".save"


def console_path(vm_name):
    return "%s/%s" % (LOCAL_DIR, console_volume(vm_name))


def _no_domain(exc):
    return exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN


@translated()
def find(conn, name):
    """The domain ``name`` on this host, or None."""
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if _no_domain(exc):
            return None
        raise


@translated()
def running_names(conn):
    """Names of the host's active domains: one call, whatever their number."""
    return {dom.name() for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}


def running_domains(conn):
    """{name: UUID} of the host's active domains (defined but stopped ones are not running): one call."""
    return {dom.name(): dom.UUIDString() for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}


@translated()
def create(conn, xml):
    """Start the transient domain; it runs when this returns."""
    return conn.createXML(xml, 0)


@translated()
def destroy(conn, name):
    """Power the domain off at once (True), or say it was not there (False)."""
    try:
        conn.lookupByName(name).destroy()
        return True
    except libvirt.libvirtError as exc:
        if _no_domain(exc) or exc.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID:
            return False
        raise


def shutdown(conn, name, timeout, force):
    """ACPI power button, then wait for the guest to power off; after ``timeout`` s, power it off only
    when ``force``. Returns "stopped", "forced" or "gone" (it was not running)."""
    dom = find(conn, name)
    if dom is None:
        return "gone"

    @translated()
    def press():
        try:
            dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        except libvirt.libvirtError as exc:
            if not _no_domain(exc) and exc.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                raise
    press()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if find(conn, name) is None:
            return "stopped"
        time.sleep(0.25)
    if not force:
        raise HypervisorError("the guest did not power off within %d s of the ACPI power button (force: true powers "
                              "it off)" % timeout)
    destroy(conn, name)
    return "forced"


@translated()
def live_view(conn, name):
    """What the running domain has: vCPUs, memory, its NICs by MAC and its graphics console."""
    dom = conn.lookupByName(name)
    root = ET.fromstring(dom.XMLDesc(0))
    graphics = root.find("devices/graphics")
    console = None
    if graphics is not None:
        console = {"type": graphics.get("type"), "port": int(graphics.get("port") or -1),
                   "listen": graphics.get("listen")}
    macs = [i.find("mac").get("address") for i in root.findall("devices/interface") if i.find("mac") is not None]
    return {"vcpus": dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE), "memory_kib": dom.info()[2], "macs": macs,
            "console": console}


@translated()
def set_memory(conn, name, memory_mib):
    conn.lookupByName(name).setMemoryFlags(memory_mib * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)


@translated()
def set_vcpus(conn, name, vcpus):
    conn.lookupByName(name).setVcpusFlags(vcpus, libvirt.VIR_DOMAIN_AFFECT_LIVE)


def save(conn, name):
    """Save the running domain's memory to ``<vm>.save`` in the local pool (the domain ends); its path."""
    @translated()
    def write():
        pool = local_pool(conn)
        path = "%s/%s" % (LOCAL_DIR, save_volume(name))
        old = _volume(pool, save_volume(name))
        if old is not None:
            old.delete(0)
        conn.lookupByName(name).saveFlags(path, None, 0)
        return path
    return write()


@translated()
def restore(conn, name, path):
    """Start the domain again from its saved memory (transient, as it was)."""
    if not path:
        raise HypervisorError("VM '%s' has no saved memory to resume from" % name)
    conn.restoreFlags(path, None, 0)


# -- the host's local files --------------------------------------------------------------------

@translated()
def local_pool(conn):
    """The host's ``virtplane-local`` pool, made (transient, its directory built) when it is not there."""
    try:
        pool = conn.storagePoolLookupByName(LOCAL_POOL)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise
        xml = "<pool type='dir'><name>%s</name><target><path>%s</path><permissions><mode>0755</mode>" \
              "</permissions></target></pool>" % (LOCAL_POOL, LOCAL_DIR)
        try:
            pool = conn.storagePoolCreateXML(xml, libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD)
        except libvirt.libvirtError as exc:
            # a driver that builds no directory (test:///) refuses the flag
            if exc.get_error_code() in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
                pool = conn.storagePoolCreateXML(xml, 0)
            elif exc.get_error_code() in (libvirt.VIR_ERR_STORAGE_POOL_BUILT, libvirt.VIR_ERR_OPERATION_FAILED,
                                          libvirt.VIR_ERR_INTERNAL_ERROR):
                pool = conn.storagePoolLookupByName(LOCAL_POOL)  # another run made it meanwhile
            else:
                raise
    if not pool.isActive():
        pool.create(0)
    pool.refresh(0)
    return pool


def _volume(pool, name):
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return None
        raise


@translated()
def local_file(conn, name):
    """The path of ``name`` in the host's local pool, or None when it is not there."""
    vol = _volume(local_pool(conn), name)
    return vol.path() if vol is not None else None


@translated()
def remove_local(conn, names):
    """Delete these files of the local pool where they are (a missing one is no error)."""
    pool = local_pool(conn)
    for name in names:
        vol = _volume(pool, name)
        if vol is not None:
            vol.delete(0)


def write_seed(conn, vm_name, data):
    """The seed ISO ``data`` as ``<vm>-seed.iso`` in the local pool, readable by root alone (libvirt gives it to
    the VM's QEMU when the domain starts); its path on the host."""
    @translated()
    def write():
        pool = local_pool(conn)
        name = seed_volume(vm_name)
        old = _volume(pool, name)
        if old is not None:
            old.delete(0)
        xml = "<volume><name>%s</name><capacity unit='bytes'>%d</capacity><target><format type='raw'/>" \
              "<permissions><mode>0600</mode></permissions></target></volume>" % (name, len(data))
        vol = pool.createXML(xml, 0)
        stream = conn.newStream(0)
        try:
            vol.upload(stream, 0, len(data), 0)
            send_all(stream, data)
            stream.finish()
        except BaseException:
            try:
                stream.abort()
            except libvirt.libvirtError:
                pass
            vol.delete(0)
            raise
        return vol.path()
    return write()


def read_console(conn, vm_name, limit=16384):
    """The last ``limit`` bytes of the VM's serial console log on the host ("" when there is none)."""
    @translated()
    def read():
        pool = local_pool(conn)
        vol = _volume(pool, console_volume(vm_name))
        if vol is None:
            return ""
        size = vol.info()[2] or vol.info()[1]
        offset = max(0, size - limit)
        chunks = []
        stream = conn.newStream(0)
        vol.download(stream, offset, size - offset, 0)
        while True:
            data = stream.recv(65536)
            if data in (-2, None) or not data:
                break
            chunks.append(data)
        stream.finish()
        return b"".join(chunks).decode("utf-8", "replace").replace("\r", "")
    return read()
