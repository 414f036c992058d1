"""engine_info and event_info: what an administrator reads back."""

from tests.support.playbook import run_play

SETUP = [{"name": "dc", "virtplane.kvm.datacenter": {"name": "paris"}},
         {"name": "prod", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris"}},
         {"name": "hv1", "virtplane.kvm.host": {"name": "hv1", "cluster": "prod", "libvirt_uri": "test:///default"}},
         {"name": "hv2", "virtplane.kvm.host": {"name": "hv2", "cluster": "prod", "libvirt_uri": "test:///default"}}]


def test_engine_info_counts_and_tree(engine_options):
    run = run_play(SETUP + [{"name": "info", "virtplane.kvm.engine_info": {}},
                            {"name": "info in check mode", "check_mode": True, "virtplane.kvm.engine_info": {}}],
                   engine=engine_options)
    info = run["info"]
    assert not info["changed"]
    assert info["counts"]["datacenters"] == 1 and info["counts"]["clusters"] == 1 and info["counts"]["hosts"] == 2
    assert info["counts"]["vms"] == 0 and info["counts"]["events"] == 4
    assert info["hosts_by_status"] == {"Up": 2}
    [dc] = info["datacenters"]
    [cluster] = dc["clusters"]
    assert (dc["name"], cluster["name"]) == ("paris", "prod")
    assert [(h["name"], h["status"]) for h in cluster["hosts"]] == [("hv1", "Up"), ("hv2", "Up")]
    assert info["summary"][0].startswith("engine schema v%d: 1 data centers, 1 clusters, 2 hosts, 0 VMs"
                                         % info["schema_version"])
    assert "    host hv2: Up, 16 CPUs, 3072 MiB, test via test:///default" in info["summary"]
    assert run["info in check mode"]["counts"] == info["counts"]


def test_event_info_filters_newest_first(engine_options):
    run = run_play(SETUP + [
        {"name": "all", "virtplane.kvm.event_info": {}},
        {"name": "hosts", "virtplane.kvm.event_info": {"object_type": "host"}},
        {"name": "hv2", "virtplane.kvm.event_info": {"object_type": "host", "object_name": "hv2"}},
        {"name": "last", "virtplane.kvm.event_info": {"limit": 1}},
        {"name": "warnings", "virtplane.kvm.event_info": {"severity": ["warning", "error"]}},
        {"name": "future", "virtplane.kvm.event_info": {"since": "2999-01-01T00:00:00"}},
        {"name": "bad since", "ignore_errors": True, "virtplane.kvm.event_info": {"since": "yesterday"}},
    ], engine=engine_options)
    assert [e["code"] for e in run["all"]["events"]] == ["HOST_ADDED", "HOST_ADDED", "CLUSTER_ADDED",
                                                         "DATACENTER_ADDED"]
    assert [e["object_name"] for e in run["hosts"]["events"]] == ["hv2", "hv1"]
    [hv2] = run["hv2"]["events"]
    assert hv2["cluster_name"] == "prod" and hv2["datacenter_name"] == "paris" and hv2["actor"]
    assert [e["object_name"] for e in run["last"]["events"]] == ["hv2"]
    assert run["warnings"]["events"] == [] and run["future"]["events"] == []
    assert run["bad since"]["msg"].startswith("Invalid value for 'since': 'yesterday' is not an ISO 8601 timestamp")
