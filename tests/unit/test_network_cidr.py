"""The network_cidr test plugin: what the engine role accepts in engine_db_clients before pg_hba.conf sees it."""

import pytest

from ansible_collections.virtplane.kvm.plugins.test.network_cidr import network_cidr


@pytest.mark.parametrize("value", ["10.0.0.0/24", "192.0.2.7/32", "0.0.0.0/0", "10.0.0.1/24", "fd00::/64", "::1/128"])
def test_networks_are_taken(value):
    assert network_cidr(value)


@pytest.mark.parametrize("value", ["10.0.0.0/33", "999.1.1.1/8", "::::/0", "10.0.0.0", "10.0.0.0/24\n",
                                   " 10.0.0.0/24", "10.0.0.0/24 trust", "fe80::1%eth0/64", "/24", "", 1, None,
                                   ["10.0.0.0/24"], "10.0.0.0/-1", "fd00::/129"])
def test_anything_else_is_not(value):
    assert not network_cidr(value)
