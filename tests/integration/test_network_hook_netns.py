"""The libvirt network hook for real, in a scratch network namespace of its own (never in the lab hosts).

Each test gets a namespace `vphooktest-<pid>-<n>` holding a veth pair eth1/eth1p (eth1 carries an
address, as a host's underlay NIC does) and eth2/eth2p (no address: a NIC free for an untagged uplink),
runs the hook there as libvirt does (arguments, network XML on stdin), and reads the result with `ip -j`.
"""

import itertools
import json
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOOK = os.path.join(ROOT, "roles", "hypervisor", "files", "virtplane-network-hook")
PREFIX = "vphooktest-"
NS = "https://virtplane.dev/xmlns/logical-network/1"
VXLAN = {"uplink": "vxlan", "nic": "eth1", "vni": "100", "group": "239.1.0.100", "port": "4789"}
VLAN = {"uplink": "vlan", "nic": "eth1", "vlan": "10"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
_numbers = itertools.count()


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def remove_leftovers():
    """Namespaces of runs that were killed before their cleanup (their pid is gone)."""
    for line in ip("netns", "list").stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not os.path.exists("/proc/%s" % pid):
            ip("netns", "del", name, check=False)


@pytest.fixture
def netns():
    remove_leftovers()
    name = "%s%d-%d" % (PREFIX, os.getpid(), next(_numbers))
    ip("netns", "add", name)
    try:
        for nic in ("eth1", "eth2"):
            ip("-n", name, "link", "add", nic, "type", "veth", "peer", "name", nic + "p")
            ip("-n", name, "link", "set", nic, "up")
            ip("-n", name, "link", "set", nic + "p", "up")
        ip("-n", name, "addr", "add", "192.0.2.1/24", "dev", "eth1")
        yield name
    finally:
        ip("netns", "del", name, check=False)


def network_xml(metadata, forward="bridge", mtu="1450"):
    attributes = {"name": "blue", "bridge": "vpblue", "mtu": mtu, **metadata}
    return ("<hookData>\n  <network>\n    <name>vp-blue</name>\n    <metadata>\n      <vp:network xmlns:vp='%s' %s/>\n"
            "    </metadata>\n    <forward mode='%s'/>\n    <bridge name='vpblue'/>\n  </network>\n</hookData>"
            % (NS, " ".join("%s='%s'" % item for item in attributes.items()), forward))


def run_hook(netns, operation, xml):
    """The hook as libvirt runs it: `network NAME OPERATION SUB_OPERATION -`, the XML on stdin."""
    return subprocess.run(["ip", "netns", "exec", netns, HOOK, "vp-blue", *operation.split(), "-"],
                          input=xml, capture_output=True, text=True, timeout=30, check=False)


def links(netns):
    return {link["ifname"]: link for link in json.loads(ip("-n", netns, "-j", "-d", "link", "show").stdout)}


def devices(netns):
    """What a hook run may change, without the counters and states the kernel moves on its own."""
    return {name: (link.get("linkinfo", {}).get("info_kind"), link.get("master"), link["mtu"])
            for name, link in links(netns).items()}


def kernel_has_vlan(netns):
    probe = ip("-n", netns, "link", "add", "link", "eth2", "name", "probe.5", "type", "vlan", "id", "5", check=False)
    ip("-n", netns, "link", "del", "probe.5", check=False)
    return probe.returncode == 0


def test_vxlan_network_starts_restarts_and_stops(netns):
    before = set(links(netns))
    started = run_hook(netns, "start begin", network_xml(VXLAN))
    assert started.returncode == 0, started.stderr
    assert (started.stdout, started.stderr) == ("", "")

    found = links(netns)
    bridge, vxlan = found["vpblue"], found["vx100"]
    assert bridge["linkinfo"]["info_kind"] == "bridge"
    assert bridge["mtu"] == 1450 and "UP" in bridge["flags"]
    assert vxlan["master"] == "vpblue" and vxlan["mtu"] == 1450 and "UP" in vxlan["flags"]
    data = vxlan["linkinfo"]["info_data"]
    assert (data["id"], data["group"], data["link"], data["port"]) == (100, "239.1.0.100", "eth1", 4789)

    # libvirtd restarted, autostart: the same start again leaves the devices as they are
    again = run_hook(netns, "start begin", network_xml(VXLAN))
    assert again.returncode == 0, again.stderr
    assert {name: link["ifindex"] for name, link in links(netns).items()} == {
        name: link["ifindex"] for name, link in found.items()}

    stopped = run_hook(netns, "stopped end", network_xml(VXLAN))
    assert stopped.returncode == 0, stopped.stderr
    assert set(links(netns)) == before


def test_a_leftover_bridge_is_reused_and_corrected(netns):
    ip("-n", netns, "link", "add", "name", "vpblue", "type", "bridge")
    ip("-n", netns, "link", "add", "name", "vx99", "type", "vxlan", "id", "99", "group", "239.1.0.99", "dev", "eth1",
       "dstport", "4789")
    ip("-n", netns, "link", "set", "vx99", "master", "vpblue")
    bridge_index = links(netns)["vpblue"]["ifindex"]

    started = run_hook(netns, "start begin", network_xml(VXLAN))
    assert started.returncode == 0, started.stderr
    found = links(netns)
    assert found["vpblue"]["ifindex"] == bridge_index
    assert found["vpblue"]["mtu"] == 1450 and "UP" in found["vpblue"]["flags"]
    assert "vx99" not in found
    assert found["vx100"]["master"] == "vpblue"


def test_untagged_nic_is_released_not_deleted(netns):
    metadata = {"uplink": "nic", "nic": "eth2"}
    started = run_hook(netns, "start begin", network_xml(metadata))
    assert started.returncode == 0, started.stderr
    assert links(netns)["eth2"]["master"] == "vpblue"

    stopped = run_hook(netns, "stopped end", network_xml(metadata))
    assert stopped.returncode == 0, stopped.stderr
    found = links(netns)
    assert "vpblue" not in found
    assert "eth2" in found and "master" not in found["eth2"]


@pytest.mark.parametrize("metadata, message", [
    ({"uplink": "nic", "nic": "eth1"}, "NIC eth1 carries IP addresses (192.0.2.1/24)"),
    ({"uplink": "nic", "nic": "eth3"}, "NIC eth3 does not exist on this host"),
    (dict(VXLAN, nic="eth3"), "NIC eth3 does not exist on this host"),
])
def test_refusals_change_nothing(netns, metadata, message):
    before = devices(netns)
    refused = run_hook(netns, "start begin", network_xml(metadata))
    assert refused.returncode == 1
    assert message in refused.stderr and refused.stderr.count("\n") == 1
    assert devices(netns) == before


def test_vlan_without_8021q_is_refused_and_leaves_nothing(netns):
    if kernel_has_vlan(netns):
        pytest.skip("this kernel has 802.1Q VLAN support")
    before = set(links(netns))
    refused = run_hook(netns, "start begin", network_xml(VLAN))
    assert refused.returncode == 1
    assert refused.stderr == ("this host's kernel has no 802.1Q VLAN support (module 8021q not available): "
                              "VLAN 10 on eth1 cannot be realized (network blue)\n")
    assert set(links(netns)) == before


def test_vlan_network_where_the_kernel_has_8021q(netns):
    if not kernel_has_vlan(netns):
        pytest.skip("this kernel has no 802.1Q VLAN support")
    started = run_hook(netns, "start begin", network_xml(VLAN))
    assert started.returncode == 0, started.stderr
    vlan = links(netns)["eth1.10"]
    assert vlan["master"] == "vpblue" and vlan["linkinfo"]["info_data"]["id"] == 10
    assert run_hook(netns, "stopped end", network_xml(VLAN)).returncode == 0
    assert not {"vpblue", "eth1.10"} & set(links(netns))


def test_a_failing_step_removes_what_the_run_created(netns):
    # a VXLAN over eth1 (MTU 1500) can carry at most 1450: setting 9000 fails after bridge and VXLAN exist
    before = set(links(netns))
    failed = run_hook(netns, "start begin", network_xml(VXLAN, mtu="9000"))
    assert failed.returncode == 1
    assert "`ip link set vx100 mtu 9000` failed" in failed.stderr
    assert "what this run had created was removed" in failed.stderr
    assert set(links(netns)) == before


def test_networks_that_are_not_the_hooks_business_are_left_alone(netns):
    before = devices(netns)
    for operation, xml in [("start begin", network_xml(VXLAN, forward="nat")),
                           ("start begin", "<hookData><network><name>default</name><forward mode='nat'/>"
                                           "<bridge name='virbr0'/></network></hookData>"),
                           ("started begin", network_xml(VXLAN)),
                           ("port-created begin", network_xml(VXLAN))]:
        result = run_hook(netns, operation, xml)
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert devices(netns) == before
