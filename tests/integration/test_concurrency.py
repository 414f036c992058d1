"""Many runs at once against one engine: the races of reading outside the lock, each as a test.

Every worker is a process of its own with its own engine connection, started together at a barrier,
calling the same service entry point the module calls; afterwards the engine's rows are checked.
"""

import multiprocessing

import pytest

from tests.support.playbook import run_play

NODE = """<node><cpu><mhz>2400</mhz></cpu>
<pool type='dir'><name>vp-shared</name><uuid>35bb2ad9-388a-cdfe-461a-b8907f6e53fe</uuid>
<capacity unit='GiB'>100</capacity><allocation unit='GiB'>0</allocation><available unit='GiB'>100</available>
<target><path>/srv/shared</path></target></pool></node>"""
BASE = [{"name": "dc", "virtplane.kvm.datacenter": {"name": "paris"}},
        {"name": "prod", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris"}}]


def _worker(engine_options, barrier, queue, index, job):
    from ansible_collections.virtplane.kvm.plugins.module_utils._errors import VirtplaneError
    from ansible_collections.virtplane.kvm.plugins.module_utils.engine import _db

    engine = _db.connect(engine_options)
    try:
        barrier.wait(30)
        outcome = job(engine, index)
        queue.put((index, "changed" if outcome.changed else "unchanged", outcome.actions))
    except VirtplaneError as exc:
        queue.put((index, "refused", str(exc)))
    except _db.DatabaseError as exc:
        queue.put((index, "database", _db.describe_error(exc)))
    finally:
        engine.close()


def run_at_once(engine_options, job, count):
    """``job(engine, index)`` in ``count`` processes started together: [(index, result, detail)]."""
    context = multiprocessing.get_context("fork")
    barrier, queue = context.Barrier(count), context.Queue()
    workers = [context.Process(target=_worker, args=(engine_options, barrier, queue, i, job)) for i in range(count)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=180) for _worker in workers]
    for worker in workers:
        worker.join(30)
    return sorted(results)


def _network(name, **fields):
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _network

    return _network.NetworkSpec(name=name, datacenter="paris", **fields)


def test_twenty_networks_on_one_subnet_leave_one(engine_options, sql):
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _network

    assert run_play(BASE, engine=engine_options).rc == 0
    results = run_at_once(engine_options, lambda engine, i: _network.ensure(
        engine, _network.NetworkSpec.from_params({"name": "net%d" % i, "datacenter": "paris", "mode": "isolated",
                                                  "subnet": "10.1.0.0/24"})), 20)
    assert [r for r in results if r[1] == "changed"] and len([r for r in results if r[1] == "changed"]) == 1
    refused = [r for r in results if r[1] == "refused"]
    assert len(refused) == 19
    assert all("Invalid value for 'subnet': 10.1.0.0/24 overlaps subnet 10.1.0.0/24" in r[2] for r in refused)
    assert len(sql("SELECT name FROM logical_network WHERE subnet = '10.1.0.0/24'")) == 1


def test_ten_networks_on_one_vxlan_segment_leave_one(engine_options, sql):
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _network

    assert run_play(BASE, engine=engine_options).rc == 0
    results = run_at_once(engine_options, lambda engine, i: _network.ensure(
        engine, _network.NetworkSpec.from_params({"name": "seg%d" % i, "datacenter": "paris", "vxlan": 100})), 10)
    assert len([r for r in results if r[1] == "changed"]) == 1
    assert all("VXLAN segment 100 is already logical network" in r[2] for r in results if r[1] == "refused")
    assert len(sql("SELECT name FROM logical_network WHERE vxlan_vni = 100")) == 1


def test_ten_runs_creating_one_disk_make_one_and_find_it(engine_options, sql, tmp_path):
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _disk

    node = tmp_path / "node.xml"
    node.write_text(NODE)
    setup = run_play(BASE + [
        {"name": "hv1", "virtplane.kvm.host": {"name": "hv1", "cluster": "prod", "libvirt_uri": "test://%s" % node}},
        {"name": "shared", "virtplane.kvm.storage_domain": {"name": "shared", "datacenter": "paris", "type": "posixfs",
                                                            "posixfs": {"path": "/srv/shared"}}}],
        engine=engine_options)
    assert setup.rc == 0, setup.output[-3000:]
    results = run_at_once(engine_options, lambda engine, i: _disk.ensure(
        engine, _disk.DiskSpec(name="d1", storage_domain="shared", size="1GiB")), 10)
    assert [r[1] for r in results].count("changed") == 1, results
    assert [r[1] for r in results].count("unchanged") == 9, results  # they waited, then found the disk
    assert sql("SELECT name, status, job_id FROM disk") == [{"name": "d1", "status": "ok", "job_id": None}]
    assert [r["status"] for r in sql("SELECT status FROM job WHERE action = 'disk.create'")] == ["finished"]


def test_hosts_registered_while_their_cluster_gets_storage_and_a_network_end_up_with_both(engine_options, sql,
                                                                                          tmp_path):
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _host, _network, _storage

    nodes = []
    for i in range(4):
        node = tmp_path / ("node%d.xml" % i)
        node.write_text("<node><cpu><mhz>2400</mhz></cpu></node>")
        nodes.append(node)
    assert run_play(BASE, engine=engine_options).rc == 0

    def job(engine, i):
        if i == 0:
            return _storage.ensure(engine, _storage.StorageDomainSpec.from_params({
                "name": "shared", "datacenter": "paris", "type": "posixfs", "posixfs": {"path": "/srv/shared"}}))
        if i == 1:
            return _network.ensure(engine, _network.NetworkSpec.from_params({
                "name": "blue", "datacenter": "paris", "mode": "isolated", "clusters": [{"name": "prod"}]}))
        return _host.ensure(engine, _host.HostSpec(name="hv%d" % i, cluster="prod",
                                                   libvirt_uri="test://%s" % nodes[i]))

    results = run_at_once(engine_options, job, 6 if len(nodes) >= 6 else 4)
    assert all(r[1] == "changed" for r in results), results
    hosts = sql("SELECT name, status, status_reason FROM host ORDER BY name")
    assert [(h["name"], h["status"]) for h in hosts] == [("hv2", "Up"), ("hv3", "Up")], hosts
    # every host has the domain active and the required network realized, as recorded by the engine
    assert sql("SELECT h.name FROM storage_domain_host sh JOIN host h ON h.id = sh.host_id WHERE sh.active"
               " ORDER BY h.name") == [{"name": "hv2"}, {"name": "hv3"}]
    assert sql("SELECT h.name FROM host_network hn JOIN host h ON h.id = hn.host_id WHERE hn.realized"
               " ORDER BY h.name") == [{"name": "hv2"}, {"name": "hv3"}]
    assert sql("SELECT count(*) AS n FROM job WHERE status = 'running'") == [{"n": 0}]


@pytest.mark.parametrize("rounds", [3])
def test_the_race_holds_over_rounds(engine_options, sql, tmp_path, rounds):
    """The same race again with fresh names: a lost race is not a matter of luck."""
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _host, _storage

    assert run_play(BASE, engine=engine_options).rc == 0
    for round_number in range(rounds):
        nodes = []
        for i in range(3):
            node = tmp_path / ("r%d-%d.xml" % (round_number, i))
            node.write_text("<node><cpu><mhz>2400</mhz></cpu></node>")
            nodes.append(node)

        def job(engine, i, round_number=round_number, nodes=tuple(nodes)):
            if i == 0:
                return _storage.ensure(engine, _storage.StorageDomainSpec.from_params({
                    "name": "sd%d" % round_number, "datacenter": "paris", "type": "posixfs",
                    "posixfs": {"path": "/srv/sd%d" % round_number}}))
            return _host.ensure(engine, _host.HostSpec(name="r%dh%d" % (round_number, i), cluster="prod",
                                                       libvirt_uri="test://%s" % nodes[i]))

        results = run_at_once(engine_options, job, 3)
        assert all(r[1] == "changed" for r in results), results
    # every host has every domain of its cluster
    missing = sql("SELECT h.name AS host, s.name AS domain FROM host h CROSS JOIN storage_domain s"
                  " WHERE NOT EXISTS (SELECT 1 FROM storage_domain_host sh WHERE sh.host_id = h.id"
                  " AND sh.storage_domain_id = s.id AND sh.active)")
    assert missing == []


def _start(engine, index):
    """Worker ``index`` starts its ten VMs, then five of the next worker's (which that one starts too)."""
    from ansible_collections.virtplane.kvm.plugins.module_utils._errors import VirtplaneError
    from ansible_collections.virtplane.kvm.plugins.module_utils.services import _vm
    from ansible_collections.virtplane.kvm.plugins.module_utils.services._common import Outcome

    results = []
    names = ["vm%03d" % (index * 10 + k) for k in range(10)] + \
        ["vm%03d" % (((index + 1) % 20) * 10 + k) for k in range(5)]
    for name in names:
        try:
            outcome = _vm.ensure(engine, _vm.VmSpec(name=name, state="running", wait_timeout=120))
            results.append((name, "changed" if outcome.changed else "unchanged"))
        except VirtplaneError as exc:
            results.append((name, str(exc)))
    return Outcome(True, actions=results)


def test_twenty_runs_starting_two_hundred_vms_never_overcommit_a_host_or_start_a_vm_twice(engine_options, sql,
                                                                                          tmp_path):
    hosts = []
    for i in range(3):
        node = tmp_path / ("node%d.xml" % i)
        # 4 CPUs and 4.25 GiB each, 256 MiB of it the host's own (its default reserve): 4 GiB for VMs; with
        # the cluster's CPU overcommit of 4, memory is what fills them
        node.write_text("<node><cpu><mhz>2400</mhz><nodes>1</nodes><sockets>1</sockets><cores>4</cores>"
                        "<threads>1</threads></cpu><memory>4456448</memory></node>")
        hosts.append({"name": "hv%d" % i, "virtplane.kvm.host": {"name": "hv%d" % i, "cluster": "prod",
                                                                 "libvirt_uri": "test://%s" % node}})
    vms = [{"name": "vm%03d" % v, "cluster": "prod", "memory": "256MiB", "vcpus": 1,
            "boot": {"kernel": "/boot/vmlinuz"}} for v in range(200)]
    run = run_play(BASE + hosts + [{"name": "vms", "virtplane.kvm.vm": {"vms": vms}}], engine=engine_options)
    assert run.rc == 0, run.output[-3000:]

    results = run_at_once(engine_options, _start, 20)
    outcomes = {}
    for _index, status, detail in results:
        assert status == "changed", detail
        for name, said in detail:
            outcomes.setdefault(name, []).append(said)
    # no host holds more than it has: 4 GiB each, 256 MiB per VM -> 16 per host, 48 in all
    committed = sql("SELECT h.name, h.memory_mib - h.reserved_memory_mib AS capacity,"
                    " COALESCE(sum(r.reserved_memory_mib), 0) AS committed, count(r.vm_id) AS vms FROM host h"
                    " LEFT JOIN vm_runtime r ON r.run_host_id = h.id GROUP BY h.name, h.memory_mib,"
                    " h.reserved_memory_mib ORDER BY h.name")
    for row in committed:
        assert row["capacity"] == 4096 and row["committed"] <= row["capacity"], row
    up = sql("SELECT v.name FROM vm v JOIN vm_runtime r ON r.vm_id = v.id WHERE r.status = 'Up'")
    assert len(up) == sum(r["vms"] for r in committed) == 48, committed
    # never started twice: each start of a VM follows its being Down. (The test driver keeps a domain only in
    # the process that made it: another run finds it gone, records the VM Down, and may start it again.)
    events = sql("SELECT object_name, code FROM event WHERE code IN ('VM_STARTED', 'VM_DOWN') ORDER BY id")
    running = set()
    for event in events:
        if event["code"] == "VM_STARTED":
            assert event["object_name"] not in running, "%s started while it ran" % event["object_name"]
            running.add(event["object_name"])
        else:
            running.discard(event["object_name"])
    assert running == {r["name"] for r in up}
    # every start that did not fit says why, host by host
    refused = [(name, text) for name, said in outcomes.items() for text in said if text not in ("changed", "unchanged")]
    assert len(refused) >= 200 - 48
    for name, text in refused:
        assert text.startswith("Cannot start VM '%s': no host of cluster prod can run it: " % name), text
        for host in ("hv0", "hv1", "hv2"):
            assert "%s: memory 4 of 4 GiB committed" % host in text, text
    assert {r["name"] for r in up} <= {name for name, said in outcomes.items() if "changed" in said}
