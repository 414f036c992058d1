"""The libvirt network hook: which networks it takes, and the iproute2 commands it would run."""

import dataclasses
import importlib.machinery
import importlib.util
import io
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOOK = os.path.join(ROOT, "roles", "hypervisor", "files", "virtplane-network-hook")


def load_hook():
    # the installed file is /etc/libvirt/hooks/network: no .py suffix to import it by
    loader = importlib.machinery.SourceFileLoader("virtplane_network_hook", HOOK)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    sys.modules[loader.name] = module
    loader.exec_module(module)
    return module


hook = load_hook()
Link = hook.Link

VXLAN = {"uplink": "vxlan", "nic": "eth1", "vni": "100", "group": "239.1.0.100", "port": "4789"}
VLAN = {"uplink": "vlan", "nic": "eth1", "vlan": "10"}
NIC = {"uplink": "nic", "nic": "eth1"}
NONE = {"uplink": "none"}


def network_xml(metadata=None, forward="bridge", root="hookData", bridge="vpblue", namespace=None):
    """The network XML as libvirt passes it on the hook's stdin."""
    attributes = {"name": "blue", "bridge": "vpblue", "mtu": "1450", **(metadata or {})}
    attributes = {key: value for key, value in attributes.items() if value is not None}
    meta = ""
    if metadata is not None:
        meta = "<metadata><vp:network xmlns:vp='%s' %s/></metadata>" % (
            namespace or hook.METADATA_NS, " ".join("%s='%s'" % item for item in attributes.items()))
    network = ("<network><name>vp-blue</name><uuid>0f3c1c61-8a1a-4a55-9d64-8c5fb7d1b2a1</uuid>%s%s%s</network>"
               % (meta, "<forward mode='%s'/>" % forward if forward else "",
                  "<bridge name='%s'/>" % bridge if bridge else ""))
    return "<hookData>\n  %s\n</hookData>" % network if root == "hookData" else network


def spec(**metadata):
    return hook.parse(network_xml(metadata))


def facts(*links, vlan_support=True):
    return hook.Facts({link.name: link for link in links}, vlan_support)


# eth1 carries the host's underlay address: fine for VLAN and VXLAN uplinks, not for an untagged one
ETH1 = Link("eth1", up=True, addresses=("10.78.0.11/24",))
FREE_ETH1 = Link("eth1", up=True)
BRIDGE = Link("vpblue", kind="bridge", mtu=1450, up=True)
VX100 = Link("vx100", kind="vxlan", master="vpblue", mtu=1450, up=True, parent="eth1", vni=100,
             group="239.1.0.100", port=4789)
ETH1_10 = Link("eth1.10", kind="vlan", master="vpblue", mtu=1450, up=True, parent="eth1", vlan_id=10)
TAP = Link("vnet0", kind="tun", master="vpblue", up=True)


# ---- parse ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("metadata, expected", [
    (VXLAN, dict(uplink="vxlan", nic="eth1", vni=100, group="239.1.0.100", port=4789, uplink_device="vx100")),
    (dict(VXLAN, port=None), dict(port=4789)),
    (dict(VXLAN, vni="16777215"), dict(vni=16777215, uplink_device="vx16777215")),
    (VLAN, dict(uplink="vlan", nic="eth1", vlan=10, uplink_device="eth1.10")),
    (NIC, dict(uplink="nic", nic="eth1", uplink_device="eth1")),
    (NONE, dict(uplink="none", nic=None, uplink_device=None)),
    (dict(NONE, mtu=None), dict(mtu=None)),
])
def test_reads_the_metadata(metadata, expected):
    parsed = spec(**metadata)
    assert (parsed.network, parsed.name, parsed.bridge) == ("vp-blue", "blue", "vpblue")
    assert {key: getattr(parsed, key) for key in expected} == expected
    if "mtu" not in expected:
        assert parsed.mtu == 1450


def test_a_bare_network_document_reads_the_same():
    assert hook.parse(network_xml(VXLAN, root="network")) == hook.parse(network_xml(VXLAN))


def test_the_bridge_element_names_the_bridge_when_the_metadata_does_not():
    assert hook.parse(network_xml(dict(NONE, bridge=None))).bridge == "vpblue"


@pytest.mark.parametrize("xml", [
    network_xml(None),  # a bridge network of someone else
    network_xml(VXLAN, forward="nat"),  # libvirt makes NAT bridges itself
    network_xml(VXLAN, forward=None),  # an isolated network
    network_xml(VXLAN, namespace="https://example.com/other"),
], ids=["no metadata", "nat", "isolated", "foreign metadata"])
def test_other_networks_are_not_the_hooks_business(xml):
    assert hook.parse(xml) is None


@pytest.mark.parametrize("metadata, bridge, message", [
    (dict(uplink="bond"), "vpblue", "metadata attribute uplink='bond' is not one of nic, vlan, vxlan, none"),
    (dict(uplink=None), "vpblue", "metadata attribute uplink is missing"),
    (dict(VLAN, vlan="4095"), "vpblue", "metadata attribute vlan='4095' is not a VLAN id (1-4094)"),
    (dict(VLAN, vlan="+10"), "vpblue", "vlan='+10' is not a VLAN id"),
    (dict(VLAN, vlan=None), "vpblue", "metadata attribute vlan is missing"),
    (dict(VLAN, nic=None), "vpblue", "metadata attribute nic is missing"),
    (dict(NIC, nic=None), "vpblue", "metadata attribute nic is missing"),
    (dict(VXLAN, nic=None), "vpblue", "metadata attribute nic is missing"),
    (dict(NIC, nic="enp129s0f1np1x2y"), "vpblue", "nic='enp129s0f1np1x2y' is not a device name"),
    (dict(NIC, nic="eth1;reboot"), "vpblue", "nic='eth1;reboot' is not a device name"),
    (dict(NIC, nic="vpblue"), "vpblue", "nic='vpblue' is the network's bridge itself"),
    (dict(VXLAN, vni="0"), "vpblue", "metadata attribute vni='0' is not a VXLAN id (1-16777215)"),
    (dict(VXLAN, vni="16777216"), "vpblue", "vni='16777216' is not a VXLAN id"),
    (dict(VXLAN, group="10.0.0.1"), "vpblue", "group='10.0.0.1' is not an IPv4 multicast address"),
    (dict(VXLAN, group="ff02::1"), "vpblue", "group='ff02::1' is not an IPv4 multicast address"),
    (dict(VXLAN, port="65536"), "vpblue", "port='65536' is not a UDP port (1-65535)"),
    (dict(NONE, mtu="9k"), "vpblue", "mtu='9k' is not an MTU (68-65535)"),
    (dict(NONE, bridge="vpred"), "vpblue", "bridge='vpred' differs from the network's <bridge name='vpblue'>"),
    (dict(NONE, bridge=None), None, "metadata attribute bridge is missing"),
])
def test_bad_metadata_is_refused_naming_the_attribute(metadata, bridge, message):
    with pytest.raises(hook.Refusal) as refusal:
        hook.parse(network_xml(metadata, bridge=bridge))
    assert str(refusal.value).startswith("network vp-blue: ")
    assert message in str(refusal.value)


# ---- facts from iproute2's JSON ---------------------------------------------------------------------

def test_facts_from_ip_json():
    links = [
        {"ifname": "eth1", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], "mtu": 1500,
         "linkinfo": {"info_kind": "veth"}, "link": "eth1p"},
        {"ifname": "vx100", "flags": ["BROADCAST", "UP"], "mtu": 1450, "master": "vpblue",
         "linkinfo": {"info_kind": "vxlan", "info_data": {"id": 100, "group": "239.1.0.100", "link": "eth1",
                                                          "port": 4789}, "info_slave_kind": "bridge"}},
        {"ifname": "eth1.10", "flags": ["BROADCAST"], "mtu": 1500, "link": "eth1",
         "linkinfo": {"info_kind": "vlan", "info_data": {"protocol": "802.1Q", "id": 10}}},
        {"ifname": "eno1", "flags": ["UP"], "mtu": 9000},
    ]
    addresses = [
        {"ifname": "eth1", "addr_info": [
            {"family": "inet", "local": "10.78.0.11", "prefixlen": 24, "scope": "global"},
            {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"},
            {"family": "inet6", "local": "2001:db8::11", "prefixlen": 64, "scope": "global"}]},
        {"ifname": "eno1", "addr_info": [{"family": "inet6", "local": "fe80::2", "prefixlen": 64, "scope": "link"}]},
    ]
    found = hook.facts_from_ip(links, addresses, vlan_support=False)
    assert found.vlan_support is False
    assert found.links["eth1"] == Link("eth1", kind="veth", up=True, addresses=("10.78.0.11/24", "2001:db8::11/64"))
    assert found.links["vx100"] == Link("vx100", kind="vxlan", master="vpblue", mtu=1450, up=True, parent="eth1",
                                        vni=100, group="239.1.0.100", port=4789)
    assert found.links["eth1.10"] == Link("eth1.10", kind="vlan", parent="eth1", vlan_id=10)
    # a NIC with only a link-local address carries no address that an enslavement would lose
    assert found.links["eno1"] == Link("eno1", mtu=9000, up=True)


# ---- plan: start ------------------------------------------------------------------------------------

NEW_BRIDGE = [["ip", "link", "add", "name", "vpblue", "type", "bridge"], ["ip", "link", "set", "vpblue", "mtu", "1450"]]
BRIDGE_UP = [["ip", "link", "set", "vpblue", "up"]]


@pytest.mark.parametrize("metadata, host, commands", [
    (VXLAN, facts(ETH1), NEW_BRIDGE + [
        ["ip", "link", "add", "name", "vx100", "type", "vxlan", "id", "100", "group", "239.1.0.100", "dev", "eth1",
         "dstport", "4789"],
        ["ip", "link", "set", "vx100", "mtu", "1450"],
        ["ip", "link", "set", "vx100", "master", "vpblue"],
        ["ip", "link", "set", "vx100", "up"],
    ] + BRIDGE_UP),
    (VLAN, facts(ETH1), NEW_BRIDGE + [
        ["ip", "link", "add", "link", "eth1", "name", "eth1.10", "type", "vlan", "id", "10"],
        ["ip", "link", "set", "eth1.10", "mtu", "1450"],
        ["ip", "link", "set", "eth1.10", "master", "vpblue"],
        ["ip", "link", "set", "eth1.10", "up"],
    ] + BRIDGE_UP),
    (NIC, facts(FREE_ETH1), NEW_BRIDGE + [["ip", "link", "set", "eth1", "master", "vpblue"]] + BRIDGE_UP),
    (NIC, facts(Link("eth1")), NEW_BRIDGE + [
        ["ip", "link", "set", "eth1", "master", "vpblue"], ["ip", "link", "set", "eth1", "up"]] + BRIDGE_UP),
    (NONE, facts(ETH1), NEW_BRIDGE + BRIDGE_UP),
    (dict(NONE, mtu=None), facts(ETH1), [NEW_BRIDGE[0]] + BRIDGE_UP),
], ids=["vxlan", "vlan", "nic", "nic that is down", "none", "none without mtu"])
def test_start_on_a_fresh_host(metadata, host, commands):
    assert hook.plan("start", spec(**metadata), host) == commands


@pytest.mark.parametrize("metadata, host", [
    (VXLAN, facts(ETH1, BRIDGE, VX100, TAP)),
    (VLAN, facts(ETH1, BRIDGE, ETH1_10)),
    (NIC, facts(Link("eth1", master="vpblue", up=True), BRIDGE)),
    (NONE, facts(ETH1, BRIDGE)),
], ids=["vxlan", "vlan", "nic", "none"])
def test_start_changes_nothing_where_all_is_in_place(metadata, host):
    assert hook.plan("start", spec(**metadata), host) == []


def test_a_leftover_bridge_is_reused_and_corrected():
    leftover = Link("vpblue", kind="bridge", mtu=1500, up=False)
    old_vxlan = Link("vx99", kind="vxlan", master="vpblue", parent="eth1", vni=99, group="239.1.0.99", port=4789)
    old_nic = Link("eth2", master="vpblue", up=True)
    assert hook.plan("start", spec(**VXLAN), facts(ETH1, leftover, old_vxlan, old_nic, TAP)) == [
        ["ip", "link", "set", "eth2", "nomaster"],  # a NIC is released, never deleted
        ["ip", "link", "del", "vx99"],
        ["ip", "link", "set", "vpblue", "mtu", "1450"],
        ["ip", "link", "add", "name", "vx100", "type", "vxlan", "id", "100", "group", "239.1.0.100", "dev", "eth1",
         "dstport", "4789"],
        ["ip", "link", "set", "vx100", "mtu", "1450"],
        ["ip", "link", "set", "vx100", "master", "vpblue"],
        ["ip", "link", "set", "vx100", "up"],
        ["ip", "link", "set", "vpblue", "up"],
    ]  # and the guest's tap vnet0 stays where it is


def test_an_uplink_device_with_other_settings_is_recreated():
    wrong_group = Link("vx100", kind="vxlan", mtu=1450, up=True, parent="eth1", vni=100, group="239.9.9.9", port=4789)
    commands = hook.plan("start", spec(**VXLAN), facts(ETH1, BRIDGE, wrong_group))
    assert commands[0] == ["ip", "link", "del", "vx100"]
    assert ["ip", "link", "add", "name", "vx100", "type", "vxlan", "id", "100", "group", "239.1.0.100", "dev", "eth1",
            "dstport", "4789"] in commands


def test_an_unattached_matching_uplink_is_attached():
    loose = Link("eth1.10", kind="vlan", mtu=1450, parent="eth1", vlan_id=10)
    assert hook.plan("start", spec(**VLAN), facts(ETH1, BRIDGE, loose)) == [
        ["ip", "link", "set", "eth1.10", "master", "vpblue"], ["ip", "link", "set", "eth1.10", "up"]]


@pytest.mark.parametrize("nic, vlan, expected", [
    ("eth1", 10, "eth1.10"),
    ("enp1s0f1", 4094, "enp1s0f1.4094"),  # 13 characters
    ("enp129s0f1np1", 4094, "vl4094-"),  # 18 characters as <nic>.<vlan>
    ("enp129s0f1np1", 100, "vl100-"),
])
def test_vlan_device_names_fit_the_kernel_limit(nic, vlan, expected):
    name = hook.vlan_device_name(nic, vlan)
    assert len(name) <= 15 and name.startswith(expected)
    assert name == hook.vlan_device_name(nic, vlan)


def test_truncated_vlan_names_differ_per_nic_and_are_used_in_the_plan():
    first, second = hook.vlan_device_name("enp129s0f1np1", 10), hook.vlan_device_name("enp129s0f1np2", 10)
    assert first != second
    vlan_spec = spec(uplink="vlan", nic="enp129s0f1np1", vlan="10")
    commands = hook.plan("start", vlan_spec, facts(Link("enp129s0f1np1", up=True)))
    assert ["ip", "link", "add", "link", "enp129s0f1np1", "name", first, "type", "vlan", "id", "10"] in commands


@pytest.mark.parametrize("metadata, host, message", [
    (dict(VXLAN, nic="eth3"), facts(ETH1), "NIC eth3 does not exist on this host"),
    (dict(VLAN, nic="eth3"), facts(ETH1), "NIC eth3 does not exist on this host"),
    (dict(NIC, nic="eth3"), facts(ETH1), "NIC eth3 does not exist on this host"),
    (VLAN, facts(ETH1, vlan_support=False),
     "this host's kernel has no 802.1Q VLAN support (module 8021q not available): VLAN 10 on eth1 cannot be realized"),
    (NIC, facts(ETH1), "NIC eth1 carries IP addresses (10.78.0.11/24): it cannot be the untagged uplink of "
                       "network blue's bridge vpblue (moving addresses to the bridge is not done)"),
    (NIC, facts(Link("eth1", master="br0", up=True), Link("br0", kind="bridge")),
     "NIC eth1 is already a port of bridge br0: it cannot be the untagged uplink of network blue's bridge vpblue"),
    (NIC, facts(Link("eth1", master="bond0", up=True), Link("bond0", kind="bond")),
     "NIC eth1 is already a port of bond bond0"),
    (NIC, facts(Link("eth1", kind="bridge")), "NIC eth1 is a bridge: it cannot be the untagged uplink"),
    (VXLAN, facts(ETH1, Link("vpblue", kind="veth")),
     "the name vpblue of network blue's bridge is taken by a veth device"),
    (VXLAN, facts(ETH1, Link("vpblue")), "the name vpblue of network blue's bridge is taken by a NIC"),
    (VXLAN, facts(ETH1, Link("vx100", kind="dummy")),
     "the device name vx100 for VXLAN 100 of network blue is taken by a dummy device"),
    (VLAN, facts(ETH1, Link("eth1.10")),
     "the device name eth1.10 for VLAN 10 on eth1 of network blue is taken by a NIC"),
    (VXLAN, facts(ETH1, Link("vpred", kind="bridge"), dataclasses.replace(VX100, master="vpred")),
     "the VXLAN device vx100 (VXLAN 100) is already a port of vpred, not of network blue's bridge vpblue"),
])
def test_start_refusals_say_what_and_why(metadata, host, message):
    with pytest.raises(hook.Refusal) as refusal:
        hook.plan("start", spec(**metadata), host)
    assert message in str(refusal.value)
    assert "\n" not in str(refusal.value)


def test_vxlan_and_vlan_uplinks_may_use_a_nic_that_carries_the_hosts_address():
    assert hook.plan("start", spec(**VXLAN), facts(ETH1))
    assert hook.plan("start", spec(**VLAN), facts(ETH1))


# ---- plan: stop -------------------------------------------------------------------------------------

@pytest.mark.parametrize("metadata, host, commands", [
    (VXLAN, facts(ETH1, BRIDGE, VX100, TAP), [["ip", "link", "del", "vx100"], ["ip", "link", "del", "vpblue"]]),
    (VLAN, facts(ETH1, BRIDGE, ETH1_10), [["ip", "link", "del", "eth1.10"], ["ip", "link", "del", "vpblue"]]),
    (NIC, facts(Link("eth1", master="vpblue", up=True), BRIDGE),
     [["ip", "link", "set", "eth1", "nomaster"], ["ip", "link", "del", "vpblue"]]),
    (NONE, facts(ETH1, BRIDGE), [["ip", "link", "del", "vpblue"]]),
    (VXLAN, facts(ETH1), []),
    (VXLAN, facts(ETH1, dataclasses.replace(VX100, master=None)), [["ip", "link", "del", "vx100"]]),
    (VXLAN, facts(ETH1, Link("vpblue", kind="veth"), dataclasses.replace(VX100, master="vpred")), []),
], ids=["vxlan", "vlan", "nic is released not deleted", "none", "already gone", "uplink left outside the bridge",
        "devices of others"])
def test_stop_removes_what_start_created(metadata, host, commands):
    assert hook.plan("stopped", spec(**metadata), host) == commands


# ---- undo and the entry point -------------------------------------------------------------------------

def test_undo_removes_created_devices_and_releases_existing_nics():
    created = set()
    assert hook.undo_of(["ip", "link", "add", "name", "vpblue", "type", "bridge"], created) == [
        "ip", "link", "del", "vpblue"]
    assert hook.undo_of(["ip", "link", "add", "link", "eth1", "name", "eth1.10", "type", "vlan", "id", "10"],
                        created) == ["ip", "link", "del", "eth1.10"]
    assert hook.undo_of(["ip", "link", "set", "eth1.10", "master", "vpblue"], created) is None
    assert hook.undo_of(["ip", "link", "set", "eth1", "master", "vpblue"], created) == [
        "ip", "link", "set", "eth1", "nomaster"]
    assert hook.undo_of(["ip", "link", "set", "vpblue", "up"], created) is None


@pytest.mark.parametrize("operation", [
    ["started", "begin", "-"], ["port-created", "begin", "-"], ["port-deleted", "begin", "-"],
    ["updated", "begin", "-"], ["stopped", "begin", "-"], [],
])
def test_other_operations_exit_0_without_looking(operation, capsys):
    assert hook.main(["vp-blue", *operation], io.StringIO("not even XML")) == 0
    assert capsys.readouterr() == ("", "")


def test_networks_without_metadata_exit_0_without_looking(capsys):
    assert hook.main(["default", "start", "begin", "-"], io.StringIO(network_xml(None, forward="nat"))) == 0
    assert capsys.readouterr() == ("", "")


def test_a_refusal_is_one_line_on_stderr_and_status_1(capsys):
    assert hook.main(["vp-blue", "start", "begin", "-"], io.StringIO(network_xml(dict(VLAN, vlan="0")))) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "network vp-blue: metadata attribute vlan='0' is not a VLAN id (1-4094)\n"
