"""Check mode runs the real path: for every module, its actions and diff are exactly the real run's.

Each scenario is a set-up, then one task run twice on the same engine: in check mode (which must
change nothing), then for real. The hosts are libvirt's test driver; a node file gives a host the
storage pool a disk needs.
"""

import json

import pytest

from tests.support.playbook import run_play

NODE = """<node><cpu><mhz>2400</mhz></cpu>
<pool type='dir'><name>vp-shared</name><uuid>35bb2ad9-388a-cdfe-461a-b8907f6e53fe</uuid>
<capacity unit='GiB'>100</capacity><allocation unit='GiB'>0</allocation><available unit='GiB'>100</available>
<target><path>/srv/shared</path></target></pool></node>"""

DC = {"virtplane.kvm.datacenter": {"name": "paris"}}
CLUSTER = {"virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris"}}


def host(uri="test:///default", **options):
    return {"virtplane.kvm.host": dict({"name": "hv1", "cluster": "prod", "libvirt_uri": uri}, **options)}


def domain(**options):
    return {"virtplane.kvm.storage_domain": dict({"name": "shared", "datacenter": "paris", "type": "posixfs",
                                                  "posixfs": {"path": "/srv/shared"}}, **options)}


def network(**options):
    return {"virtplane.kvm.logical_network": dict({"name": "blue", "datacenter": "paris", "mode": "isolated",
                                                   "clusters": [{"name": "prod"}]}, **options)}


def disk(**options):
    return {"virtplane.kvm.disk": dict({"name": "d1", "storage_domain": "shared", "size": "1GiB"}, **options)}


VM = {"virtplane.kvm.vm": {"name": "web01", "cluster": "prod", "memory": "128MiB", "boot": {"kernel": "/boot/k"},
                           "disks": [{"name": "web01-root", "storage_domain": "shared", "size": "1GiB"}]}}


def snapshot(**options):
    return {"virtplane.kvm.snapshot": dict({"vm": "web01", "name": "before"}, **options)}


# (scenario, set-up tasks, the task under test); "{node}" is a node file with the pool vp-shared
SCENARIOS = [
    ("datacenter create", [], DC),
    ("datacenter update", [DC], {"virtplane.kvm.datacenter": {"name": "paris", "description": "Paris"}}),
    ("datacenter remove", [DC], {"virtplane.kvm.datacenter": {"name": "paris", "state": "absent"}}),
    ("cluster create", [DC], CLUSTER),
    ("cluster update", [DC, CLUSTER], {"virtplane.kvm.cluster": {
        "name": "prod", "scheduling_policy": "none", "memory_overcommit_percent": 150}}),
    ("cluster remove", [DC, CLUSTER], {"virtplane.kvm.cluster": {"name": "prod", "state": "absent"}}),
    ("host register", [DC, CLUSTER], host()),
    ("host register realizes its cluster", [DC, CLUSTER, network(), host(name="hv0")], host()),
    ("host update", [DC, CLUSTER, host()], host(network_nic="eth1", address="hv1.example.com")),
    ("host refreshed", [DC, CLUSTER, host(), network()],
     {"virtplane.kvm.host": {"name": "hv1", "state": "refreshed"}}),
    ("host remove", [DC, CLUSTER, host()], host(state="absent")),
    ("storage domain create", [DC, CLUSTER, host()], domain()),
    ("storage domain maintenance", [DC, CLUSTER, host("{node}"), domain()], domain(state="maintenance")),
    ("storage domain remove", [DC, CLUSTER, host("{node}"), domain()], domain(state="absent")),
    ("network create", [DC, CLUSTER, host()], network()),
    ("network update", [DC, CLUSTER, host(), network()], network(mtu=9000, description="jumbo")),
    ("network remove", [DC, CLUSTER, host(), network()], network(state="absent")),
    ("disk create", [DC, CLUSTER, host("{node}"), domain()], disk()),
    ("disk remove", [DC, CLUSTER, host("{node}"), domain(), disk()], disk(state="absent")),
    # a stopped VM's snapshot: the test driver keeps its metadata, the lab shows what is in the images
    ("snapshot take", [DC, CLUSTER, host("{node}"), domain(), VM], snapshot()),
    ("snapshot revert", [DC, CLUSTER, host("{node}"), domain(), VM, snapshot()], snapshot(state="reverted")),
    ("snapshot delete", [DC, CLUSTER, host("{node}"), domain(), VM, snapshot()], snapshot(state="absent")),
]


def _expand(task, node):
    return json.loads(json.dumps(task).replace("{node}", "test://%s" % node))


def _rows(sql):
    return {t: sql("SELECT count(*) AS n FROM %s" % t)[0]["n"] for t in
            ("datacenter", "cluster", "host", "storage_domain", "storage_domain_host", "logical_network",
             "host_network", "disk", "snapshot", "event", "job")}


@pytest.mark.parametrize("scenario, setup, task", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_check_mode_reports_the_real_runs_actions_and_diff(engine_options, sql, tmp_path, scenario, setup, task):
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    if setup:
        ready = run_play([dict(_expand(t, node), name="setup %d" % i) for i, t in enumerate(setup)],
                         engine=engine_options)
        assert ready.rc == 0, ready.output[-3000:]
    before = _rows(sql)
    check = run_play([dict(_expand(task, node), name="task")], engine=engine_options, check=True, diff=True)
    assert check.rc == 0, check.output[-3000:]
    assert _rows(sql) == before, "check mode changed the engine"
    real = run_play([dict(_expand(task, node), name="task")], engine=engine_options, diff=True)
    assert real.rc == 0, real.output[-3000:]
    predicted, done = check["task"], real["task"]
    assert predicted["changed"] and done["changed"], scenario
    assert predicted["actions"] == [a for a in done["actions"] if not a.startswith("progress ")]
    assert predicted["diff"] == done["diff"]


def test_an_import_is_predicted_and_a_chained_image_refused(engine_options, sql, tmp_path):
    """Imports stream only in a real run; their plan (and their refusals) are the same in check mode."""
    import subprocess

    node = tmp_path / "node.xml"
    node.write_text(NODE)
    assert run_play([dict(_expand(t, node), name="setup %d" % i) for i, t in enumerate(
        [DC, CLUSTER, host("{node}"), domain()])], engine=engine_options).rc == 0
    image = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    chained = tmp_path / "chained.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", "qcow2", str(chained)],
                   check=True)
    run = run_play([{"name": "import", "virtplane.kvm.disk": {"name": "base", "storage_domain": "shared",
                                                              "source": str(image)}},
                    {"name": "chained", "ignore_errors": True, "virtplane.kvm.disk": {
                        "name": "chained", "storage_domain": "shared", "source": str(chained)}}],
                   engine=engine_options, check=True, diff=True)
    [action] = run["import"]["actions"]
    assert action == "import %s (%d bytes)" % (image, image.stat().st_size)
    assert run["import"]["diff"]["after"]["size_bytes"] == 64 * 1024 ** 2
    assert run["import"]["diff"]["after"]["format"] == "qcow2"
    assert "with a backing file" in run["chained"]["msg"]
    assert sql("SELECT count(*) AS n FROM disk") == [{"n": 0}]
