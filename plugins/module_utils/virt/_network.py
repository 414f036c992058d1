# Copyright: virtplane.kvm contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Logical networks as libvirt networks on a host.

A bridge-mode network is ``<forward mode='bridge'/>`` on a bridge that the network hook the
hypervisor role installs (files/virtplane-network-hook) creates when libvirt starts the network,
with its uplink: the host's NIC, a VLAN sub-interface of it, or a VXLAN device. What the hook
needs travels in the network's metadata. NAT and isolated networks are bridged by libvirt itself.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from ansible_collections.virtplane.kvm.plugins.module_utils.virt._client import (
    _message,
    libvirt,
    safe_message,
    translated,
)

NAMESPACE = "https://virtplane.dev/xmlns/logical-network/1"
VXLAN_PORT = 4789
_META = "{%s}network" % NAMESPACE
_META_KEYS = ("name", "bridge", "mtu", "uplink", "nic", "vlan", "vni", "group", "port")


def libvirt_name(network_name):
    return "vp-" + network_name


def vxlan_group(vni):
    """The multicast group a VNI's hosts join: one per VNI, so segments never share floods."""
    return "239.%d.%d.%d" % ((vni >> 16) & 255, (vni >> 8) & 255, vni & 255)


def network_spec(net, nic):
    """The owned fields of the libvirt network for logical network row ``net`` on a host using ``nic``."""
    spec = {"mode": net["mode"], "bridge": net["bridge"], "mtu": str(net["mtu"])}
    if net["mode"] == "bridge":
        spec.update(name=net["name"], nic=nic or "", port="")
        if net.get("vlan_id"):
            spec.update(uplink="vlan", vlan=str(net["vlan_id"]))
        elif net.get("vxlan_vni"):
            spec.update(uplink="vxlan", vni=str(net["vxlan_vni"]), group=vxlan_group(net["vxlan_vni"]),
                        port=str(VXLAN_PORT))
        else:
            spec.update(uplink="nic")
    if net.get("subnet") and net["mode"] != "bridge":
        prefix = str(net["subnet"]).split("/")[1]
        spec["ip"] = "%s/%s" % (str(net["gateway"]).split("/", maxsplit=1)[0], prefix) if net.get("gateway") else None
    return {k: v for k, v in spec.items() if v not in (None, "")}


def network_xml(name, spec):
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    if spec["mode"] == "bridge":
        ET.register_namespace("vp", NAMESPACE)
        meta = ET.SubElement(ET.SubElement(root, "metadata"), _META)
        for key in _META_KEYS:
            if key in spec:
                meta.set(key, spec[key])
        ET.SubElement(root, "forward", mode="bridge")
        ET.SubElement(root, "bridge", name=spec["bridge"])
    else:
        if spec["mode"] == "nat":
            ET.SubElement(root, "forward", mode="nat")
        ET.SubElement(root, "bridge", name=spec["bridge"], stp="on", delay="0")
        ET.SubElement(root, "mtu", size=spec["mtu"])
        if spec.get("ip"):
            address, prefix = spec["ip"].split("/")
            ET.SubElement(root, "ip", address=address, prefix=prefix)
    return ET.tostring(root, encoding="unicode")


def read_network_spec(xml_text):
    """The owned fields of a network as libvirt reports it; one of another shape reads as unreadable
    (so it never matches what the engine wants, and is redefined)."""
    try:
        return _read_network_spec(xml_text)
    except (AttributeError, TypeError, ValueError, ET.ParseError):
        return {"unreadable": True}


def _read_network_spec(xml_text):
    root = ET.fromstring(xml_text)
    forward = root.find("forward")
    mode = forward.get("mode") if forward is not None else "isolated"
    bridge = root.find("bridge")
    spec = {"mode": mode, "bridge": bridge.get("name") if bridge is not None else ""}
    meta = root.find("metadata/" + _META)
    if mode == "bridge":
        if meta is not None:
            spec.update({k: meta.get(k) for k in _META_KEYS if meta.get(k) is not None})
    else:
        mtu = root.find("mtu")
        spec["mtu"] = mtu.get("size") if mtu is not None else "1500"
        ip = root.find("ip")
        if ip is not None:
            prefix = ip.get("prefix")
            if prefix is None and ip.get("netmask"):
                prefix = str(sum(bin(int(part)).count("1") for part in ip.get("netmask").split(".")))
            spec["ip"] = "%s/%s" % (ip.get("address"), prefix)
    return {k: v for k, v in spec.items() if v not in (None, "")}


_HOOK_FAILED = re.compile(r"unexpected exit status \d+: (.*)$", re.S)


def _reason(exc):
    """libvirt's message; for the network hook, just what the hook said (not its command line)."""
    if exc.get_error_code() == getattr(libvirt, "VIR_ERR_HOOK_SCRIPT_FAILED", 70):
        found = _HOOK_FAILED.search(exc.get_error_message() or "")
        if found and found.group(1).strip():
            return "the host's network hook refused: " + safe_message(found.group(1))
    return _message(exc)


@translated(missing=("VIR_ERR_NO_NETWORK",))
def _lookup(conn, name):
    return conn.networkLookupByName(name)


@translated()
def network_state(conn, name):
    """(spec, active) of the libvirt network ``name``; (None, False) when it is not defined."""
    net = _lookup(conn, name)
    if net is None:
        return None, False
    return read_network_spec(net.XMLDesc(0)), bool(net.isActive() and net.autostart())


@translated()
def networks_of_host(conn, prefix="vp-"):
    """{libvirt name: (spec, active)} of every network of the collection on the host, in one pass."""
    return {net.name(): (read_network_spec(net.XMLDesc(0)), bool(net.isActive() and net.autostart()))
            for net in conn.listAllNetworks(0) if net.name().startswith(prefix)}


@translated(reason=_reason)
def realize_network(conn, name, spec):
    """Define, start and autostart; a definition that differs is replaced. Returns the actions."""
    actions = []
    net = _lookup(conn, name)
    if net is not None and read_network_spec(net.XMLDesc(0)) != spec:
        if net.isActive():
            net.destroy()
        net.undefine()
        net = None
        actions.append("redefine")
    if net is None:
        net = conn.networkDefineXML(network_xml(name, spec))
        if not actions:
            actions.append("define")
    if not net.isActive():
        net.create()
        actions.append("start")
    if not net.autostart():
        net.setAutostart(1)
        actions.append("autostart")
    return actions


@translated()
def remove_network(conn, name):
    net = _lookup(conn, name)
    if net is None:
        return []
    if net.isActive():
        net.destroy()
    net.undefine()
    return ["remove"]
