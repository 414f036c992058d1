"""The description's view of each kind (its option names, its withheld secrets) is the view of the module of that
kind: the site module compares items against the very options their modules take."""

import pytest

from ansible_collections.virtplane.kvm.plugins.filter.description_refs import description_compare
from ansible_collections.virtplane.kvm.plugins.module_utils import _description, _options
from ansible_collections.virtplane.kvm.plugins.module_utils._errors import ValidationError


def _no_log_paths(spec, prefix=""):
    found = []
    for name, option in spec.items():
        if option.get("no_log"):
            found.append(prefix + name)
        if option.get("options"):
            found.extend(_no_log_paths(option["options"], prefix + name + "."))
    return found


@pytest.mark.parametrize("kind", _description.KINDS)
def test_every_secret_of_a_kind_is_withheld_from_the_site_module(kind):
    spec, _rules = _options.ITEMS[kind]
    assert set(_no_log_paths(spec)) <= set(_description.WITHHELD.get(kind, ()))


@pytest.mark.parametrize("kind", sorted(_description.OPTIONS))
def test_the_options_the_description_accepts_are_those_of_the_module(kind):
    assert sorted(_description.OPTIONS[kind]) == sorted(_options.ITEMS[kind][0])


def test_an_item_with_a_secret_or_cloud_init_is_never_handed_to_the_site_module():
    description = {"vms": [{"name": "a", "console": {"password": "x"}}, {"name": "b", "cloud_init": {"user_data": "#"}},
                           {"name": "c", "console": {"type": "vnc"}}],
                   "storage_domains": [{"name": "ceph", "rbd": {"pool": "p", "monitors": ["m"], "secret_uuid": "u"}},
                                       {"name": "shared"}],
                   "hosts": [{"name": "hv1", "cluster": "c"}]}
    compared = description_compare(description, None, "paris")
    assert compared == {"vms": [None, None, {"name": "c", "console": {"type": "vnc"}}],
                        "storage_domains": [None, {"name": "shared", "datacenter": "paris"}]}
    assert description_compare(description, [{"name": "hv9"}], "paris")["hosts"] == [{"name": "hv9"}]
    # a secret under a name its module does not have (a typo, an option of another module) is kept away too
    typos = {"vms": [{"name": "a", "console": {"passwd": "x"}}, {"name": "b", "colour": "red"}],
             "hosts": [{"name": "hv1", "fence": {"agent": "lab", "password": "x"}}]}
    assert description_compare(typos, typos["hosts"], "paris") == {"vms": [None, None], "hosts": [None]}


def test_an_item_is_taken_as_its_module_takes_it():
    params = _options.item_params("vms", {"name": "web", "memory": "64MiB", "nics": [{"network": "app"}]})
    assert params["state"] == "present" and params["nics"] == [{"network": "app", "model": "virtio", "name": None,
                                                                "mac": None}]
    assert params["timeout"] == 15 and params["wait_timeout"] == 60
    for kind, item, field in [("vms", {"name": "web", "vcpus": "2\n"}, "vcpus"),
                              ("logical_networks", {"name": "n", "datacenter": "d", "vlan": 1, "vxlan": 2}, "vlan"),
                              ("storage_domains", {"name": "s", "datacenter": "d", "type": "dir", "dir": {"path": "/a"},
                                                   "nfs": {"server": "s", "export": "/e"}},
                               "mutually exclusive: dir|posixfs|nfs")]:
        with pytest.raises(ValidationError) as refused:
            _options.item_params(kind, item)
        assert field in str(refused.value)
