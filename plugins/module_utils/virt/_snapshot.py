# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Internal qcow2 snapshots of a VM's disks, with or without the guest's memory, through libvirt.

A running VM's snapshot is taken on its transient domain: QEMU saves the memory and the devices' state
into the qcow2 images with the disks (``savevm``). A stopped VM has no domain: the engine defines one
for the moment, persistent and never started, so that libvirt snapshots its images (``qemu-img
snapshot``), then undefines it. Either way the data is in the disks' images, on the storage domain,
and the engine keeps libvirt's description of the snapshot: a transient domain forgets its snapshots
when it ends, and they are given back (``REDEFINE``) before a revert or a delete.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import HypervisorError
from ansible_collections.virtplane.kvm.plugins.module_utils.virt._client import libvirt, translated


def creation_xml(name, description, targets, memory):
    """What is asked of libvirt: internal snapshots of these disk targets, with the memory or not."""
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    if description:
        ET.SubElement(root, "description").text = description
    ET.SubElement(root, "memory", snapshot="internal" if memory else "no")
    disks = ET.SubElement(root, "disks")
    for target in targets:
        ET.SubElement(disks, "disk", name=target, snapshot="internal")
    return ET.tostring(root, encoding="unicode")


def as_stopped(xml):
    """The description of a snapshot taken while the VM ran, as one of a stopped VM: what is given back to a
    domain defined for a stopped VM, whose disks alone are reverted."""
    root = ET.fromstring(xml)
    state = root.find("state")
    if state is not None:
        state.text = "shutoff"
    memory = root.find("memory")
    if memory is not None:
        memory.set("snapshot", "no")
    return ET.tostring(root, encoding="unicode")


def standalone(xml):
    """The description without its parent: libvirt links a snapshot to the one that was current when it was
    taken, and gives one back (``REDEFINE``) only if that parent is there too. Internal snapshots do not
    depend on each other, and the engine gives back only the one it works on."""
    root = ET.fromstring(xml)
    for parent in root.findall("parent"):
        root.remove(parent)
    return ET.tostring(root, encoding="unicode")


def _no_snapshot(exc):
    return exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT


@translated()
def _known(dom, name, xml):
    """The domain's snapshot ``name``: its metadata, given back from ``xml`` when the domain does not have it."""
    try:
        return dom.snapshotLookupByName(name, 0)
    except libvirt.libvirtError as exc:
        if not _no_snapshot(exc):
            raise
    return dom.snapshotCreateXML(standalone(xml), libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE)


@translated()
def take(dom, xml):
    """Take the snapshot ``xml`` asks for on ``dom``; libvirt's full description of it."""
    snap = dom.snapshotCreateXML(xml, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
    return standalone(snap.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE))


@translated()
def revert(dom, name, xml):
    dom.revertToSnapshot(_known(dom, name, xml), 0)


@translated()
def delete(dom, name, xml):
    """Delete the snapshot's data from the images (a snapshot libvirt does not find in them is no error)."""
    _known(dom, name, xml).delete(0)


@translated()
def exists(dom, name):
    try:
        dom.snapshotLookupByName(name, 0)
        return True
    except libvirt.libvirtError as exc:
        if _no_snapshot(exc):
            return False
        raise


@translated()
def _lookup(conn, name):
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


@translated()
def _undefine(dom):
    try:
        if not dom.isActive():
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise


@contextlib.contextmanager
def defined(conn, name, domain_xml):
    """The stopped VM's domain, defined (persistent, never started) for what is done to its images, and
    undefined again afterwards whatever happens. A domain of that name that runs on the host refuses."""
    current = _lookup(conn, name)
    if current is not None:
        if translated()(current.isActive)():
            raise HypervisorError("a domain named '%s' runs on this host: the VM is not stopped here" % name)
        _undefine(current)  # what an earlier run that died left
    dom = translated()(conn.defineXML)(domain_xml)
    try:
        yield dom
    finally:
        _undefine(dom)


def leftover(conn, name):
    """Undefine the domain that a run which died while it worked on a stopped VM's images left (True), if any."""
    current = _lookup(conn, name)
    if current is None or translated()(current.isActive)() or not translated()(current.isPersistent)():
        return False
    _undefine(current)
    return True
