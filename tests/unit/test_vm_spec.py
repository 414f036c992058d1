"""The VM spec: documentation of the bulk form, topology and the definition a spec asks for."""

import os

import pytest
import yaml

from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ValidationError
from ansible_collections.virtplane.kvm.plugins.module_utils.services import _vm
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _domain

MODULE = os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "modules", "vm.py")


def _documentation():
    namespace = {}
    with open(MODULE) as handle:
        source = handle.read()
    exec(source.split("EXAMPLES = ")[0].replace("from __future__ import annotations", ""), namespace)  # noqa: S102
    return yaml.safe_load(namespace["DOCUMENTATION"])


def test_each_item_of_vms_is_documented_as_the_options_of_one_vm():
    options = _documentation()["options"]
    single = {k: v for k, v in options.items() if k != "vms"}
    assert options["vms"]["suboptions"] == single


def spec(**values):
    values.setdefault("name", "web01")
    return _vm.VmSpec(**values)


def test_topology_covers_the_most_vcpus_and_hot_plug_adds_sockets():
    desired = _vm.desired_definition(spec(vcpus=2, cpu={"cores": 2, "max_vcpus": 8}, memory="1GiB"), None)
    assert (desired["vcpus"], desired["max_vcpus"]) == (2, 8)
    assert desired["cpu"] == {"sockets": 4, "cores": 2, "threads": 1, "max_vcpus": 8}
    guest = _domain.GuestSpec("web01", vcpus=2, max_vcpus=8, topology=(4, 2, 1))
    assert "<vcpu current=\"2\">8</vcpu>" in _domain.guest_xml(guest)


@pytest.mark.parametrize(("values", "field"), [
    (dict(vcpus=3, cpu={"sockets": 2}), "vcpus"),
    (dict(cpu={"cores": 2, "max_vcpus": 3}), "cpu.max_vcpus"),
    (dict(memory="512MiB", memory_max="256MiB"), "memory_max"),
    (dict(memory="1000KiB"), "memory"),
    (dict(nics=[{"network": "app", "mac": "00:00:00:00:00:00"}]), "nics[0].mac"),
    (dict(cloud_init={"meta_data": "- a list"}), "cloud_init.meta_data"),
    (dict(boot={"cmdline": "console=ttyS0"}), "boot.cmdline"),
    (dict(tags=["ok", "not ok"]), "tags[1]"),
])
def test_refused_before_anything_is_read(values, field):
    with pytest.raises(ValidationError) as caught:
        spec(**values)
    assert caught.value.field == field


def test_a_user_data_script_is_taken_as_it_is_and_a_mapping_becomes_cloud_config():
    assert spec(cloud_init={"user_data": "#!/bin/sh\necho {unbalanced"}).cloud_init["user_data"].startswith("#!")
    documents = spec(cloud_init={"user_data": {"packages": ["htop"]}}).cloud_init
    assert documents["user_data"].startswith("#cloud-config\n") and "htop" in documents["user_data"]


def test_unchanged_nics_without_a_mac_keep_theirs():
    current = _vm.desired_definition(spec(memory="1GiB", nics=[{"network": "app", "mac": "56:6f:00:00:00:07"}]), None)
    asked = _vm.desired_definition(spec(nics=[{"network": "app"}]), current)
    assert asked["nics"][0]["mac"] == "56:6f:00:00:00:07" and _vm.changed(current, asked) == {}
    moved = _vm.desired_definition(spec(nics=[{"network": "db"}]), current)
    assert moved["nics"][0]["mac"] is None and set(_vm.changed(current, moved)) == {"nics"}


def _current(**values):
    return _vm.desired_definition(spec(**values), None)


def test_more_memory_within_the_balloon_keeps_the_maximum():
    current = _current(memory="2GiB", memory_max="4GiB")
    asked = _vm.desired_definition(spec(memory="3GiB"), current)
    assert (asked["memory_mib"], asked["max_memory_mib"]) == (3072, 4096)
    assert set(_vm.changed(current, asked)) == {"memory_mib"}
    beyond = _vm.desired_definition(spec(memory="6GiB"), current)
    assert (beyond["memory_mib"], beyond["max_memory_mib"]) == (6144, 6144)


def test_a_maximum_alone_keeps_the_count_and_a_count_alone_keeps_the_topology():
    current = _current(memory="1GiB", vcpus=4)
    asked = _vm.desired_definition(spec(cpu={"max_vcpus": 8}), current)
    assert (asked["vcpus"], asked["max_vcpus"]) == (4, 8)
    topology = _current(memory="1GiB", vcpus=4, cpu={"cores": 2, "sockets": 2, "max_vcpus": 8})
    asked = _vm.desired_definition(spec(vcpus=6), topology)
    assert asked["cpu"] == {"sockets": 4, "cores": 2, "threads": 1, "max_vcpus": 8}
    assert set(_vm.changed(topology, asked)) == {"vcpus"}
    # one vCPU at a time is plugged within the maximum; beyond it the topology goes, and a restart is needed
    assert _vm.desired_definition(spec(vcpus=5), topology)["cpu"] == asked["cpu"]
    beyond = _vm.desired_definition(spec(vcpus=10), topology)
    assert (beyond["cpu"], beyond["max_vcpus"]) == (None, 10)
