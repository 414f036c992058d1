"""logical_network module on a real PostgreSQL, hosts on libvirt's test driver.

The network hook and VXLAN between real hosts are exercised in tests/lab; here: the engine's
rules, check mode, diff, the libvirt network XML, and a host's status following its networks.
"""

import libvirt
import pytest

from ansible_collections.virtplane.kvm.plugins.module_utils.services import _network as network_service
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _network
from tests.support.playbook import run_play

BASE = [{"name": "dc", "virtplane.kvm.datacenter": {"name": "paris"}},
        {"name": "prod", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris"}},
        {"name": "empty", "virtplane.kvm.cluster": {"name": "empty", "datacenter": "paris"}}]


def network(name="app", **options):
    options.setdefault("datacenter", "paris")
    return {"virtplane.kvm.logical_network": dict(name=name, **options)}


@pytest.mark.parametrize("row, nic", [
    ({"name": "app", "mode": "bridge", "bridge": "vpapp-1a2b", "mtu": 1450, "vxlan_vni": 100}, "eth1"),
    ({"name": "db", "mode": "bridge", "bridge": "vpdb-1a2b", "mtu": 9000, "vlan_id": 30}, "bond0"),
    ({"name": "mgmt", "mode": "bridge", "bridge": "vpmgmt-1a2b", "mtu": 1500}, "eth0"),
    ({"name": "nat", "mode": "nat", "bridge": "vpnat-1a2b", "mtu": 1500, "subnet": "10.9.0.0/24",
      "gateway": "10.9.0.1"}, None),
    ({"name": "iso", "mode": "isolated", "bridge": "vpiso-1a2b", "mtu": 1400}, None),
])
def test_network_xml_is_what_libvirt_reads_back(row, nic):
    spec = _network.network_spec(row, nic)
    conn = libvirt.open("test:///default")
    try:
        net = conn.networkDefineXML(_network.network_xml("vp-" + row["name"], spec))
        assert _network.read_network_spec(net.XMLDesc(0)) == spec
    finally:
        conn.close()
    if row.get("vxlan_vni"):
        assert (spec["uplink"], spec["vni"], spec["group"], spec["nic"]) == ("vxlan", "100", "239.0.0.100", "eth1")
    if row.get("vlan_id"):
        assert (spec["uplink"], spec["vlan"], spec["mtu"]) == ("vlan", "30", "9000")


def test_derived_bridge_names_fit_the_kernel_and_differ():
    names = {network_service.derive_bridge("paris", n) for n in ("a-very-long-network-name", "a-very-long-network")}
    assert len(names) == 2 and all(len(n) <= 15 for n in names)


def test_create_check_real_idempotent_and_diff(engine_options, sql):
    options = dict(vxlan=100, subnet="192.0.2.0/24", gateway="192.0.2.1", clusters=[{"name": "empty"}])
    run = run_play(BASE + [dict(name="check", check_mode=True, **network(**options))], engine=engine_options,
                   diff=True)
    assert run["check"]["changed"] and run["check"]["diff"]["after"]["vxlan_vni"] == 100
    assert sql("SELECT * FROM logical_network") == []
    run = run_play([dict(name="create", **network(**options)), dict(name="again", **network(**options)),
                    dict(name="mtu", **network(mtu=1400))], engine=engine_options, diff=True)
    created = run["create"]["logical_network"]
    assert (created["mtu"], created["bridge"][:5], created["status"]) == (1450, "vpapp", "unattached")
    assert created["clusters"] == [{"name": "empty", "required": True}]
    assert not run["again"]["changed"]
    assert run["mtu"]["diff"] == {"before": {"mtu": 1450}, "after": {"mtu": 1400}}


BAD_INPUT = [
    (dict(vlan=0), "'vlan': 0 is not a usable VLAN id: use 1-4094"),
    (dict(vlan=4095), "'vlan': 4095 is not a usable VLAN id"),
    (dict(vxlan=16777216), "'vxlan': 16777216 is not a VXLAN network identifier"),
    (dict(mtu=67), "'mtu': 67 is outside 68-9216"),
    (dict(mtu=9217), "'mtu': 9217 is outside 68-9216"),
    (dict(bridge="br0;reboot"), "'bridge': 'br0;reboot' is not a usable bridge name"),
    (dict(bridge="br<x>"), "'bridge': 'br<x>' is not a usable bridge name"),
    (dict(bridge="a-bridge-name-too-long"), "is not a usable bridge name: 1-15"),
    (dict(subnet="10.0.0.1/24"), "'subnet': '10.0.0.1/24' has host bits set; did you mean 10.0.0.0/24?"),
    (dict(subnet="10.0.0.0/33"), "'subnet': '10.0.0.0/33' is not a network"),
    (dict(subnet="10.0.0.0/24", gateway="10.0.1.1"), "'gateway': 10.0.1.1 is not a host address of subnet"),
    (dict(mode="nat"), "'subnet': a nat network needs a subnet and a gateway"),
    (dict(mode="nat", vlan=5, subnet="10.0.0.0/24", gateway="10.0.0.1"), "'mode': a nat network is local"),
    (dict(clusters=[{"name": "nowhere"}]), "cluster 'nowhere' in data center"),
]


def test_bad_input_gets_one_message_and_changes_nothing(engine_options, sql):
    """Every case in one play (each its own task): one message naming the field, nothing written."""
    tasks = [dict(name="bad %d" % i, ignore_errors=True, **network(**options))
             for i, (options, _message) in enumerate(BAD_INPUT)]
    run = run_play(BASE + tasks, engine=engine_options)
    wrong = [(options, run["bad %d" % i].get("msg")) for i, (options, message) in enumerate(BAD_INPUT)
             if not run["bad %d" % i].get("failed") or message not in run["bad %d" % i]["msg"]]
    assert wrong == []
    assert sql("SELECT * FROM logical_network") == []


def test_overlapping_subnets_in_one_data_center_are_refused(engine_options, sql):
    run = run_play(BASE + [dict(name="first", **network("front", subnet="10.1.0.0/16")),
                           dict(name="overlap", ignore_errors=True, **network("back", subnet="10.1.2.0/24"))],
                   engine=engine_options)
    assert run["overlap"]["msg"] == ("Invalid value for 'subnet': 10.1.2.0/24 overlaps subnet 10.1.0.0/16 of "
                                     "logical network 'front' in data center 'paris'")
    assert [r["name"] for r in sql("SELECT name FROM logical_network")] == ["front"]


def test_one_vlan_or_vxlan_segment_is_one_network(engine_options, sql):
    run = run_play(BASE + [dict(name="first", **network("front", vxlan=100)),
                           dict(name="same vni", ignore_errors=True, **network("back", vxlan=100)),
                           dict(name="vlan", **network("tagged", vlan=10)),
                           dict(name="same vlan", ignore_errors=True, **network("tagged2", vlan=10))],
                   engine=engine_options)
    assert run["same vni"]["msg"] == ("Invalid value for 'vxlan': VXLAN segment 100 is already logical network "
                                      "'front' in data center 'paris'")
    assert run["same vlan"]["msg"].startswith("Invalid value for 'vlan': VLAN 10 is already logical network 'tagged'")
    assert sorted(r["name"] for r in sql("SELECT name FROM logical_network")) == ["front", "tagged"]


def test_a_host_without_a_nic_for_a_required_network_is_nonoperational_until_it_has_one(engine_options, sql):
    run = run_play(BASE + [
        {"name": "hv1", "virtplane.kvm.host": {"name": "hv1", "cluster": "prod", "libvirt_uri": "test:///default"}},
        dict(name="net", **network(vxlan=7, clusters=[{"name": "prod"}])),
    ], engine=engine_options)
    assert run.rc == 0, run.output
    host = sql("SELECT status, status_reason FROM host")[0]
    assert host["status"] == "NonOperational"
    assert host["status_reason"] == ("required network app is not realized: the host has no network NIC "
                                     "(set network_nic on the host) to carry it")
    assert run["net"]["logical_network"]["status"] == "missing"

    run = run_play([{"name": "nic", "virtplane.kvm.host": {"name": "hv1", "network_nic": "eth1"}},
                    {"name": "info", "virtplane.kvm.logical_network_info": {"name": ["app"]}}],
                   engine=engine_options)
    assert run["nic"]["host"]["status"] == "Up" and "realize network app" in run["nic"]["actions"]
    assert run["info"]["logical_networks"][0]["status"] == "realized"
    assert run["info"]["logical_networks"][0]["hosts"][0]["nic"] == "eth1"

    # optional in the cluster: a host that lacks it is still used
    run = run_play([dict(name="optional", **network(clusters=[{"name": "prod", "required": False}])),
                    {"name": "no nic", "virtplane.kvm.host": {"name": "hv1", "network_nic": "eth9"}}],
                   engine=engine_options, diff=True)
    assert run["optional"]["diff"]["after"]["clusters"] == [{"name": "prod", "required": False}]
    assert sql("SELECT status FROM host")[0]["status"] == "Up"

    run = run_play([dict(name="remove", **network(state="absent")),
                    dict(name="remove again", **network(state="absent"))], engine=engine_options)
    assert run["remove"]["changed"] and not run["remove again"]["changed"]
    assert sql("SELECT * FROM host_network") == []


def test_one_field_of_an_existing_network_changes_alone(engine_options):
    run = run_play(BASE + [dict(name="create", **network("lan", mode="isolated", subnet="10.5.0.0/24")),
                           dict(name="gateway", **network("lan", gateway="10.5.0.1")),
                           dict(name="nat", **network("lan", mode="nat"))], engine=engine_options, diff=True)
    assert run.rc == 0, run.output
    assert run["gateway"]["diff"] == {"before": {"gateway": None}, "after": {"gateway": "10.5.0.1"}}
    assert run["nat"]["diff"] == {"before": {"mode": "isolated"}, "after": {"mode": "nat"}}
