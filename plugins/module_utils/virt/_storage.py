# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Storage domains as libvirt storage pools, and disks as volumes in them.

Pool XML is built and read through ElementTree, never by string formatting, and compared on
the fields the collection owns (type, source, target): what libvirt adds (uuid, capacity,
permissions) is not ours to fight over.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import HypervisorError
from ansible_collections.virtplane.kvm.plugins.module_utils.virt._client import _message, libvirt, translated

POOL_TYPES = {"dir": "dir", "posixfs": "dir", "nfs": "netfs", "logical": "logical", "iscsi": "iscsi-direct",
              "rbd": "rbd"}
# Types whose volumes libvirt creates; on the others the volumes are given (iSCSI LUNs).
CREATES_VOLUMES = ("dir", "posixfs", "nfs", "logical", "rbd")
NFS_MOUNT_ROOT = "/var/lib/virtplane/mnt"


def pool_name(domain_name):
    return "vp-" + domain_name


def pool_spec(domain_type, params, host_name=None):
    """The owned fields of the pool for ``domain_type`` on one host, as a flat dict."""
    spec = {"type": POOL_TYPES[domain_type]}
    if domain_type in ("dir", "posixfs"):
        spec["target"] = params["path"]
    elif domain_type == "nfs":
        spec.update(host=params["server"], dir=params["export"], format="nfs", target=params["path"])
    elif domain_type == "logical":
        spec.update(name=params["volume_group"], format="lvm2", target="/dev/" + params["volume_group"],
                    devices=list(params.get("devices") or []))
    elif domain_type == "iscsi":
        host, _sep, port = params["portal"].partition(":")
        spec.update(host=host, port=port or "3260", device=params["target"],
                    initiator="%s:%s" % (params["initiator_prefix"], host_name))
    elif domain_type == "rbd":
        spec.update(name=params["pool"], hosts=list(params["monitors"]), auth_user=params.get("user"),
                    secret_uuid=params.get("secret_uuid"))
    return spec


def _sub(parent, tag, text=None, **attrs):
    node = ET.SubElement(parent, tag, {k: str(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        node.text = str(text)
    return node


def pool_xml(name, spec):
    root = ET.Element("pool", type=spec["type"])
    _sub(root, "name", name)
    source = _sub(root, "source")
    if spec["type"] == "netfs":
        _sub(source, "host", name=spec["host"])
        _sub(source, "dir", path=spec["dir"])
        _sub(source, "format", type=spec["format"])
    elif spec["type"] == "logical":
        for device in spec["devices"]:
            _sub(source, "device", path=device)
        _sub(source, "name", spec["name"])
        _sub(source, "format", type=spec["format"])
    elif spec["type"] == "iscsi-direct":
        _sub(source, "host", name=spec["host"], port=spec["port"])
        _sub(source, "device", path=spec["device"])
        _sub(_sub(source, "initiator"), "iqn", name=spec["initiator"])
    elif spec["type"] == "rbd":
        _sub(source, "name", spec["name"])
        for monitor in spec["hosts"]:
            host, _sep, port = monitor.partition(":")
            _sub(source, "host", name=host, port=port or None)
        if spec.get("auth_user"):
            auth = _sub(source, "auth", type="ceph", username=spec["auth_user"])
            _sub(auth, "secret", uuid=spec["secret_uuid"])
    if spec.get("target"):
        _sub(_sub(root, "target"), "path", spec["target"])
    return ET.tostring(root, encoding="unicode")


def read_pool_spec(xml_text):
    """The owned fields of a pool as libvirt reports it (the inverse of pool_xml); a pool of another
    shape (a foreign one, or an older definition) reads as unreadable, so it is redefined, never a crash."""
    try:
        return _read_pool_spec(xml_text)
    except (AttributeError, TypeError, ValueError, ET.ParseError):
        return {"unreadable": True}


def _read_pool_spec(xml_text):
    root = ET.fromstring(xml_text)
    kind = root.get("type")
    spec = {"type": kind}
    source = root.find("source")
    target = root.findtext("target/path")
    if kind == "netfs":
        spec.update(host=source.find("host").get("name"), dir=source.find("dir").get("path"),
                    format=source.find("format").get("type"))
    elif kind == "logical":
        spec.update(name=source.findtext("name"), format=source.find("format").get("type"),
                    devices=[d.get("path") for d in source.findall("device")])
    elif kind == "iscsi-direct":
        host = source.find("host")
        spec.update(host=host.get("name"), port=host.get("port") or "3260", device=source.find("device").get("path"),
                    initiator=source.find("initiator/iqn").get("name"))
    elif kind == "rbd":
        auth = source.find("auth")
        monitors = [h.get("name") + (":" + h.get("port") if h.get("port") else "") for h in source.findall("host")]
        spec.update(name=source.findtext("name"), hosts=monitors,
                    auth_user=auth.get("username") if auth is not None else None,
                    secret_uuid=auth.find("secret").get("uuid") if auth is not None else None)
    if target and kind != "rbd" and kind != "iscsi-direct":
        spec["target"] = target
    return spec


@translated(missing=("VIR_ERR_NO_STORAGE_POOL",))
def _pool(conn, name):
    return conn.storagePoolLookupByName(name)


def _view(pool, refresh):
    active = bool(pool.isActive())
    if active and refresh:
        pool.refresh(0)
    _state, capacity, allocation, available = pool.info()
    return {"active": active, "autostart": bool(pool.autostart()), "capacity_bytes": capacity,
            "allocation_bytes": allocation, "available_bytes": available}


@translated()
def pool_state(conn, name, refresh=False):
    """(spec, view) of the pool named ``name`` on ``conn``; (None, None) when it is not defined.

    ``refresh`` rescans the pool first (its volumes and free space as the storage has them now),
    which on an iSCSI pool is a login: only where a change needs it.
    """
    pool = _pool(conn, name)
    if pool is None:
        return None, None
    return read_pool_spec(pool.XMLDesc(0)), _view(pool, refresh)


@translated()
def pools_of_host(conn, prefix="vp-"):
    """{pool name: (spec, view)} of every pool of the collection on the host, in one pass."""
    found = {}
    for pool in conn.listAllStoragePools(0):
        name = pool.name()
        if name.startswith(prefix):
            found[name] = (read_pool_spec(pool.XMLDesc(0)), _view(pool, False))
    return found


def probe_pool(conn, name, spec):
    """Start a transient copy of the pool and stop it: None if it works, else libvirt's reason.

    This is how the engine learns, before changing anything, that a path is missing on a host
    or that a host cannot realize a type (no NFS client, no LVM): the host itself says so.
    """
    # a probe pool that a killed run left active (transient: it goes when stopped) is stopped first
    try:
        conn.storagePoolLookupByName(name).destroy()
    except libvirt.libvirtError:
        pass
    try:
        pool = conn.storagePoolCreateXML(pool_xml(name, spec), _create_flags(spec))
    except libvirt.libvirtError as exc:
        return _message(exc)
    try:
        pool.destroy()
    except libvirt.libvirtError:  # a transient pool that will not stop still goes when libvirtd restarts
        pass
    return None


def _create_flags(spec):
    # a netfs pool mounts on its target directory: libvirt makes it (build) when it is missing
    return libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD if spec["type"] == "netfs" else 0


def realize_pool(conn, name, spec):
    """Define, start and autostart the pool; returns the actions taken (empty: nothing to do).

    A pool this call defined is undefined again if it cannot start: no host keeps a pool the
    engine does not know about.
    """
    actions = []
    pool = None
    try:
        pool = _pool(conn, name)
        if pool is not None and read_pool_spec(pool.XMLDesc(0)) != spec:
            if pool.isActive():
                pool.destroy()
            pool.undefine()
            pool = None
            actions.append("redefine")
        if pool is None:
            pool = conn.storagePoolDefineXML(pool_xml(name, spec), 0)
            if not actions:
                actions.append("define")
        if not pool.isActive():
            pool.create(_create_flags(spec))
            actions.append("start")
        if not pool.autostart():
            pool.setAutostart(1)
            actions.append("autostart")
    except libvirt.libvirtError as exc:
        if pool is not None and actions[:1] in (["define"], ["redefine"]):
            try:
                pool.undefine()
            except libvirt.libvirtError:
                pass
        raise HypervisorError(_message(exc))
    return actions


@translated()
def deactivate_pool(conn, name):
    """Stop the pool and its autostart, keep the definition (maintenance)."""
    actions = []
    pool = _pool(conn, name)
    if pool is None:
        return actions
    if pool.isActive():
        pool.destroy()
        actions.append("stop")
    if pool.autostart():
        pool.setAutostart(0)
        actions.append("no autostart")
    return actions


@translated()
def remove_pool(conn, name):
    """Stop and undefine the pool; the data under it stays (a pool is a view of storage)."""
    actions = deactivate_pool(conn, name)
    pool = _pool(conn, name)
    if pool is not None:
        pool.undefine()
        actions.append("undefine")
    return actions


# -- volumes ------------------------------------------------------------------------------

def volume_xml(name, size_bytes, fmt, preallocated):
    root = ET.Element("volume")
    _sub(root, "name", name)
    _sub(root, "capacity", size_bytes, unit="bytes")
    _sub(root, "allocation", size_bytes if preallocated else 0, unit="bytes")
    _sub(_sub(root, "target"), "format", type=fmt)
    return ET.tostring(root, encoding="unicode")


@translated()
def open_pool(conn, name, refresh=True):
    """The active pool ``name``; ``refresh`` rescans it (a volume another host made is seen after one)."""
    pool = _pool(conn, name)
    if pool is None:
        raise HypervisorError("storage pool %s is not defined on this host" % name)
    if not pool.isActive():
        raise HypervisorError("storage pool %s is not active on this host" % name)
    if refresh:
        pool.refresh(0)
    return pool


@translated(missing=("VIR_ERR_NO_STORAGE_VOL",))
def find_volume(pool, name):
    return pool.storageVolLookupByName(name)


@translated()
def volume_view(vol):
    _kind, capacity, allocation = vol.info()
    fmt = ET.fromstring(vol.XMLDesc(0)).find("target/format")
    return {"path": vol.path(), "capacity_bytes": capacity, "allocation_bytes": allocation,
            "format": fmt.get("type") if fmt is not None else None}


@translated()
def list_volumes(pool, refresh=True):
    if refresh:
        pool.refresh(0)
    return {vol.name(): volume_view(vol) for vol in pool.listAllVolumes(0)}


@translated()
def create_volume(pool, name, size_bytes, fmt, preallocated):
    return pool.createXML(volume_xml(name, size_bytes, fmt, preallocated), 0)


@translated()
def clone_volume(pool, name, source, thin, size_bytes, fmt):
    """A new volume from ``source``: thin (qcow2 on it as its backing file, whose format is named: QEMU reads an
    unnamed one as raw) or a full copy (qemu-img convert through libvirt, from any pool of the host)."""
    root = ET.Element("volume")
    _sub(root, "name", name)
    _sub(root, "capacity", size_bytes, unit="bytes")
    _sub(_sub(root, "target"), "format", type=fmt)
    if thin:
        source_format = ET.fromstring(source.XMLDesc(0)).find("target/format")
        backing = _sub(root, "backingStore")
        _sub(backing, "path", source.path())
        _sub(backing, "format", type=source_format.get("type") if source_format is not None else "qcow2")
        return pool.createXML(ET.tostring(root, encoding="unicode"), 0)
    return pool.createXMLFrom(ET.tostring(root, encoding="unicode"), source, 0)


def backing_path(vol):
    """The path of the volume's backing file, or None."""
    node = ET.fromstring(vol.XMLDesc(0)).find("backingStore/path")
    return node.text if node is not None else None


@translated()
def delete_volume(vol):
    vol.delete(0)


@translated()
def resize_volume(vol, size_bytes):
    vol.resize(size_bytes, 0)


@translated()
def grow_live_disk(conn, domain_name, target, size_bytes):
    """Grow the disk ``target`` of the running guest through QEMU, which holds the image open."""
    conn.lookupByName(domain_name).blockResize(target, size_bytes, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)


def upload_volume(conn, vol, source, length, progress, chunk=4 * 1024 * 1024):
    """Stream ``source`` (an open binary file, read from its start) into the volume; ``progress(sent, total)``
    after every chunk."""
    stream = conn.newStream(0)
    sent = 0
    source_path = getattr(source, "name", "the image")
    try:
        vol.upload(stream, 0, length, 0)
        source.seek(0)
        while sent < length:
            data = source.read(min(chunk, length - sent))
            if not data:
                raise HypervisorError("%s ended after %d of %d bytes" % (source_path, sent, length))
            send_all(stream, data)
            sent += len(data)
            progress(sent, length)
        stream.finish()
    except libvirt.libvirtError as exc:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        raise HypervisorError(_message(exc))
    except OSError as exc:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        raise HypervisorError("cannot read %s: %s" % (source_path, exc.strerror or exc))
    return sent


def send_all(stream, data):
    """Send all of ``data`` on a libvirt stream (a send may take part of it)."""
    view = memoryview(data)
    while view:
        done = stream.send(view.tobytes())
        if done < 0:
            raise HypervisorError("the volume upload stream failed")
        view = view[done:]


def disk_device_xml(pool, volume, fmt, target, bus):
    """A guest disk that names its pool volume: libvirt resolves it on whichever host runs the guest."""
    root = ET.Element("disk", type="volume", device="disk")
    _sub(root, "driver", name="qemu", type=fmt)
    _sub(root, "source", pool=pool, volume=volume)
    _sub(root, "target", dev=target, bus=bus)
    return ET.tostring(root, encoding="unicode")


@translated()
def change_live_disk(conn, domain_name, device_xml, attach):
    """Attach or detach a device (a disk, a NIC) of the running guest ``domain_name`` (live only: the engine owns
    the definition)."""
    dom = conn.lookupByName(domain_name)
    if attach:
        dom.attachDeviceFlags(device_xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    else:
        dom.detachDeviceFlags(device_xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)


def wait_disk_gone(conn, domain_name, target, timeout):
    """A guest acknowledges an unplug in its own time; the disk is free only once it has."""
    import time

    deadline = time.monotonic() + timeout
    while target in live_disk_targets(conn, domain_name):
        if time.monotonic() > deadline:
            raise HypervisorError("the guest did not release disk %s within %d s" % (target, timeout))
        time.sleep(0.5)


@translated()
def live_disk_targets(conn, domain_name):
    """{target dev: (pool, volume)} of the running guest's volume disks."""
    root = ET.fromstring(conn.lookupByName(domain_name).XMLDesc(0))
    found = {}
    for disk in root.findall("devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        if target is not None and source is not None:
            found[target.get("dev")] = (source.get("pool"), source.get("volume"))
    return found
