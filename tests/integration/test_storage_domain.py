"""storage_domain and disk modules on a real PostgreSQL, with libvirt's test driver as the host.

libvirt's test driver forgets everything when a connection closes, so what must hold across runs
on a real host (idempotence, paths missing on some host, disks written) is in tests/lab; here:
pool XML of every type, the engine side, check mode, diff and every refusal.
"""

import libvirt
import pytest

from ansible_collections.virtplane.kvm.plugins.module_utils.services import _storage as storage_service
from ansible_collections.virtplane.kvm.plugins.module_utils.virt import _storage
from tests.support.playbook import run_play

BASE = [{"name": "dc", "virtplane.kvm.datacenter": {"name": "paris"}},
        {"name": "prod", "virtplane.kvm.cluster": {"name": "prod", "datacenter": "paris"}},
        {"name": "empty", "virtplane.kvm.cluster": {"name": "empty", "datacenter": "paris"}}]
HOST = [{"name": "hv1", "virtplane.kvm.host": {"name": "hv1", "cluster": "prod", "libvirt_uri": "test:///default"}}]


def domain(name="shared", **options):
    options.setdefault("datacenter", "paris")
    return {"virtplane.kvm.storage_domain": dict(name=name, **options)}


PARAMS = {
    "nfs": {"server": "nfs1.example.com", "export": "/export/vm", "path": "/var/lib/virtplane/mnt/n1"},
    "logical": {"volume_group": "vg_vm", "devices": ["/dev/sdb", "/dev/sdc"]},
    "rbd": {"monitors": ["mon1.example.com:6789", "mon2.example.com"], "pool": "vms", "user": "libvirt",
            "secret_uuid": "2ec115d7-3a88-3ceb-bc12-0ac909a6fd87"},
    "iscsi": {"portal": "192.0.2.10:3260", "target": "iqn.2026-11.com.example:san1",
              "initiator_prefix": "iqn.2026-11.dev.virtplane"},
    "posixfs": {"path": "/srv/shared"},
}


@pytest.mark.parametrize("kind", sorted(PARAMS))
def test_pool_xml_of_every_type_is_what_libvirt_reads_back(kind):
    """Defined on libvirt's test driver and read back: the fields the engine owns survive unchanged."""
    params = storage_service.normalize_params(kind, "d1", PARAMS[kind])
    spec = _storage.pool_spec(kind, params, "hv1")
    conn = libvirt.open("test:///default")
    try:
        pool = conn.storagePoolDefineXML(_storage.pool_xml("vp-d1", spec), 0)
        assert _storage.read_pool_spec(pool.XMLDesc(0)) == spec
        pool.create(0)
        assert pool.isActive()
    finally:
        conn.close()
    if kind == "iscsi":
        assert spec["type"] == "iscsi-direct" and spec["initiator"] == "iqn.2026-11.dev.virtplane:hv1"
    if kind == "rbd":
        assert spec["secret_uuid"] == PARAMS["rbd"]["secret_uuid"] and spec["auth_user"] == "libvirt"


def test_create_check_then_real_with_diff_and_host_view(engine_options, sql):
    run = run_play(BASE + HOST + [
        dict(name="check", check_mode=True, **domain(type="posixfs", posixfs={"path": "/srv/shared"})),
    ], engine=engine_options, diff=True)
    assert run.rc == 0, run.output
    assert run["check"]["changed"] and run["check"]["diff"]["after"]["params"] == {"path": "/srv/shared"}
    assert sql("SELECT * FROM storage_domain") == []

    run = run_play([dict(name="create", **domain(type="posixfs", posixfs={"path": "/srv/shared"}))],
                   engine=engine_options, diff=True)
    created = run["create"]["storage_domain"]
    # every cluster of the data center by default; the one host of them has the pool active
    assert created["clusters"] == ["empty", "prod"]
    assert created["status"] == "active" and [h["host"] for h in created["hosts"]] == ["hv1"]
    assert created["hosts"][0]["active"] and created["hosts"][0]["capacity_bytes"] > 0
    assert run["create"]["actions"] == ["create", "define pool on hv1"]
    assert run["create"]["diff"]["before"] == {}

    detach = domain(type="posixfs", posixfs={"path": "/srv/shared"}, clusters=["empty"], description="backups")
    run = run_play([dict(name="detach", **detach)],
                   engine=engine_options, diff=True)
    assert run["detach"]["diff"] == {"before": {"clusters": ["empty", "prod"], "description": ""},
                                     "after": {"clusters": ["empty"], "description": "backups"}}
    assert "remove pool on hv1" in run["detach"]["actions"]
    assert sql("SELECT count(*) AS n FROM storage_domain_host")[0]["n"] == 0
    events = [r["code"] for r in sql("SELECT code FROM event WHERE object_type = 'storage_domain' ORDER BY id")]
    assert events == ["STORAGE_DOMAIN_CREATED", "STORAGE_DOMAIN_UPDATED"]


def test_a_domain_without_hosts_is_idempotent(engine_options):
    tasks = [dict(name=n, **domain(type="nfs", nfs={"server": "nfs1", "export": "/vm"}, clusters=["empty"]))
             for n in ("first", "second")]
    check = dict(name="check again", check_mode=True, **domain(type="nfs", nfs={"server": "nfs1", "export": "/vm"}))
    run = run_play(BASE + tasks + [check], engine=engine_options)
    assert run["first"]["changed"] and not run["second"]["changed"] and not run["check again"]["changed"]
    assert run["first"]["storage_domain"]["params"]["path"] == "/var/lib/virtplane/mnt/shared"
    assert run["second"]["storage_domain"]["status"] == "unattached"


BAD_INPUT = [
    (dict(type="posixfs", posixfs={"path": "srv/shared"}), "'posixfs.path': 'srv/shared' must be an absolute"),
    (dict(type="posixfs", posixfs={"path": "/srv/a b"}), "'posixfs.path': '/srv/a b' contains characters"),
    (dict(type="posixfs", posixfs={"path": "/srv/$(reboot)"}), "'posixfs.path': '/srv/$(reboot)' contains"),
    (dict(type="posixfs", posixfs={"path": "/srv/<x>"}), "contains characters that are not allowed in a path"),
    (dict(type="dir", dir={"path": "/srv"}), "'host': is required for a 'dir' storage domain"),
    (dict(type="iscsi", iscsi={"portal": "san;1", "target": "iqn.2026-11.com.example:x"}),
     "'iscsi.portal': 'san;1' contains characters"),
    (dict(type="iscsi", iscsi={"portal": "san1", "target": "storage"}),
     "'iscsi.target': 'storage' is not an iSCSI qualified name"),
    (dict(type="rbd", rbd={"monitors": ["mon1"], "pool": "vms", "user": "admin", "secret_uuid": "nope"}),
     "'rbd.secret_uuid': is not the UUID of a libvirt secret"),
    (dict(type="posixfs", posixfs={"path": "/srv"}, clusters=["nowhere"]), "cluster 'nowhere' in data center"),
    (dict(type="posixfs", posixfs={"path": "/srv"}, nfs={"server": "a", "export": "/b"}),
     "parameters are mutually exclusive"),
]


def test_bad_input_gets_one_message_and_changes_nothing(engine_options, sql):
    """Every case in one play (each its own task): one message naming the field, nothing written."""
    tasks = [dict(name="bad %d" % i, ignore_errors=True, **domain(**options))
             for i, (options, _message) in enumerate(BAD_INPUT)]
    run = run_play(BASE + tasks, engine=engine_options)
    wrong = [(options, run["bad %d" % i].get("msg")) for i, (options, message) in enumerate(BAD_INPUT)
             if not run["bad %d" % i].get("failed") or message not in run["bad %d" % i]["msg"]]
    assert wrong == []
    assert sql("SELECT * FROM storage_domain") == []


def test_fields_libvirt_cannot_change_in_place_are_refused_with_the_reason(engine_options):
    run = run_play(BASE + [
        dict(name="create", **domain(type="posixfs", posixfs={"path": "/srv/a"}, clusters=["empty"])),
        dict(name="move", ignore_errors=True, **domain(type="posixfs", posixfs={"path": "/srv/b"})),
        dict(name="retype", ignore_errors=True, **domain(type="nfs", nfs={"server": "n", "export": "/e"})),
    ], engine=engine_options)
    assert "Cannot change posixfs.path of storage domain 'shared' from /srv/a to /srv/b" in run["move"]["msg"]
    assert "cannot change in place" in run["move"]["msg"]
    assert "Cannot change type of storage domain 'shared' from posixfs to nfs" in run["retype"]["msg"]


def test_removal_is_refused_while_disks_remain_and_lists_them(engine_options, sql, engine):
    create = domain(type="posixfs", posixfs={"path": "/srv/a"}, clusters=["empty"])
    run = run_play(BASE + [dict(name="create", **create)], engine=engine_options)
    domain_id = run["create"]["storage_domain"]["id"]
    with engine.transaction() as cur:
        for name in ("web01-root", "db01-data"):
            cur.execute("INSERT INTO disk (storage_domain_id, name, format, size_bytes, volume_name)"
                        " VALUES (%s, %s, 'qcow2', 1073741824, %s)", (domain_id, name, name + ".qcow2"))
    run = run_play([dict(name="remove", ignore_errors=True, **domain(state="absent"))], engine=engine_options)
    assert run["remove"]["msg"] == ("Cannot remove storage domain 'shared': it still has disks db01-data, "
                                    "web01-root")
    assert len(sql("SELECT * FROM storage_domain")) == 1


def test_maintenance_then_absent(engine_options, sql):
    run = run_play(BASE + HOST + [
        dict(name="create", **domain(type="posixfs", posixfs={"path": "/srv/a"}, clusters=["prod"])),
        dict(name="maintenance", **domain(type="posixfs", posixfs={"path": "/srv/a"}, state="maintenance")),
        dict(name="info", **{"virtplane.kvm.storage_domain_info": {"name": ["shared"]}}),
        dict(name="remove", **domain(state="absent")),
        dict(name="remove again", **domain(state="absent")),
    ], engine=engine_options, diff=True)
    assert run.rc == 0, run.output
    assert run["maintenance"]["diff"] == {"before": {"state": "active"}, "after": {"state": "maintenance"}}
    assert run["info"]["storage_domains"][0]["status"] == "maintenance"
    assert run["remove"]["changed"] and not run["remove again"]["changed"]
    assert sql("SELECT * FROM storage_domain") == []


def test_disk_input_checks(engine_options, sql):
    run = run_play(BASE + [
        dict(name="san", **domain("san", type="iscsi", clusters=["empty"],
                                  iscsi={"portal": "192.0.2.10", "target": "iqn.2026-11.com.example:san1"})),
        dict(name="nas", **domain("nas", type="posixfs", clusters=["empty"], posixfs={"path": "/srv/nas"})),
    ] + [dict(name=n, ignore_errors=True, **{"virtplane.kvm.disk": dict(name="d1", **o)}) for n, o in (
        ("zero", {"storage_domain": "nas", "size": "0GiB"}),
        ("unit", {"storage_domain": "nas", "size": "10 parsecs"}),
        ("garbage", {"storage_domain": "nas", "size": "big"}),
        ("no size", {"storage_domain": "nas"}),
        ("iscsi", {"storage_domain": "san", "size": "1GiB"}),
        ("lun elsewhere", {"storage_domain": "nas", "lun": 1}),
        ("nowhere", {"storage_domain": "nowhere", "size": "1GiB"}),
        ("missing source", {"storage_domain": "nas", "source": "/nonexistent/image.qcow2"}),
    )], engine=engine_options)
    assert "'size': '0GiB' is not a usable size" in run["zero"]["msg"]
    assert "'size': '10 parsecs' has an unknown unit 'parsecs'" in run["unit"]["msg"]
    assert "'size': 'big' is not a size" in run["garbage"]["msg"]
    assert "'size': is required to create disk 'd1'" in run["no size"]["msg"]
    assert ("storage domain 'san' is iscsi: its LUNs are fixed by the target and libvirt cannot create volumes"
            in run["iscsi"]["msg"])
    assert "only an iSCSI storage domain has LUNs" in run["lun elsewhere"]["msg"]
    assert run["nowhere"]["msg"] == "Cannot create disk 'd1': storage domain 'nowhere' does not exist"
    assert "'source': cannot read '/nonexistent/image.qcow2' on the engine host" in run["missing source"]["msg"]
    assert sql("SELECT * FROM disk") == []


def test_dependants_of_domains_clusters_and_hosts(engine_options, sql):
    run = run_play(BASE + HOST + [
        dict(name="everywhere", **domain(type="posixfs", posixfs={"path": "/srv/shared"})),
        dict(name="local", **domain("local", type="dir", host="hv1", dir={"path": "/srv"})),
        dict(name="attach to nothing", ignore_errors=True, **{"virtplane.kvm.disk": {
            "name": "d1", "storage_domain": "shared", "size": "1GiB", "vm": "nowhere"}}),
        {"name": "remove empty cluster", "virtplane.kvm.cluster": {"name": "empty", "state": "absent"}},
        {"name": "remove host", "ignore_errors": True, "virtplane.kvm.host": {"name": "hv1", "state": "absent"}},
    ], engine=engine_options)
    assert run["local"]["storage_domain"]["clusters"] == ["prod"]
    # the VM is checked before the disk is made: nothing is created
    assert run["attach to nothing"]["msg"] == "Cannot attach a disk to VM 'nowhere': VM 'nowhere' does not exist"
    assert sql("SELECT * FROM disk") == []
    # a cluster without hosts goes, and its storage attachments with it
    assert "detach storage domain shared" in run["remove empty cluster"]["actions"]
    assert sql("SELECT c.name FROM storage_domain_cluster sc JOIN cluster c ON c.id = sc.cluster_id") == [
        {"name": "prod"}, {"name": "prod"}]
    assert run["remove host"]["msg"] == ("Cannot remove host 'hv1': it holds the 'dir' storage domains local; "
                                         "remove them first")
